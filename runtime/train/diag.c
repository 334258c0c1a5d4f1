/* diag.c - the depth diagnostics of `train --diag-every N` (diag.h):
 * per-block variance of the residual stream, angular distances, gradient
 * norms and update ratios every N steps into OUT/diagnostics.jsonl, and
 * their plots.  Entry points: rt_diag_init, rt_diag_grads,
 * rt_diag_update, rt_diag_free, rt_diag_plot.  The RtDiag owns its
 * buffers. */
#define _GNU_SOURCE /* asprintf, open_memstream */
#include "train/diag.h"

#include "core/util.h"
#include "data/data.h"
#include "train/depth.h"
#include "train/train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* --- tracking during training --------------------------------------------- */

int rt_diag_init(RtDiag *g, const RtModel *m, const RtTrainOptions *o, const char *prog)
{
    memset(g, 0, sizeof *g);
    g->grads_step = -1;
    if (o->diag_every < 0) {
        fprintf(stderr, "%s train: --diag-every must be >= 0\n", prog);
        return 2;
    }
    if (o->diag_every == 0)
        return 0;
    const StrataModelDesc *d = m->desc;
    g->m = m, g->prog = prog, g->B = o->batch, g->T = o->seq;
    const char *glob = o->val ? o->val : o->data;
    char **paths = NULL, *err = NULL;
    int npaths = 0;
    RtLoader l;
    if (rt_glob(glob, &paths, &npaths, &err) ||
        rt_loader_init(&l, (const char *const *)paths, npaths, (int)g->B, (int)g->T, RT_LOADER_SEQUENTIAL, 0,
                       &err)) {
        fprintf(stderr, "%s: --diag-every: %s\n", prog, err);
        free(err);
        if (paths)
            rt_glob_free(paths, npaths);
        return 1;
    }
    g->tok = rt_zalloc64((size_t)(g->B * g->T) * sizeof *g->tok);
    int32_t *tgt = rt_zalloc64((size_t)(g->B * g->T) * sizeof *tgt);
    rt_loader_next(&l, g->tok, tgt); /* short data: the loader repeats the last window */
    free(tgt);
    rt_loader_free(&l);
    rt_glob_free(paths, npaths);
    g->path = rt_fmt("%s/diagnostics.jsonl", o->out);
    g->dir = strdup(o->out);
    g->f = fopen(g->path, o->resume ? "a" : "w");
    if (!g->f) {
        fprintf(stderr, "%s: cannot open %s: %s\n", prog, g->path, strerror(errno));
        rt_diag_free(g);
        return 1;
    }
    if (d->width > 0 && d->nblocks > 0)
        g->capture = rt_zalloc64((size_t)((d->nblocks + 1) * g->B * g->T * d->width) * sizeof(float));
    else if (!o->quiet)
        fprintf(stderr, "%s: note: %s has no single residual width: diagnostics without variance\n", prog,
                m->path ? m->path : "the model");
    g->before = rt_zalloc64((size_t)d->params_numel * sizeof(float));
    g->gnorm = calloc((size_t)d->nblocks + 1, sizeof *g->gnorm);
    g->every = o->diag_every;
    return 0;
}

/* The block index of parameter i in per-block arrays: [L] outside blocks. */
static int64_t slot(const StrataModelDesc *d, int64_t i)
{
    int32_t b = d->params[i].block;
    return b >= 0 && b < d->nblocks ? b : d->nblocks;
}

void rt_diag_grads(RtDiag *g, int64_t step, const float *params, const float *grads, double scale)
{
    if (!g->every || step % g->every)
        return;
    const StrataModelDesc *d = g->m->desc;
    memset(g->gnorm, 0, (size_t)(d->nblocks + 1) * sizeof *g->gnorm);
    for (int64_t i = 0; i < d->nparams; i++) {
        const float *x = grads + d->params[i].offset;
        double s = 0;
        for (int64_t k = 0; k < d->params[i].numel; k++)
            s += (double)x[k] * x[k];
        g->gnorm[slot(d, i)] += s;
    }
    for (int64_t b = 0; b <= d->nblocks; b++)
        g->gnorm[b] = scale * sqrt(g->gnorm[b]);
    memcpy(g->before, params, (size_t)d->params_numel * sizeof(float));
    g->grads_step = step;
}

