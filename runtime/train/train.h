/* train.h - the training loop of `train` (trainer.h): parameter init or
 * --init, --resume from the run's checkpoint, gradient accumulation,
 * clipping, AdamW/Adam, LR schedule, progress lines, metrics, validation,
 * checkpoints, NaN handling; and the validation loss that `eval` shares.
 *
 * One step k (0-based) takes `accum` batches of B windows from the random
 * loader, adds their gradients (StrataStep.accumulate) and scales the sum
 * by 1/accum, so the step sees the mean gradient over accum * B windows;
 * its loss is the mean of the batches' losses.  With a loss mask (sft)
 * the batches hold different numbers of loss tokens, and each is weighted
 * by its own: gradient and loss are the means over all the step's loss
 * tokens, as one batch of accum * B rows would give.  Then the global gradient
 * norm, clipping (--clip), the rate rt_lr(k) and the optimizer update.
 * Everything a step depends on (weights, moments, optimizer step, loader
 * (epoch, pos), the step number, the options) is in the checkpoint, and no
 * other state exists, so a resumed run is bit-identical to one that never
 * stopped (for any --threads: the kernels' sums do not depend on it).
 * The thread count is not in the checkpoint (its bytes are the same for
 * any --threads); the run's is kept beside it, OUT/run.json, for a resume
 * without --threads.
 * What makes the run what it is is in the checkpoint too, and --resume
 * checks it: the model (ident.h), the data's identity (RtBatchSource.data_id)
 * and --batch, --seq, --seed; --force-resume overrides.  The run directory
 * (--out) is locked while a run uses it (store/rundir.h); a fresh run
 * refuses one that holds a run unless --overwrite.
 *
 * Options: RT_TRAIN_OPTIONS lists every flag of `train` once (name, kind,
 * whether the checkpoint's state keeps it, help); runtime/cmd/train.c
 * parses with it, train.c saves and restores with it. */
#ifndef STRATA_TRAIN_H
#define STRATA_TRAIN_H
#include <stdbool.h>
#include <stdint.h>

#include "data/data.h"
#include "core/pool.h"
#include "model.h"
#include "train/options.h"

/* X(field, "--flag", kind, kept in the state, "ARG", "help") */
#define RT_TRAIN_OPTIONS(X)                                                                           \
    X(data, "--data", RT_OPT_STR, 1, "GLOB", "training shards, llm.c .bin format (required)")         \
    X(val, "--val", RT_OPT_STR, 1, "GLOB", "validation shards")                                       \
    X(out, "--out", RT_OPT_STR, 0, "DIR", "run directory: checkpoint and metrics (run)")              \
    X(batch, "--batch", RT_OPT_INT, 1, "B", "windows per batch (16)")                                 \
    X(seq, "--seq", RT_OPT_INT, 1, "T", "tokens per window (the config's ctx, else 256)")             \
    X(steps, "--steps", RT_OPT_INT, 1, "N", "optimizer steps in the run (1000)")                      \
    X(accum, "--accum", RT_OPT_INT, 1, "K", "batches per step, gradients averaged (1)")               \
    X(lr, "--lr", RT_OPT_REAL, 1, "X", "peak learning rate (1e-3)")                                   \
    X(min_lr_ratio, "--min-lr-ratio", RT_OPT_REAL, 1, "X", "final rate / peak rate (0.1)")            \
    X(warmup, "--warmup", RT_OPT_INT, 1, "N", "warmup steps (10% of --steps)")                        \
    X(schedule, "--schedule", RT_OPT_STR, 1, "S", "cosine|linear|constant|wsd (cosine)")              \
    X(decay_frac, "--decay-frac", RT_OPT_REAL, 1, "X", "wsd: fraction of steps decaying (0.2)")       \
    X(optim, "--optim", RT_OPT_STR, 1, "O", "adamw|adam (adamw)")                                     \
    X(beta1, "--beta1", RT_OPT_REAL, 1, "X", "first-moment decay (0.9)")                              \
    X(beta2, "--beta2", RT_OPT_REAL, 1, "X", "second-moment decay (0.95)")                            \
    X(eps, "--eps", RT_OPT_REAL, 1, "X", "Adam epsilon (1e-8)")                                       \
    X(wd, "--wd", RT_OPT_REAL, 1, "X", "weight decay of matrices (0.1)")                              \
    X(decay_all, "--decay-all", RT_OPT_FLAG, 1, NULL, "decay norms, embeddings and scalars too")      \
    X(clip, "--clip", RT_OPT_REAL, 1, "X", "global gradient-norm clip, 0 = off (1.0)")                \
    X(seed, "--seed", RT_OPT_INT, 1, "N", "seed of the init and the data order (1)")                  \
    X(precision, "--precision", RT_OPT_STR, 1, "P", "matrix products: fp32|bf16 (fp32)")              \
    X(device, "--device", RT_OPT_STR, 0, "D", "cpu|cuda|cuda:N: where the steps run (cpu)")            \
    X(threads, "--threads", RT_OPT_INT, 0, "N", "pool threads, at most 1024 (all CPUs; --resume: the run's)") \
    X(log_every, "--log-every", RT_OPT_INT, 1, "N", "progress line every N steps (10)")               \
    X(val_every, "--val-every", RT_OPT_INT, 1, "N", "validation every N steps (100)")                 \
    X(val_batches, "--val-batches", RT_OPT_INT, 1, "N", "validation batches, 0 = all (20)")           \
    X(ckpt_every, "--ckpt-every", RT_OPT_INT, 1, "N", "checkpoint every N steps and at the end (500)") \
    X(resume, "--resume", RT_OPT_FLAG, 0, NULL, "continue from OUT/checkpoint.safetensors")           \
    X(force_resume, "--force-resume", RT_OPT_FLAG, 0, NULL,                                           \
      "--resume although the model, data, --batch, --seq or --seed differ")                          \
    X(overwrite, "--overwrite", RT_OPT_FLAG, 0, NULL, "start afresh in an OUT that holds a run (deletes it)") \
    X(init, "--init", RT_OPT_STR, 0, "CKPT", "start from these weights (fresh optimizer, step 0)")    \
    X(on_nan, "--on-nan", RT_OPT_STR, 1, "stop|skip", "NaN/inf loss or gradient (stop)")              \
    X(exit_after, "--exit-after", RT_OPT_INT, 0, "K", "stop after K steps of this run, checkpointed") \
    X(tokenizer, "--tokenizer", RT_OPT_STR, 1, "FILE", "tokenizer recorded for sample")               \
    X(diag_every, "--diag-every", RT_OPT_INT, 0, "N", "depth diagnostics every N steps (0: off)")     \
    X(quiet, "--quiet", RT_OPT_FLAG, 0, NULL, "no progress lines")

