/* sample.h - what is done with one row of logits (vocab floats): its
 * cross-entropy against a target (validation, eval) and picking the next
 * token (sample): greedy, or temperature, top-k and top-p (nucleus)
 * filtering and a draw.
 *
 * Filtering (rt_sample_probs), in this order, all in double:
 *   temperature t > 0: p_i = softmax(logits / t)
 *   top-k k > 0: only the k largest p_i are kept (ties at the k-th value:
 *     the lower ids, so exactly k survive)
 *   top-p q < 1: sorted by p descending (ties: lower id first), the
 *     smallest prefix whose sum reaches q is kept (at least one token)
 *   the kept p_i are renormalized to sum to 1, the rest are 0.
 * A draw is the first i with cumsum(p)_i > u, u uniform in [0, 1) from a
 * splitmix64 stream the caller holds.  t = 0 is greedy (argmax, the lowest
 * id among equal maxima).  Buffers belong to the caller.
 * rt_mean_xent: the mean cross-entropy of a forward pass over a loader's
 * batches (validation and eval, on the CPU or the device). */
#ifndef STRATA_SAMPLE_H
#define STRATA_SAMPLE_H
#include "data/data.h"

#include <stdint.h>

typedef struct RtSampleOptions {
    double temperature;     /* 0: greedy */
    int64_t top_k;          /* 0: off */
    double top_p;           /* 1: off; in (0, 1] */
} RtSampleOptions;

/* log sum_j exp(logits[j]) - logits[target], in double. */
double rt_xent_row(const float *logits, int64_t vocab, int32_t target);
/* log_softmax of a row into out (vocab doubles). */
void rt_log_softmax(const float *logits, int64_t vocab, double *out);
/* The index of the largest logit (the lowest of equal ones; NaN never wins). */
int32_t rt_argmax(const float *logits, int64_t vocab);
/* The filtered distribution of the header into probs (vocab doubles);
 * work: vocab int32 for sorting.  temperature must be > 0. */
void rt_sample_probs(const float *logits, int64_t vocab, const RtSampleOptions *o, double *probs, int32_t *work);
/* The next token: greedy for temperature 0, else a draw from
 * rt_sample_probs with the stream *rng.  probs, work as above. */
int32_t rt_sample(const float *logits, int64_t vocab, const RtSampleOptions *o, uint64_t *rng, double *probs,
                  int32_t *work);
/* The mean of rt_xent_row over every position of up to `batches` batches
 * of l from its start (0 = all): forward(ctx, tokens, logits) fills the
 * (B,T,vocab) logits of a batch, 0 on success.  The mean into *loss (NaN
 * for no batch), the position count into *ntok; 0, or -1 when a forward
 * pass failed. */
int rt_mean_xent(RtLoader *l, int64_t batches, int64_t vocab, float *logits,
                 int (*forward)(void *ctx, const int32_t *tokens, float *logits), void *ctx, double *loss,
                 int64_t *ntok);
#endif
