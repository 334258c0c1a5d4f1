/* kernels_bench.c - times rt_attention_f32 and rt_attention_grad_f32 (flash
 * style, tiled) against a naive fp32 attention that materializes every
 * score, (B, heads, T, T) as llm.c does, on B=8 T=256 W=256 heads=4, and
 * checks that the two agree.  The flash kernels also run split over two
 * threads by (sequence, head) ranges.  Not a test; prints ms and GFLOP/s.
 * GFLOP/s counts the same nominal work for both versions: per causal
 * (query, key <= query) pair 4 hd flops forward (q.k, p v), 8 hd backward
 * (dp, dv, dq, dk); the flash backward also recomputes q.k (not counted).
 *   make bench/kernels_bench  (on an AVX-512 CPU the kernels run their AVX-512 build) */
#define _POSIX_C_SOURCE 200809L
#include "core/kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { B = 8, T = 256, W = 256, NH = 4, HD = W / NH, REPS = 10 };
#define N ((size_t)B * T * W)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static float *alloc(size_t n)
{
    float *p = calloc(n, sizeof *p);
    if (!p) {
        fprintf(stderr, "kernels_bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- the naive version: every score materialized ---- */

static float dot(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* att (B, NH, T, T): causal softmax of the scaled scores; out = att v. */
static void naive_forward(float *out, float *att, const float *q, const float *k, const float *v)
{
    float scale = 1 / sqrtf(HD);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *qt = q + (b * T + t) * W + h * HD;
                float *a = att + ((size_t)(b * NH + h) * T + t) * T, m = -INFINITY, z = 0;
                for (int u = 0; u <= t; u++) {
                    a[u] = dot(qt, k + (b * T + u) * W + h * HD, HD) * scale;
                    m = a[u] > m ? a[u] : m;
                }
                for (int u = 0; u <= t; u++)
                    z += a[u] = expf(a[u] - m);
                for (int u = 0; u < T; u++)
                    a[u] = u <= t ? a[u] / z : 0;
                float *o = out + (b * T + t) * W + h * HD;
                for (int d = 0; d < HD; d++)
                    o[d] = 0;
                for (int u = 0; u <= t; u++)
                    for (int d = 0; d < HD; d++)
                        o[d] += a[u] * v[(b * T + u) * W + h * HD + d];
            }
}

/* From the saved att: datt = g v^T, ds = att (datt - rowsum(att datt)),
 * dq = ds k scale, dk = ds^T q scale, dv = att^T g (dq, dk, dv zeroed). */
static void naive_backward(float *dq, float *dk, float *dv, float *datt, const float *att, const float *q,
                           const float *k, const float *v, const float *g)
{
    float scale = 1 / sqrtf(HD);
    for (size_t i = 0; i < N; i++)
        dq[i] = dk[i] = dv[i] = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)(b * NH + h) * T + t) * T;
                const float *a = att + row, *gt = g + (b * T + t) * W + h * HD;
                float *da = datt + row, sum = 0;
                for (int u = 0; u <= t; u++) {
                    da[u] = dot(gt, v + (b * T + u) * W + h * HD, HD);
                    sum += a[u] * da[u];
                    float *dvu = dv + (b * T + u) * W + h * HD;
                    for (int d = 0; d < HD; d++)
                        dvu[d] += a[u] * gt[d];
                }
                float *dqt = dq + (b * T + t) * W + h * HD;
                const float *qt = q + (b * T + t) * W + h * HD;
                for (int u = 0; u <= t; u++) {
                    float ds = a[u] * (da[u] - sum) * scale;
                    const float *ku = k + (b * T + u) * W + h * HD;
                    float *dku = dk + (b * T + u) * W + h * HD;
                    for (int d = 0; d < HD; d++) {
                        dqt[d] += ds * ku[d];
                        dku[d] += ds * qt[d];
                    }
                }
            }
}

/* ---- the flash kernels, on a range of (sequence, head) units ---- */

typedef struct Job {
    float *out, *lse, *dq, *dk, *dv, *work;
    const float *q, *k, *v, *g;
    int64_t bh0, bh1;
    int backward;
} Job;

static void *run_job(void *arg)
{
    Job *j = arg;
    if (j->backward)
        rt_attention_grad_f32(j->dq, j->dk, j->dv, j->q, j->k, j->v, j->out, j->lse, j->g, j->work, j->bh0, j->bh1,
                              T, W, NH);
    else
        rt_attention_f32(j->out, j->lse, j->q, j->k, j->v, j->work, j->bh0, j->bh1, T, W, NH);
    return NULL;
}