enum {
#define X(f, n, k, s, a, h) RT_TOPT_##f,
    RT_TRAIN_OPTIONS(X)
#undef X
    RT_N_TRAIN_OPTS
};

typedef struct RtTrainOptions {
    const char *data, *val, *out, *schedule, *optim, *init, *on_nan, *tokenizer, *precision;
    const char *device; /* --device (train/device.h); not kept: a run resumes on either kind */
    int64_t batch, seq, steps, accum, warmup, seed, threads, log_every, val_every, val_batches, ckpt_every,
        exit_after;
    int64_t diag_every; /* --diag-every (train/diag.h) */
    double lr, min_lr_ratio, decay_frac, beta1, beta2, eps, wd, clip;
    int decay_all, resume, force_resume, overwrite, quiet;
    bool given[RT_N_TRAIN_OPTS]; /* set on the command line (resume: these override the state) */
} RtTrainOptions;


extern const RtOptSpec rt_train_specs[RT_N_TRAIN_OPTS];

/* The defaults (seq -1 and warmup -1: resolved by rt_train). */
void rt_train_defaults(RtTrainOptions *o);
/* Runs `train`; returns the exit status (trainer.h).  prog names messages. */
int rt_train(const RtModel *m, RtTrainOptions *o, const char *prog);

/* Where a run's batches come from.  `train` reads token windows from
 * shards (the shard source, in train.c); `sft` reads records with a
 * response-only loss mask (cmd/sft.c).  rt_train_source runs the same loop,
 * checkpoints, resume, metrics and NaN handling with any source; the
 * source's (epoch, pos) is kept in the checkpoint's state. */
typedef struct RtBatchSource RtBatchSource;
struct RtBatchSource {
    const char *cmd;      /* "train", "sft": messages, and the state's "command" */
    const char *data_arg; /* "GLOB", "FILE.jsonl": the --data message */
    bool masked;          /* next() writes a loss mask */
    void *ctx;            /* the source's own data */
    /* Set by open(): the training data's identity (FNV-1a 64 of what the
     * batches are drawn from; 0 unknown) and its size in words ("2 shards,
     * 4500 tokens"), kept in the checkpoint's state and checked by
     * --resume. */
    uint64_t data_id;
    char data_what[96];
    /* Opens the data once the options are final (a resume restored them);
     * *has_val when there is held-out data.  0, or -1 with the message
     * printed (and everything it made freed). */
    int (*open)(RtBatchSource *s, const RtModel *m, const RtTrainOptions *o, const char *prog, bool *has_val);
    /* The next batch: tokens and targets (B,T), and when masked the mask (B,T). */
    void (*next)(RtBatchSource *s, int32_t *tok, int32_t *tgt, float *mask);
    void (*get_state)(RtBatchSource *s, int64_t *epoch, int64_t *pos);
    /* -1 with a malloc'd *err when the state does not fit the data. */
    int (*set_state)(RtBatchSource *s, int64_t epoch, int64_t pos, char **err);
    /* Validation loss over up to `batches` batches (0 = all); see rt_eval_loss. */
    int (*val_loss)(RtBatchSource *s, const RtModel *m, const float *params, int64_t batches, RtPool *pool,
                    void *arena, int64_t arena_bytes, float *logits, double *loss, int64_t *ntok);
    void (*close)(RtBatchSource *s);
};

/* rt_train with another batch source; returns the exit status. */
int rt_train_source(const RtModel *m, RtTrainOptions *o, RtBatchSource *src, const char *prog);

/* Token-weighted mean cross-entropy (double) of the logits of strata_forward
 * over up to `batches` batches (0 = all) of the sequential loader l, from
 * its start; *ntok gets the tokens counted.  logits: (B, T, vocab) floats,
 * arena as the step needs.  0, or -1 if the forward call failed. */
int rt_eval_loss(const RtModel *m, const float *params, RtLoader *l, int64_t batches, RtPool *pool, void *arena,
                 int64_t arena_bytes, float *logits, double *loss, int64_t *ntok);
#endif
