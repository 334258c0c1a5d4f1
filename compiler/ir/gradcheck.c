/* gradcheck.c - finite-difference check of autodiff (gradcheck.h).
 * Relative error of one element: |analytic - numeric| / max(|analytic|,
 * |numeric|, floor), where floor = max(1e-3 * the largest |gradient| of the
 * tensor, 1e-8), so elements whose gradient is near zero are judged against
 * the tensor's scale; and a difference below the rounding noise of the
 * quotient, 100 eps max(|loss|, 1) / h, counts as none.  The step halving
 * shows the difference quotient is rounding-limited at these sizes (its
 * error grows as h shrinks), so the noise term is what makes small
 * gradients checkable at all. */
#include "ir/gradcheck.h"

#include "ir/interp.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Rng {
    uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unif(Rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double rng_normal(Rng *r)
{
    double u = rng_unif(r), v = rng_unif(r);
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

static json_t *doubles(const double *x, int64_t n)
{
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++)
        json_array_append_new(a, json_real(x[i]));
    return a;
}

static json_t *ints(const int32_t *x, int64_t n)
{
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(x[i]));
    return a;
}

/* Writes the point the check ran at, for an independent reference (e.g.
 * tests/torch_reference.py): config, batch, parameters, loss, gradients. */
static bool export_point(const char *path, const IrGraph *g, const InterpInput *in, const Interp *it,
                         double loss)
{
    json_t *root = json_object(), *cfg = json_object(), *params = json_object(), *grads = json_object();
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        json_object_set_new(cfg, c->name, json_real(c->value));
    }
    int64_t bt = (int64_t)in->B * in->T;
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        json_t *shape = json_array();
        for (int k = 0; k < p->ndim; k++)
            json_array_append_new(shape, json_integer(p->dims[k]));
        json_t *e = json_object();
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data", doubles(in->params[i], p->numel));
        json_object_set_new(params, p->name, e);
        const IrNode *gn = g->grads.v[i];
        if (gn)
            json_object_set_new(grads, p->name, doubles(interp_value(it, gn), p->numel));
    }
    json_object_set_new(root, "model", json_string(g->model_name ? g->model_name : ""));
    json_object_set_new(root, "config", cfg);
    json_object_set_new(root, "B", json_integer(in->B));
    json_object_set_new(root, "T", json_integer(in->T));
    json_object_set_new(root, "tokens", ints(in->tokens, bt));
    json_object_set_new(root, "targets", ints(in->targets, bt));
    json_object_set_new(root, "mask", doubles(in->mask, bt));
    json_object_set_new(root, "loss", json_real(loss));
    json_object_set_new(root, "params", params);
    json_object_set_new(root, "grads", grads);
    int rc = json_dump_file(root, path, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (rc)
        fprintf(stderr, "strata: error: cannot write %s\n", path);
    return rc == 0;
}

static double loss_at(const IrGraph *g, const InterpInput *in, bool *ok)
{
    Interp it;
    *ok = interp_run(&it, g, in);
    double l = *ok ? interp_value(&it, g->loss)[0] : NAN;
    interp_free(&it);
    return l;
}

