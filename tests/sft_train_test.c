/* sft_train_test.c - `sft` and `evaltask` (runtime/cmd/sft.c, cmd/evaltask.c)
 * on models/pre_ln.strata at a tiny size with a 256-byte vocabulary,
 * JIT-compiled, through rt_trainer_main, plus direct train_step calls:
 *   - the response-only mask: prompt-side targets do not change the loss or
 *     the gradients (bitwise), a response-side one does; the masked loss
 *     equals a log-softmax computed here; a mask covering every position
 *     gives the unmasked (pretraining) loss;
 *   - --accum K: the same loss, gradient norm and weights as a K times
 *     larger batch (token-weighted over micro-batches);
 *   - a skipped record is never trained on (weights byte-identical to a run
 *     without it), an extra kept one is; sft resume is bit-identical;
 *     sft's validation loss equals the response-only loss computed here;
 *   - evaltask mc: picks and both accuracies equal those of log-likelihoods
 *     computed here, an item where acc and acc_norm differ, a pattern model
 *     picking the continuation; gen: outputs equal argmax decoding here.
 * Exit 0 pass, 1 fail, 77 skip (no JIT). */
#include "train/init.h"
#include "train/sft.h"
#include "data/tokenizer.h"
#include "train_case.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NV 256 /* vocab: raw bytes */
#define NT 64  /* seq */

/* The logits (1, n, NV) of ids[0..n) under w, into out. */
static void forward1(const float *w, const int32_t *ids, int n, float *out)
{
    int64_t ab;
    void *arena = tc_arena(1, n, &ab);
    StrataStep s = {.params = (void *)w, .arena = arena, .arena_bytes = ab, .tokens = ids, .B = 1, .T = n,
                    .logits = out};
    CHECK(tc_model.forward(&s) == 0, "forward failed");
    free(arena);
}

static void spit(const char *name, const char *text)
{
    tu_write(tu_path(name), text, strlen(text));
}

/* --- 1. the mask, through train_step --------------------------------------- */

static int64_t enc_bytes(void *ctx, const char *text, size_t len, int32_t **ids)
{
    return rt_tok_encode_ordinary(ctx, text, len, ids);
}

static const char RECORDS[] =
    "{\"prompt\": \"abc\", \"response\": \"defg\"}\n"
    "{\"instruction\": \"say hi\", \"input\": \"now\", \"output\": \"hi there\"}\n"
    "\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"u1\"}, {\"role\": \"assistant\", \"content\": \"a1\"},"
    " {\"role\": \"user\", \"content\": \"u2\"}, {\"role\": \"assistant\", \"content\": \"a2!\"}]}\n"
    "{\"question\": \"6 * 7?\", \"answer\": \"42\"}\n";

