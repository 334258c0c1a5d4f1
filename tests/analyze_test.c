/* analyze_test.c - `analyze` and `train --diag-every` (runtime/cmd/analyze.c) on
 * models/pre_ln.strata at a tiny size, JIT-compiled, through
 * rt_trainer_main.  Block 3 gets zero output projections (attn.wo and
 * mlp.w2), so it is an identity: its output equals its input exactly, its
 * angular distance must be 0 and skipping it must change nothing.  The
 * variances, angular distances, losses and task accuracy are recomputed
 * here from the definitions with direct strata_forward calls; the
 * diagnostics' gradient norms of one batch and of it as two micro-batches
 * (--accum 2) must agree.  Exit 0 pass, 1 fail, 77 skip (no JIT). */
#include "store/checkpoint.h"
#include "data/data.h"
#include "train/init.h"
#include "train_case.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NV 32 /* vocab */
#define NT 16 /* seq */
#define NB 4  /* batch */
#define NL 4  /* blocks */

static int64_t param_index(const char *name)
{
    for (int64_t i = 0; i < tc_model.desc->nparams; i++)
        if (!strcmp(tc_model.desc->params[i].name, name))
            return i;
    printf("FAIL: no parameter %s\n", name);
    exit(1);
}

/* --- direct computations (the definitions) -------------------------------- */

static float *capbuf, *logits, *arena;
static int64_t arena_bytes;

/* strata_forward of one batch; capture (L+1, B, T, d) into capbuf. */
static void forward(const float *params, const int32_t *tok, int64_t B, int64_t T, const uint8_t *skip)
{
    StrataStep s = {.params = (void *)params, .arena = arena, .arena_bytes = arena_bytes, .tokens = tok, .B = B,
                    .T = T, .logits = logits, .capture = capbuf, .skip = skip};
    int st = tc_model.forward(&s);
    CHECK(st == STRATA_OK, "forward status %d", st);
}

/* -log softmax(row)[t], in double. */
static double nll(const float *row, int32_t t)
{
    return -tc_logp(row, NV, t);
}

static double angle(const float *a, const float *b, int64_t d)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < d; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    double c = ab / sqrt(aa * bb);
    return acos(c > 1 ? 1 : c < -1 ? -1 : c) / M_PI;
}

static int32_t lcg(int64_t i, void *ctx) /* pseudo-random ids, seeded by *ctx */
{
    uint32_t *x = ctx;
    *x = *x * 1664525u + 1013904223u;
    return (int32_t)((*x >> 16) % NV);
}

/* The value in column `col` of the CSV row whose first columns are key0
 * (and key1 when >= 0); NAN if absent. */
static double csv_value(const char *path, int key0, int key1, int col)
{
    char *t = tu_slurp(path, NULL);
    double v = NAN;
    for (char *line = t ? strchr(t, '\n') : NULL; line && line[1]; line = strchr(line + 1, '\n')) {
        double f[8];
        int n = 0;
        char *p = line + 1;
        while (n < 8) {
            f[n++] = strtod(p, &p);
            if (*p != ',')
                break;
            p++;
        }
        if ((int)f[0] == key0 && (key1 < 0 || (n > 1 && (int)f[1] == key1)) && col < n) {
            v = f[col];
            break;
        }
    }
    free(t);
    return v;
}

/* --- analyze --------------------------------------------------------------- */