bool gradcheck_run(const IrGraph *g, const GradcheckOptions *o, FILE *out)
{
    Rng rng = {o->seed};
    int np = g->params.n, BT = o->B * o->T;
    double **params = xcalloc((size_t)np, sizeof *params);
    for (int i = 0; i < np; i++) {
        const IrParam *p = g->params.v[i];
        double base = p->init.kind == INIT_ONES ? 1 : p->init.kind == INIT_CONSTANT ? p->init.a : 0;
        params[i] = xmalloc((size_t)p->numel * sizeof(double));
        for (int64_t k = 0; k < p->numel; k++)
            params[i][k] = base + 0.3 * rng_normal(&rng);
    }
    /* Token ids must fit every embedding table; targets fit the logits. */
    int64_t vocab = g->logits->width;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->op == IR_EMBED && x->in[1]->rows < vocab)
            vocab = x->in[1]->rows;
    }
    int32_t *tokens = xmalloc((size_t)BT * sizeof *tokens), *targets = xmalloc((size_t)BT * sizeof *targets);
    double *mask = xmalloc((size_t)BT * sizeof *mask);
    for (int r = 0; r < BT; r++) {
        tokens[r] = (int32_t)(rng_next(&rng) % (uint64_t)vocab);
        targets[r] = (int32_t)(rng_next(&rng) % (uint64_t)g->logits->width);
        mask[r] = r % 3 == 1 ? 0 : 1; /* some tokens out of the loss, as in fine-tuning */
    }
    InterpInput in = {o->B, o->T, tokens, targets, mask, params};
    Interp it;
    bool ok = interp_run(&it, g, &in);
    if (!ok) {
        fprintf(out, "gradcheck: the interpreter failed on the base point\n");
        interp_free(&it);
        goto done;
    }
    double loss = interp_value(&it, g->loss)[0];
    fprintf(out, "loss at the random point: %.12g\n", loss);
    if (o->export_path && !export_point(o->export_path, g, &in, &it, loss)) {
        ok = false;
        interp_free(&it);
        goto done;
    }
    int namew = 6;
    for (int i = 0; i < np; i++) {
        int n = (int)strlen(((IrParam *)g->params.v[i])->name);
        namew = n > namew ? n : namew;
    }
    fprintf(out, "  %-*s %9s %8s %12s %12s %12s\n", namew, "tensor", "numel", "checked", "max|grad|", "max rel err",
            "beyond noise");
    double worst = 0, worst_raw = 0;
    const char *worst_name = "";
    for (int i = 0; i < np && ok; i++) {
        const IrParam *p = g->params.v[i];
        const IrNode *gn = g->grads.v[i];
        const double *grad = gn ? interp_value(&it, gn) : NULL;
        double gmax = 0;
        for (int64_t k = 0; grad && k < p->numel; k++)
            gmax = fmax(gmax, fabs(grad[k]));
        int n = p->numel <= o->samples ? (int)p->numel : o->samples;
        double err = 0, raw = 0; /* judged (rounding noise discounted) and raw */
        for (int s = 0; s < n && ok; s++) {
            int64_t k = p->numel <= o->samples ? s : (int64_t)(rng_next(&rng) % (uint64_t)p->numel);
            if (p->role == PARAM_EMBEDDING) /* a row that the batch uses */
                k = (int64_t)tokens[rng_next(&rng) % (uint64_t)BT] * p->dims[1] +
                    (int64_t)(rng_next(&rng) % (uint64_t)p->dims[1]);
            double save = params[i][k], h = 1e-3 * fmax(1, fabs(save)), d[2];
            /* Fourth-order central differences at h and h/2, combined by
             * Richardson extrapolation: truncation error O(h^6). */
            for (int r = 0; r < 2 && ok; r++, h /= 2) {
                static const double step[4] = {2, 1, -1, -2};
                double f[4];
                for (int j = 0; j < 4 && ok; j++) {
                    params[i][k] = save + step[j] * h;
                    f[j] = loss_at(g, &in, &ok);
                }
                d[r] = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h);
            }
            params[i][k] = save;
            double num = d[1] + (d[1] - d[0]) / 15, ana = grad ? grad[k] : 0;
            /* Rounding noise of the quotient at the smaller step (h*2 after the loop). */
            double noise = 100 * DBL_EPSILON * fmax(fabs(loss), 1) / (2 * h);
            double denom = fmax(fmax(fabs(ana), fabs(num)), fmax(1e-3 * gmax, 1e-8));
            double e = fmax(fabs(ana - num) - noise, 0) / denom, r = fabs(ana - num) / denom;
            if (!(e <= err)) /* NaN counts as the worst */
                err = isnan(e) ? INFINITY : e;
            if (!(r <= raw))
                raw = isnan(r) ? INFINITY : r;
        }
        fprintf(out, "  %-*s %9lld %8d %12.3e %12.3e %12.3e%s\n", namew, p->name, (long long)p->numel, n, gmax, raw,
                err, err > o->tol ? "  FAIL" : "");
        if (raw > worst_raw || i == 0) {
            worst_raw = raw;
            worst_name = p->name;
        }
        worst = fmax(worst, err);
    }
    interp_free(&it);
    if (ok)
        fprintf(out, "worst relative error %.3e (%s), %.3e beyond rounding noise, tolerance %.1e: %s\n",
                worst_raw, worst_name, worst, o->tol, worst <= o->tol ? "PASS" : "FAIL");
    ok = ok && worst <= o->tol;
done:
    for (int i = 0; i < np; i++)
        free(params[i]);
    free(params);
    free(tokens);
    free(targets);
    free(mask);
    return ok;
}