static void test_mask(void)
{
    const StrataModelDesc *d = tc_model.desc;
    const int B = 4, T = NT;
    RtTokenizer *tk = rt_tok_bytes();
    RtSftSet set;
    char *err = NULL;
    CHECK(rt_sft_load_text(&set, "records", RECORDS, strlen(RECORDS), T, enc_bytes, tk, 0, &err) == 0 && set.n == 4,
          "loading the records: %s", err ? err : "wrong count");
    int32_t tok[4 * NT], tgt[4 * NT], tgt2[4 * NT];
    float mask[4 * NT], ones[4 * NT];
    rt_sft_batch(&set, 0, B, T, 0, tok, tgt, mask);
    float *w = aligned_alloc(64, (size_t)(d->params_numel * 4 + 63) / 64 * 64);
    rt_init_params(d, w, 7);
    size_t gbytes = (size_t)d->params_numel * sizeof(float);
    float *g1 = calloc(1, gbytes), *g2 = calloc(1, gbytes), *g3 = calloc(1, gbytes);
    float *logits = malloc((size_t)B * T * NV * sizeof *logits);
    int64_t ab;
    void *arena = tc_arena(B, T, &ab);
    double l1 = NAN, l2 = NAN, l3 = NAN;
    StrataStep s = {.params = w, .grads = g1, .arena = arena, .arena_bytes = ab, .tokens = tok, .targets = tgt,
                    .mask = mask, .B = B, .T = T, .loss = &l1, .logits = logits};
    CHECK(tc_model.train_step(&s) == 0, "train_step failed");
    /* The masked loss by definition: mean over response targets. */
    double sum = 0;
    int n = 0, nprompt = 0;
    for (int r = 0; r < B * T; r++)
        if (mask[r] != 0)
            sum -= tc_logp(logits + (size_t)r * NV, NV, tgt[r]), n++;
        else
            nprompt++;
    CHECK(n > 0 && nprompt > 0, "the batch has %d response and %d other targets", n, nprompt);
    CHECK(fabs(l1 - sum / n) <= 1e-5 * fabs(sum / n), "masked loss %.9g, response-only mean here %.9g", l1,
          sum / n);
    /* Prompt-side (and padding) targets changed: the same loss and gradients, bitwise. */
    for (int r = 0; r < B * T; r++)
        tgt2[r] = mask[r] != 0 ? tgt[r] : (tgt[r] * 31 + 17) % NV;
    s.targets = tgt2, s.grads = g2, s.loss = &l2, s.logits = NULL;
    CHECK(tc_model.train_step(&s) == 0, "train_step failed");
    CHECK(!memcmp(&l1, &l2, sizeof l1), "loss changed with prompt-side targets: %.17g vs %.17g", l1, l2);
    CHECK(!memcmp(g1, g2, gbytes), "gradients changed with prompt-side targets");
    /* Control: one response-side target changed does change them. */
    for (int r = 0; r < B * T; r++)
        if (mask[r] != 0) {
            tgt2[r] = (tgt[r] + 1) % NV;
            break;
        }
    s.grads = g3, s.loss = &l3;
    CHECK(tc_model.train_step(&s) == 0, "train_step failed");
    CHECK(l3 != l1 && memcmp(g1, g3, gbytes), "a response-side target did not change the loss (%.9g)", l3);
    printf("mask: %d response targets, %d others; loss %.6f unchanged bitwise by the others\n", n, nprompt, l1);

    /* 2. A record whose mask covers everything: the pretraining loss. */
    uint8_t all[NT + 1];
    int32_t ids[NT + 1];
    for (int i = 0; i <= NT; i++)
        ids[i] = "the quick brown fox jumps over the lazy dog "[i % 44], all[i] = 1;
    RtSftExample ex = {ids, all, NT + 1};
    RtSftSet one = {.ex = &ex, .n = 1};
    rt_sft_batch(&one, 0, 1, T, 0, tok, tgt, mask);
    bool covered = true;
    for (int i = 0; i < T; i++) {
        covered &= mask[i] == 1.0f && tok[i] == ids[i] && tgt[i] == ids[i + 1];
        ones[i] = 1;
    }
    CHECK(covered, "a record with every token a response token: not every target is in the loss");
    int64_t ab1;
    void *arena1 = tc_arena(1, T, &ab1);
    StrataStep full = {.params = w, .grads = g1, .arena = arena1, .arena_bytes = ab1, .tokens = tok,
                       .targets = tgt, .mask = mask, .B = 1, .T = T, .loss = &l1, .logits = logits};
    StrataStep pre = full;
    pre.mask = NULL, pre.grads = g2, pre.loss = &l2, pre.logits = NULL;
    CHECK(tc_model.train_step(&full) == 0 && tc_model.train_step(&pre) == 0, "train_step failed");
    sum = 0;
    for (int i = 0; i < T; i++)
        sum -= tc_logp(logits + (size_t)i * NV, NV, tgt[i]);
    double gd = 0, gs = 0;
    for (int64_t i = 0; i < d->params_numel; i++)
        gd = fmax(gd, fabs((double)g1[i] - g2[i])), gs = fmax(gs, fabs((double)g2[i]));
    CHECK(fabs(l1 - l2) <= 1e-6 * l2 && fabs(l2 - sum / T) <= 1e-5 * l2,
          "full mask %.9g, pretraining (no mask) %.9g, mean cross-entropy here %.9g", l1, l2, sum / T);
    CHECK(gd <= 1e-6 * gs, "full-mask gradients differ from unmasked ones by %g (largest %g)", gd, gs);
    printf("full mask: loss %.7f, unmasked %.7f, here %.7f\n", l1, l2, sum / T);
    (void)ones;
    free(arena1), free(arena), free(logits), free(g1), free(g2), free(g3), free(w);
    rt_sft_free(&set);
    rt_tok_free(tk);
}

