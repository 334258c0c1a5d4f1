/* train.c - `train` (train.h): options and their defaults, the state kept
 * in checkpoints, resume, the step loop, validation.
 * Entry points: rt_train_defaults, rt_train (the shard source),
 * rt_train_source (any RtBatchSource, e.g. sft's), rt_eval_loss.  rt_train owns
 * every buffer it makes (parameters, gradients, moments, arena, batches)
 * and frees them before returning.
 * Data parallelism (collective.h, rt_comm_world): with N ranks every rank
 * draws the same global batch and trains on its B/N rows; the gradients and
 * the loss are all-reduced once per step (after local accumulation), so
 * every rank applies the same update; rank 0 alone logs, validates and
 * writes metrics and checkpoints; all start from rank 0's weights.
 * --device cuda (train/device.h, issue #18): the same loop with the steps
 * on the device (rt_gpu_train_step, then clip and AdamW in
 * rt_gpu_optim_step); the batches are drawn on the host and uploaded, the
 * loss and gradient norm come back each step, the weights and moments
 * come back for checkpoints (the same file as on the CPU, so a run resumes
 * on either kind) and for validation, which runs on the host. */
#define _GNU_SOURCE /* asprintf */
#include "train/train.h"

#include "train/device.h"
#include "train/diag.h"
#include "core/util.h"
#include "store/atomic_file.h"
#include "store/checkpoint.h"
#include "store/rundir.h"
#include "train/collective.h"
#include "train/ident.h"
#include "train/init.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/sample.h"
#include "train/schedule.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const RtOptSpec rt_train_specs[RT_N_TRAIN_OPTS] = {
#define X(f, n, k, s, a, h) {#f, n, k, s, (int)offsetof(RtTrainOptions, f), a, h},
    RT_TRAIN_OPTIONS(X)
#undef X
};

void rt_train_defaults(RtTrainOptions *o)
{
    *o = (RtTrainOptions){.out = "run", .schedule = "cosine", .optim = "adamw", .on_nan = "stop", .precision = "fp32",
                          .batch = 16, .seq = -1, .steps = 1000, .accum = 1, .warmup = -1, .seed = 1,
                          .threads = 0, .log_every = 10, .val_every = 100, .val_batches = 20, .ckpt_every = 500,
                          .lr = 1e-3, .min_lr_ratio = 0.1, .decay_frac = 0.2, .beta1 = 0.9, .beta2 = 0.95,
                          .eps = 1e-8, .wd = 0.1, .clip = 1.0};
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --- the state in checkpoints --------------------------------------------- */

typedef struct TrainState {
    int64_t step;        /* updates done */
    int64_t optim_step;  /* RtAdamW.step */
    int64_t epoch, pos;  /* loader state */
    int64_t tokens;      /* trained on */
    int64_t skipped;     /* NaN steps skipped */
    int64_t ranks;       /* processes that wrote it (data parallelism; 1 without MPI) */
} TrainState;

/* The state and options as the checkpoint keeps them (checkpoint.h), with
 * the source's data identity: also what every rank of a job must agree on
 * (the thread count, each machine's, is not among them). */
static char *state_json(const RtTrainOptions *o, const TrainState *s, const RtBatchSource *src)
{
    json_t *j = json_object();
    json_object_set_new(j, "command", json_string(src->cmd));
    json_object_set_new(j, "step", json_integer(s->step));
    json_object_set_new(j, "optim_step", json_integer(s->optim_step));
    json_object_set_new(j, "epoch", json_integer(s->epoch));
    json_object_set_new(j, "pos", json_integer(s->pos));
    json_object_set_new(j, "tokens", json_integer(s->tokens));
    json_object_set_new(j, "skipped", json_integer(s->skipped));
    json_object_set_new(j, "ranks", json_integer(s->ranks));
    for (int i = 0; i < RT_N_TRAIN_OPTS; i++) {
        const RtOptSpec *sp = &rt_train_specs[i];
        const char *at = (const char *)o + sp->offset;
        if (!sp->saved)
            continue;
        json_t *v = NULL;
        switch (sp->kind) {
        case RT_OPT_STR: {
            const char *str = *(const char *const *)at;
            v = str ? json_string(str) : json_null();
            break;
        }
        case RT_OPT_INT: v = json_integer(*(const int64_t *)at); break;
        case RT_OPT_REAL: v = json_real(*(const double *)at); break;
        case RT_OPT_FLAG: v = json_boolean(*(const int *)at); break;
        }
        json_object_set_new(j, sp->key, v ? v : json_null());
    }
    if (src->data_id) {
        char hex[24];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)src->data_id);
        json_object_set_new(j, "data_id", json_string(hex));
        json_object_set_new(j, "data_what", json_string(src->data_what));
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    return text;
}

