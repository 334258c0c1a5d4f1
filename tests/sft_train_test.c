/* sft_train_test.c - `sft` and `evaltask` (runtime/sftcmd.c, evalcmd.c)
 * on models/pre_ln.strata at a tiny size with a 256-byte vocabulary,
 * JIT-compiled, through rt_trainer_main, plus direct train_step calls:
 *   - the response-only mask: prompt-side targets do not change the loss or
 *     the gradients (bitwise), a response-side one does; the masked loss
 *     equals a log-softmax computed here; a mask covering every position
 *     gives the unmasked (pretraining) loss;
 *   - a skipped record is never trained on (weights byte-identical to a run
 *     without it), an extra kept one is; sft resume is bit-identical;
 *     sft's validation loss equals the response-only loss computed here;
 *   - evaltask mc: picks and both accuracies equal those of log-likelihoods
 *     computed here, an item where acc and acc_norm differ, a pattern model
 *     picking the continuation; gen: outputs equal argmax decoding here.
 * Exit 0 pass, 1 fail, 77 skip (no JIT). */
#include "ad.h"
#include "ast.h"
#include "checkpoint.h"
#include "data.h"
#include "fuse.h"
#include "init.h"
#include "jit.h"
#include "sema.h"
#include "sft.h"
#include "tokenizer.h"
#include "trainer.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails;
static char dir[64];
static RtModel model;
#define NV 256 /* vocab: raw bytes */
#define NT 64  /* seq */

#define CHECK(c, ...)                                                                                  \
    do {                                                                                               \
        if (!(c)) {                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                \
            printf(__VA_ARGS__);                                                                       \
            printf("\n");                                                                              \
            fails++;                                                                                   \
        }                                                                                              \
    } while (0)

/* --- helpers (as train_test.c) --------------------------------------------- */

static char *path_in(const char *name)
{
    static char buf[16][256];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    size_t got = fread(p, 1, (size_t)n, f);
    fclose(f);
    p[got] = 0;
    if (len)
        *len = got;
    return p;
}

static void spit(const char *name, const char *text)
{
    FILE *f = fopen(path_in(name), "w");
    fputs(text, f);
    fclose(f);
}

/* rt_trainer_main("trainer", args...) with stdout and stderr sent to
 * DIR/out.txt and DIR/err.txt; returns the exit status. */