/* --- 3. sft runs ----------------------------------------------------------- */

static const char PAT[] = "abcdefgh";

/* Record i: 8 pattern bytes from offset i, then the next 8. */
static void record(char *buf, size_t n, int i)
{
    char p[9], r[9];
    for (int k = 0; k < 8; k++)
        p[k] = PAT[(i + k) % 8], r[k] = PAT[(i + 8 + k) % 8];
    p[8] = r[8] = 0;
    snprintf(buf, n, "{\"prompt\": \"%s %d\", \"response\": \"%s\"}\n", p, i, r);
}

static int32_t pattern_byte(int64_t i, void *ctx)
{
    return PAT[i % 8];
}

/* The response-only loss of records [first, first+n) by the template of
 * sft.h, built here byte by byte, one record per forward call. */
static double val_loss_here(const float *w, int first, int n)
{
    double sum = 0;
    int count = 0;
    float *logits = malloc((size_t)NT * NV * sizeof *logits);
    for (int i = first; i < first + n; i++) {
        char p[9], r[9], text[256];
        for (int k = 0; k < 8; k++)
            p[k] = PAT[(i + k) % 8], r[k] = PAT[(i + 8 + k) % 8];
        p[8] = r[8] = 0;
        int plen = snprintf(text, sizeof text, "### Prompt:\n%s %d\n### Response:\n", p, i);
        int len = snprintf(text + plen, sizeof text - (size_t)plen, "%s", r) + plen + 1; /* + EOT (byte 0) */
        int32_t ids[NT];
        for (int k = 0; k < len; k++)
            ids[k] = k < len - 1 ? (unsigned char)text[k] : 0;
        forward1(w, ids, len - 1, logits);
        for (int t = plen - 1; t < len - 1; t++) /* targets ids[plen .. len-1]: the response and EOT */
            sum -= tc_logp(logits + (size_t)t * NV, NV, ids[t + 1]), count++;
    }
    free(logits);
    return sum / count;
}

#define SFT_COMMON "--threads", "1", "--batch", "4", "--seq", "64", "--steps", "12", "--lr", "3e-3", "--val-every", "6"

