/* sample_test.c - runtime/train/sample.c: cross-entropy of a logits row, argmax,
 * temperature, top-k and top-p filtering and draws.  Expected values are
 * worked out by hand from the definitions in sample.h. */
#include "train/sample.h"

#include <math.h>
#include <stdio.h>

static int fails;

static void near(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        printf("FAIL %s: got %.12g, want %.12g\n", what, got, want);
        fails++;
    }
}

static void probs_of(const float *logits, int n, double t, int k, double p, double *out)
{
    int32_t work[16];
    RtSampleOptions o = {.temperature = t, .top_k = k, .top_p = p};
    rt_sample_probs(logits, n, &o, out, work);
}

int main(void)
{
    double pr[16];
    /* Cross-entropy: uniform logits give log V; large logits do not overflow. */
    float flat[4] = {0, 0, 0, 0}, big[2] = {1000, 0};
    near("xent uniform", rt_xent_row(flat, 4, 2), log(4.0), 1e-12);
    near("xent large", rt_xent_row(big, 2, 1), 1000.0, 1e-9);
    near("xent large target", rt_xent_row(big, 2, 0), log1p(exp(-1000.0)), 1e-12);
    double ls[4];
    float row[4] = {1, 3, 2, 0};
    rt_log_softmax(row, 4, ls);
    double z = exp(1) + exp(3) + exp(2) + exp(0);
    near("log_softmax", ls[1], 3 - log(z), 1e-12);
    /* Argmax: the lowest id among equal maxima. */
    float tie[3] = {1, 3, 3};
    near("argmax tie", rt_argmax(tie, 3), 1, 0);
    near("argmax", rt_argmax(row, 4), 1, 0);
    /* Temperature: logits [0, ln 2] at t = 0.5 are weights [1, 4]. */
    float two[2] = {0, (float)log(2.0)};
    probs_of(two, 2, 0.5, 0, 1, pr);
    near("temperature p0", pr[0], 0.2, 1e-7);
    near("temperature p1", pr[1], 0.8, 1e-7);
    /* Top-k 2 of [1, 3, 2, 0]: ids 1 and 2, renormalized. */
    probs_of(row, 4, 1, 2, 1, pr);
    near("top-k p0", pr[0], 0, 0);
    near("top-k p1", pr[1], exp(3) / (exp(3) + exp(2)), 1e-12);
    near("top-k p2", pr[2], exp(2) / (exp(3) + exp(2)), 1e-12);
    near("top-k p3", pr[3], 0, 0);
    /* Top-k ties: the lower ids survive, exactly k of them. */
    float ties[4] = {1, 1, 1, 0};
    probs_of(ties, 4, 1, 2, 1, pr);
    near("top-k tie p0", pr[0], 0.5, 1e-12);
    near("top-k tie p1", pr[1], 0.5, 1e-12);
    near("top-k tie p2", pr[2], 0, 0);
    /* Top-p over probabilities [0.5, 0.3, 0.15, 0.05]. */
    float q[4] = {(float)log(0.5), (float)log(0.3), (float)log(0.15), (float)log(0.05)};
    probs_of(q, 4, 1, 0, 0.7, pr); /* 0.5 + 0.3 reaches 0.7 */
    near("top-p 0.7 p0", pr[0], 0.625, 1e-6);
    near("top-p 0.7 p1", pr[1], 0.375, 1e-6);
    near("top-p 0.7 p2", pr[2], 0, 0);
    probs_of(q, 4, 1, 0, 0.4, pr); /* the first alone reaches 0.4 */
    near("top-p 0.4 p0", pr[0], 1, 1e-12);
    near("top-p 0.4 p1", pr[1], 0, 0);
    probs_of(q, 4, 1, 0, 0.9, pr); /* three needed */
    near("top-p 0.9 p2", pr[2], 0.15 / 0.95, 1e-6);
    near("top-p 0.9 p3", pr[3], 0, 0);
    probs_of(q, 4, 1, 3, 0.7, pr); /* top-k then top-p: the same two */
    near("top-k+p p1", pr[1], 0.375, 1e-6);
    /* Draws: frequencies follow the probabilities; greedy is argmax. */
    double probs[4];
    int32_t work[4];
    uint64_t rng = 7;
    RtSampleOptions o = {.temperature = 1, .top_p = 1};
    int hits[4] = {0};
    for (int i = 0; i < 40000; i++)
        hits[rt_sample(q, 4, &o, &rng, probs, work)]++;
    near("draw freq 0", hits[0] / 40000.0, 0.5, 0.015);
    near("draw freq 1", hits[1] / 40000.0, 0.3, 0.015);
    near("draw freq 3", hits[3] / 40000.0, 0.05, 0.01);
    o.top_k = 1;
    for (int i = 0; i < 100; i++)
        if (rt_sample(q, 4, &o, &rng, probs, work) != 0) {
            printf("FAIL top-k 1 drew something else than the argmax\n");
            fails++;
            break;
        }
    o = (RtSampleOptions){.temperature = 0, .top_p = 1};
    near("greedy", rt_sample(row, 4, &o, &rng, probs, work), 1, 0);
    if (!fails)
        printf("sample_test: all passed\n");
    return fails ? 1 : 0;
}
