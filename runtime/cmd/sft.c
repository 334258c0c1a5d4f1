/* sft.c - `sft` (commands.h): supervised fine-tuning of a checkpoint on
 * JSONL records (sft.h: templates, the response-only mask, truncation and
 * skips) through train's loop, options, checkpoints and resume (train.h),
 * with a batch source of masked record rows.
 *
 * Order: each epoch visits every kept record once, in a permutation drawn
 * from --seed and the epoch number (splitmix64 + Fisher-Yates), so the
 * checkpoint's (epoch, pos) resumes it exactly; a skipped record is dropped
 * at load and never enters the order.  Validation: the response-only
 * cross-entropy over the held-out records, each once, weighted by token.
 * Tokenizer: --tokenizer, else the one --init's checkpoint recorded, else
 * raw bytes; EOT = its end-of-text id (byte 0 for raw bytes).
 * The source owns the tokenizer, both record sets and the permutation. */
#define _GNU_SOURCE /* asprintf */
#include "store/checkpoint.h"
#include "core/util.h"
#include "cmd/commands.h"
#include "train/collective.h"
#include "train/device.h"
#include "train/sample.h"
#include "train/sft.h"
#include "train/train.h"
#include "data/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct SftSource {
    RtTokenizer *tok;
    char *tok_name;          /* for messages */
    int32_t eot;
    RtSftSet train, val;
    bool have_train, have_val;
    int64_t *perm;           /* (train.n) the current epoch's order */
    int64_t epoch, pos;      /* the next record is perm[pos] of epoch */
    int64_t B, T;
    uint64_t seed;
    bool quiet;
} SftSource;

/* The permutation of epoch s->epoch. */
static void make_perm(SftSource *s)
{
    int64_t n = s->train.n;
    uint64_t x = s->seed * 0xD1B54A32D192ED03ull ^ (uint64_t)s->epoch;
    for (int64_t i = 0; i < n; i++)
        s->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rt_splitmix64(&x) % (uint64_t)(i + 1)), t = s->perm[i];
        s->perm[i] = s->perm[j], s->perm[j] = t;
    }
}

static int64_t encode(void *ctx, const char *text, size_t len, int32_t **ids)
{
    return rt_tok_encode_ordinary(ctx, text, len, ids); /* "<|endoftext|>" in a record is text */
}

/* Loads one file and checks its ids against the model; prints the counts. */
static int load_set(SftSource *s, const RtModel *m, const char *prog, const char *path, RtSftSet *set,
                    const char *what)
{
    char *err = NULL;
    if (rt_sft_load(set, path, s->T, encode, s->tok, s->eot, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err ? err : "out of memory");
        free(err);
        return -1;
    }
    const int64_t V = m->desc->vocab;
    for (int64_t i = 0; i < set->n; i++)
        for (int64_t k = 0; k < set->ex[i].n; k++)
            if (set->ex[i].tokens[k] >= V) {
                fprintf(stderr,
                        "%s: %s: a record has token id %d, outside the model's vocabulary of %lld (tokenizer: %s)\n",
                        prog, path, set->ex[i].tokens[k], (long long)V, s->tok_name);
                rt_sft_free(set);
                return -1;
            }
    if (!s->quiet)
        fprintf(stderr,
                "%s sft: %s %s: %lld records, %lld kept, %lld skipped (no response tokens), %lld truncated to "
                "%lld tokens; %lld response tokens\n",
                prog, what, path, (long long)set->records, (long long)set->n, (long long)set->skipped,
                (long long)set->truncated, (long long)s->T + 1, (long long)set->response_tokens);
    return 0;
}

static void sft_close(RtBatchSource *src)
{
    SftSource *s = src->ctx;
    if (s->have_train)
        rt_sft_free(&s->train);
    if (s->have_val)
        rt_sft_free(&s->val);
    rt_tok_free(s->tok);
    free(s->perm), free(s->tok_name);
    s->tok = NULL, s->perm = NULL, s->tok_name = NULL;
    s->have_train = s->have_val = false;
}