static void test_sft(void)
{
    char buf[256], data[4096] = "", data_skip[8192] = "", data_more[4096] = "", val[1024] = "";
    for (int i = 0; i < 10; i++) {
        record(buf, sizeof buf, i);
        strcat(data, buf), strcat(data_more, buf), strcat(data_skip, buf);
        if (i == 4) { /* no assistant message; and a prompt longer than 65 tokens: both skipped */
            strcat(data_skip, "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}\n");
            strcat(data_skip, "{\"prompt\": \"");
            for (int k = 0; k < 80; k++)
                strcat(data_skip, "z");
            strcat(data_skip, "\", \"response\": \"never\"}\n");
        }
    }
    record(buf, sizeof buf, 10), strcat(data_more, buf);
    for (int i = 20; i < 24; i++)
        record(buf, sizeof buf, i), strcat(val, buf);
    spit("sft.jsonl", data), spit("sft_skip.jsonl", data_skip), spit("sft_more.jsonl", data_more);
    spit("sft_val.jsonl", val);
    char init[256], ca[256], cb[256], cd[256];
    snprintf(init, sizeof init, "%s", tu_path("pre/checkpoint.safetensors"));
    snprintf(ca, sizeof ca, "%s", tu_path("sA/checkpoint.safetensors"));
    snprintf(cb, sizeof cb, "%s", tu_path("sB/checkpoint.safetensors"));
    snprintf(cd, sizeof cd, "%s", tu_path("sD/checkpoint.safetensors"));

    /* Usage and input errors. */
    CHECK(tc_run("sft", "--data", tu_path("none.jsonl"), "--out", tu_path("x"), "--quiet", NULL) == 1 &&
              tc_file_has("err.txt", "none.jsonl"),
          "missing data file");
    spit("bad.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"nope\": 1}\n");
    CHECK(tc_run("sft", "--data", tu_path("bad.jsonl"), "--out", tu_path("x"), "--quiet", NULL) == 1 &&
              tc_file_has("err.txt", "bad.jsonl:2:"),
          "a bad record names the file and line");
    CHECK(tc_run("sft", "--out", tu_path("x"), "--quiet", NULL) == 2 && tc_file_has("err.txt", "--data FILE.jsonl"),
          "sft without --data");

    /* A: the reference run; B: two extra skipped records; C: one extra kept record. */
    int rc = tc_run("sft", "--init", init, "--data", tu_path("sft.jsonl"), "--val", tu_path("sft_val.jsonl"), "--out",
                    tu_path("sA"), SFT_COMMON, NULL);
    CHECK(rc == 0, "sft A exited %d", rc);
    CHECK(tc_file_has("err.txt", "data ") && tc_file_has("err.txt", "10 records, 10 kept, 0 skipped"), "A's counts");
    rc = tc_run("sft", "--init", init, "--data", tu_path("sft_skip.jsonl"), "--val", tu_path("sft_val.jsonl"), "--out",
                tu_path("sB"), SFT_COMMON, NULL);
    CHECK(rc == 0, "sft B exited %d", rc);
    CHECK(tc_file_has("err.txt", "12 records, 10 kept, 2 skipped (no response tokens), 1 truncated"), "B's counts");
    rc = tc_run("sft", "--init", init, "--data", tu_path("sft_more.jsonl"), "--out", tu_path("sC"), SFT_COMMON,
                "--quiet", NULL);
    CHECK(rc == 0, "sft C exited %d", rc);
    CHECK(tc_same_tensors(ca, cb, "") && tc_same_tensors(ca, cb, "optim.m.") && tc_same_tensors(ca, cb, "optim.v."),
          "skipped records changed the fine-tuned weights");
    CHECK(!tc_same_tensors(ca, tu_path("sC/checkpoint.safetensors"), ""), "an extra kept record changed nothing");
    CHECK(!tc_same_tensors(ca, init, ""), "sft did not change the weights");

    /* Validation: the response-only loss, computed here. */
    float *w = tc_weights(ca);
    double here = val_loss_here(w, 20, 4), got = tc_last_val_loss(tu_path("sA/metrics.jsonl"));
    CHECK(fabs(here - got) <= 1e-5 * here, "sft val loss %.9g, response-only loss here %.9g", got, here);
    float *w0 = tc_weights(init);
    printf("sft: response-only val loss %.4f after 12 steps (here %.4f; before %.4f)\n", got, here,
           val_loss_here(w0, 20, 4));
    free(w), free(w0);

    /* Resume: 5 steps, then the rest; bit-identical to A. */
    rc = tc_run("sft", "--init", init, "--data", tu_path("sft.jsonl"), "--val", tu_path("sft_val.jsonl"), "--out",
                tu_path("sD"), SFT_COMMON, "--exit-after", "5", "--quiet", NULL);
    CHECK(rc == 0, "sft --exit-after exited %d", rc);
    CHECK(tc_run("train", "--out", tu_path("sD"), "--resume", "--quiet", NULL) == 1 &&
              tc_file_has("err.txt", "resume it with sft"),
          "train --resume of an sft run");
    rc = tc_run("sft", "--out", tu_path("sD"), "--resume", "--quiet", "--threads", "2", NULL);
    CHECK(rc == 0, "sft --resume exited %d", rc);
    CHECK(tc_same_tensors(ca, cd, "") && tc_same_tensors(ca, cd, "optim.m.") && tc_same_tensors(ca, cd, "optim.v."),
          "resumed sft differs from the straight run");
    int la = tc_count_lines(tu_path("sA/metrics.jsonl")), ld = tc_count_lines(tu_path("sD/metrics.jsonl"));
    CHECK(la == 14 && ld == 14, "metrics rows: straight %d, resumed %d, want 12 + 2 val", la, ld);
}

/* --- 3b. --accum: one big batch --------------------------------------------- */

/* Each step's "loss" and "grad_norm" of a metrics file, up to n rows. */
static int step_rows(const char *metrics, double *loss, double *gnorm, int n)
{
    char *t = tu_slurp(metrics, NULL), *p = t;
    int k = 0;
    while (p && k < n && (p = strstr(p, "\"loss\": "))) {
        loss[k] = strtod(p + 8, NULL);
        char *g = strstr(p, "\"grad_norm\": ");
        gnorm[k++] = g ? strtod(g + 13, NULL) : NAN;
        p += 8;
    }
    free(t);
    return k;
}