static void test_analyze(void)
{
    const StrataModelDesc *d = tc_model.desc;
    const int64_t W = d->width, L = d->nblocks;
    CHECK(L == NL && W == 16, "model: %lld blocks of width %lld", (long long)L, (long long)W);
    float *params = calloc((size_t)d->params_numel, sizeof *params);
    rt_init_params(d, params, 7);
    for (int64_t i = 0; i < d->params_numel; i++)
        params[i] *= 10; /* larger weights: the layers differ more than the init's */
    int64_t wo = param_index("layers.3.attn.wo"), w2 = param_index("layers.3.mlp.w2");
    const int zb = d->params[wo].block; /* the identity block, 0-based; analyze's layer zb+1 */
    CHECK(zb == d->params[w2].block && zb >= 0, "blocks of layers.3: %d %d", zb, d->params[w2].block);
    memset(params + d->params[wo].offset, 0, (size_t)d->params[wo].numel * sizeof(float));
    memset(params + d->params[w2].offset, 0, (size_t)d->params[w2].numel * sizeof(float));
    char *err = NULL;
    RtCkptInfo info = {.state_json = "{\"batch\": 4, \"seq\": 16}"};
    if (rt_ckpt_write(tu_path("ck.safetensors"), d, params, NULL, NULL, &info, &err)) {
        printf("FAIL %s\n", err);
        exit(1);
    }
    tc_write_shard("val.bin", 500, lcg, &(uint32_t){11}); /* 29 windows of 17: batches of 4, 4, 4 (3 asked) */
    /* A task of ids < 32: control bytes through the raw-byte tokenizer. */
    FILE *tf = fopen(tu_path("task.jsonl"), "w");
    fprintf(tf, "{\"context\": \"\\u0001\\u0002\\u0003\\u0004\", \"choices\": [\"\\u0005\\u0006\", \"\\u0007\"], "
                "\"label\": 0}\n"
                "{\"context\": \"\\u0009\\u000a\", \"choices\": [\"\\u000b\", \"\\u000c\\u000d\", \"\\u000e\"], "
                "\"label\": 2}\n"
                "{\"context\": \"\\u0011\", \"choices\": [\"\\u0012\\u0013\\u0014\", \"\\u0015\"], \"label\": 1}\n");
    fclose(tf);
    int rc = tc_run("analyze", "--ckpt", tu_path("ck.safetensors"), "--data", tu_path("val.bin"), "--batches", "3",
                    "--task", tu_path("task.jsonl"), "--out", tu_path("an"), "--threads", "1", NULL);
    CHECK(rc == 0, "analyze exit %d", rc);

    /* The same 3 batches, directly. */
    RtLoader ld;
    const char *vp = tu_path("val.bin");
    if (rt_loader_init(&ld, &vp, 1, NB, NT, RT_LOADER_SEQUENTIAL, 0, &err)) {
        printf("FAIL %s\n", err);
        exit(1);
    }
    int64_t rows_total = 0;
    int32_t tok[3][NB * NT], tgt[3][NB * NT];
    int rows[3];
    for (int k = 0; k < 3; k++)
        rows[k] = rt_loader_next(&ld, tok[k], tgt[k]), rows_total += rows[k];
    rt_loader_free(&ld);
    const int64_t layer = NB * NT * W;
    double *sum = calloc((size_t)L + 1, sizeof *sum), *sq = calloc((size_t)L + 1, sizeof *sq);
    double ang12 = 0, ang_id = 0, ang_id_last = 0, loss = 0, loss_skip1 = 0, loss_skipz = 0;
    uint8_t skip1[NL] = {1}, skipz[NL] = {0};
    skipz[zb] = 1;
    for (int pass = 0; pass < 2; pass++) /* pass 0: means, pass 1: squared deviations */
        for (int k = 0; k < 3; k++) {
            forward(params, tok[k], NB, NT, NULL);
            for (int64_t l = 0; l <= L; l++)
                for (int64_t i = 0; i < rows[k] * NT * W; i++) {
                    double x = capbuf[l * layer + i];
                    if (pass == 0)
                        sum[l] += x;
                    else
                        sq[l] += (x - sum[l]) * (x - sum[l]);
                }
            if (pass == 0) {
                for (int64_t r = 0; r < rows[k] * NT; r++) {
                    loss += nll(logits + r * NV, tgt[k][r]);
                    /* angular(l=1, n=2): capture[0] vs capture[2]; the identity: capture[zb] vs [zb+1] */
                    ang12 += angle(capbuf + r * W, capbuf + 2 * layer + r * W, W);
                    double a = angle(capbuf + zb * layer + r * W, capbuf + (zb + 1) * layer + r * W, W);
                    ang_id += a;
                    if (r % NT == NT - 1)
                        ang_id_last += a;
                }
                forward(params, tok[k], NB, NT, skip1);
                for (int64_t r = 0; r < rows[k] * NT; r++)
                    loss_skip1 += nll(logits + r * NV, tgt[k][r]);
                forward(params, tok[k], NB, NT, skipz);
                for (int64_t r = 0; r < rows[k] * NT; r++)
                    loss_skipz += nll(logits + r * NV, tgt[k][r]);
            }
            if (pass == 0 && k == 2)
                for (int64_t l = 0; l <= L; l++)
                    sum[l] /= (double)(rows_total * NT * W);
        }
    const double n_tok = (double)(rows_total * NT);
    loss /= n_tok, loss_skip1 /= n_tok, loss_skipz /= n_tok, ang12 /= n_tok;
    CHECK(rows_total == 12, "rows %lld", (long long)rows_total);
    for (int64_t l = 0; l <= L; l++) {
        double want = sq[l] / (double)(rows_total * NT * W);
        double got = csv_value(tu_path("an/variance.csv"), (int)l, -1, 1);
        CHECK(fabs(got - want) <= 1e-6 * want, "variance of layer %lld: analyze %.9g, direct %.9g", (long long)l,
              got, want);
    }
    CHECK(ang_id == 0 && ang_id_last == 0, "direct: the identity block moved the stream (%g)", ang_id);
    double g12 = csv_value(tu_path("an/angular.csv"), 1, 2, 3);
    CHECK(fabs(g12 - ang12) < 1e-6 && ang12 > 1e-3, "angular(1, 2) all tokens: analyze %.9g, direct %.9g", g12,
          ang12);
    double id_last = csv_value(tu_path("an/angular.csv"), zb + 1, 1, 2),
           id_all = csv_value(tu_path("an/angular.csv"), zb + 1, 1, 3);
    CHECK(id_last == 0 && id_all == 0, "angular distance across the identity block: last %g, all %g", id_last,
          id_all);
    double base = NAN;
    json_t *j = json_load_file(tu_path("an/analyze.json"), 0, NULL);
    CHECK(j != NULL, "no analyze.json");
    base = json_number_value(json_object_get(j, "val_loss"));
    CHECK(fabs(base - loss) < 1e-9 * loss, "val loss: analyze %.12g, direct %.12g", base, loss);
    /* Layer removal: the identity block exactly 0, block 1 its real effect. */
    double dz = csv_value(tu_path("an/removal.csv"), zb + 1, -1, 3);
    CHECK(dz == 0 && loss_skipz == loss, "skipping the identity block: drop %g (direct %g)", dz, loss_skipz - loss);
    double l1 = csv_value(tu_path("an/removal.csv"), 1, -1, 2);
    CHECK(fabs(l1 - loss_skip1) < 1e-6 && fabs(loss_skip1 - loss) > 1e-4,
          "loss without block 1: analyze %.9g, direct %.9g (with it %.9g)", l1, loss_skip1, loss);
    /* The task: loglik of each choice's ids after the context's, best = pick. */
    const int32_t ctx[3][4] = {{1, 2, 3, 4}, {9, 10}, {17}}, nctx[3] = {4, 2, 1};
    const int32_t ch[3][3][3] = {{{5, 6}, {7}}, {{11}, {12, 13}, {14}}, {{18, 19, 20}, {21}}};
    const int nch[3][3] = {{2, 1}, {1, 2, 1}, {3, 1}}, nchoice[3] = {2, 3, 2}, label[3] = {0, 2, 1};
    int right = 0;
    for (int i = 0; i < 3; i++) {
        int best = 0;
        double bestll = -INFINITY;
        for (int c = 0; c < nchoice[i]; c++) {
            int32_t seq[8];
            int n = 0;
            for (int k = 0; k < nctx[i]; k++)
                seq[n++] = ctx[i][k];
            for (int k = 0; k < nch[i][c]; k++)
                seq[n++] = ch[i][c][k];
            forward(params, seq, 1, n - 1, NULL);
            double ll = 0;
            for (int p = nctx[i]; p < n; p++)
                ll -= nll(logits + (p - 1) * NV, seq[p]);
            if (ll > bestll)
                bestll = ll, best = c;
        }
        right += best == label[i];
    }
    json_t *task = json_object_get(j, "task");
    double acc = json_number_value(json_object_get(task, "acc"));
    CHECK(fabs(acc - right / 3.0) < 1e-9, "task accuracy: analyze %g, direct %g", acc, right / 3.0);
    json_t *rz = json_array_get(json_object_get(j, "removal"), (size_t)zb);
    CHECK(json_number_value(json_object_get(rz, "acc")) == acc, "task accuracy without the identity block");
    json_decref(j);
    /* The pictures (gnuplot is a dependency of the plots). */
    CHECK(access(tu_path("an/variance.png"), F_OK) == 0 && access(tu_path("an/angular_last.png"), F_OK) == 0 &&
              access(tu_path("an/removal.png"), F_OK) == 0,
          "plots missing in %s", tu_path("an"));
    /* Bad input: a task with ids outside the vocabulary. */
    tf = fopen(tu_path("bad.jsonl"), "w");
    fprintf(tf, "{\"context\": \"Holmes\", \"choices\": [\"a\", \"b\"], \"label\": 0}\n");
    fclose(tf);
    rc = tc_run("analyze", "--ckpt", tu_path("ck.safetensors"), "--data", tu_path("val.bin"), "--batches", "1",
                "--task", tu_path("bad.jsonl"), "--out", tu_path("an2"), "--quiet", NULL);
    char *e = tu_slurp(tu_path("err.txt"), NULL);
    CHECK(rc == 1 && e && strstr(e, "bad.jsonl") && strstr(e, "outside the model's vocabulary"),
          "task out of the vocabulary: exit %d, %s", rc, e);
    free(e);
    free(sum), free(sq), free(params);
}

