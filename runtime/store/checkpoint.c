/* checkpoint.c - writing and reading training checkpoints (checkpoint.h)
 * on top of the safetensors reader and writer. */
#define _GNU_SOURCE /* asprintf */
#include "store/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rt_ckpt_shape(const StrataParam *p, int64_t shape[2])
{
    shape[0] = p->dims[0];
    shape[1] = p->dims[1];
    return p->ndim < 0 ? 0 : p->ndim > 2 ? 2 : p->ndim;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
    int k = snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < (int)n; i++)
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < (int)n)
        snprintf(buf + k, n - (size_t)k, "]");
}

int rt_ckpt_write(const char *path, const StrataModelDesc *d, const float *params, const float *m, const float *v,
                  const RtCkptInfo *info, char **err)
{
    RtStWriter w;
    rt_st_writer_init(&w);
    char **names = calloc((size_t)d->nparams * 2 + 1, sizeof *names);
    int rc = names ? 0 : -1;
    if (!names)
        *err = strdup("out of memory");
    for (int64_t i = 0; i < d->nparams && !rc; i++) {
        const StrataParam *p = &d->params[i];
        int64_t shape[2];
        int nd = rt_ckpt_shape(p, shape);
        rc = rt_st_add(&w, p->name, RT_F32, shape, nd, params + p->offset, err);
        if (!rc && m && v) {
            if (asprintf(&names[2 * i], "optim.m.%s", p->name) < 0 ||
                asprintf(&names[2 * i + 1], "optim.v.%s", p->name) < 0) {
                *err = strdup("out of memory");
                rc = -1;
                break;
            }
            rc = rt_st_add(&w, names[2 * i], RT_F32, shape, nd, m + p->offset, err);
            if (!rc)
                rc = rt_st_add(&w, names[2 * i + 1], RT_F32, shape, nd, v + p->offset, err);
        }
    }
    const char *meta[][2] = {{"format", "pt"},
                             {"strata.abi", RT_ABI_STRING},
                             {"strata.model", info->source},
                             {"strata.model_path", info->model_path},
                             {"strata.config", info->config_json},
                             {"strata.model_id", info->model_id},
                             {"strata.sources", info->sources_json},
                             {"strata.defines", info->defines_json},
                             {"strata.state", info->state_json}};
    for (size_t k = 0; k < sizeof meta / sizeof *meta && !rc; k++)
        rc = rt_st_add_meta(&w, meta[k][0], meta[k][1] ? meta[k][1] : "", err);
    if (!rc)
        rc = rt_st_write(&w, path, err);
    rt_st_writer_free(&w);
    for (int64_t i = 0; names && i < 2 * d->nparams; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* The tensor `name` with the parameter's shape and dtype F32, else NULL and
 * *err (missing, or a different shape or dtype). */
static const RtStTensor *find_like(const RtSafetensors *st, const char *name, const StrataParam *p, char **err)
{
    int64_t shape[2];
    int nd = rt_ckpt_shape(p, shape);
    char want[64], got[64 + 24 * RT_ST_MAX_DIMS];
    shape_str(want, sizeof want, shape, nd);
    const RtStTensor *t = rt_st_find(st, name);
    if (!t) {
        if (asprintf(err, "%s: tensor '%s' (shape %s in the model) is missing from the checkpoint", st->path, name,
                     want) < 0)
            *err = NULL;
        return NULL;
    }
    shape_str(got, sizeof got, t->shape, t->ndim);
    bool same = t->ndim == nd;
    for (int i = 0; same && i < nd; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        if (asprintf(err, "%s: tensor '%s' has shape %s in the checkpoint but %s in the model", st->path, name, got,
                     want) < 0)
            *err = NULL;
        return NULL;
    }
    if (t->dtype != RT_F32) {
        if (asprintf(err, "%s: tensor '%s' is %s, expected F32", st->path, name, rt_dtype_name(t->dtype)) < 0)
            *err = NULL;
        return NULL;
    }
    return t;
}

int rt_ckpt_check_finite(const char *path, const char *name, const float *x, int64_t n, char **err)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            bad++;
            if (first < 0)
                first = i;
        }
    if (!bad)
        return 0;
    if (asprintf(err, "%s: tensor '%s' holds %s at element %lld (%lld of its %lld values are NaN or infinite): "
                      "the checkpoint is unusable; take an earlier one", path, name,
                 isnan(x[first]) ? "NaN" : "an infinity", (long long)first, (long long)bad, (long long)n) < 0)
        *err = NULL;
    return -1;
}

/* The parameter called name, or -1. */
static int64_t param_index(const StrataModelDesc *d, const char *name)
{
    for (int64_t i = 0; i < d->nparams; i++)
        if (!strcmp(d->params[i].name, name))
            return i;
    return -1;
}

int rt_ckpt_read_params(const RtSafetensors *st, const StrataModelDesc *d, float *params, char **err)
{
    for (int i = 0; i < st->n; i++) {
        const char *name = st->t[i].name;
        if (!strncmp(name, "optim.m.", 8) || !strncmp(name, "optim.v.", 8))
            name += 8;
        if (param_index(d, name) < 0) {
            char got[64 + 24 * RT_ST_MAX_DIMS];
            shape_str(got, sizeof got, st->t[i].shape, st->t[i].ndim);
            if (asprintf(err, "%s: tensor '%s' (shape %s in the checkpoint) is not a parameter of the model",
                         st->path, st->t[i].name, got) < 0)
                *err = NULL;
            return -1;
        }
    }
    for (int64_t i = 0; i < d->nparams; i++) {
        const StrataParam *p = &d->params[i];
        const RtStTensor *t = find_like(st, p->name, p, err);
        if (!t)
            return -1;
        memcpy(params + p->offset, t->data, (size_t)p->numel * sizeof(float));
        if (rt_ckpt_check_finite(st->path, p->name, params + p->offset, p->numel, err))
            return -1;
    }
    return 0;
}

int rt_ckpt_read_moments(const RtSafetensors *st, const StrataModelDesc *d, float *m, float *v, char **err)
{
    for (int64_t i = 0; i < d->nparams; i++) {
        const StrataParam *p = &d->params[i];
        for (int k = 0; k < 2; k++) {
            char *name;
            if (asprintf(&name, "optim.%c.%s", k ? 'v' : 'm', p->name) < 0) {
                *err = strdup("out of memory");
                return -1;
            }
            const RtStTensor *t = find_like(st, name, p, err);
            if (t)
                memcpy((k ? v : m) + p->offset, t->data, (size_t)p->numel * sizeof(float));
            bool ok = t && !rt_ckpt_check_finite(st->path, name, (k ? v : m) + p->offset, p->numel, err);
            free(name);
            if (!ok)
                return -1;
        }
    }
    return 0;
}
