/* train_test.c - the training runtime (rt_trainer_main: train, eval,
 * sample) on models/pre_ln.strata at a tiny size, JIT-compiled, with
 * synthetic shards in a temporary directory; plus the statistics of the
 * parameter init (runtime/train/init.c).  Every expected value is computed here
 * from definitions (formulas, argmax, a direct train_step call), never
 * taken from the code under test.  Exit 0 pass, 1 fail, 77 skip. */
#include "store/checkpoint.h"
#include "train/init.h"
#include "train_case.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NV 32 /* vocab */
#define NT 16 /* seq */

/* --- init ----------------------------------------------------------------- */

static void moments(const float *x, int64_t n, double *mean, double *std)
{
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        ss += (x[i] - *mean) * (x[i] - *mean);
    *std = sqrt(ss / (double)n);
}

static void test_init(void)
{
    enum { N = 200000 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    double mean, std;
    /* Normal, std 0.02: the mean of N draws is within 5 standard errors. */
    StrataParam p = {.name = "w", .dims = {400, 500}, .numel = N, .init_a = 0.02, .ndim = 2,
                     .init = STRATA_INIT_NORMAL};
    rt_init_param(&p, 3, 42, x);
    moments(x, N, &mean, &std);
    CHECK(fabs(mean) < 5 * 0.02 / sqrt(N), "normal mean %g", mean);
    CHECK(fabs(std / 0.02 - 1) < 0.01, "normal std %g, want 0.02", std);
    /* Same seed and index: same values; another index or seed: others. */
    rt_init_param(&p, 3, 42, y);
    CHECK(!memcmp(x, y, N * sizeof *x), "init is not deterministic");
    rt_init_param(&p, 4, 42, y);
    CHECK(memcmp(x, y, N * sizeof *x), "two parameters got the same stream");
    rt_init_param(&p, 3, 43, y);
    CHECK(memcmp(x, y, N * sizeof *x), "two seeds gave the same values");
    /* Truncated normal N(0, 1) on [-2, 2]: variance 1 - 2 * 2 phi(2) / (Phi(2) - Phi(-2)). */
    p.init = STRATA_INIT_TRUNC_NORMAL, p.init_a = 1, p.init_b = -2, p.init_c = 2;
    rt_init_param(&p, 0, 7, x);
    double lo = 0, hi = 0, phi2 = exp(-2.0) / sqrt(2 * M_PI), Z = erf(2 / sqrt(2.0));
    for (int i = 0; i < N; i++)
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
    moments(x, N, &mean, &std);
    CHECK(lo >= -2 && hi <= 2, "truncated normal outside [-2, 2]: [%g, %g]", lo, hi);
    CHECK(lo < -1.9 && hi > 1.9, "truncated normal does not reach its bounds: [%g, %g]", lo, hi);
    CHECK(fabs(std - sqrt(1 - 4 * phi2 / Z)) < 0.01, "truncated std %g, want %g", std, sqrt(1 - 4 * phi2 / Z));
    CHECK(fabs(mean) < 0.01, "truncated mean %g", mean);
    /* Asymmetric bounds [0, 0.5] with std 0.1: all inside. */
    p.init_a = 0.1, p.init_b = 0, p.init_c = 0.5;
    rt_init_param(&p, 1, 7, x);
    lo = 1, hi = -1;
    for (int i = 0; i < N; i++)
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
    CHECK(lo >= 0 && hi <= 0.5, "truncated [0, 0.5] gave [%g, %g]", lo, hi);
    /* Xavier, gain 2, [400, 500]: std 2 sqrt(2 / 900). */
    p.init = STRATA_INIT_XAVIER, p.init_a = 2;
    rt_init_param(&p, 2, 7, x);
    moments(x, N, &mean, &std);
    CHECK(fabs(std / (2 * sqrt(2.0 / 900)) - 1) < 0.01, "xavier std %g, want %g", std, 2 * sqrt(2.0 / 900));
    /* Zeros, ones, constant. */
    StrataParam c = {.name = "g", .dims = {100, 0}, .numel = 100, .init_a = 0.25, .ndim = 1};
    const int kinds[3] = {STRATA_INIT_ZEROS, STRATA_INIT_ONES, STRATA_INIT_CONSTANT};
    const float want[3] = {0, 1, 0.25f};
    for (int k = 0; k < 3; k++) {
        c.init = kinds[k];
        rt_init_param(&c, 0, 1, x);
        for (int i = 0; i < 100; i++)
            if (x[i] != want[k]) {
                CHECK(0, "init kind %d: element %d is %g, want %g", kinds[k], i, x[i], want[k]);
                break;
            }
    }
    free(x), free(y);
}

/* --- training ------------------------------------------------------------- */

static int32_t pattern(int64_t i, void *ctx) /* a repeating 0..9: learnable */
{
    return (int32_t)(i % 10);
}

static int32_t too_big(int64_t i, void *ctx)
{
    return i == 50 ? NV : 1;
}

#define COMMON "--threads", "1", "--quiet", "--batch", "8", "--seq", "16"

static void test_train(void)
{
    char data[512], val[512], a[512], b[512], c[512], dd[512];
    snprintf(data, sizeof data, "%s/train_*.bin", tu_dir);
    snprintf(val, sizeof val, "%s/val.bin", tu_dir);
    snprintf(a, sizeof a, "%s/a", tu_dir), snprintf(b, sizeof b, "%s/b", tu_dir);
    snprintf(c, sizeof c, "%s/c", tu_dir), snprintf(dd, sizeof dd, "%s/d", tu_dir);
    tc_write_shard("train_000.bin", 3000, pattern, NULL);
    tc_write_shard("train_001.bin", 1500, pattern, NULL);
    tc_write_shard("val.bin", 1000, pattern, NULL);
    tc_write_shard("bad.bin", 200, too_big, NULL);

    /* Usage errors. */
    CHECK(tc_run("train", "--bogus", "1", NULL) == 2 && tc_file_has("err.txt", "'--bogus'"), "unknown option");
    CHECK(tc_run("train", "--batch", "x", NULL) == 2 && tc_file_has("err.txt", "--batch"), "non-integer --batch");
    CHECK(tc_run("frobnicate", NULL) == 2, "unknown command");
    CHECK(tc_run("--help", NULL) == 0, "--help");
    CHECK(tc_run("train", "--data", data, "--out", a, "--resume", COMMON, NULL) == 1 &&
              tc_file_has("err.txt", "no checkpoint"),
          "--resume without a checkpoint");
    CHECK(tc_run("train", "--data", tu_path("bad.bin"), "--out", a, COMMON, NULL) == 1 &&
              tc_file_has("err.txt", "bad.bin"),
          "token id >= vocab");
    CHECK(tc_run("train", "--data", tu_path("nothing*.bin"), "--out", a, COMMON, NULL) == 1 &&
              tc_file_has("err.txt", "nothing"),
          "no shards");

    /* 1. Learning: 120 steps on a repeating pattern. */
    int rc = tc_run("train", "--data", data, "--val", val, "--out", a, "--steps", "120", "--lr", "1e-2", "--val-every",
                    "60", "--val-batches", "0", "--ckpt-every", "1000", COMMON, NULL);
    char *metrics = tu_path("a/metrics.jsonl");
    double l0 = tc_first_loss(metrics), lv = tc_last_val_loss(metrics);
    CHECK(rc == 0, "train exited %d", rc);
    CHECK(fabs(l0 - log(NV)) < 0.5, "first loss %g, expected near log 32 = %g", l0, log(NV));
    CHECK(lv < 0.3, "final validation loss %g after 120 steps on a periodic sequence (first loss %g)", lv, l0);
    printf("learning: first loss %.4f, final val loss %.4f\n", l0, lv);

    /* 2. Resume: 40 straight vs 20 + --exit-after, then --resume. */
    const char *ro[] = {"--steps", "40", "--lr", "3e-3", "--ckpt-every", "1000", "--val", val, "--val-every", "10"};
    rc = tc_run("train", "--data", data, "--out", b, ro[0], ro[1], ro[2], ro[3], ro[4], ro[5], ro[6], ro[7], ro[8],
                ro[9], COMMON, NULL);
    CHECK(rc == 0, "straight run exited %d", rc);
    rc = tc_run("train", "--data", data, "--out", c, ro[0], ro[1], ro[2], ro[3], ro[4], ro[5], ro[6], ro[7], ro[8],
                ro[9], "--exit-after", "20", "--threads", "2", "--quiet", "--batch", "8", "--seq", "16", NULL);
    CHECK(rc == 0, "--exit-after run exited %d", rc);
    CHECK(tc_run("train", "--out", c, "--resume", "--batch", "4", "--quiet", NULL) == 1 &&
              tc_file_has("err.txt", "--batch 4") && tc_file_has("err.txt", "--batch 8"),
          "conflicting --batch on resume");
    rc = tc_run("train", "--out", c, "--resume", "--quiet", "--threads", "1", NULL);
    CHECK(rc == 0, "resumed run exited %d", rc);
    const char *groups[3] = {"", "optim.m.", "optim.v."};
    for (int k = 0; k < 3; k++) {
        double scale;
        bool same;
        double d = tc_tensor_diff(tu_path("b/checkpoint.safetensors"), tu_path("c/checkpoint.safetensors"), groups[k],
                                  &scale, &same);
        CHECK(d == 0 && same, "resume: tensors '%s*' differ from the straight run (max |diff| %g)", groups[k], d);
    }
    int lines_b = tc_count_lines(tu_path("b/metrics.jsonl")), lines_c = tc_count_lines(tu_path("c/metrics.jsonl"));
    CHECK(lines_b == lines_c && lines_b == 44, "metrics rows: straight %d, resumed %d, want 40 + 4 val", lines_b,
          lines_c);

    /* 3. Accumulation: batch 8 vs 4 x 2, one step, no clipping. */
    rc = tc_run("train", "--data", data, "--out", dd, "--steps", "1", "--warmup", "0", "--clip", "0", "--threads", "1",
                "--quiet", "--batch", "8", "--seq", "16", NULL);
    int rc2 = tc_run("train", "--data", data, "--out", tu_path("e"), "--steps", "1", "--warmup", "0", "--clip", "0",
                     "--threads", "1", "--quiet", "--batch", "4", "--accum", "2", "--seq", "16", NULL);
    CHECK(rc == 0 && rc2 == 0, "accumulation runs exited %d, %d", rc, rc2);
    double la = tc_first_loss(tu_path("d/metrics.jsonl")), lb = tc_first_loss(tu_path("e/metrics.jsonl"));
    CHECK(fabs(la - lb) <= 1e-6 * fabs(la), "first-step loss: batch 8 %.9g, 4 x 2 %.9g", la, lb);
    for (int k = 0; k < 3; k++) {
        double scale;
        bool same;
        double d = tc_tensor_diff(tu_path("d/checkpoint.safetensors"), tu_path("e/checkpoint.safetensors"), groups[k],
                                  &scale, &same);
        /* m = 0.1 g, v = 0.05 g^2: float sums in another order, 1e-5 of the largest. */
        double tol = k == 0 ? 1e-3 * 1e-3 : 1e-5 * scale;
        CHECK(d >= 0 && d <= tol, "accumulation: '%s*' differ by %g (tolerance %g, scale %g)", groups[k], d, tol,
              scale);
        if (k == 1)
            printf("accumulation: first moments differ by %.3g of a largest %.3g\n", d, scale);
    }

    /* 4. --init with a mismatched checkpoint. */
    float *w = tc_weights(tu_path("b/checkpoint.safetensors"));
    const StrataModelDesc *md = tc_model.desc;
    for (int mode = 0; mode < 3; mode++) { /* 0: a shape, 1: a missing tensor, 2: an extra one */
        RtStWriter sw;
        rt_st_writer_init(&sw);
        char *err = NULL;
        const StrataParam *p0 = &md->params[0];
        for (int64_t i = 0; i < md->nparams; i++) {
            const StrataParam *p = &md->params[i];
            int64_t shape[2];
            int nd = rt_ckpt_shape(p, shape);
            if (i == 0 && mode == 1)
                continue;
            if (i == 0 && mode == 0)
                shape[0] -= 1;
            rt_st_add(&sw, p->name, RT_F32, shape, nd, w + p->offset, &err);
        }
        int64_t one = 1;
        if (mode == 2)
            rt_st_add(&sw, "surplus", RT_F32, &one, 1, w, &err);
        char *bad = tu_path("bad.safetensors");
        if (rt_st_write(&sw, bad, &err))
            printf("FAIL %s\n", err), tu_fails++;
        rt_st_writer_free(&sw);
        rc = tc_run("train", "--data", data, "--out", tu_path("f"), "--steps", "2", "--init", bad, COMMON, NULL);
        char want[512];
        int64_t s[2];
        rt_ckpt_shape(p0, s);
        if (mode == 0)
            snprintf(want, sizeof want, "%s: tensor '%s' has shape [%lld, %lld] in the checkpoint but [%lld, %lld]",
                     bad, p0->name, (long long)s[0] - 1, (long long)s[1], (long long)s[0], (long long)s[1]);
        else if (mode == 1)
            snprintf(want, sizeof want, "%s: tensor '%s' (shape [%lld, %lld] in the model) is missing", bad, p0->name,
                     (long long)s[0], (long long)s[1]);
        else
            snprintf(want, sizeof want, "%s: tensor 'surplus' (shape [1] in the checkpoint) is not a parameter", bad);
        CHECK(rc == 1 && tc_file_has("err.txt", want), "--init mismatch %d: exit %d, want a message with: %s", mode, rc,
              want);
    }
    /* --init with the right tensors: step 0 gives the checkpoint's loss. */
    CHECK(tc_run("train", "--data", data, "--out", tu_path("g"), "--steps", "1", "--init",
                 tu_path("b/checkpoint.safetensors"), COMMON, NULL) == 0,
          "--init from a good checkpoint");
    double lb_init = tc_first_loss(tu_path("g/metrics.jsonl"));
    CHECK(lb_init < 2.5, "--init: first loss %g is not that of the trained weights", lb_init);

    /* 5. NaN: --resume with an absurd rate must stop and keep the checkpoint. */
    size_t n0, n1;
    char *before = tu_slurp(tu_path("b/checkpoint.safetensors"), &n0);
    rc = tc_run("train", "--out", b, "--resume", "--steps", "60", "--lr", "1e30", "--warmup", "0", "--quiet", NULL);
    char *after = tu_slurp(tu_path("b/checkpoint.safetensors"), &n1);
    CHECK(rc == 1, "NaN run exited %d, want 1", rc);
    CHECK(tc_file_has("err.txt", "stopping, nothing saved (last checkpoint: ") &&
              tc_file_has("err.txt", "checkpoint.safetensors at step 40)"),
          "NaN message");
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0), "the checkpoint changed after a NaN stop");
    rc = tc_run("train", "--out", b, "--resume", "--steps", "80", "--lr", "1e30", "--warmup", "0", "--on-nan", "skip",
                "--quiet", NULL);
    free(after);
    after = tu_slurp(tu_path("b/checkpoint.safetensors"), &n1);
    CHECK(rc == 1 && tc_file_has("err.txt", "10 consecutive steps skipped"), "--on-nan skip: exit %d", rc);
    CHECK(after && n0 == n1 && !memcmp(before, after, n0), "the checkpoint changed after 10 skips");
    free(before), free(after);

    /* 6. Eval: forward-only loss = the train step's loss on the same batch. */
    CHECK(tc_run("eval", "--ckpt", tu_path("b/checkpoint.safetensors"), "--data", val, "--batch", "2", "--seq", "16",
                 "--batches", "1", "--threads", "1", NULL) == 0,
          "eval failed");
    char *out = tu_slurp(tu_path("out.txt"), NULL), *at = out ? strstr(out, "loss ") : NULL;
    double eval_loss = at ? strtod(at + 5, NULL) : NAN;
    CHECK(out && strstr(out, "tokens 32 |"), "eval output: %s", out ? out : "(none)");
    free(out);
    int32_t tok[2 * NT], tgt[2 * NT];
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < NT; t++)
            tok[r * NT + t] = pattern(r * NT + t, NULL), tgt[r * NT + t] = pattern(r * NT + t + 1, NULL);
    int64_t ab;
    void *arena = tc_arena(2, NT, &ab);
    float *grads = calloc((size_t)md->params_numel, sizeof *grads);
    double step_loss = NAN;
    StrataStep s = {.params = w, .grads = grads, .arena = arena, .arena_bytes = ab, .tokens = tok, .targets = tgt,
                    .B = 2, .T = NT, .loss = &step_loss};
    CHECK(tc_model.train_step(&s) == 0, "train_step failed");
    CHECK(fabs(eval_loss - step_loss) <= 1e-5, "eval loss %.9g, train step loss %.9g", eval_loss, step_loss);
    printf("eval: forward-only %.6f, train step %.9f\n", eval_loss, step_loss);
    free(grads), free(arena);

    /* 7. Sample, temperature 0 = argmax decoding done here. */
    const char prompt[] = "\x01\x02\x03";
    int ntok = 20;
    char nt[8];
    snprintf(nt, sizeof nt, "%d", ntok);
    CHECK(tc_run("sample", "--ckpt", tu_path("b/checkpoint.safetensors"), "--prompt", prompt, "--tokens", nt,
                 "--temperature", "0", "--threads", "1", NULL) == 0,
          "sample failed");
    size_t n_out;
    char *got = tu_slurp(tu_path("out.txt"), &n_out);
    int32_t seq[64] = {1, 2, 3};
    int n = 3;
    arena = tc_arena(1, NT, &ab);
    float *logits = malloc((size_t)NT * NV * sizeof *logits);
    for (int k = 0; k < ntok; k++) {
        int win = n < NT ? n : NT;
        StrataStep f = {.params = w, .arena = arena, .arena_bytes = ab, .tokens = seq + n - win, .B = 1, .T = win,
                        .logits = logits};
        tc_model.forward(&f);
        seq[n++] = tc_argmax(logits + (size_t)(win - 1) * NV, NV);
    }
    char want[64];
    for (int i = 0; i < n; i++)
        want[i] = (char)seq[i];
    want[n] = '\n';
    CHECK(got && n_out == (size_t)n + 1 && !memcmp(got, want, (size_t)n + 1),
          "greedy sample differs from argmax decoding (%zu bytes, want %d)", n_out, n + 1);
    int correct = 0;
    for (int i = 3; i < n; i++)
        correct += seq[i] == (seq[i - 1] + 1) % 10;
    printf("sample: %d of %d greedy tokens continue the pattern\n", correct, n - 3);
    CHECK(tc_run("sample", "--ckpt", tu_path("b/checkpoint.safetensors"), "--prompt", prompt, "--tokens", nt,
                 "--temperature", "0", "--threads", "2", NULL) == 0,
          "sample failed");
    char *again = tu_slurp(tu_path("out.txt"), NULL);
    CHECK(got && again && !memcmp(got, again, n_out), "greedy sampling is not deterministic");
    free(got), free(again), free(logits), free(arena), free(w);
    /* Sampling with a temperature runs and is reproducible for a seed. */
    CHECK(tc_run("sample", "--ckpt", tu_path("b/checkpoint.safetensors"), "--prompt", prompt, "--tokens", "8",
                 "--top-k", "3", "--top-p", "0.9", "--seed", "5", "--threads", "1", NULL) == 0,
          "sample with top-k/top-p failed");
}

int main(void)
{
    test_init();
    static const char *defs[] = {"vocab=32", "d=16", "L=2", "heads=2", "ffn=24", "ctx=16"};
    int rc = tc_open("train_test", defs, 6,
                     "{\"vocab\": 32, \"d\": 16, \"L\": 2, \"heads\": 2, \"ffn\": 24, \"rope\": 10000, \"ctx\": 16}");
    if (rc)
        return rc;
    test_train();
    return tc_close("train_test");
}