/* Runs the kernel over all B*NH units on nthreads threads (1 or 2). */
static void flash(Job base, int nthreads, int backward)
{
    Job jobs[2];
    pthread_t tid[2];
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = base;
        jobs[i].backward = backward;
        jobs[i].bh0 = (int64_t)B * NH * i / nthreads;
        jobs[i].bh1 = (int64_t)B * NH * (i + 1) / nthreads;
        jobs[i].work = base.work + (size_t)i * rt_attention_grad_work_numel(HD) * 2;
    }
    for (int i = 1; i < nthreads; i++)
        pthread_create(&tid[i], NULL, run_job, &jobs[i]);
    run_job(&jobs[0]);
    for (int i = 1; i < nthreads; i++)
        pthread_join(tid[i], NULL);
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i])), r = fmax(r, fabs((double)b[i]));
    return m / r;
}

static void report(const char *what, double ms, double flops)
{
    printf("  %-34s %8.2f ms  %6.2f GFLOP/s\n", what, ms, flops / (ms * 1e6));
}

int main(void)
{
    float *q = alloc(N), *k = alloc(N), *v = alloc(N), *g = alloc(N);
    srand(1);
    for (size_t i = 0; i < N; i++) {
        q[i] = (float)rand() / (float)RAND_MAX * 2 - 1, k[i] = (float)rand() / (float)RAND_MAX * 2 - 1;
        v[i] = (float)rand() / (float)RAND_MAX * 2 - 1, g[i] = (float)rand() / (float)RAND_MAX * 2 - 1;
    }
    float *out = alloc(N), *lse = alloc((size_t)B * NH * T), *dq = alloc(N), *dk = alloc(N), *dv = alloc(N);
    float *work = alloc((size_t)4 * rt_attention_grad_work_numel(HD) + rt_attention_work_numel(HD));
    float *nout = alloc(N), *ndq = alloc(N), *ndk = alloc(N), *ndv = alloc(N);
    float *att = alloc((size_t)B * NH * T * T), *datt = alloc((size_t)B * NH * T * T);
    Job base = {out, lse, dq, dk, dv, work, q, k, v, g, 0, 0, 0};

    double pairs = (double)B * NH * T * (T + 1) / 2, ffwd = 4.0 * HD * pairs, fbwd = 8.0 * HD * pairs;
    double best[6] = {INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY};
    for (int rep = 0; rep < REPS; rep++) {
        double t0 = now_ms();
        naive_forward(nout, att, q, k, v);
        double t1 = now_ms();
        naive_backward(ndq, ndk, ndv, datt, att, q, k, v, g);
        double t2 = now_ms();
        flash(base, 1, 0);
        double t3 = now_ms();
        flash(base, 1, 1);
        double t4 = now_ms();
        flash(base, 2, 0);
        double t5 = now_ms();
        flash(base, 2, 1);
        double t6 = now_ms();
        double t[6] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5};
        for (int i = 0; i < 6; i++)
            best[i] = fmin(best[i], t[i]);
    }
    printf("attention fp32, B=%d T=%d W=%d heads=%d (hd=%d), best of %d runs\n", B, T, W, NH, HD, REPS);
    printf("naive (materialized (B,heads,T,T) scores, %.0f MiB each for att and datt):\n",
           (double)B * NH * T * T * sizeof(float) / (1 << 20));
    report("forward", best[0], ffwd);
    report("backward", best[1], fbwd);
    printf("flash (rt_attention_f32 / rt_attention_grad_f32, tiles %dx%d):\n", RT_ATTN_TILE_Q, RT_ATTN_TILE_K);
    report("forward, 1 thread", best[2], ffwd);
    report("backward, 1 thread", best[3], fbwd);
    report("forward, 2 threads (bh ranges)", best[4], ffwd);
    report("backward, 2 threads (bh ranges)", best[5], fbwd);
    printf("speedup 1 thread: forward %.2fx, backward %.2fx\n", best[0] / best[2], best[1] / best[3]);
    printf("flash vs naive, max |diff| / max |naive|: out %.1e  dq %.1e  dk %.1e  dv %.1e\n",
           max_diff(out, nout, N), max_diff(dq, ndq, N), max_diff(dk, ndk, N), max_diff(dv, ndv, N));
    free(q), free(k), free(v), free(g), free(out), free(lse), free(dq), free(dk), free(dv), free(work);
    free(nout), free(ndq), free(ndk), free(ndv), free(att), free(datt);
    return 0;
}