int rt_diag_update(RtDiag *g, int64_t step, const float *params, RtPool *pool, void *arena, int64_t arena_bytes)
{
    if (!g->every || step % g->every)
        return 0;
    const StrataModelDesc *d = g->m->desc;
    const int64_t L = d->nblocks;
    json_t *j = json_object();
    json_object_set_new(j, "step", json_integer(step));
    if (g->capture) {
        StrataStep s = {.params = (void *)params, .arena = arena, .arena_bytes = arena_bytes, .tokens = g->tok,
                        .B = g->B, .T = g->T, .capture = g->capture, .pool = pool,
                        .precision = g->m->precision};
        int st = g->m->forward(&s);
        if (st != STRATA_OK) {
            fprintf(stderr, "%s: the forward pass of the diagnostics failed (status %d)\n", g->prog, st);
            json_decref(j);
            return -1;
        }
        RtDepthStats ds;
        rt_depth_stats(&ds, g->capture, (int)L, g->B, g->T, d->width);
        json_t *v = json_array(), *an = json_array();
        for (int64_t l = 0; l <= L; l++)
            json_array_append_new(v, jnum(ds.variance[l]));
        for (int64_t l = 1; l <= L; l++)
            json_array_append_new(an, jnum(ds.angular_all[l * (L + 1) + 1]));
        json_object_set_new(j, "variance", v);
        json_object_set_new(j, "angular_next", an);
        rt_depth_stats_free(&ds);
    }
    if (g->grads_step == step) { /* a skipped (NaN) step has no gradient row */
        double *w = calloc((size_t)L + 1, sizeof *w), *u = calloc((size_t)L + 1, sizeof *u);
        for (int64_t i = 0; i < d->nparams; i++) {
            const float *a = g->before + d->params[i].offset, *b = params + d->params[i].offset;
            for (int64_t k = 0; k < d->params[i].numel; k++) {
                double du = (double)b[k] - a[k];
                w[slot(d, i)] += (double)a[k] * a[k];
                u[slot(d, i)] += du * du;
            }
        }
        json_t *gn = json_array(), *ur = json_array();
        for (int64_t b = 0; b < L; b++) {
            json_array_append_new(gn, jnum(g->gnorm[b]));
            json_array_append_new(ur, jnum(w[b] > 0 ? sqrt(u[b] / w[b]) : NAN));
        }
        json_object_set_new(j, "grad_norm", gn);
        json_object_set_new(j, "grad_norm_other", jnum(g->gnorm[L]));
        json_object_set_new(j, "update_ratio", ur);
        json_object_set_new(j, "update_ratio_other", jnum(w[L] > 0 ? sqrt(u[L] / w[L]) : NAN));
        free(w), free(u);
    }
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(j);
    fprintf(g->f, "%s\n", line);
    fflush(g->f);
    free(line);
    return 0;
}

void rt_diag_free(RtDiag *g)
{
    if (g->f) {
        bool bad = ferror(g->f) != 0;
        if (fclose(g->f) || bad)
            fprintf(stderr, "%s: error writing %s\n", g->prog, g->path);
        char *err = NULL;
        if (g->every && rt_diag_plot(g->path, g->dir, &err)) {
            fprintf(stderr, "%s: warning: %s\n", g->prog, err);
            free(err);
        }
    }
    free(g->path), free(g->dir), free(g->tok), free(g->capture), free(g->before), free(g->gnorm);
    memset(g, 0, sizeof *g);
}

/* --- plots of diagnostics.jsonl ------------------------------------------- */