static int sft_open(RtBatchSource *src, const RtModel *m, const RtTrainOptions *o, const char *prog, bool *has_val)
{
    SftSource *s = src->ctx;
    char *err = NULL;
    s->B = o->batch, s->T = o->seq, s->seed = (uint64_t)o->seed, s->quiet = o->quiet;
    s->tok = o->tokenizer && *o->tokenizer ? rt_tok_load(o->tokenizer, &err) : rt_tok_bytes();
    if (!s->tok) {
        fprintf(stderr, "%s: %s\n", prog, err ? err : "out of memory");
        free(err);
        return -1;
    }
    s->tok_name = strdup(o->tokenizer && *o->tokenizer ? o->tokenizer : "raw bytes");
    int32_t eot = rt_tok_eot(s->tok);
    s->eot = eot >= 0 ? eot : 0;
    if (s->eot >= m->desc->vocab) {
        fprintf(stderr, "%s: the end-of-text id %d of %s is outside the model's vocabulary of %lld\n", prog, s->eot,
                s->tok_name, (long long)m->desc->vocab);
        sft_close(src);
        return -1;
    }
    int rc = load_set(s, m, prog, o->data, &s->train, "data");
    s->have_train = !rc;
    if (!rc && s->train.n == 0) {
        fprintf(stderr, "%s: %s: no record with a response token to train on\n", prog, o->data);
        rc = -1;
    }
    if (!rc && o->val) {
        rc = load_set(s, m, prog, o->val, &s->val, "val");
        s->have_val = !rc;
        if (!rc && s->val.n == 0) {
            fprintf(stderr, "%s: %s: no record with a response token to validate on\n", prog, o->val);
            rc = -1;
        }
    }
    if (rc) {
        sft_close(src);
        return -1;
    }
    s->perm = malloc((size_t)s->train.n * sizeof *s->perm);
    if (!s->perm) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(3);
    }
    s->epoch = s->pos = 0;
    make_perm(s);
    *has_val = s->have_val;
    /* The data's identity: every kept record's tokens and response mask. */
    uint64_t id = RT_FNV64_INIT;
    int64_t ntok = 0;
    for (int64_t i = 0; i < s->train.n; i++) {
        const RtSftExample *e = &s->train.ex[i];
        id = rt_fnv64(id, &e->n, sizeof e->n);
        id = rt_fnv64(id, e->tokens, (size_t)e->n * sizeof *e->tokens);
        id = rt_fnv64(id, e->response, (size_t)e->n);
        ntok += e->n;
    }
    src->data_id = id ? id : 1;
    snprintf(src->data_what, sizeof src->data_what, "%lld records, %lld tokens", (long long)s->train.n,
             (long long)ntok);
    return 0;
}

static void sft_next(RtBatchSource *src, int32_t *tok, int32_t *tgt, float *mask)
{
    SftSource *s = src->ctx;
    for (int64_t b = 0; b < s->B; b++) {
        if (s->pos == s->train.n) {
            s->epoch++, s->pos = 0;
            make_perm(s);
        }
        RtSftSet one = {.ex = &s->train.ex[s->perm[s->pos++]], .n = 1};
        rt_sft_batch(&one, 0, 1, s->T, s->eot, tok + b * s->T, tgt + b * s->T, mask + b * s->T); /* row b */
    }
}

static void sft_get_state(RtBatchSource *src, int64_t *epoch, int64_t *pos)
{
    SftSource *s = src->ctx;
    *epoch = s->epoch, *pos = s->pos;
}

static int sft_set_state(RtBatchSource *src, int64_t epoch, int64_t pos, char **err)
{
    SftSource *s = src->ctx;
    if (epoch < 0 || pos < 0 || pos > s->train.n) {
        if (asprintf(err, "the checkpoint's record position (epoch %lld, record %lld) does not fit the %lld kept "
                          "records of the data",
                     (long long)epoch, (long long)pos, (long long)s->train.n) < 0)
            *err = NULL;
        return -1;
    }
    s->epoch = epoch, s->pos = pos;
    make_perm(s);
    return 0;
}

