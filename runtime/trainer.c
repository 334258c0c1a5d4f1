/* trainer.c - rt_trainer_main (trainer.h): the command line of a trainer,
 * parsed from option tables (train's is RT_TRAIN_OPTIONS in train.h), and
 * the `eval` and `sample` commands; `train` itself is rt_train (train.c),
 * `sft` and `evaltask` are in sftcmd.c and evalcmd.c (commands.h).
 * `train` and `sft` start the job's communicator (collective.h: MPI under
 * mpirun, else one process) and finalize it; the other commands run in one
 * process and refuse a multi-rank launch.
 * Every buffer is made and freed here per command. */
#define _GNU_SOURCE /* asprintf */
#include "trainer.h"
#include "util.h"

#include "analyze.h"
#include "checkpoint.h"
#include "collective.h"
#include "commands.h"
#include "sample.h"
#include "tokenizer.h"
#include "train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- option parsing ------------------------------------------------------- */

typedef struct EvalOptions {
    const char *ckpt, *data;
    int64_t batch, seq, batches, threads;
    bool given[6];
} EvalOptions;

static const RtOptSpec eval_specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(EvalOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"data", "--data", RT_OPT_STR, 0, offsetof(EvalOptions, data), "GLOB", "token shards (required)"},
    {"batch", "--batch", RT_OPT_INT, 0, offsetof(EvalOptions, batch), "B", "windows per batch (the checkpoint's)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(EvalOptions, seq), "T", "tokens per window (the checkpoint's)"},
    {"batches", "--batches", RT_OPT_INT, 0, offsetof(EvalOptions, batches), "N", "batches, 0 = all (0)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(EvalOptions, threads), "N", "pool threads (all CPUs)"},
};

typedef struct SampleOptions {
    const char *ckpt, *tokenizer, *prompt;
    int64_t tokens, top_k, seed, seq, threads;
    double temperature, top_p;
    bool given[10];
} SampleOptions;

static const RtOptSpec sample_specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(SampleOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"tokenizer", "--tokenizer", RT_OPT_STR, 0, offsetof(SampleOptions, tokenizer), "FILE",
     "tokenizer (the checkpoint's, else raw bytes)"},
    {"prompt", "--prompt", RT_OPT_STR, 0, offsetof(SampleOptions, prompt), "TEXT", "start of the text"},
    {"tokens", "--tokens", RT_OPT_INT, 0, offsetof(SampleOptions, tokens), "N", "tokens to generate (100)"},
    {"temperature", "--temperature", RT_OPT_REAL, 0, offsetof(SampleOptions, temperature), "X",
     "softmax temperature, 0 = greedy (0.8)"},
    {"top_k", "--top-k", RT_OPT_INT, 0, offsetof(SampleOptions, top_k), "K", "keep the K likeliest, 0 = all (0)"},
    {"top_p", "--top-p", RT_OPT_REAL, 0, offsetof(SampleOptions, top_p), "P", "nucleus: keep mass P (1.0)"},
    {"seed", "--seed", RT_OPT_INT, 0, offsetof(SampleOptions, seed), "N", "sampling seed (1)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(SampleOptions, seq), "T", "window (the checkpoint's --seq)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(SampleOptions, threads), "N", "pool threads (all CPUs)"},
};

#define NSPECS(a) ((int)(sizeof(a) / sizeof *(a)))

static void usage_cmd(FILE *f, const char *prog, const char *cmd, const RtOptSpec *specs, int n)
{
    fprintf(f, "usage: %s %s [options]\n", prog, cmd);
    for (int i = 0; i < n; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", specs[i].flag, specs[i].arg ? " " : "",
                 specs[i].arg ? specs[i].arg : "");
        fprintf(f, "  %-24s %s\n", left, specs[i].help);
    }
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s COMMAND [options]   (%s COMMAND --help for its options)\n"
            "commands:\n"
            "  train    train the model on token shards, checkpointing to OUT/checkpoint.safetensors\n"
            "  eval     loss and perplexity of a checkpoint on token shards\n"
            "  sample   generate text from a checkpoint\n"
            "  analyze  depth diagnostics of a checkpoint: variance, angular distance, layer removal\n"
            "  sft      fine-tune a checkpoint on prompt/response JSONL records (response-only loss)\n"
            "  evaltask multiple-choice or exact-match accuracy of a checkpoint on a JSONL task\n",
            prog, prog);
}

/* Parses argv[first..argc) into base by specs; given[i] marks what was
 * set.  0 ok, 1 --help shown, 2 usage error (message printed). */
static int parse_opts(const char *prog, const char *cmd, const RtOptSpec *specs, int n, void *base, bool *given,
                      int argc, char **argv)
{
    for (int a = 2; a < argc; a++) {
        const char *arg = argv[a], *eq = strchr(arg, '=');
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage_cmd(stdout, prog, cmd, specs, n);
            return 1;
        }
        size_t len = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);
        int k = 0;
        while (k < n && !(strlen(specs[k].flag) == len && !strncmp(specs[k].flag, arg, len)))
            k++;
        if (k == n) {
            fprintf(stderr, "%s %s: unknown option '%.*s' (%s %s --help lists them)\n", prog, cmd, (int)len, arg,
                    prog, cmd);
            return 2;
        }
        const RtOptSpec *sp = &specs[k];
        char *at = (char *)base + sp->offset;
        given[k] = true;
        if (sp->kind == RT_OPT_FLAG) {
            if (eq && arg[len] == '=') {
                fprintf(stderr, "%s %s: %s takes no value\n", prog, cmd, sp->flag);
                return 2;
            }
            *(int *)at = 1;
            continue;
        }
        const char *v = arg[len] == '=' ? arg + len + 1 : a + 1 < argc ? argv[++a] : NULL;
        if (!v) {
            fprintf(stderr, "%s %s: %s needs a value (%s)\n", prog, cmd, sp->flag, sp->arg);
            return 2;
        }
        char *end = NULL;
        errno = 0;
        if (sp->kind == RT_OPT_STR)
            *(const char **)at = v;
        else if (sp->kind == RT_OPT_INT) {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || errno) {
                fprintf(stderr, "%s %s: %s: '%s' is not an integer\n", prog, cmd, sp->flag, v);
                return 2;
            }
            *(int64_t *)at = x;
        } else {
            double x = strtod(v, &end);
            if (!*v || *end || errno || !isfinite(x)) {
                fprintf(stderr, "%s %s: %s: '%s' is not a number\n", prog, cmd, sp->flag, v);
                return 2;
            }
            *(double *)at = x;
        }
    }
    return 0;
}

