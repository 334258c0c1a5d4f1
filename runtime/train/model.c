/* model.c - what every command needs from a model and its checkpoints
 * (model.h): the weights of a checkpoint, its state, the default window. */
#include "model.h"

#include "store/checkpoint.h"
#include "train/ident.h"
#include "core/util.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *rt_load_weights(const RtModel *m, const char *prog, const char *path, json_t **state)
{
    RtSafetensors st;
    char *err = NULL;
    *state = NULL;
    if (rt_st_open(&st, path, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err);
        return NULL;
    }
    float *p = rt_zalloc64((size_t)m->desc->params_numel * sizeof(float));
    if (rt_ckpt_read_params(&st, m->desc, p, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err), free(p);
        rt_st_close(&st);
        return NULL;
    }
    char *diff = rt_model_diff(&st, m);
    if (diff)
        fprintf(stderr, "%s: warning: %s was written by another model: %s\n", prog, path, diff);
    free(diff);
    const char *sj = rt_st_meta(&st, "strata.state");
    *state = sj ? json_loads(sj, 0, NULL) : NULL;
    rt_st_close(&st);
    return p;
}

int64_t rt_state_int(json_t *state, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(state, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

int64_t rt_default_seq(const RtModel *m)
{
    json_t *j = m->config_json ? json_loads(m->config_json, 0, NULL) : NULL;
    json_t *v = json_object_get(j, "ctx");
    int64_t ctx = json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 256;
    json_decref(j);
    return ctx;
}

int rt_precision_parse(const char *s)
{
    return !s ? -1 : !strcmp(s, "fp32") ? STRATA_PRECISION_FP32 : !strcmp(s, "bf16") ? STRATA_PRECISION_BF16 : -1;
}

const char *rt_precision_name(int precision)
{
    return precision == STRATA_PRECISION_BF16 ? "bf16" : "fp32";
}