static int run(const char *first, ...)
{
    char *argv[64] = {"trainer"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    fflush(stdout), fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(path_in("out.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(path_in("err.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fo, 1), dup2(fe, 2), close(fo), close(fe);
    int rc = rt_trainer_main(&model, argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(so, 1), dup2(se, 2), close(so), close(se);
    return rc;
}

static bool file_has(const char *name, const char *text)
{
    char *e = slurp(path_in(name), NULL);
    bool ok = e && strstr(e, text);
    if (!ok)
        printf("  %s was: %s\n", name, e ? e : "(none)");
    free(e);
    return ok;
}

static float *weights(const char *ckpt)
{
    RtSafetensors st;
    char *err = NULL;
    float *p = calloc((size_t)model.desc->params_numel, sizeof *p);
    if (rt_st_open(&st, ckpt, &err) || rt_ckpt_read_params(&st, model.desc, p, &err)) {
        printf("FAIL reading %s: %s\n", ckpt, err);
        fails++;
        free(err);
        return p;
    }
    rt_st_close(&st);
    return p;
}

/* Whether the tensors prefix+NAME of two checkpoints hold the same bytes. */
static bool same_tensors(const char *fa, const char *fb, const char *prefix)
{
    RtSafetensors a, b;
    char *err = NULL;
    if (rt_st_open(&a, fa, &err) || rt_st_open(&b, fb, &err)) {
        printf("  %s\n", err);
        free(err);
        return false;
    }
    bool same = true;
    for (int64_t i = 0; i < model.desc->nparams && same; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, model.desc->params[i].name);
        const RtStTensor *x = rt_st_find(&a, name), *y = rt_st_find(&b, name);
        same = x && y && x->numel == y->numel && !memcmp(x->data, y->data, (size_t)x->numel * 4);
    }
    rt_st_close(&a), rt_st_close(&b);
    return same;
}

static double last_val_loss(const char *metrics)
{
    char *t = slurp(metrics, NULL), *p = t, *q, *last = NULL;
    while (p && (q = strstr(p, "\"val_loss\": ")))
        last = q, p = q + 1;
    double l = last ? strtod(last + 12, NULL) : NAN;
    free(t);
    return l;
}

static void *arena_for(int64_t B, int64_t T, int64_t *bytes)
{
    *bytes = strata_arena_bytes(model.desc, B, T, 1);
    return aligned_alloc(64, (size_t)(*bytes + 63) / 64 * 64);
}

/* log p(target) under row (vocab floats), in double: the definition. */
static double logp(const float *row, int target)
{
    double mx = row[0], s = 0;
    for (int i = 1; i < NV; i++)
        mx = fmax(mx, row[i]);
    for (int i = 0; i < NV; i++)
        s += exp((double)row[i] - mx);
    return (double)row[target] - mx - log(s);
}

/* The logits (1, n, NV) of ids[0..n) under w, into out. */
static void forward1(const float *w, const int32_t *ids, int n, float *out)
{
    int64_t ab;
    void *arena = arena_for(1, n, &ab);
    StrataStep s = {.params = (void *)w, .arena = arena, .arena_bytes = ab, .tokens = ids, .B = 1, .T = n,
                    .logits = out};
    CHECK(model.forward(&s) == 0, "forward failed");
    free(arena);
}

static int argmax(const float *row)
{
    int b = 0;
    for (int i = 1; i < NV; i++)
        if (row[i] > row[b])
            b = i;
    return b;
}

/* --- the model ------------------------------------------------------------ */

static bool compile_model(Jit *jit, IrGraph *g, Program *prog, JitModel *jm)
{
    static const char *defs[] = {"vocab=256", "d=16", "L=2", "heads=2", "ffn=32", "ctx=64"};
    char path[512];
    snprintf(path, sizeof path, "%s/models/pre_ln.strata", getenv("srcdir") ? getenv("srcdir") : ".");
    const char *why = NULL;
    SrcFile *src = src_read(path, &why);
    if (!src) {
        printf("cannot read %s: %s\n", path, why);
        return false;
    }
    Diag d;
    diag_init(&d, stderr);
    SemaOptions opt = {.defines = defs, .ndefines = 6};
    ir_init(g);
    g->model_name = "pre_ln.strata";
    bool ok = ast_load(prog, &d, src) && sema_resolve(prog, &opt, &d, g);
    diag_finish(&d);
    if (!ok)
        return false;
    ad_build(g);
    fuse_graph(g);
    char *err = NULL;
    LowerOptions lo = {.precision = LOWER_F32, .opt_level = 2};
    if (!jit_compile(jit, g, &lo, jm, &err)) {
        printf("jit: %s\n", err);
        return false;
    }
    model = (RtModel){.desc = jm->desc, .train_step = jm->train_step, .forward = jm->forward,
                      .source = slurp(path, NULL), .path = "models/pre_ln.strata",
                      .config_json = "{\"vocab\": 256, \"d\": 16, \"L\": 2, \"heads\": 2, \"ffn\": 32, "
                                     "\"rope\": 10000, \"ctx\": 64}"};
    return true;
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
    const StrataModelDesc *d = model.desc;
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
    void *arena = arena_for(B, T, &ab);
    double l1 = NAN, l2 = NAN, l3 = NAN;
    StrataStep s = {.params = w, .grads = g1, .arena = arena, .arena_bytes = ab, .tokens = tok, .targets = tgt,
                    .mask = mask, .B = B, .T = T, .loss = &l1, .logits = logits};
    CHECK(model.train_step(&s) == 0, "train_step failed");
    /* The masked loss by definition: mean over response targets. */
    double sum = 0;
    int n = 0, nprompt = 0;
    for (int r = 0; r < B * T; r++)
        if (mask[r] != 0)
            sum -= logp(logits + (size_t)r * NV, tgt[r]), n++;
        else
            nprompt++;
    CHECK(n > 0 && nprompt > 0, "the batch has %d response and %d other targets", n, nprompt);
    CHECK(fabs(l1 - sum / n) <= 1e-5 * fabs(sum / n), "masked loss %.9g, response-only mean here %.9g", l1,
          sum / n);
    /* Prompt-side (and padding) targets changed: the same loss and gradients, bitwise. */
    for (int r = 0; r < B * T; r++)
        tgt2[r] = mask[r] != 0 ? tgt[r] : (tgt[r] * 31 + 17) % NV;
    s.targets = tgt2, s.grads = g2, s.loss = &l2, s.logits = NULL;
    CHECK(model.train_step(&s) == 0, "train_step failed");
    CHECK(!memcmp(&l1, &l2, sizeof l1), "loss changed with prompt-side targets: %.17g vs %.17g", l1, l2);
    CHECK(!memcmp(g1, g2, gbytes), "gradients changed with prompt-side targets");
    /* Control: one response-side target changed does change them. */
    for (int r = 0; r < B * T; r++)
        if (mask[r] != 0) {
            tgt2[r] = (tgt[r] + 1) % NV;
            break;
        }
    s.grads = g3, s.loss = &l3;
    CHECK(model.train_step(&s) == 0, "train_step failed");
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
    void *arena1 = arena_for(1, T, &ab1);
    StrataStep full = {.params = w, .grads = g1, .arena = arena1, .arena_bytes = ab1, .tokens = tok,
                       .targets = tgt, .mask = mask, .B = 1, .T = T, .loss = &l1, .logits = logits};
    StrataStep pre = full;
    pre.mask = NULL, pre.grads = g2, pre.loss = &l2, pre.logits = NULL;
    CHECK(model.train_step(&full) == 0 && model.train_step(&pre) == 0, "train_step failed");
    sum = 0;
    for (int i = 0; i < T; i++)
        sum -= logp(logits + (size_t)i * NV, tgt[i]);
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

static int32_t pattern_byte(int64_t i)
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
            sum -= logp(logits + (size_t)t * NV, ids[t + 1]), count++;
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
    snprintf(init, sizeof init, "%s", path_in("pre/checkpoint.safetensors"));
    snprintf(ca, sizeof ca, "%s", path_in("sA/checkpoint.safetensors"));
    snprintf(cb, sizeof cb, "%s", path_in("sB/checkpoint.safetensors"));
    snprintf(cd, sizeof cd, "%s", path_in("sD/checkpoint.safetensors"));

    /* Usage and input errors. */
    CHECK(run("sft", "--data", path_in("none.jsonl"), "--out", path_in("x"), "--quiet", NULL) == 1 &&
              file_has("err.txt", "none.jsonl"),
          "missing data file");
    spit("bad.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"nope\": 1}\n");
    CHECK(run("sft", "--data", path_in("bad.jsonl"), "--out", path_in("x"), "--quiet", NULL) == 1 &&
              file_has("err.txt", "bad.jsonl:2:"),
          "a bad record names the file and line");
    CHECK(run("sft", "--out", path_in("x"), "--quiet", NULL) == 2 && file_has("err.txt", "--data FILE.jsonl"),
          "sft without --data");

    /* A: the reference run; B: two extra skipped records; C: one extra kept record. */
    int rc = run("sft", "--init", init, "--data", path_in("sft.jsonl"), "--val", path_in("sft_val.jsonl"), "--out",
                 path_in("sA"), SFT_COMMON, NULL);
    CHECK(rc == 0, "sft A exited %d", rc);
    CHECK(file_has("err.txt", "data ") && file_has("err.txt", "10 records, 10 kept, 0 skipped"), "A's counts");
    rc = run("sft", "--init", init, "--data", path_in("sft_skip.jsonl"), "--val", path_in("sft_val.jsonl"), "--out",
             path_in("sB"), SFT_COMMON, NULL);
    CHECK(rc == 0, "sft B exited %d", rc);
    CHECK(file_has("err.txt", "12 records, 10 kept, 2 skipped (no response tokens), 1 truncated"), "B's counts");
    rc = run("sft", "--init", init, "--data", path_in("sft_more.jsonl"), "--out", path_in("sC"), SFT_COMMON,
             "--quiet", NULL);
    CHECK(rc == 0, "sft C exited %d", rc);
    CHECK(same_tensors(ca, cb, "") && same_tensors(ca, cb, "optim.m.") && same_tensors(ca, cb, "optim.v."),
          "skipped records changed the fine-tuned weights");
    CHECK(!same_tensors(ca, path_in("sC/checkpoint.safetensors"), ""), "an extra kept record changed nothing");
    CHECK(!same_tensors(ca, init, ""), "sft did not change the weights");

    /* Validation: the response-only loss, computed here. */
    float *w = weights(ca);
    double here = val_loss_here(w, 20, 4), got = last_val_loss(path_in("sA/metrics.jsonl"));
    CHECK(fabs(here - got) <= 1e-5 * here, "sft val loss %.9g, response-only loss here %.9g", got, here);
    float *w0 = weights(init);
    printf("sft: response-only val loss %.4f after 12 steps (here %.4f; before %.4f)\n", got, here,
           val_loss_here(w0, 20, 4));
    free(w), free(w0);

    /* Resume: 5 steps, then the rest; bit-identical to A. */
    rc = run("sft", "--init", init, "--data", path_in("sft.jsonl"), "--val", path_in("sft_val.jsonl"), "--out",
             path_in("sD"), SFT_COMMON, "--exit-after", "5", "--quiet", NULL);
    CHECK(rc == 0, "sft --exit-after exited %d", rc);
    CHECK(run("train", "--out", path_in("sD"), "--resume", "--quiet", NULL) == 1 &&
              file_has("err.txt", "resume it with sft"),
          "train --resume of an sft run");
    rc = run("sft", "--out", path_in("sD"), "--resume", "--quiet", "--threads", "2", NULL);
    CHECK(rc == 0, "sft --resume exited %d", rc);
    CHECK(same_tensors(ca, cd, "") && same_tensors(ca, cd, "optim.m.") && same_tensors(ca, cd, "optim.v."),
          "resumed sft differs from the straight run");
    size_t na, nd;
    char *ma = slurp(path_in("sA/metrics.jsonl"), &na), *md = slurp(path_in("sD/metrics.jsonl"), &nd);
    int la = 0, ld = 0;
    for (size_t i = 0; ma && i < na; i++)
        la += ma[i] == '\n';
    for (size_t i = 0; md && i < nd; i++)
        ld += md[i] == '\n';
    CHECK(la == 14 && ld == 14, "metrics rows: straight %d, resumed %d, want 12 + 2 val", la, ld);
    free(ma), free(md);
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
        s += logp(logits + (size_t)t * NV, ids[t + 1]);
    free(logits);
    return s;
}

static void test_evaltask(void)
{
    char ck[256];
    snprintf(ck, sizeof ck, "%s", path_in("pre/checkpoint.safetensors"));
    float *w = weights(ck);
    /* Multiple choice. */
    static const char *ctx[3] = {"abcdefghabcdefghabc", "abcdefghab", "habcdefgha"};
    static const char *ch[3][4] = {{"defgh", "hgfed", "aaaaa", "zzzzz"},
                                   {"q", "cdefghqq", NULL, NULL},
                                   {"bcd", "bxd", "cde", NULL}};
    static const int nch[3] = {4, 2, 3}, label[3] = {0, 1, 0};
    FILE *f = fopen(path_in("mc.jsonl"), "w");
    for (int i = 0; i < 3; i++) {
        fprintf(f, "{\"context\": \"%s\", \"choices\": [", ctx[i]);
        for (int j = 0; j < nch[i]; j++)
            fprintf(f, "%s\"%s\"", j ? ", " : "", ch[i][j]);
        fprintf(f, "], \"label\": %d}\n", label[i]);
    }
    fclose(f);
    int rc = run("evaltask", "--ckpt", ck, "--task", path_in("mc.jsonl"), "--kind", "mc", "--out",
                 path_in("mc_out.jsonl"), "--batch", "3", "--threads", "1", NULL);
    CHECK(rc == 0, "evaltask mc exited %d", rc);
    int acc = 0, accn = 0, differ = 0;
    char *lines = slurp(path_in("mc_out.jsonl"), NULL), *line = lines;
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
    CHECK(file_has("out.txt", want), "mc summary, want: %s", want);

    /* Generation: the outputs are argmax decoding done here. */
    static const char *prompts[3] = {"abcdefghabcdefghab", "defghabcdefgh", "abcdefgh"};
    static const char *refs[3] = {"cdefgh", "abcdef", "wrong"};
    f = fopen(path_in("gen.jsonl"), "w");
    for (int i = 0; i < 3; i++)
        fprintf(f, "{\"prompt\": \"%s\", \"answer\": \"%s\"}\n", prompts[i], refs[i]);
    fclose(f);
    rc = run("evaltask", "--ckpt", ck, "--task", path_in("gen.jsonl"), "--kind", "gen", "--template", "plain",
             "--rule", "first-line", "--stop", "", "--max-tokens", "6", "--batch", "2", "--out",
             path_in("gen_out.jsonl"), "--threads", "1", NULL);
    CHECK(rc == 0, "evaltask gen exited %d", rc);
    lines = slurp(path_in("gen_out.jsonl"), NULL), line = lines;
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
            ids[n] = argmax(logits + (size_t)(n - 1) * NV);
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
    CHECK(file_has("out.txt", want), "gen summary, want: %s", want);
    /* Errors. */
    CHECK(run("evaltask", "--ckpt", ck, "--task", path_in("gen.jsonl"), "--kind", "gen", "--rule", "bogus", NULL) ==
                  2 &&
              file_has("err.txt", "--rule"),
          "bad --rule");
    CHECK(run("evaltask", "--ckpt", ck, "--task", path_in("gen.jsonl"), "--kind", "mc", NULL) == 1 &&
              file_has("err.txt", "gen.jsonl:1:"),
          "a gen file read as mc names the file and line");
    CHECK(run("evaltask", "--ckpt", ck, "--task", path_in("gen.jsonl"), NULL) == 2, "no --kind");
    free(w);
}

int main(void)
{
    char *err = NULL;
    Jit *jit = jit_create(&err);
    if (!jit) {
        printf("SKIP: no JIT: %s\n", err);
        return 77;
    }
    IrGraph g;
    Program prog = {0};
    JitModel jm;
    if (!compile_model(jit, &g, &prog, &jm))
        return 1;
    snprintf(dir, sizeof dir, "/tmp/sft_train_test.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_mask();
    /* A model that has learnt the byte pattern "abcdefgh". */
    int32_t *ids = malloc(4000 * sizeof *ids);
    for (int64_t i = 0; i < 4000; i++)
        ids[i] = pattern_byte(i);
    if (rt_shard_write(path_in("pat.bin"), ids, 4000, 0, &err))
        printf("FAIL %s\n", err), fails++;
    free(ids);
    int rc = run("train", "--data", path_in("pat.bin"), "--out", path_in("pre"), "--steps", "150", "--lr", "1e-2",
                 "--batch", "8", "--seq", "64", "--threads", "1", "--quiet", NULL);
    CHECK(rc == 0, "pretraining exited %d", rc);
    test_sft();
    test_evaltask();
    if (!fails) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd))
            printf("could not remove %s\n", dir);
        printf("sft_train_test: all passed\n");
    } else
        printf("sft_train_test: %d failure(s); files left in %s\n", fails, dir);
    jit_release(jit, &jm);
    jit_free(jit);
    ir_free(&g);
    ast_program_free(&prog);
    free((char *)model.source);
    return fails ? 1 : 0;
}