/* One plot: rows = layers of key's arrays, columns = the chosen steps. */
static int diag_plot_one(json_t **rows, int n, const char *key, int first, const char *dir, const char *ylabel,
                         bool logy, char **err)
{
    int pick[8], np = 0, have = 0, len = 0;
    for (int i = 0; i < n; i++)
        if (json_is_array(json_object_get(rows[i], key))) {
            have++;
            int k = (int)json_array_size(json_object_get(rows[i], key));
            len = k > len ? k : len;
        }
    if (!have)
        return 0;
    for (int q = 0, seen = 0, i = 0; i < n && np < 8; i++) { /* up to 8 rows spread evenly, first and last */
        if (!json_is_array(json_object_get(rows[i], key)))
            continue;
        if (have <= 8 || seen == (int)lround((double)q * (have - 1) / 7.0))
            pick[np++] = i, q++;
        seen++;
    }
    char *csv = rt_fmt("%s/diag_%s.csv", dir, key), *img = rt_fmt("%s/diag_%s.png", dir, key);
    FILE *f = fopen(csv, "w");
    if (!f) {
        *err = rt_fmt("cannot write %s: %s", csv, strerror(errno));
        free(csv), free(img);
        return -1;
    }
    fprintf(f, "layer");
    for (int p = 0; p < np; p++)
        fprintf(f, ",step %lld", (long long)json_integer_value(json_object_get(rows[pick[p]], "step")));
    fprintf(f, "\n");
    for (int k = 0; k < len; k++) {
        fprintf(f, "%d", k + first);
        for (int p = 0; p < np; p++) {
            json_t *v = json_array_get(json_object_get(rows[pick[p]], key), (size_t)k);
            if (json_is_number(v))
                fprintf(f, ",%.9g", json_number_value(v));
            else
                fprintf(f, ",NaN");
        }
        fprintf(f, "\n");
    }
    fclose(f);
    char *script = rt_fmt("set terminal pngcairo noenhanced size 900,600\nset output '%s'\n"
                       "set datafile separator ','\nset key autotitle columnhead\nset title '%s over training'\n"
                       "set xlabel '%s'\nset ylabel '%s'\nset grid\n%s"
                       "plot for [i=2:%d] '%s' using 1:i with linespoints lw 2\n",
                       img, key, first ? "block (layer l)" : "layer (0 = embedding output)", ylabel,
                       logy ? "set logscale y\n" : "", np + 1, csv);
    int rc = rt_gnuplot(script, img, err);
    free(script), free(csv), free(img);
    return rc;
}

int rt_diag_plot(const char *jsonl, const char *dir, char **err)
{
    FILE *f = fopen(jsonl, "r");
    if (!f) {
        *err = rt_fmt("cannot open %s: %s", jsonl, strerror(errno));
        return -1;
    }
    json_t **rows = NULL;
    int n = 0, cap = 0, rc = 0;
    char *line = NULL;
    size_t lcap = 0;
    for (int lineno = 1; getline(&line, &lcap, f) > 0; lineno++) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!json_is_object(j) || !json_is_integer(json_object_get(j, "step"))) {
            *err = rt_fmt("%s:%d: not a diagnostics row (%s)", jsonl, lineno, j ? "no \"step\"" : je.text);
            json_decref(j);
            rc = -1;
            break;
        }
        if (n == cap)
            rows = realloc(rows, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *rows);
        rows[n++] = j;
    }
    free(line);
    fclose(f);
    if (!rc && n == 0) {
        *err = rt_fmt("%s: no diagnostics rows", jsonl);
        rc = -1;
    }
    if (!rc)
        rc = diag_plot_one(rows, n, "variance", 0, dir, "residual-stream variance", true, err) ||
                     diag_plot_one(rows, n, "grad_norm", 1, dir, "gradient norm of the block", true, err) ||
                     diag_plot_one(rows, n, "update_ratio", 1, dir, "||update|| / ||weights||", true, err)
                 ? -1
                 : 0;
    for (int i = 0; i < n; i++)
        json_decref(rows[i]);
    free(rows);
    return rc;
}