static int state_int(json_t *j, const char *key, int64_t *out, const char *path, const char *prog)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) {
        fprintf(stderr, "%s: %s: strata.state: \"%s\" is missing or not an integer\n", prog, path, key);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* Takes the options not given on the command line from the state; a given
 * --batch, --seq or --seed that differs is an error (a warning with
 * --force-resume), and so is another --data unless the state has the
 * data's identity (then setup compares the data themselves). */
static int state_restore(json_t *j, RtTrainOptions *o, TrainState *s, const char *path, const char *cmd,
                         const char *prog, bool talk)
{
    json_t *c = json_object_get(j, "command"); /* absent: a `train` run */
    const char *was = json_is_string(c) ? json_string_value(c) : "train";
    if (strcmp(was, cmd)) {
        fprintf(stderr, "%s: %s: the checkpoint is from a `%s` run; resume it with %s, not %s\n", prog, path, was,
                was, cmd);
        return -1;
    }
    if (state_int(j, "step", &s->step, path, prog) || state_int(j, "optim_step", &s->optim_step, path, prog) ||
        state_int(j, "epoch", &s->epoch, path, prog) || state_int(j, "pos", &s->pos, path, prog) ||
        state_int(j, "tokens", &s->tokens, path, prog) || state_int(j, "skipped", &s->skipped, path, prog))
        return -1;
    json_t *nr = json_object_get(j, "ranks"); /* absent: a checkpoint from before MPI */
    s->ranks = json_is_integer(nr) ? json_integer_value(nr) : 1;
    if (s->step < 0 || s->optim_step < 0 || s->tokens < 0 || s->skipped < 0 || s->ranks < 1) {
        fprintf(stderr, "%s: %s: strata.state: step %lld, optim_step %lld, tokens %lld, skipped %lld, ranks %lld: "
                "counts must be >= 0 and ranks >= 1 (a damaged checkpoint?)\n", prog, path, (long long)s->step,
                (long long)s->optim_step, (long long)s->tokens, (long long)s->skipped, (long long)s->ranks);
        return -1;
    }
    for (int i = 0; i < RT_N_TRAIN_OPTS; i++) {
        const RtOptSpec *sp = &rt_train_specs[i];
        char *at = (char *)o + sp->offset;
        json_t *v = json_object_get(j, sp->key);
        if (!sp->saved || !v)
            continue;
        bool strict = i == RT_TOPT_batch || i == RT_TOPT_seq || i == RT_TOPT_seed ||
                      (i == RT_TOPT_data && !json_is_string(json_object_get(j, "data_id")));
        bool bad = false, differs = false;
        char saved[64] = "";
        const char *saved_s = saved;
        switch (sp->kind) {
        case RT_OPT_STR:
            bad = !json_is_string(v) && !json_is_null(v);
            saved_s = json_is_string(v) ? json_string_value(v) : "(none)";
            if (!bad && o->given[i]) {
                const char *g = *(const char **)at;
                differs = !json_is_string(v) || !g || strcmp(g, json_string_value(v));
            } else if (!bad)
                *(const char **)at = json_is_string(v) ? json_string_value(v) : NULL;
            break;
        case RT_OPT_INT:
            bad = !json_is_integer(v);
            if (bad)
                break;
            snprintf(saved, sizeof saved, "%lld", (long long)json_integer_value(v));
            if (o->given[i])
                differs = *(int64_t *)at != json_integer_value(v);
            else
                *(int64_t *)at = json_integer_value(v);
            break;
        case RT_OPT_REAL:
            bad = !json_is_number(v);
            if (!bad && !o->given[i])
                *(double *)at = json_number_value(v);
            break;
        case RT_OPT_FLAG:
            bad = !json_is_boolean(v);
            if (!bad && !o->given[i])
                *(int *)at = json_is_true(v);
            break;
        }
        if (bad) {
            fprintf(stderr, "%s: %s: strata.state: \"%s\" has the wrong type\n", prog, path, sp->key);
            return -1;
        }
        if (strict && o->given[i] && differs) {
            char given[64];
            const char *given_s = given;
            if (sp->kind == RT_OPT_INT)
                snprintf(given, sizeof given, "%lld", (long long)*(int64_t *)at);
            else
                given_s = *(const char **)at ? *(const char **)at : "(none)";
            if (o->force_resume) {
                if (talk)
                    fprintf(stderr, "%s: warning: --force-resume: %s %s instead of the checkpoint's %s %s\n", prog,
                            sp->flag, given_s, sp->flag, saved_s);
                continue;
            }
            fprintf(stderr, "%s: %s: %s %s conflicts with the checkpoint's %s %s (a resumed run keeps it; "
                    "--force-resume overrides)\n", prog, path, sp->flag, given_s, sp->flag, saved_s);
            return -1;
        }
    }
    return 0;
}

/* Whether the config has a "ctx", and its value in *ctx. */
static bool config_ctx(const char *config_json, double *ctx)
{
    json_t *j = config_json ? json_loads(config_json, 0, NULL) : NULL;
    json_t *v = j ? json_object_get(j, "ctx") : NULL;
    bool has = json_is_number(v);
    *ctx = has ? json_number_value(v) : 0;
    json_decref(j);
    return has;
}

/* --- validation ----------------------------------------------------------- */

typedef struct CpuForward { /* rt_eval_loss's forward pass for rt_mean_xent */
    const RtModel *m;
    const float *params;
    RtPool *pool;
    void *arena;
    int64_t arena_bytes, B, T;
} CpuForward;

static int cpu_forward(void *ctx, const int32_t *tokens, float *logits)
{
    const CpuForward *f = ctx;
    StrataStep s = {.params = (void *)f->params, .arena = f->arena, .arena_bytes = f->arena_bytes, .tokens = tokens,
                    .B = f->B, .T = f->T, .logits = logits, .pool = f->pool, .precision = f->m->precision};
    return f->m->forward(&s) == STRATA_OK ? 0 : -1;
}

int rt_eval_loss(const RtModel *m, const float *params, RtLoader *l, int64_t batches, RtPool *pool, void *arena,
                 int64_t arena_bytes, float *logits, double *loss, int64_t *ntok)
{
    CpuForward f = {.m = m, .params = params, .pool = pool, .arena = arena, .arena_bytes = arena_bytes, .B = l->B,
                    .T = l->T};
    return rt_mean_xent(l, batches, m->desc->vocab, logits, cpu_forward, &f, loss, ntok);
}

/* --- the shard source of `train` ------------------------------------------ */

typedef struct ShardSource {
    char **paths, **vpaths;
    int npaths, nvpaths;
    RtLoader train, val;   /* random windows; sequential for validation */
    bool have_train, have_val;
} ShardSource;

static int shard_open_one(const RtModel *m, const RtTrainOptions *o, const char *prog, const char *glob,
                          char ***paths, int *n, RtLoader *l, RtLoaderMode mode)
{
    char *err = NULL;
    if (rt_glob(glob, paths, n, &err) ||
        rt_loader_init(l, (const char *const *)*paths, *n, (int)o->batch, (int)o->seq, mode, (uint64_t)o->seed,
                       &err))
        goto fail;
    if (rt_loader_check_vocab(l, m->desc->vocab, &err)) {
        rt_loader_free(l); /* the caller frees only loaders that opened cleanly */
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "%s: %s\n", prog, err ? err : "cannot read the data");
    free(err);
    return -1;
}

static void shard_close(RtBatchSource *s)
{
    ShardSource *ss = s->ctx;
    if (ss->have_train)
        rt_loader_free(&ss->train);
    if (ss->have_val)
        rt_loader_free(&ss->val);
    if (ss->paths)
        rt_glob_free(ss->paths, ss->npaths);
    if (ss->vpaths)
        rt_glob_free(ss->vpaths, ss->nvpaths);
    *ss = (ShardSource){0};
}

static int shard_open(RtBatchSource *s, const RtModel *m, const RtTrainOptions *o, const char *prog, bool *has_val)
{
    ShardSource *ss = s->ctx;
    int rc = shard_open_one(m, o, prog, o->data, &ss->paths, &ss->npaths, &ss->train, RT_LOADER_RANDOM);
    ss->have_train = !rc;
    if (!rc && o->val)
        rc = shard_open_one(m, o, prog, o->val, &ss->vpaths, &ss->nvpaths, &ss->val, RT_LOADER_SEQUENTIAL);
    ss->have_val = !rc && o->val;
    if (rc)
        shard_close(s);
    *has_val = ss->have_val;
    if (!rc) {
        s->data_id = ss->train.id;
        snprintf(s->data_what, sizeof s->data_what, "%d shard%s, %lld tokens", ss->train.nshard,
                 ss->train.nshard == 1 ? "" : "s", (long long)ss->train.ntok);
    }
    return rc;
}

static void shard_next(RtBatchSource *s, int32_t *tok, int32_t *tgt, float *mask)
{
    (void)mask;
    rt_loader_next(&((ShardSource *)s->ctx)->train, tok, tgt);
}

static void shard_get_state(RtBatchSource *s, int64_t *epoch, int64_t *pos)
{
    RtLoaderState ls = rt_loader_state(&((ShardSource *)s->ctx)->train);
    *epoch = ls.epoch, *pos = ls.pos;
}

static int shard_set_state(RtBatchSource *s, int64_t epoch, int64_t pos, char **err)
{
    return rt_loader_set_state(&((ShardSource *)s->ctx)->train, (RtLoaderState){epoch, pos}, err);
}

static int shard_val_loss(RtBatchSource *s, const RtModel *m, const float *params, int64_t batches, RtPool *pool,
                          void *arena, int64_t arena_bytes, float *logits, double *loss, int64_t *ntok)
{
    return rt_eval_loss(m, params, &((ShardSource *)s->ctx)->val, batches, pool, arena, arena_bytes, logits, loss,
                        ntok);
}

/* --- the run -------------------------------------------------------------- */

typedef struct Run {
    const RtModel *m;
    RtTrainOptions *o;
    const char *prog;
    char *ckpt_path, *metrics_path, *settings_path; /* OUT/checkpoint.safetensors, metrics.jsonl, run.json */
    char *data_err;
    RtBatchSource *src;  /* the batches: shards (train) or records (sft) */
    bool have_src, have_val;
    RtPool *pool;
    float *params, *grads, *logits;
    void *arena;
    int64_t arena_bytes;
    int32_t *tok, *tgt;
    float *mask;         /* (B,T) loss weights of a masked source, else NULL */
    RtAdamW opt;
    bool have_opt;
    RtLrSchedule sched;
    RtMetrics metrics;
    bool have_metrics;
    TrainState st;
    int64_t last_ckpt;   /* step of the last checkpoint written or resumed from, -1 none */
    json_t *state;       /* the resumed state (its strings back options) */
    RtComm *comm;        /* the job: rank, size (size 1 without MPI) */
    RtBatchSlice slice;  /* this rank's rows of every global batch */
    bool lead;           /* rank 0: logs, validates, writes metrics and checkpoints */
    double t_reduce;     /* seconds in the gradient and loss all-reduce */
    RtRunDir dir;        /* rank 0: --out, made if missing and locked */
    bool have_dir;
    bool wrote;          /* this run wrote a checkpoint or a metrics row */
    RtDevice *dev;       /* --device */
    RtGpuModel *gpu;     /* --device cuda: the model on the device (params, grads, moments there) */
    double *sumsq;       /* the gradient norm's block sums, taken by the train step (optim.h): NULL
                            when the gradients change after it (--accum, ranks, the device) */
    RtSegment *segs;     /* (nparams) the optimizer's segments, for rt_grad_norm_finish */
    double *rsums;       /* ranks: the gradient norm's block sums and marks (optim.h,
                            rt_grad_sumsq_piece), taken in the all-reduce, then the loss sum:
                            2 rt_grad_norm_blocks(n) + 1 */
} Run;

/* The tail of a message that stops a run: where the last good weights are. */
static void nothing_saved(Run *r)
{
    if (r->last_ckpt >= 0)
        fprintf(stderr, "nothing saved (last checkpoint: %s at step %lld)\n", r->ckpt_path, (long long)r->last_ckpt);
    else
        fprintf(stderr, "nothing saved (no checkpoint written by this run)\n");
}

/* OUT/run.json: the run's thread count, kept beside the checkpoint rather
 * than in it, so that the checkpoint's bytes do not depend on --threads.
 * Rewritten (atomically) after every checkpoint; a failure is a warning,
 * since nothing the run computes depends on it. */
static void write_settings(Run *r)
{
    char text[64], *err = NULL;
    int n = snprintf(text, sizeof text, "{\"threads\": %lld}\n", (long long)r->o->threads);
    if (rt_atomic_write_file(r->settings_path, text, (size_t)n, &err)) {
        fprintf(stderr, "%s: warning: %s (a resume without --threads will use all CPUs)\n", r->prog, err);
        free(err);
    }
}

/* The thread count OUT/run.json records, or 0 (all CPUs) without one. */
static int64_t run_threads(const Run *r)
{
    json_t *j = json_load_file(r->settings_path, 0, NULL), *t = json_object_get(j, "threads");
    int64_t n = json_is_integer(t) && json_integer_value(t) >= 0 ? json_integer_value(t) : 0;
    json_decref(j);
    return n;
}

/* --device cuda: the weights and moments back on the host (r->params,
 * r->opt.m, r->opt.v), for a checkpoint or validation.  0, or -1 (printed). */
static int gpu_fetch(Run *r, bool moments, const char *why)
{
    if (!r->gpu)
        return 0;
    if (rt_gpu_get_params(r->gpu, r->params) || (moments && rt_gpu_get_moments(r->gpu, r->opt.m, r->opt.v))) {
        fprintf(stderr, "%s: --device %s: cannot copy the weights back for %s at step %lld: %s\n", r->prog,
                r->dev->name, why, (long long)r->st.step, rt_gpu_error(r->gpu));
        return -1;
    }
    return 0;
}

static int save(Run *r)
{
    r->st.ranks = r->comm->size;
    if (!r->lead) { /* rank 0 writes it */
        r->last_ckpt = r->st.step;
        return 0;
    }
    if (gpu_fetch(r, true, "the checkpoint")) {
        fprintf(stderr, "%s: stopping at step %lld, ", r->prog, (long long)r->st.step);
        nothing_saved(r);
        return -1;
    }
    r->st.optim_step = r->opt.step;
    r->src->get_state(r->src, &r->st.epoch, &r->st.pos);
    char *js = state_json(r->o, &r->st, r->src), *err = NULL;
    RtCkptInfo info = {.source = r->m->source, .model_path = r->m->path, .config_json = r->m->config_json,
                       .state_json = js, .model_id = r->m->model_id, .sources_json = r->m->sources_json,
                       .defines_json = r->m->defines_json};
    int rc = js ? rt_ckpt_write(r->ckpt_path, r->m->desc, r->params, r->opt.m, r->opt.v, &info, &err) : -1;
    free(js);
    if (rc) {
        fprintf(stderr, "%s: %s; stopping at step %lld, ", r->prog, err ? err : "cannot encode the training state",
                (long long)r->st.step);
        nothing_saved(r);
        free(err);
        return -1;
    }
    write_settings(r);
    r->last_ckpt = r->st.step;
    r->wrote = true;
    return 0;
}

/* A metrics row that could not be written (a full disk): the run stops
 * there, keeping its last checkpoint. */
static void metrics_failed(Run *r, char *err)
{
    fprintf(stderr, "%s: %s; stopping at step %lld, ", r->prog, err, (long long)r->st.step);
    nothing_saved(r);
    free(err);
}

/* 0; -1 when the forward pass failed, -2 when the metrics row could not
 * be written (both reported). */
static int validate(Run *r)
{
    double loss;
    int64_t n;
    if (gpu_fetch(r, false, "validation"))
        return -1;
    if (r->src->val_loss(r->src, r->m, r->params, r->o->val_batches, r->pool, r->arena, r->arena_bytes, r->logits,
                         &loss, &n)) {
        fprintf(stderr, "%s: the forward pass failed during validation\n", r->prog);
        return -1;
    }
    char *err = NULL;
    if (rt_metrics_val(&r->metrics, r->st.step, loss, &err)) {
        metrics_failed(r, err);
        return -2;
    }
    r->wrote = true;
    if (!r->o->quiet)
        fprintf(stderr, "val step %lld | loss %.4f | ppl %.2f\n", (long long)r->st.step, loss, exp(loss));
    return 0;
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e8)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* Options: defaults, ranges, the schedule.  2 (usage) or 0. */
static int check_options(Run *r)
{
    RtTrainOptions *o = r->o;
    const char *bad = NULL;
    char need[64];
    snprintf(need, sizeof need, "--data %s is required", r->src->data_arg);
    if (!o->data)
        bad = need;
    else if (o->batch < 1 || o->batch > INT32_MAX)
        bad = "--batch must be between 1 and 2147483647";
    else if (o->seq < 1 || o->seq > INT32_MAX)
        bad = "--seq must be between 1 and 2147483647";
    else if (o->steps < 0)
        bad = "--steps must be >= 0";
    else if (o->accum < 1)
        bad = "--accum must be at least 1";
    else if (!(o->lr >= 0) || !(o->min_lr_ratio >= 0 && o->min_lr_ratio <= 1))
        bad = "--lr must be >= 0 and --min-lr-ratio in [0, 1]";
    else if (o->warmup < 0)
        bad = "--warmup must be >= 0";
    else if (o->log_every < 1 || o->val_every < 1 || o->ckpt_every < 1)
        bad = "--log-every, --val-every and --ckpt-every must be at least 1";
    else if (o->val_batches < 0)
        bad = "--val-batches must be >= 0";
    else if (!(o->clip >= 0))
        bad = "--clip must be >= 0";
    else if (o->exit_after < 0)
        bad = "--exit-after must be >= 0";
    else if (strcmp(o->on_nan, "stop") && strcmp(o->on_nan, "skip"))
        bad = "--on-nan must be stop or skip";
    else if (rt_precision_parse(o->precision) < 0)
        bad = "--precision must be fp32 or bf16";
    else if (strcmp(o->optim, "adamw") && strcmp(o->optim, "adam"))
        bad = "--optim must be adamw or adam";
    else if (o->resume && o->init)
        bad = "--resume and --init cannot be used together";
    if (!bad) {
        r->sched = (RtLrSchedule){.max_lr = o->lr, .min_ratio = o->min_lr_ratio, .warmup = o->warmup,
                                  .total = o->steps > 0 ? o->steps : 1, .decay_frac = o->decay_frac};
        if (rt_lr_kind_parse(o->schedule, &r->sched.kind))
            bad = "--schedule must be cosine, linear, constant or wsd";
        else
            bad = rt_lr_check(&r->sched);
    }
    if (bad) {
        if (r->lead)
            fprintf(stderr, "%s %s: %s\n", r->prog, r->src->cmd, bad);
        return 2;
    }
    char *err = NULL; /* data parallelism: B/N rows per rank */
    if (rt_batch_slice(o->batch, r->comm->rank, r->comm->size, &r->slice, &err)) {
        if (r->lead)
            fprintf(stderr, "%s %s: --batch: %s\n", r->prog, r->src->cmd, err);
        free(err);
        return 2;
    }
    return 0;
}

/* Rank 0's checkpoint, for --resume: opens it (*ck, *have_ck) and restores
 * the options and the state from it.  An exit status, or -1 to go on. */
static int read_resume(Run *r, RtSafetensors *ck, bool *have_ck)
{
    char *err = NULL;
    if (access(r->ckpt_path, F_OK)) {
        fprintf(stderr, "%s: --resume: no checkpoint %s to resume from (%s)\n", r->prog, r->ckpt_path,
                strerror(errno));
        return 1;
    }
    if (rt_st_open(ck, r->ckpt_path, &err)) {
        fprintf(stderr, "%s: %s\n", r->prog, err);
        free(err);
        return 1;
    }
    *have_ck = true;
    const char *sj = rt_st_meta(ck, "strata.state");
    json_error_t je;
    r->state = sj ? json_loads(sj, 0, &je) : NULL;
    if (!json_is_object(r->state)) {
        fprintf(stderr, "%s: %s: no training state (metadata strata.state) to resume from\n", r->prog,
                r->ckpt_path);
        return 1;
    }
    if (state_restore(r->state, r->o, &r->st, r->ckpt_path, r->src->cmd, r->prog, !r->o->quiet))
        return 1;
    char *diff = rt_model_diff(ck, r->m); /* the model: another file, -D value, preset */
    if (diff && r->o->force_resume)
        fprintf(stderr, "%s: warning: --force-resume: %s is of another model: %s\n", r->prog, r->ckpt_path, diff);
    else if (diff)
        fprintf(stderr, "%s: %s: --resume with another model than the checkpoint's: %s; give the checkpoint's model "
                "file, -D values and preset (its metadata strata.model, strata.sources, strata.config, "
                "strata.defines), or --force-resume to go on with this model\n", r->prog, r->ckpt_path, diff);
    bool refuse = diff && !r->o->force_resume;
    free(diff);
    return refuse ? 1 : -1;
}

/* Rank 0, before anything is read or written in --out: makes and locks the
 * directory, deletes temporary checkpoint files of killed runs, and
 * refuses to start afresh over a run unless --overwrite (which deletes
 * that run's files).  An exit status, or -1 to go on. */
static int prepare_dir(Run *r)
{
    const RtTrainOptions *o = r->o;
    char *err = NULL;
    if (rt_rundir_open(&r->dir, o->out, &err)) {
        fprintf(stderr, "%s: %s\n", r->prog, err);
        free(err);
        return 1;
    }
    r->have_dir = true;
    char *diag = rt_fmt("%s/diagnostics.jsonl", o->out);
    const char *files[4] = {r->ckpt_path, r->metrics_path, diag, r->settings_path}, *found[4];
    long long bytes = 0, b;
    int stale = 0; /* the temporary files of the checkpoint, of the logs' trims and of run.json */
    for (int i = 0; i < 4; i++, bytes += b)
        stale += rt_atomic_clean_stale(files[i], &b);
    if (stale > 0 && !o->quiet)
        fprintf(stderr, "%s: note: removed %d temporary file%s of killed runs from %s (%.1f MB)\n", r->prog, stale,
                stale == 1 ? "" : "s", o->out, (double)bytes / 1e6);
    if (o->resume) {
        free(diag);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < 4; i++) {
        struct stat st;
        if (stat(files[i], &st) == 0 && S_ISREG(st.st_mode))
            found[n++] = files[i];
    }
    int rc = -1;
    if (n > 0 && !o->overwrite) {
        fprintf(stderr, "%s: %s holds a run already (", r->prog, o->out);
        for (int i = 0; i < n; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", found[i]);
        fprintf(stderr, "): give --resume to continue it, --overwrite to start afresh (deleting it), or another "
                "--out\n");
        rc = 1;
    }
    for (int i = 0; i < n && rc < 0; i++) {
        if (unlink(found[i]) != 0) {
            fprintf(stderr, "%s: --overwrite: cannot delete %s: %s\n", r->prog, found[i], strerror(errno));
            rc = 1;
        } else if (!o->quiet)
            fprintf(stderr, "%s: note: --overwrite: deleted %s\n", r->prog, found[i]);
    }
    free(diag);
    return rc;
}

/* --resume: the logs cut back to the checkpoint's step, so the steps
 * that run again are not logged twice.  0, or -1 (reported). */
static int trim_logs(Run *r)
{
    char *diag = rt_fmt("%s/diagnostics.jsonl", r->o->out);
    const char *logs[2] = {r->metrics_path, diag};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        int64_t dropped = 0;
        char *err = NULL;
        if (rt_metrics_trim(logs[i], r->st.step, &dropped, &err)) {
            fprintf(stderr, "%s: %s\n", r->prog, err);
            free(err);
            rc = -1;
        } else if (dropped > 0 && !r->o->quiet)
            fprintf(stderr, "%s: note: %s: dropped %lld line%s logged after the checkpoint's step %lld\n", r->prog,
                    logs[i], (long long)dropped, dropped == 1 ? "" : "s", (long long)r->st.step);
    }
    free(diag);
    return rc;
}

/* The source's data against the identity the checkpoint recorded.  An
 * exit status, or -1 to go on. */
static int check_data(Run *r)
{
    json_t *id = json_object_get(r->state, "data_id"), *what = json_object_get(r->state, "data_what");
    if (!json_is_string(id) || !r->src->data_id)
        return -1; /* a checkpoint from before data identities */
    char now[24];
    snprintf(now, sizeof now, "%016llx", (unsigned long long)r->src->data_id);
    if (!strcmp(now, json_string_value(id)))
        return -1;
    const char *was_what = json_is_string(what) ? json_string_value(what) : "?";
    if (r->o->force_resume) {
        fprintf(stderr, "%s: warning: --force-resume: the data differ from the checkpoint's (%s, id %s then; %s, id %s "
                "now)\n", r->prog, was_what, json_string_value(id), r->src->data_what, now);
        return -1;
    }
    fprintf(stderr, "%s: %s: --resume on other data than the checkpoint's: it trained on %s (id %s), --data %s holds "
            "%s (id %s) now; resume on the same data, or give --force-resume to go on with these\n", r->prog,
            r->ckpt_path, was_what, json_string_value(id), r->o->data, r->src->data_what, now);
    return 1;
}

/* Rank 0's verdict (an exit status, or -1) and its text (malloc'd, NULL
 * for none) on every rank; returns the verdict. */
static int share_verdict(Run *r, int rc, char **text)
{
    if (r->comm->size == 1)
        return rc;
    int64_t h[2] = {rc, *text ? (int64_t)strlen(*text) + 1 : 0};
    rt_comm_bcast(r->comm, h, sizeof h, 0);
    if (!r->lead && h[1] > 0)
        *text = rt_zalloc64((size_t)h[1]);
    if (h[1] > 0)
        rt_comm_bcast(r->comm, *text, (size_t)h[1], 0);
    return (int)h[0];
}

/* Everything before the first step.  An exit status, or -1 to go on. */
static int setup(Run *r)
{
    RtTrainOptions *o = r->o;
    const StrataModelDesc *d = r->m->desc;
    if (d->real_bytes != 4) {
        fprintf(stderr, "%s: the trainer needs a float (fp32) build of the model\n", r->prog);
        return 1;
    }
    if (asprintf(&r->ckpt_path, "%s/%s", o->out, RT_CKPT_NAME) < 0 ||
        asprintf(&r->metrics_path, "%s/metrics.jsonl", o->out) < 0 ||
        asprintf(&r->settings_path, "%s/run.json", o->out) < 0)
        return 3;
    if (o->resume && o->overwrite) {
        if (r->lead)
            fprintf(stderr, "%s %s: --resume and --overwrite cannot be used together\n", r->prog, r->src->cmd);
        return 2;
    }
    if (o->force_resume && !o->resume) {
        if (r->lead)
            fprintf(stderr, "%s %s: --force-resume goes with --resume\n", r->prog, r->src->cmd);
        return 2;
    }
    RtSafetensors ck = {0};
    bool have_ck = false;
    char *err = NULL;
    int ra = r->lead ? prepare_dir(r) : -1; /* the others never touch --out */
    if (o->resume) { /* rank 0 reads the checkpoint; the others get its state */
        if (ra < 0 && r->lead)
            ra = read_resume(r, &ck, &have_ck);
        char *text = r->lead && ra < 0 ? json_dumps(r->state, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        ra = share_verdict(r, ra, &text);
        if (ra < 0 && !r->lead) {
            r->state = json_loads(text, 0, NULL);
            if (!json_is_object(r->state) ||
                state_restore(r->state, o, &r->st, r->ckpt_path, r->src->cmd, r->prog, false))
                ra = 1;
        }
        free(text);
        if (ra < 0 && r->lead && trim_logs(r))
            ra = 1;
        if (ra >= 0) {
            if (have_ck)
                rt_st_close(&ck);
            return ra;
        }
        r->last_ckpt = r->st.step;
        if (r->lead && r->st.ranks != r->comm->size)
            fprintf(stderr,
                    "%s: note: %s was written by %lld rank(s), resumed with %d: the same global batches, "
                    "equal to rounding (bit-exact needs %lld)\n",
                    r->prog, r->ckpt_path, (long long)r->st.ranks, r->comm->size, (long long)r->st.ranks);
        const int cpus = rt_pool_cpus();
        if (!o->given[RT_TOPT_threads] && r->lead)
            o->threads = run_threads(r);
        if (!o->given[RT_TOPT_threads] && o->threads > cpus) { /* the run's threads, up to this machine's */
            if (r->lead && !o->quiet)
                fprintf(stderr, "%s: note: the checkpoint's run had %lld threads; %d here (the same bits)\n",
                        r->prog, (long long)o->threads, cpus);
            o->threads = cpus;
        }
    } else if (ra >= 0)
        return ra;
    double ctx;
    if (o->seq < 0 && config_ctx(r->m->config_json, &ctx)) {
        if (!(ctx >= 1 && ctx <= INT32_MAX && ctx == floor(ctx))) {
            if (r->lead)
                fprintf(stderr, "%s %s: the model's ctx is %g (-D ctx=%g?), not a window length: give a ctx of at "
                        "least 1 or --seq T\n", r->prog, r->src->cmd, ctx, ctx);
            if (have_ck)
                rt_st_close(&ck);
            return 2;
        }
        o->seq = (int64_t)ctx;
    } else if (o->seq < 0)
        o->seq = 256;
    if (o->warmup < 0)
        o->warmup = o->steps / 10;
    int rc = check_options(r);
    if (rc) {
        if (have_ck)
            rt_st_close(&ck);
        return rc;
    }
    RtTrainOptions mine = *o; /* only rank 0 validates */
    if (!r->lead)
        mine.val = NULL;
    if (r->src->open(r->src, r->m, &mine, r->prog, &r->have_val))
        rc = 1;
    r->have_src = !rc;
    if (!rc && o->resume && r->lead && (rc = check_data(r)) < 0)
        rc = 0;
    if (rc) {
        if (have_ck)
            rt_st_close(&ck);
        return rc;
    }
    /* Buffers. */
    int64_t B = o->batch, T = o->seq, n = d->params_numel;
    r->pool = rt_pool_create((int)o->threads);
    o->threads = rt_pool_size(r->pool); /* what the checkpoint records */
    /* Rank 0 validates (and --diag-every runs) at the global B; the steps take B/N rows. */
    r->arena_bytes = strata_arena_bytes(d, r->lead ? B : r->slice.rows, T, rt_pool_size(r->pool));
    if (r->dev->cuda && !r->have_val) /* the steps run on the device: no host activations */
        r->arena_bytes = 64;
    r->params = rt_zalloc64((size_t)n * sizeof(float));
    r->grads = rt_zalloc64((size_t)n * sizeof(float));
    r->arena = rt_zalloc64((size_t)r->arena_bytes);
    r->tok = rt_zalloc64((size_t)(B * T) * sizeof(int32_t)); /* (B,T) the global batch, every rank */
    r->tgt = rt_zalloc64((size_t)(B * T) * sizeof(int32_t));
    if (r->have_val) /* validation's logits: where strata_forward leaves them anyway, no second copy */
        r->logits = strata_logits_in_arena(d, r->arena, B, T);
    if (r->src->masked)
        r->mask = rt_zalloc64((size_t)(B * T) * sizeof(float));
    if (!r->dev->cuda && r->comm->size == 1)
        r->sumsq = rt_zalloc64((size_t)rt_grad_norm_blocks(n) * sizeof *r->sumsq);
    else if (!r->dev->cuda) /* ranks */
        r->rsums = rt_zalloc64((size_t)(2 * rt_grad_norm_blocks(n) + 1) * sizeof *r->rsums);
    /* Optimizer: weight decay on matrices unless --decay-all. */
    RtSegment *segs = calloc((size_t)d->nparams + 1, sizeof *segs);
    for (int64_t i = 0; i < d->nparams; i++)
        segs[i] = (RtSegment){d->params[i].offset, d->params[i].numel,
                              o->decay_all || d->params[i].role == STRATA_ROLE_MATRIX};
    RtAdamWConfig oc = {.kind = strcmp(o->optim, "adam") ? RT_OPTIM_ADAMW : RT_OPTIM_ADAM, .beta1 = o->beta1,
                        .beta2 = o->beta2, .eps = o->eps, .weight_decay = o->wd};
    rc = rt_adamw_init(&r->opt, n, segs, (int)d->nparams, oc) ? 2 : 0;
    if (r->sumsq) /* kept for rt_grad_norm_finish */
        r->segs = segs;
    else
        free(segs);
    r->have_opt = !rc;
    /* Weights (rank 0's; the others get them in share_start). */
    if (!rc && o->resume) {
        if ((r->lead && (rt_ckpt_read_params(&ck, d, r->params, &err) ||
                         rt_ckpt_read_moments(&ck, d, r->opt.m, r->opt.v, &err))) ||
            r->src->set_state(r->src, r->st.epoch, r->st.pos, &err))
            rc = 1;
        r->opt.step = r->st.optim_step;
    } else if (!rc && o->init && r->lead) {
        if (rt_st_open(&ck, o->init, &err) == 0) {
            have_ck = true;
            if (rt_ckpt_read_params(&ck, d, r->params, &err))
                rc = 1;
        } else
            rc = 1;
    } else if (!rc && r->lead)
        rt_init_params(d, r->params, (uint64_t)o->seed);
    if (have_ck)
        rt_st_close(&ck);
    if (rc == 1) {
        fprintf(stderr, "%s: %s\n", r->prog, err ? err : "cannot read the checkpoint");
        free(err);
        return 1;
    }
    if (rc || !r->lead)
        return rc ? rc : -1;
    /* Metrics: a fresh run starts a new file, a resumed one appends. */
    if (!o->resume)
        unlink(r->metrics_path);
    if (rt_metrics_open(&r->metrics, r->metrics_path, &err)) {
        fprintf(stderr, "%s: %s\n", r->prog, err);
        free(err);
        return 1;
    }
    r->have_metrics = true;
    return -1;
}

/* Frees the run.  rc: its exit status; a fresh run that failed before it
 * logged anything leaves no empty logs, and no --out directory it made. */
static void teardown(Run *r, int rc)
{
    char *err = NULL;
    bool reported = r->have_metrics && r->metrics.error; /* metrics_failed said it */
    if (r->have_metrics && rt_metrics_close(&r->metrics, &err) && !reported)
        fprintf(stderr, "%s: %s\n", r->prog, err);
    free(err);
    if (r->have_dir) {
        bool discard = rc != 0 && !r->wrote; /* the directory goes only if this run made it */
        char *diag = rt_fmt("%s/diagnostics.jsonl", r->o->out);
        const char *logs[2] = {r->metrics_path, diag};
        for (int i = 0; i < 2 && discard && !r->o->resume; i++) {
            struct stat st;
            if (logs[i] && stat(logs[i], &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
                unlink(logs[i]);
        }
        free(diag);
        rt_rundir_close(&r->dir, discard);
    }
    if (r->gpu)
        rt_gpu_model_close(r->gpu);
    if (r->have_opt)
        rt_adamw_free(&r->opt);
    if (r->have_src)
        r->src->close(r->src);
    rt_pool_free(r->pool);
    free(r->params), free(r->grads), free(r->arena), free(r->tok), free(r->tgt), free(r->mask);
    free(r->sumsq), free(r->segs), free(r->rsums);
    free(r->ckpt_path), free(r->metrics_path), free(r->settings_path);
    json_decref(r->state);
}

/* The loss tokens of a (rows, T) mask: the sum of its weights. */
static double mask_tokens(const float *mask, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += mask[i];
    return s;
}

typedef struct Scale {
    float *g, f;
} Scale;

static void scale_chunk(void *ctx, int64_t i0, int64_t i1, int thread)
{
    (void)thread;
    const Scale *c = ctx;
    for (int64_t i = i0; i < i1; i++)
        c->g[i] *= c->f;
}

/* Multiplies the n gradients by s on the pool (s == 1: nothing to do;
 * each element on its own: the same bits for any split). */
static void scale_grads(float *g, int64_t n, double s, RtPool *pool)
{
    if (s == 1)
        return;
    Scale c = {g, (float)s};
    rt_pool_run(pool, n, 1 << 16, scale_chunk, &c);
}

/* The all-reduce's pieces of the gradient (rt_comm_allreduce_sum_f32_each):
 * the norm's block sums while they are in cache. */
typedef struct Pieces {
    const float *grads;
    double *sums, *done;
    RtPool *pool;
} Pieces;

static void norm_piece(void *ctx, int64_t at, int64_t len)
{
    const Pieces *p = ctx;
    rt_grad_sumsq_piece(p->pool, p->grads, at, len, p->sums, p->done);
}

/* One step's gradient: accum micro-batches (times the ranks), and their
 * loss.  Without a mask every micro-batch has B x T loss targets: the
 * gradients are summed, then scaled by 1/parts, and the loss is the mean.
 * With a mask (sft) micro-batch k has n_k loss tokens, each train step
 * returns the mean over its own n_k (loss_k, g_k), and the step must be
 * the mean over all N = sum n_k tokens, as one big batch would be:
 * grads = sum n_k g_k / N, loss = sum n_k loss_k / N.  The sum is built in
 * place: after each micro-batch, grads = (sum so far of n_j g_j) / n_k
 * (before the next one, grads *= n_k / n_next; then += g_next), and at
 * the end grads *= n_last / N.  A micro-batch without a loss token adds
 * nothing and is not run (unless no token came before: it writes the
 * zeros).  Every rank sees the whole global mask, so all compute the same
 * N.  The last scale is not applied to grads but returned in *scale, and
 * the optimizer folds it into its one pass, as it does the clip: on one
 * rank 1/parts or n_last / N (the gradient norm comes from the block sums
 * the last train step took, r->sumsq); with ranks 1/parts (each rank
 * applies its own n_last / N before the all-reduce, which takes the norm's
 * block sums as it goes, r->rsums).  0, or -1 if the model refused the
 * call. */
static int gradient(Run *r, double *loss, double *scale)
{
    *scale = 1;
    const RtTrainOptions *o = r->o;
    if (r->gpu) { /* one batch (gpu_start: --accum 1, one rank), mean over its loss tokens */
        r->src->next(r->src, r->tok, r->tgt, r->mask);
        if (rt_gpu_train_step(r->gpu, r->tok, r->tgt, r->mask, 0, loss)) {
            fprintf(stderr, "%s: --device %s: the train step failed: %s\n", r->prog, r->dev->name,
                    rt_gpu_error(r->gpu));
            return -1;
        }
        return 0;
    }
    const int64_t off = r->slice.first * o->seq; /* this rank's rows of the (B,T) batch */
    const int64_t np = r->m->desc->params_numel;
    double sum = 0, total = 0, held = 0; /* held: the n_k grads are divided by, 0 before any token */
    for (int64_t k = 0; k < o->accum; k++) {
        double l = 0, nk = 0;
        r->src->next(r->src, r->tok, r->tgt, r->mask); /* the global batch */
        if (r->mask) {
            total += mask_tokens(r->mask, o->batch * o->seq);
            nk = mask_tokens(r->mask + off, r->slice.rows * o->seq);
            if (nk == 0 && held > 0)
                continue;
            if (held > 0)
                scale_grads(r->grads, np, held / nk, r->pool);
        }
        StrataStep s = {.params = r->params, .grads = r->grads, .arena = r->arena, .arena_bytes = r->arena_bytes,
                        .tokens = r->tok + off, .targets = r->tgt + off, .mask = r->mask ? r->mask + off : NULL,
                        .B = r->slice.rows, .T = o->seq, .loss = &l, .pool = r->pool,
                        .accumulate = r->mask ? held > 0 : k > 0, .precision = r->m->precision,
                        /* the block sums of the gradient as it stands after
                         * this micro-batch: needed after the last one (with
                         * a mask, the last one that runs) */
                        .grad_sumsq = r->mask || k == o->accum - 1 ? r->sumsq : NULL};
        int st = r->m->train_step(&s);
        if (st != STRATA_OK) {
            fprintf(stderr, "%s: the model's train step failed (status %d)\n", r->prog, st);
            return -1;
        }
        if (r->mask) {
            sum += l * nk;
            if (nk > 0)
                held = nk;
        } else
            sum += l;
    }
    const int64_t parts = o->accum * r->comm->size; /* micro-batches in the step, all ranks */
    const bool fold = r->sumsq != NULL;           /* one rank: the optimizer applies the scale */
    const bool fold_parts = fold || r->rsums;     /* 1/parts, after the all-reduce (not on the device) */
    if (r->mask && held > 0) {
        if (fold)
            *scale = held / total;
        else
            scale_grads(r->grads, np, held / total, r->pool); /* total > 0 since held > 0 */
    }
    if (r->comm->size > 1) { /* sums in rank order: the same bits on every rank (r->rsums: setup) */
        const double t = now();
        const int64_t nb = rt_grad_norm_blocks(np);
        memset(r->rsums, 0, (size_t)(2 * nb + 1) * sizeof *r->rsums);
        Pieces pc = {r->grads, r->rsums, r->rsums + nb, r->pool};
        rt_comm_allreduce_sum_f32_each(r->comm, r->grads, np, norm_piece, &pc);
        r->rsums[2 * nb] = sum; /* with the block sums: one more all-reduce, not two */
        rt_comm_allreduce_sum_f64(r->comm, r->rsums, 2 * nb + 1);
        sum = r->rsums[2 * nb];
        r->t_reduce += now() - t;
    }
    if (r->mask) {
        *loss = total > 0 ? sum / total : 0;
        return 0;
    }
    if (parts > 1 && fold_parts)
        *scale = 1.0 / (double)parts;
    else if (parts > 1)
        scale_grads(r->grads, np, 1.0 / (double)parts, r->pool);
    *loss = sum / (double)parts;
    return 0;
}

/* After an error on this rank alone (a failed step, checkpoint or
 * validation): with other ranks, stop them all (they would wait for this
 * one in the next all-reduce); alone, return to exit normally. */
static void stop_job(Run *r, int rc)
{
    if (r->comm->size > 1)
        rt_comm_abort(r->comm, rc, "stopping all %d ranks (exit %d)", r->comm->size, rc);
}

/* Every rank's setup outcome: -1 on every rank when all are ready, else the
 * status of the first rank that failed (it printed why), on every rank. */
static int agree(Run *r, int rc)
{
    RtComm *c = r->comm;
    if (c->size == 1)
        return rc;
    double *v = rt_zalloc64((size_t)c->size * sizeof *v); /* (ranks) 1 ready, else status + 2 */
    v[c->rank] = rc + 2;
    rt_comm_allreduce_sum_f64(c, v, c->size);
    int out = -1;
    for (int q = 0; q < c->size && out < 0; q++)
        if (v[q] >= 2) {
            out = (int)v[q] - 2;
            if (r->lead && q != 0)
                fprintf(stderr, "%s: rank %d could not start (exit %d); stopping all %d ranks\n", r->prog, q, out,
                        c->size);
        }
    free(v);
    return out;
}

/* Every rank starts from rank 0's weights (on --resume also its moments
 * and state): broadcast, then checked by hash, as is every rank's copy of
 * the options (one command line for the whole job). */
static void share_start(Run *r)
{
    RtComm *c = r->comm;
    if (c->size == 1)
        return;
    const size_t bytes = (size_t)r->m->desc->params_numel * sizeof(float);
    rt_comm_bcast(c, r->params, bytes, 0);
    if (r->o->resume) {
        rt_comm_bcast(c, r->opt.m, bytes, 0);
        rt_comm_bcast(c, r->opt.v, bytes, 0);
        rt_comm_bcast(c, &r->st, sizeof r->st, 0);
        r->opt.step = r->st.optim_step;
    }
    uint64_t h = rt_comm_hash(r->params, bytes) ^ 3 * rt_comm_hash(r->opt.m, bytes) ^
                 5 * rt_comm_hash(r->opt.v, bytes);
    if (!rt_comm_same_u64(c, h))
        rt_comm_abort(c, 3, "internal error: the weights differ from rank 0's after the broadcast");
    char *js = state_json(r->o, &r->st, r->src);
    if (!js)
        rt_comm_abort(c, 3, "out of memory");
    int same = rt_comm_same_u64(c, rt_comm_hash(js, strlen(js)));
    if (!same)
        rt_comm_abort(c, 2, "the ranks were started with different options (every rank needs rank 0's command "
                            "line); this rank's: %.600s", js);
    free(js);
}

/* --device cuda: what the device loop does not do (yet), or NULL. */
static const char *gpu_refuses(const RtTrainOptions *o)
{
    if (o->accum != 1)
        return "--accum must be 1 (gradient accumulation on the device is not implemented yet)";
    if (strcmp(o->optim, "adamw"))
        return "--optim must be adamw (the device's optimizer is AdamW)";
    if (o->decay_all)
        return "--decay-all is not available (the device program carries the decay mask of matrices)";
    if (o->diag_every > 0)
        return "--diag-every is not available (the diagnostics run on the host)";
    return NULL;
}

/* --device cuda: the options refused (checked again here: a resume restored
 * them), then the model opened on the device with the weights and moments
 * setup made.  An exit status, or -1 to go on. */
static int gpu_start(Run *r)
{
    const RtTrainOptions *o = r->o;
    const char *bad = gpu_refuses(o);
    if (bad) {
        fprintf(stderr, "%s %s: --device %s: %s\n", r->prog, r->src->cmd, r->dev->name, bad);
        return 2;
    }
    int rc = rt_device_model(r->dev, r->m, r->m->precision, o->batch, o->seq, r->prog, &r->gpu);
    if (rc)
        return rc;
    if (rt_gpu_set_params(r->gpu, r->params) || rt_gpu_set_moments(r->gpu, r->opt.m, r->opt.v)) {
        fprintf(stderr, "%s: --device %s: cannot copy the weights to the device: %s\n", r->prog, r->dev->name,
                rt_gpu_error(r->gpu));
        return 1;
    }
    r->metrics.device = r->dev->name;
    return -1;
}

/* --device cuda: clip and AdamW on the device for step k+1 at rate lr;
 * *gnorm the gradient norm before clipping.  0; 1 when the norm is not
 * finite (the update has been applied on the device, so the run stops
 * whatever --on-nan says); 3 when the device failed (both printed). */
static int gpu_update(Run *r, int64_t k, double lr, double *gnorm)
{
    const RtTrainOptions *o = r->o;
    RtGpuAdamW hp = {.lr = lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps, .weight_decay = o->wd,
                     .clip = o->clip, .step = r->opt.step + 1};
    if (rt_gpu_optim_step(r->gpu, &hp, gnorm)) {
        fprintf(stderr, "%s: --device %s: the optimizer step failed: %s\n", r->prog, r->dev->name,
                rt_gpu_error(r->gpu));
        return 3;
    }
    r->opt.step++;
    if (!isfinite(*gnorm)) {
        fprintf(stderr, "%s: step %lld: the gradient norm is %s on the device, after the update; stopping, ", r->prog,
                (long long)k + 1, isnan(*gnorm) ? "nan" : "inf");
        nothing_saved(r);
        return 1;
    }
    return 0;
}

/* Pool threads per rank when --threads is not given: the CPUs this process
 * may run on, shared by the ranks on this machine. */
static int64_t rank_threads(const RtComm *c)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t n = (cpus > 0 ? cpus : 1) / c->local_size;
#ifdef CPU_COUNT
    cpu_set_t set; /* mpirun may bind each rank to a core */
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 && CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
#endif
    return n > 0 ? n : 1;
}

int rt_train(const RtModel *m, RtTrainOptions *o, const char *prog)
{
    ShardSource ss = {0};
    RtBatchSource src = {.cmd = "train", .data_arg = "GLOB", .ctx = &ss, .open = shard_open, .next = shard_next,
                         .get_state = shard_get_state, .set_state = shard_set_state, .val_loss = shard_val_loss,
                         .close = shard_close};
    return rt_train_source(m, o, &src, prog);
}

int rt_train_source(const RtModel *m, RtTrainOptions *o, RtBatchSource *src, const char *prog)
{
    static RtComm solo = {.size = 1, .local_size = 1, .backend = RT_COMM_SINGLE, .ordered = 1,
                          .seg = RT_COMM_SEG_DEFAULT}; /* no rt_comm_init: one process */
    RtComm *comm = rt_comm_world() ? rt_comm_world() : &solo;
    char *rank_prog = NULL; /* "PROG: rank R": every message names its rank */
    if (comm->size > 1 && asprintf(&rank_prog, "%s: rank %d", prog, comm->rank) >= 0)
        prog = rank_prog;
    const bool talk = !o->quiet;
    if (comm->rank != 0) { /* rank 0 logs and runs the diagnostics */
        o->quiet = 1;
        if (o->diag_every > 0)
            o->diag_every = 0;
    }
    if (comm->local_size > 1 && !o->given[RT_TOPT_threads] && o->threads <= 0)
        o->threads = rank_threads(comm);
    RtDevice dev; /* before anything is read: a machine without the device fails here */
    int rc = rt_device_open(&dev, o->device, prog, src->cmd, talk);
    if (!rc && dev.cuda && comm->size > 1) {
        fprintf(stderr, "%s %s: --device %s runs in one process (data parallelism on GPUs is not implemented "
                "yet)\n", prog, src->cmd, dev.name);
        rc = 2;
    } else if (!rc && dev.cuda && gpu_refuses(o)) { /* before --out is touched (--overwrite deletes) */
        fprintf(stderr, "%s %s: --device %s: %s\n", prog, src->cmd, dev.name, gpu_refuses(o));
        rc = 2;
    }
    if (rc) {
        rt_device_close(&dev);
        free(rank_prog);
        return rc;
    }
    RtModel mp = *m; /* with the run's --precision, once setup has resolved it */
    m = &mp;
    Run r = {.m = m, .o = o, .prog = prog, .src = src, .last_ckpt = -1, .comm = comm, .lead = comm->rank == 0,
             .dev = &dev};
    rc = setup(&r);
    if (rt_precision_parse(o->precision) >= 0)
        mp.precision = rt_precision_parse(o->precision);
    RtDiag diag = {0}; /* --diag-every (analyze.c) */
    if (rc < 0 && dev.cuda)
        rc = gpu_start(&r);
    if (rc < 0 && (rc = rt_diag_init(&diag, m, o, prog)) == 0)
        rc = -1;
    rc = agree(&r, rc); /* every rank ready, or all stop */
    if (rc >= 0) {
        rt_diag_free(&diag);
        teardown(&r, rc);
        rt_device_close(&dev);
        free(rank_prog);
        return rc;
    }
    share_start(&r);
    rc = 0;
    const int64_t n = m->desc->params_numel, step_tokens = o->batch * o->seq * o->accum;
    const bool tty = isatty(2);
    const double t_start = now();
    int64_t done_here = 0, consecutive = 0, skipped_here = 0, log_tokens = r.st.tokens;
    double log_t = t_start, t_steps = 0;
    if (r.st.step >= o->steps && !o->quiet)
        fprintf(stderr, "%s: %s is already at step %lld of %lld\n", prog, r.ckpt_path, (long long)r.st.step,
                (long long)o->steps);
    while (r.st.step < o->steps) {
        const double t0 = now();
        const int64_t k = r.st.step;
        double loss = 0, gscale = 1; /* the gradient is gscale * r.grads */
        if (gradient(&r, &loss, &gscale)) {
            rc = 3;
            stop_job(&r, rc);
            break;
        }
        double gnorm = 0, lr = rt_lr(&r.sched, k);
        if (r.sumsq) /* the step took most block sums: the rest, then the same number */
            gnorm = gscale * rt_grad_norm_finish(r.grads, n, r.segs, (int)m->desc->nparams, r.sumsq);
        else if (r.rsums) /* the all-reduce took most of them */
            gnorm = gscale * rt_grad_norm_done(r.grads, n, r.rsums, r.rsums + rt_grad_norm_blocks(n));
        else if (isfinite(loss) && (rc = gpu_update(&r, k, lr, &gnorm)) != 0) /* --device cuda */
            break; /* one process: nothing to stop */
        bool bad = !isfinite(loss) || !isfinite(gnorm);
        if (bad) {
            const char *what = !isfinite(loss) ? "loss" : "gradient norm";
            const char *val = isnan(!isfinite(loss) ? loss : gnorm) ? "nan" : "inf";
            if (tty && !o->quiet)
                fputc('\n', stderr);
            if (!strcmp(o->on_nan, "stop")) { /* every rank sees the same loss and norm */
                if (r.lead) {
                    fprintf(stderr, "%s: step %lld: %s is %s; stopping, ", prog, (long long)k + 1, what, val);
                    nothing_saved(&r);
                }
                rc = 1;
                break;
            }
            consecutive++, skipped_here++, r.st.skipped++;
            if (r.lead)
                fprintf(stderr, "%s: step %lld: %s is %s; update skipped\n", prog, (long long)k + 1, what, val);
            if (consecutive >= 10) {
                if (r.lead) {
                    fprintf(stderr, "%s: step %lld: 10 consecutive steps skipped; stopping, ", prog,
                            (long long)k + 1);
                    nothing_saved(&r);
                }
                rc = 1;
                break;
            }
        } else if (!r.gpu) { /* the device has made its update in gpu_update */
            consecutive = 0;
            rt_diag_grads(&diag, k + 1, r.params, r.grads, gscale);
            /* Clipping and the accumulation's scale folded into the
             * update: one threaded pass. */
            float clip = o->clip > 0 ? rt_clip_factor(o->clip, gnorm) : 1.0f;
            rt_adamw_step_scaled(&r.opt, r.params, r.grads, (float)(clip * gscale), lr, r.pool);
        } else
            consecutive = 0;
        r.st.step++;
        r.st.tokens += step_tokens;
        done_here++;
        if (rt_diag_update(&diag, r.st.step, r.params, r.pool, r.arena, r.arena_bytes)) {
            rc = 3;
            stop_job(&r, rc);
            break;
        }
        const double t1 = now(), tps = (double)step_tokens / (t1 - t0 > 0 ? t1 - t0 : 1e-9);
        t_steps += t1 - t0;
        char *merr = NULL;
        if (r.have_metrics &&
            rt_metrics_train(&r.metrics, r.st.step, loss, lr, gnorm, r.st.tokens, tps, t1 - t_start, &merr)) {
            if (tty && !o->quiet)
                fputc('\n', stderr);
            metrics_failed(&r, merr);
            rc = 1;
            stop_job(&r, rc);
            break;
        }
        r.wrote |= r.have_metrics;
        if (!o->quiet && (r.st.step % o->log_every == 0 || r.st.step == o->steps || r.st.step == 1)) {
            char eta[32];
            fmt_eta(eta, sizeof eta, (t1 - t_start) / (double)done_here * (double)(o->steps - r.st.step));
            /* The rate since the last progress line. */
            double rate = (double)(r.st.tokens - log_tokens) / (t1 - log_t > 0 ? t1 - log_t : 1e-9);
            log_tokens = r.st.tokens, log_t = t1;
            fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | gnorm %.2f | %.0f tok/s | ETA %s%s",
                    tty ? "\r" : "", (long long)r.st.step, (long long)o->steps, loss, lr, gnorm, rate, eta,
                    tty ? "\033[K" : "\n");
        }
        const bool last = r.st.step == o->steps, stop_here = o->exit_after > 0 && done_here >= o->exit_after;
        if (r.have_val && (r.st.step % o->val_every == 0 || last)) {
            if (tty && !o->quiet)
                fputc('\n', stderr);
            int vr = validate(&r);
            if (vr) {
                rc = vr == -2 ? 1 : 3;
                stop_job(&r, rc);
                break;
            }
        }
        if ((r.st.step % o->ckpt_every == 0 || last || stop_here) && save(&r)) {
            rc = 1;
            stop_job(&r, rc);
            break;
        }
        if (stop_here && !last) {
            if (!o->quiet)
                fprintf(stderr, "%s--exit-after %lld: stopped at step %lld, checkpoint %s\n", tty ? "\n" : "",
                        (long long)o->exit_after, (long long)r.st.step, r.ckpt_path);
            break;
        }
    }
    if (rc == 0 && r.last_ckpt != r.st.step && !(o->exit_after > 0 && done_here >= o->exit_after) && save(&r)) {
        rc = 1; /* --steps 0: the initial weights */
        stop_job(&r, rc);
    }
    if (tty && !o->quiet && done_here > 0 && rc == 0)
        fputc('\n', stderr);
    if (rc == 0 && r.comm->size > 1) { /* every rank ends with the same weights: checked */
        uint64_t h = rt_comm_hash(r.params, (size_t)n * sizeof(float));
        int same = rt_comm_same_u64(r.comm, h);
        if (talk)
            fprintf(stderr, "%s: parameters at step %lld: fnv1a-64 %016llx\n", prog, (long long)r.st.step,
                    (unsigned long long)h);
        if (!same)
            rt_comm_abort(r.comm, 3, "internal error: the ranks' parameters differ at step %lld",
                          (long long)r.st.step);
        if (r.lead && talk && done_here > 0 && t_steps > 0)
            fprintf(stderr, "%s: all-reduce: %.1f%% of step time (%.3f of %.3f ms per step, %d ranks)\n", prog,
                    100 * r.t_reduce / t_steps, 1e3 * r.t_reduce / (double)done_here,
                    1e3 * t_steps / (double)done_here, r.comm->size);
    }
    if (rc == 0 && skipped_here > 0 && r.lead)
        fprintf(stderr, "%s: %lld step(s) skipped for a NaN/inf loss or gradient (%lld in the whole run)\n", prog,
                (long long)skipped_here, (long long)r.st.skipped);
    rt_diag_free(&diag);
    teardown(&r, rc);
    rt_device_close(&dev);
    free(rank_prog);
    return rc;
}