/* sft --batch 4 against --batch 2 --accum 2 and --batch 1 --accum 4 on
 * records whose responses have 1 to 13 tokens, so that micro-batches hold
 * very different numbers of loss tokens.  The first step (same weights)
 * gives the same loss and gradient norm to 1e-6 (fp32 sums in another
 * order: observed 1e-8); the next two, after AdamW updates that amplify
 * rounding, to 2e-5 (observed 3e-6), and the weights after 3 steps differ
 * by under 2% of how far the steps moved them (observed 0.15%).  Averaging
 * per micro-batch instead (the mean of the micro-batch means) is off by
 * 20% (accum 2) and 83% (accum 4) in those figures and by 160% in the
 * weights. */
static void test_accum(void)
{
    char data[8192] = "", buf[256], init[256];
    for (int i = 0; i < 12; i++) {
        char r[16];
        int len = 1 + (5 * i) % 13;
        for (int k = 0; k < len; k++)
            r[k] = PAT[(i + k) % 8];
        r[len] = 0;
        snprintf(buf, sizeof buf, "{\"prompt\": \"%c%c %d\", \"response\": \"%s\"}\n", PAT[i % 8], PAT[(i + 3) % 8],
                 i, r);
        strcat(data, buf);
    }
    spit("accum.jsonl", data);
    snprintf(init, sizeof init, "%s", tu_path("pre/checkpoint.safetensors"));
    static const char *const shape[3][3] = {{"aB4", "4", "1"}, {"aB2", "2", "2"}, {"aB1", "1", "4"}};
    double loss[3][3], gn[3][3];
    float *w[3];
    for (int v = 0; v < 3; v++) {
        int rc = tc_run("sft", "--init", init, "--data", tu_path("accum.jsonl"), "--out", tu_path(shape[v][0]),
                        "--batch", shape[v][1], "--accum", shape[v][2], "--seq", "64", "--steps", "3", "--lr",
                        "3e-3", "--threads", "1", "--quiet", NULL);
        CHECK(rc == 0, "sft --batch %s --accum %s exited %d", shape[v][1], shape[v][2], rc);
        char path[300];
        snprintf(path, sizeof path, "%s/metrics.jsonl", shape[v][0]);
        CHECK(step_rows(tu_path(path), loss[v], gn[v], 3) == 3, "%s: 3 step rows", path);
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", shape[v][0]);
        w[v] = tc_weights(tu_path(path));
    }
    const StrataModelDesc *d = tc_model.desc;
    float *w0 = tc_weights(init);
    for (int v = 1; v < 3; v++) {
        double worst = 0, first = 0;
        for (int k = 0; k < 3; k++) {
            double e = fmax(fabs(loss[v][k] - loss[0][k]) / loss[0][k], fabs(gn[v][k] - gn[0][k]) / gn[0][k]);
            worst = fmax(worst, e);
            if (k == 0)
                first = e;
        }
        double dw = 0, moved = 0;
        for (int64_t i = 0; i < d->params_numel; i++) {
            dw = fmax(dw, fabs((double)w[v][i] - w[0][i]));
            moved = fmax(moved, fabs((double)w[0][i] - w0[i]));
        }
        CHECK(first <= 1e-6 && worst <= 2e-5,
              "--accum %s: loss or gradient norm differs from one batch by %.3g (step 1), %.3g (steps 1-3)",
              shape[v][2], first, worst);
        CHECK(moved > 0 && dw <= 2e-2 * moved,
              "--accum %s: weights after 3 steps differ by %.3g, the steps moved them by %.3g", shape[v][2], dw,
              moved);
        printf("accum %s x batch %s = batch 4: loss and gradient norm within %.1e (step 1), %.1e (steps 1-3), "
               "weights within %.1e of the %.2e they moved\n",
               shape[v][2], shape[v][1], first, worst, dw, moved);
    }
    for (int v = 0; v < 3; v++)
        free(w[v]);
    free(w0);
}

/* --- 4. evaltask ------------------------------------------------------------ */

