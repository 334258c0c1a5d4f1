/* sample.c - cross-entropy of a logits row, greedy choice and filtered
 * sampling (sample.h). */
#include "train/sample.h"

#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>

static double row_max(const float *x, int64_t n)
{
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if ((double)x[i] > m)
            m = x[i];
    return m;
}

static double log_sum_exp(const float *x, int64_t n)
{
    double m = row_max(x, n), s = 0;
    if (!isfinite(m))
        return m;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)x[i] - m);
    return m + log(s);
}

double rt_xent_row(const float *logits, int64_t vocab, int32_t target)
{
    return log_sum_exp(logits, vocab) - (double)logits[target];
}

void rt_log_softmax(const float *logits, int64_t vocab, double *out)
{
    double lse = log_sum_exp(logits, vocab);
    for (int64_t i = 0; i < vocab; i++)
        out[i] = (double)logits[i] - lse;
}

int32_t rt_argmax(const float *logits, int64_t vocab)
{
    int32_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best] || isnan(logits[best]))
            best = (int32_t)i;
    return best;
}

/* qsort has no context argument: the probabilities being sorted. */
static _Thread_local const double *sort_p;

static int by_prob_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_p[i] != sort_p[j])
        return sort_p[i] > sort_p[j] ? -1 : 1;
    return (i > j) - (i < j);
}

void rt_sample_probs(const float *logits, int64_t vocab, const RtSampleOptions *o, double *probs, int32_t *work)
{
    double m = -INFINITY, sum = 0;
    for (int64_t i = 0; i < vocab; i++)
        if ((double)logits[i] / o->temperature > m)
            m = (double)logits[i] / o->temperature;
    for (int64_t i = 0; i < vocab; i++)
        sum += probs[i] = exp((double)logits[i] / o->temperature - m);
    for (int64_t i = 0; i < vocab; i++)
        probs[i] /= sum;
    bool topk = o->top_k > 0 && o->top_k < vocab, topp = o->top_p < 1;
    if (!topk && !topp)
        return;
    for (int64_t i = 0; i < vocab; i++)
        work[i] = (int32_t)i;
    sort_p = probs;
    qsort(work, (size_t)vocab, sizeof *work, by_prob_desc);
    int64_t keep = topk ? o->top_k : vocab;
    if (topp) {
        double c = 0;
        int64_t k = 0;
        while (k < keep) {
            c += probs[work[k++]];
            if (c >= o->top_p)
                break;
        }
        keep = k;
    }
    double kept = 0;
    for (int64_t k = 0; k < keep; k++)
        kept += probs[work[k]];
    for (int64_t k = keep; k < vocab; k++)
        probs[work[k]] = 0;
    for (int64_t k = 0; k < keep; k++)
        probs[work[k]] /= kept;
}

int32_t rt_sample(const float *logits, int64_t vocab, const RtSampleOptions *o, uint64_t *rng, double *probs,
                  int32_t *work)
{
    if (o->temperature <= 0)
        return rt_argmax(logits, vocab);
    rt_sample_probs(logits, vocab, o, probs, work);
    uint64_t z = (*rng += 0x9E3779B97F4A7C15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    double u = (double)(z >> 11) * 0x1.0p-53, c = 0;
    int32_t last = 0;
    for (int64_t i = 0; i < vocab; i++) {
        if (probs[i] <= 0)
            continue;
        last = (int32_t)i;
        c += probs[i];
        if (c > u)
            return (int32_t)i;
    }
    return last; /* rounding left the sum just under u */
}

int rt_mean_xent(RtLoader *l, int64_t batches, int64_t vocab, float *logits,
                 int (*forward)(void *ctx, const int32_t *tokens, float *logits), void *ctx, double *loss,
                 int64_t *ntok)
{
    const int64_t B = l->B, T = l->T;
    int32_t *tok = malloc((size_t)(B * T) * sizeof *tok), *tgt = malloc((size_t)(B * T) * sizeof *tgt);
    if (!tok || !tgt) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    rt_loader_reset(l);
    double sum = 0;
    int64_t n = 0, k = 0;
    int rows, rc = 0;
    while ((batches <= 0 || k < batches) && (rows = rt_loader_next(l, tok, tgt)) > 0) {
        if (forward(ctx, tok, logits)) {
            rc = -1;
            break;
        }
        for (int64_t r = 0; r < (int64_t)rows * T; r++) /* (B,T,V) logits, first `rows` sequences */
            sum += rt_xent_row(logits + r * vocab, vocab, tgt[r]);
        n += (int64_t)rows * T;
        k++;
    }
    free(tok), free(tgt);
    *loss = n ? sum / (double)n : NAN;
    *ntok = n;
    return rc;
}