/* --- train --diag-every ----------------------------------------------------- */

/* The per-block gradient norms of diagnostics.jsonl's row at step, NL of
 * them into g; false if there is no such row. */
static bool diag_gnorms(const char *path, int64_t step, double *g)
{
    char *t = tu_slurp(path, NULL);
    bool found = false;
    for (char *line = t, *nl; line && *line && !found; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        json_t *j = json_loads(line, 0, NULL);
        if (json_integer_value(json_object_get(j, "step")) == step) {
            found = json_array_size(json_object_get(j, "grad_norm")) == NL;
            for (int b = 0; found && b < NL; b++)
                g[b] = json_number_value(json_array_get(json_object_get(j, "grad_norm"), (size_t)b));
        }
        json_decref(j);
    }
    free(t);
    return found;
}

static void test_diag(void)
{
    const StrataModelDesc *d = tc_model.desc;
    tc_write_shard("train.bin", 3000, lcg, &(uint32_t){3});
    int rc = tc_run("train", "--data", tu_path("train.bin"), "--val", tu_path("val.bin"), "--out", tu_path("run"),
                    "--batch", "4", "--seq", "16", "--steps", "6", "--diag-every", "3", "--val-every", "100",
                    "--threads", "1", "--quiet", NULL);
    CHECK(rc == 0, "train --diag-every exit %d", rc);
    char *t = tu_slurp(tu_path("run/diagnostics.jsonl"), NULL);
    CHECK(t != NULL, "no diagnostics.jsonl");
    int64_t steps[8];
    int n = 0;
    json_t *last = NULL;
    for (char *line = t, *nl; line && *line && n < 8; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        json_t *j = json_loads(line, 0, NULL);
        steps[n++] = json_integer_value(json_object_get(j, "step"));
        CHECK(json_array_size(json_object_get(j, "variance")) == NL + 1 &&
                  json_array_size(json_object_get(j, "grad_norm")) == NL &&
                  json_array_size(json_object_get(j, "update_ratio")) == NL,
              "diagnostics row %d: array lengths", n);
        for (int b = 0; b < NL; b++) {
            double g = json_number_value(json_array_get(json_object_get(j, "grad_norm"), (size_t)b));
            double u = json_number_value(json_array_get(json_object_get(j, "update_ratio"), (size_t)b));
            CHECK(g > 0 && isfinite(g) && u > 0 && u < 1, "row %d block %d: grad norm %g, update ratio %g", n, b, g,
                  u);
        }
        json_decref(last);
        last = j;
    }
    free(t);
    CHECK(n == 2 && steps[0] == 3 && steps[1] == 6, "diagnostics rows at %d steps (%lld, %lld), want 3 and 6", n,
          n > 0 ? (long long)steps[0] : -1LL, n > 1 ? (long long)steps[1] : -1LL);
    /* Step 6 is the last: its variances are those of the final checkpoint on
     * the first batch of --val. */
    int before = tu_fails;
    float *params = tc_weights(tu_path("run/checkpoint.safetensors"));
    if (tu_fails > before)
        exit(1);
    char *err = NULL;
    RtLoader ld;
    const char *vp = tu_path("val.bin");
    int32_t tok[NB * NT], tgt[NB * NT];
    if (rt_loader_init(&ld, &vp, 1, NB, NT, RT_LOADER_SEQUENTIAL, 0, &err)) {
        printf("FAIL %s\n", err);
        exit(1);
    }
    rt_loader_next(&ld, tok, tgt);
    rt_loader_free(&ld);
    forward(params, tok, NB, NT, NULL);
    const int64_t layer = NB * NT * d->width;
    for (int64_t l = 0; l <= NL; l++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < layer; i++)
            m += capbuf[l * layer + i];
        m /= (double)layer;
        for (int64_t i = 0; i < layer; i++)
            v += (capbuf[l * layer + i] - m) * (capbuf[l * layer + i] - m);
        v /= (double)layer;
        double got = json_number_value(json_array_get(json_object_get(last, "variance"), (size_t)l));
        CHECK(fabs(got - v) <= 1e-6 * v, "diag variance of layer %lld at step 6: %.9g, direct %.9g", (long long)l,
              got, v);
    }
    json_decref(last);
    CHECK(access(tu_path("run/diag_variance.png"), F_OK) == 0, "no diag_variance.png");
    free(params);
    /* Step 1's batches, whole and as two micro-batches of 2 (--accum 2):
     * the trainer scales the summed gradient in the optimizer's pass, and
     * the diagnostics must see the mean all the same (not twice it). */
    const char *outs[2] = {"run_one", "run_acc"}, *batch[2] = {"4", "2"}, *accum[2] = {"1", "2"};
    double gn[2][NL];
    for (int i = 0; i < 2; i++) {
        rc = tc_run("train", "--data", tu_path("train.bin"), "--val", tu_path("val.bin"), "--out", tu_path(outs[i]),
                    "--batch", batch[i], "--accum", accum[i], "--seq", "16", "--steps", "1", "--diag-every", "1",
                    "--val-every", "100", "--threads", "1", "--quiet", NULL);
        char path[64];
        snprintf(path, sizeof path, "%s/diagnostics.jsonl", outs[i]);
        CHECK(rc == 0 && diag_gnorms(tu_path(path), 1, gn[i]), "train --accum %s --diag-every 1: exit %d, no row",
              accum[i], rc);
    }
    double *g1 = gn[0], *g2 = gn[1];
    for (int b = 0; b < NL; b++)
        CHECK(fabs(g1[b] - g2[b]) <= 1e-4 * g1[b], "block %d's gradient norm at step 1: batch 4 %.9g, --accum 2 %.9g",
              b, g1[b], g2[b]);
}

int main(void)
{
    if (system("gnuplot --version > /dev/null 2>&1")) {
        printf("SKIP: no gnuplot\n");
        return 77;
    }
    static const char *defs[] = {"vocab=32", "d=16", "L=4", "heads=2", "ffn=24", "ctx=16"};
    int rc = tc_open("analyze_test", defs, 6, "{\"vocab\": 32, \"ctx\": 16}");
    if (rc)
        return rc;
    tc_echo_stderr = true;
    arena = tc_arena(NB, NT, &arena_bytes);
    logits = calloc((size_t)NB * NT * NV, sizeof *logits);
    capbuf = calloc((size_t)(NL + 1) * NB * NT * tc_model.desc->width, sizeof *capbuf);
    test_analyze();
    test_diag();
    rc = tc_close("analyze_test");
    free(arena), free(logits), free(capbuf);
    return rc;
}