/* --- checkpoints for eval and sample -------------------------------------- */

/* Loads a checkpoint's weights into a new buffer and its state (NULL if it
 * has none).  NULL with a message if the file does not fit the model. */
static float *load_weights(const RtModel *m, const char *prog, const char *path, json_t **state)
{
    RtSafetensors st;
    char *err = NULL;
    *state = NULL;
    if (rt_st_open(&st, path, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err);
        return NULL;
    }
    size_t bytes = ((size_t)m->desc->params_numel * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(3);
    }
    memset(p, 0, bytes);
    if (rt_ckpt_read_params(&st, m->desc, p, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err), free(p);
        rt_st_close(&st);
        return NULL;
    }
    const char *sj = rt_st_meta(&st, "strata.state");
    *state = sj ? json_loads(sj, 0, NULL) : NULL;
    rt_st_close(&st);
    return p;
}

static int64_t state_int(json_t *state, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(state, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* The config's "ctx", else 256. */
static int64_t default_seq(const RtModel *m)
{
    json_t *j = m->config_json ? json_loads(m->config_json, 0, NULL) : NULL;
    json_t *v = json_object_get(j, "ctx");
    int64_t ctx = json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 256;
    json_decref(j);
    return ctx;
}

/* --- eval ----------------------------------------------------------------- */

static int cmd_eval(const RtModel *m, const char *prog, int argc, char **argv)
{
    EvalOptions o = {.batch = -1, .seq = -1};
    int rc = parse_opts(prog, "eval", eval_specs, NSPECS(eval_specs), &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.ckpt || !o.data) {
        fprintf(stderr, "%s eval: --ckpt CKPT and --data GLOB are required\n", prog);
        return 2;
    }
    json_t *state;
    float *params = load_weights(m, prog, o.ckpt, &state);
    if (!params)
        return 1;
    if (o.batch < 0)
        o.batch = state_int(state, "batch", 16);
    if (o.seq < 0)
        o.seq = state_int(state, "seq", default_seq(m));
    json_decref(state);
    if (o.batch < 1 || o.seq < 1 || o.batch > INT32_MAX || o.seq > INT32_MAX || o.batches < 0) {
        fprintf(stderr, "%s eval: --batch and --seq must be at least 1, --batches at least 0\n", prog);
        free(params);
        return 2;
    }
    char **paths = NULL, *err = NULL;
    int npaths = 0;
    RtLoader l;
    if (rt_glob(o.data, &paths, &npaths, &err) ||
        rt_loader_init(&l, (const char *const *)paths, npaths, (int)o.batch, (int)o.seq, RT_LOADER_SEQUENTIAL, 0,
                       &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err), free(params);
        if (paths)
            rt_glob_free(paths, npaths);
        return 1;
    }
    rc = 0;
    if (rt_loader_check_vocab(&l, m->desc->vocab, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err);
        rc = 1;
    }
    RtPool *pool = rt_pool_create((int)o.threads);
    int64_t abytes = strata_arena_bytes(m->desc, o.batch, o.seq, rt_pool_size(pool));
    void *arena = rt_zalloc64((size_t)abytes);
    float *logits = rt_zalloc64((size_t)(o.batch * o.seq * m->desc->vocab) * sizeof(float)); /* (B,T,V) */
    double loss = 0;
    int64_t ntok = 0;
    if (!rc && rt_eval_loss(m, params, &l, o.batches, pool, arena, abytes, logits, &loss, &ntok)) {
        fprintf(stderr, "%s: the model's forward pass failed\n", prog);
        rc = 3;
    }
    if (!rc)
        printf("tokens %lld | loss %.6f | ppl %.4f\n", (long long)ntok, loss, exp(loss));
    rt_pool_free(pool);
    rt_loader_free(&l);
    rt_glob_free(paths, npaths);
    free(arena), free(logits), free(params);
    return rc;
}

/* --- sample --------------------------------------------------------------- */

static int cmd_sample(const RtModel *m, const char *prog, int argc, char **argv)
{
    SampleOptions o = {.tokens = 100, .temperature = 0.8, .top_p = 1.0, .seed = 1, .seq = -1};
    int rc = parse_opts(prog, "sample", sample_specs, NSPECS(sample_specs), &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.ckpt) {
        fprintf(stderr, "%s sample: --ckpt CKPT is required\n", prog);
        return 2;
    }
    if (o.tokens < 0 || !(o.temperature >= 0) || o.top_k < 0 || !(o.top_p > 0 && o.top_p <= 1)) {
        fprintf(stderr, "%s sample: --tokens, --temperature and --top-k must be >= 0, --top-p in (0, 1]\n", prog);
        return 2;
    }
    json_t *state;
    float *params = load_weights(m, prog, o.ckpt, &state);
    if (!params)
        return 1;
    if (o.seq < 0)
        o.seq = state_int(state, "seq", default_seq(m));
    json_t *tj = json_object_get(state, "tokenizer");
    char *tok_path = o.tokenizer ? strdup(o.tokenizer) : json_is_string(tj) && *json_string_value(tj)
                                                             ? strdup(json_string_value(tj))
                                                             : NULL;
    json_decref(state);
    char *err = NULL;
    RtTokenizer *tok = tok_path ? rt_tok_load(tok_path, &err) : rt_tok_bytes();
    if (!tok) {
        fprintf(stderr, "%s: %s\n", prog, err ? err : "out of memory");
        free(err), free(tok_path), free(params);
        return 1;
    }
    const int64_t V = m->desc->vocab, T = o.seq;
    int32_t *ids = NULL;
    int64_t n = o.prompt ? rt_tok_encode(tok, o.prompt, strlen(o.prompt), &ids) : 0;
    if (n < 0) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(3);
    }
    int32_t *seq = rt_zalloc64((size_t)(n + o.tokens + 1) * sizeof *seq);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] >= V) {
            fprintf(stderr, "%s: the prompt's token %lld is id %d, outside the model's vocabulary of %lld (%s)\n",
                    prog, (long long)i, ids[i], (long long)V, tok_path ? tok_path : "raw-byte tokenizer");
            rc = 1;
        }
        seq[i] = ids[i];
    }
    free(ids);
    if (n == 0) { /* an empty prompt starts from <|endoftext|> when there is one */
        int32_t eot = rt_tok_eot(tok);
        seq[n++] = eot >= 0 && eot < V ? eot : 0;
    } else if (!rc && o.prompt)
        fwrite(o.prompt, 1, strlen(o.prompt), stdout);
    RtPool *pool = rt_pool_create((int)o.threads);
    int64_t abytes = strata_arena_bytes(m->desc, 1, T, rt_pool_size(pool));
    void *arena = rt_zalloc64((size_t)abytes);
    float *logits = rt_zalloc64((size_t)(T * V) * sizeof(float)); /* (1,T,V) */
    double *probs = rt_zalloc64((size_t)V * sizeof(double));
    int32_t *work = rt_zalloc64((size_t)V * sizeof(int32_t));
    RtSampleOptions so = {.temperature = o.temperature, .top_k = o.top_k, .top_p = o.top_p};
    uint64_t rng = (uint64_t)o.seed;
    for (int64_t k = 0; !rc && k < o.tokens; k++) {
        int64_t w = n < T ? n : T;
        StrataStep s = {.params = params, .arena = arena, .arena_bytes = abytes, .tokens = seq + n - w, .B = 1,
                        .T = w, .logits = logits, .pool = pool};
        if (m->forward(&s) != STRATA_OK) {
            fprintf(stderr, "%s: the model's forward pass failed\n", prog);
            rc = 3;
            break;
        }
        int32_t next = rt_sample(logits + (w - 1) * V, V, &so, &rng, probs, work);
        size_t len = 0;
        const char *bytes = rt_tok_token(tok, next, &len);
        if (!bytes) {
            fprintf(stderr, "\n%s: the model chose id %d, which the tokenizer (%s) cannot decode\n", prog, next,
                    tok_path ? tok_path : "raw bytes");
            rc = 1;
            break;
        }
        fwrite(bytes, 1, len, stdout);
        fflush(stdout);
        seq[n++] = next;
    }
    if (!rc)
        putchar('\n');
    fflush(stdout);
    rt_pool_free(pool);
    rt_tok_free(tok);
    free(tok_path), free(seq), free(arena), free(logits), free(probs), free(work), free(params);
    return rc;
}