/* The log-likelihood of choice after context, computed here (raw bytes). */
static double loglik_here(const float *w, const char *context, const char *choice)
{
    int32_t ids[NT + 1];
    int nc = (int)strlen(context), n = nc + (int)strlen(choice);
    for (int i = 0; i < n; i++)
        ids[i] = (unsigned char)(i < nc ? context[i] : choice[i - nc]);
    float *logits = malloc((size_t)n * NV * sizeof *logits);
    forward1(w, ids, n - 1, logits);
    double s = 0;
    for (int t = nc - 1; t < n - 1; t++)
        s += tc_logp(logits + (size_t)t * NV, NV, ids[t + 1]);
    free(logits);
    return s;
}

static void test_evaltask(void)
{
    char ck[256];
    snprintf(ck, sizeof ck, "%s", tu_path("pre/checkpoint.safetensors"));
    float *w = tc_weights(ck);
    /* Multiple choice. */
    static const char *ctx[3] = {"abcdefghabcdefghabc", "abcdefghab", "habcdefgha"};
    static const char *ch[3][4] = {{"defgh", "hgfed", "aaaaa", "zzzzz"},
                                   {"q", "cdefghqq", NULL, NULL},
                                   {"bcd", "bxd", "cde", NULL}};
    static const int nch[3] = {4, 2, 3}, label[3] = {0, 1, 0};
    FILE *f = fopen(tu_path("mc.jsonl"), "w");
    for (int i = 0; i < 3; i++) {
        fprintf(f, "{\"context\": \"%s\", \"choices\": [", ctx[i]);
        for (int j = 0; j < nch[i]; j++)
            fprintf(f, "%s\"%s\"", j ? ", " : "", ch[i][j]);
        fprintf(f, "], \"label\": %d}\n", label[i]);
    }
    fclose(f);
    int rc = tc_run("evaltask", "--ckpt", ck, "--task", tu_path("mc.jsonl"), "--kind", "mc", "--out",
                    tu_path("mc_out.jsonl"), "--batch", "3", "--threads", "1", NULL);
    CHECK(rc == 0, "evaltask mc exited %d", rc);
    int acc = 0, accn = 0, differ = 0;
    char *lines = tu_slurp(tu_path("mc_out.jsonl"), NULL), *line = lines;
    for (int i = 0; i < 3; i++) {
        double ll[4];
        int raw = 0, norm = 0;
        for (int j = 0; j < nch[i]; j++) {
            ll[j] = loglik_here(w, ctx[i], ch[i][j]);
            if (ll[j] > ll[raw])
                raw = j;
            if (ll[j] / (double)strlen(ch[i][j]) > ll[norm] / (double)strlen(ch[i][norm]))
                norm = j;
        }
        acc += raw == label[i], accn += norm == label[i], differ += raw != norm;
        json_t *j = line ? json_loads(line, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
        CHECK(j && json_integer_value(json_object_get(j, "pred")) == raw &&
                  json_integer_value(json_object_get(j, "pred_norm")) == norm,
              "mc item %d: picks differ from the log-likelihoods here (raw %d, norm %d)", i, raw, norm);
        for (int k = 0; j && k < nch[i]; k++) {
            double got = json_real_value(json_array_get(json_object_get(j, "loglik"), (size_t)k));
            CHECK(fabs(got - ll[k]) <= 1e-4 + 1e-5 * fabs(ll[k]), "mc item %d choice %d: loglik %.7g, here %.7g",
                  i, k, got, ll[k]);
        }
        if (i == 0)
            CHECK(raw == 0, "the pattern model does not pick the continuation (loglik %g vs %g %g %g)", ll[0],
                  ll[1], ll[2], ll[3]);
        if (i == 1)
            printf("mc item 1: loglik short %.3f, long %.3f -> raw picks %d, normalized picks %d\n", ll[0], ll[1],
                   raw, norm);
        json_decref(j);
        line = line ? strchr(line, '\n') : NULL;
        line = line ? line + 1 : NULL;
    }
    free(lines);
    CHECK(differ >= 1, "no item where acc and acc_norm pick differently");
    char want[128];
    snprintf(want, sizeof want, "mc: 3 items | acc %.4f (%d/3) | acc_norm %.4f (%d/3)", acc / 3.0, acc, accn / 3.0,
             accn);
    CHECK(tc_file_has("out.txt", want), "mc summary, want: %s", want);

    /* Generation: the outputs are argmax decoding done here. */
    static const char *prompts[3] = {"abcdefghabcdefghab", "defghabcdefgh", "abcdefgh"};
    static const char *refs[3] = {"cdefgh", "abcdef", "wrong"};
    f = fopen(tu_path("gen.jsonl"), "w");
    for (int i = 0; i < 3; i++)
        fprintf(f, "{\"prompt\": \"%s\", \"answer\": \"%s\"}\n", prompts[i], refs[i]);
    fclose(f);
    rc = tc_run("evaltask", "--ckpt", ck, "--task", tu_path("gen.jsonl"), "--kind", "gen", "--template", "plain",
                "--rule", "first-line", "--stop", "", "--max-tokens", "6", "--batch", "2", "--out",
                tu_path("gen_out.jsonl"), "--threads", "1", NULL);
    CHECK(rc == 0, "evaltask gen exited %d", rc);
    lines = tu_slurp(tu_path("gen_out.jsonl"), NULL), line = lines;
    int correct = 0;
    float *logits = malloc((size_t)NT * NV * sizeof *logits);
    for (int i = 0; i < 3; i++) {
        int32_t ids[NT];
        int n = (int)strlen(prompts[i]);
        char out[8];
        for (int k = 0; k < n; k++)
            ids[k] = (unsigned char)prompts[i][k];
        for (int k = 0; k < 6; k++) {
            forward1(w, ids, n, logits);
            ids[n] = tc_argmax(logits + (size_t)(n - 1) * NV, NV);
            out[k] = (char)ids[n++];
        }
        out[6] = 0;
        correct += !strcmp(out, refs[i]);
        json_t *j = line ? json_loads(line, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
        const char *o = json_string_value(json_object_get(j, "output"));
        CHECK(o && !strcmp(o, out), "gen item %d: output '%s', argmax decoding here '%s'", i, o ? o : "(none)", out);
        json_decref(j);
        line = line ? strchr(line, '\n') : NULL;
        line = line ? line + 1 : NULL;
    }
    free(lines), free(logits);
    CHECK(correct == 2, "the pattern model continues %d of the 2 pattern prompts", correct);
    snprintf(want, sizeof want, "gen: 3 items | exact match %.4f (%d/3)", correct / 3.0, correct);
    CHECK(tc_file_has("out.txt", want), "gen summary, want: %s", want);
    /* Errors. */
    CHECK(tc_run("evaltask", "--ckpt", ck, "--task", tu_path("gen.jsonl"), "--kind", "gen", "--rule", "bogus", NULL) ==
                  2 &&
              tc_file_has("err.txt", "--rule"),
          "bad --rule");
    CHECK(tc_run("evaltask", "--ckpt", ck, "--task", tu_path("gen.jsonl"), "--kind", "mc", NULL) == 1 &&
              tc_file_has("err.txt", "gen.jsonl:1:"),
          "a gen file read as mc names the file and line");
    CHECK(tc_run("evaltask", "--ckpt", ck, "--task", tu_path("gen.jsonl"), NULL) == 2, "no --kind");
    free(w);
}

int main(void)
{
    static const char *defs[] = {"vocab=256", "d=16", "L=2", "heads=2", "ffn=32", "ctx=64"};
    int rc = tc_open("sft_train_test", defs, 6,
                     "{\"vocab\": 256, \"d\": 16, \"L\": 2, \"heads\": 2, \"ffn\": 32, \"rope\": 10000, "
                     "\"ctx\": 64}");
    if (rc)
        return rc;
    test_mask();
    /* A model that has learnt the byte pattern "abcdefgh". */
    tc_write_shard("pat.bin", 4000, pattern_byte, NULL);
    rc = tc_run("train", "--data", tu_path("pat.bin"), "--out", tu_path("pre"), "--steps", "150", "--lr", "1e-2",
                "--batch", "8", "--seq", "64", "--threads", "1", "--quiet", NULL);
    CHECK(rc == 0, "pretraining exited %d", rc);
    test_sft();
    test_accum();
    test_evaltask();
    return tc_close("sft_train_test");
}