static int sft_val_loss(RtBatchSource *src, const RtModel *m, const float *params, int64_t batches, RtPool *pool,
                        void *arena, int64_t arena_bytes, float *logits, double *loss, int64_t *ntok)
{
    SftSource *s = src->ctx;
    const int64_t B = s->B, T = s->T, V = m->desc->vocab;
    int32_t *tok = malloc((size_t)(B * T) * sizeof *tok), *tgt = malloc((size_t)(B * T) * sizeof *tgt);
    float *mask = malloc((size_t)(B * T) * sizeof *mask);
    if (!tok || !tgt || !mask) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    double sum = 0;
    int64_t n = 0;
    int rc = 0;
    for (int64_t first = 0, k = 0; first < s->val.n && (batches <= 0 || k < batches); first += B, k++) {
        int64_t rows = s->val.n - first < B ? s->val.n - first : B;
        rt_sft_batch(&s->val, first, B, T, s->eot, tok, tgt, mask); /* rows past `rows` wrap; not counted */
        StrataStep st = {.params = (void *)params, .arena = arena, .arena_bytes = arena_bytes, .tokens = tok,
                         .B = B, .T = T, .logits = logits, .pool = pool, .precision = m->precision};
        if (m->forward(&st) != STRATA_OK) {
            rc = -1;
            break;
        }
        for (int64_t r = 0; r < rows * T; r++) /* (B,T,V) logits */
            if (mask[r] != 0) {
                sum += rt_xent_row(logits + r * V, V, tgt[r]);
                n++;
            }
    }
    free(tok), free(tgt), free(mask);
    *loss = n ? sum / (double)n : 0;
    *ntok = n;
    return rc;
}

/* The "tokenizer" a checkpoint's training state recorded (malloc'd), or NULL. */
static char *ckpt_tokenizer(const char *path)
{
    RtSafetensors st;
    char *err = NULL, *out = NULL;
    if (rt_st_open(&st, path, &err)) {
        free(err); /* the run reports it when it reads the weights */
        return NULL;
    }
    const char *sj = rt_st_meta(&st, "strata.state");
    json_t *j = sj ? json_loads(sj, 0, NULL) : NULL, *t = json_object_get(j, "tokenizer");
    if (json_is_string(t) && *json_string_value(t))
        out = strdup(json_string_value(t));
    json_decref(j);
    rt_st_close(&st);
    return out;
}

int rt_sft_main(const RtModel *m, const char *prog, int argc, char **argv)
{
    /* train's options, with sft's meaning of the data flags. */
    RtOptSpec specs[RT_N_TRAIN_OPTS];
    memcpy(specs, rt_train_specs, sizeof specs);
    specs[RT_TOPT_data].arg = specs[RT_TOPT_val].arg = "FILE.jsonl";
    specs[RT_TOPT_data].help = "fine-tuning records, JSONL (required; formats: docs/training.md)";
    specs[RT_TOPT_val].help = "held-out records: response-only validation loss";
    specs[RT_TOPT_init].help = "the pretrained checkpoint to fine-tune (fresh optimizer, step 0)";
    specs[RT_TOPT_tokenizer].help = "tokenizer (--init's recorded one, else raw bytes)";
    specs[RT_TOPT_batch].help = "records per batch, one per row (16)";
    specs[RT_TOPT_seq].help = "tokens per row: longer records are truncated (the config's ctx, else 256)";
    RtTrainOptions o;
    rt_train_defaults(&o);
    int rc = rt_parse_opts(prog, "sft", specs, RT_N_TRAIN_OPTS, &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    RtDevice dev; /* --device cuda on a machine without one fails first (train.c opens it for the run) */
    if ((rc = rt_device_open(&dev, o.device, prog, "sft", 0)))
        return rc;
    rt_device_close(&dev);
    RtComm *comm = rt_comm_world();
    if (!o.init && !o.resume && (!comm || comm->rank == 0))
        fprintf(stderr, "%s sft: note: no --init: fine-tuning starts from random weights (give --init CKPT to "
                "fine-tune a trained checkpoint)\n", prog);
    char *init_tok = NULL;
    if (!o.given[RT_TOPT_tokenizer] && o.init && (init_tok = ckpt_tokenizer(o.init)))
        o.tokenizer = init_tok; /* recorded in this run's state too */
    SftSource s = {0};
    RtBatchSource src = {.cmd = "sft", .data_arg = "FILE.jsonl", .masked = true, .ctx = &s, .open = sft_open,
                         .next = sft_next, .get_state = sft_get_state, .set_state = sft_set_state,
                         .val_loss = sft_val_loss, .close = sft_close};
    rc = rt_train_source(m, &o, &src, prog);
    free(init_tok);
    return rc;
}