/* --- train and the entry point -------------------------------------------- */

static int cmd_train(const RtModel *m, const char *prog, int argc, char **argv)
{
    RtTrainOptions o;
    rt_train_defaults(&o);
    int rc = parse_opts(prog, "train", rt_train_specs, RT_N_TRAIN_OPTS, &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    return rt_train(m, &o, prog);
}

int rt_trainer_main(const RtModel *m, int argc, char **argv)
{
    const char *prog = argc > 0 && argv[0] ? argv[0] : "trainer";
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout, prog);
        return argc < 2 ? 2 : 0;
    }
    if (!m || !m->desc || m->desc->magic != STRATA_MODEL_MAGIC || m->desc->abi_version != STRATA_ABI_VERSION) {
        fprintf(stderr, "%s: internal error: no model, or not model ABI v%d\n", prog, STRATA_ABI_VERSION);
        return 3;
    }
    if (!strcmp(argv[1], "train") || !strcmp(argv[1], "sft")) { /* data-parallel under mpirun */
        RtComm *c = rt_comm_init(&argc, &argv);
        int rc = !strcmp(argv[1], "train") ? cmd_train(m, prog, argc, argv) : rt_sft_main(m, prog, argc, argv);
        rt_comm_finalize(c);
        return rc;
    }
    int ranks = 0;
    if (rt_comm_launched(&ranks) && ranks > 1) {
        fprintf(stderr, "%s: %s runs in one process, not under an MPI launcher with %d ranks (only train and sft "
                "are data-parallel)\n", prog, argv[1], ranks);
        return 2;
    }
    if (!strcmp(argv[1], "eval"))
        return cmd_eval(m, prog, argc, argv);
    if (!strcmp(argv[1], "sample"))
        return cmd_sample(m, prog, argc, argv);
    if (!strcmp(argv[1], "analyze"))
        return rt_analyze_main(m, prog, argc, argv);
    if (!strcmp(argv[1], "evaltask"))
        return rt_evaltask_main(m, prog, argc, argv);
    fprintf(stderr, "%s: unknown command '%s' (train, eval, sample, sft, evaltask; %s --help)\n", prog, argv[1],
            prog);
    return 2;
}

/* --- shared with sft and evaltask (commands.h) ---------------------------- */

int rt_parse_opts(const char *prog, const char *cmd, const RtOptSpec *specs, int n, void *base, bool *given,
                  int argc, char **argv)
{
    return parse_opts(prog, cmd, specs, n, base, given, argc, argv);
}

float *rt_load_weights(const RtModel *m, const char *prog, const char *path, json_t **state)
{
    return load_weights(m, prog, path, state);
}

int64_t rt_default_seq(const RtModel *m)
{
    return default_seq(m);
}
