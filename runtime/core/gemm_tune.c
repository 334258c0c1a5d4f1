/* gemm_tune.c - rt_gemm_tune (gemm.h): every candidate backend timed on a
 * model's product shapes on this host, the winners kept in the tuning
 * table (gemm_table.c) that every later process reads. */
#define _GNU_SOURCE /* asprintf */
#include "core/gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds of one whole product with backend b on the pool. */
static double time_once(const RtGemmBackend *b, RtPool *pool, int flags, int64_t M, int64_t N, int64_t K,
                        const float *A, const float *B, float *C)
{
    const RtGemmBackend *old = rt_gemm_set_backend(b);
    int64_t lda = flags & RT_GEMM_TA ? M : K, ldb = flags & RT_GEMM_TB ? K : N;
    double t0 = now();
    rt_matmul_f32(pool, flags, M, N, K, A, lda, B, ldb, 0.0f, C, N);
    double t = now() - t0;
    rt_gemm_set_backend(old);
    return t;
}

int rt_gemm_tune(const int64_t (*shapes)[4], int n, int reps, RtPool *pool, void *logv, char **err)
{
    FILE *log = logv;
    *err = NULL;
    for (int s = 0; s < n; s++) {
        int flags = (int)shapes[s][0];
        int64_t M = shapes[s][1], N = shapes[s][2], K = shapes[s][3];
        if (M <= 0 || N <= 0 || K <= 0)
            continue;
        float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
        float *C = malloc(sizeof(float) * (size_t)(M * N));
        if (!A || !B || !C) {
            free(A), free(B), free(C);
            if (asprintf(err, "out of memory timing a %lldx%lldx%lld product", (long long)M, (long long)N,
                         (long long)K) < 0)
                *err = NULL;
            return -1;
        }
        for (int64_t i = 0; i < M * K; i++)
            A[i] = (float)((i * 37 % 101) - 50) / 64;
        for (int64_t i = 0; i < K * N; i++)
            B[i] = (float)((i * 53 % 97) - 48) / 64;
        const RtGemmBackend *const *bs = rt_gemm_backends(), *best = NULL;
        double t[16];
        int nb = 0;
        while (bs[nb] && nb < 16)
            t[nb++] = INFINITY;
        for (int r = 0; r < reps + 1; r++) /* the candidates in turn; each one's first run warms it up */
            for (int i = 0; i < nb; i++)
                if (!(flags & RT_GEMM_BF16) || bs[i]->bf16) {
                    double x = time_once(bs[i], pool, flags, M, N, K, A, B, C);
                    if (r > 0 && x < t[i])
                        t[i] = x;
                }
        if (log)
            fprintf(log, "  %s %lld x %lld x %lld%s%s:", flags & RT_GEMM_BF16 ? "bf16" : "fp32", (long long)M,
                    (long long)N, (long long)K, flags & RT_GEMM_TA ? " (A^T)" : "", flags & RT_GEMM_TB ? " (B^T)" : "");
        double best_t = INFINITY;
        for (int i = 0; i < nb; i++) {
            if ((flags & RT_GEMM_BF16) && !bs[i]->bf16)
                continue;
            if (log)
                fprintf(log, " %s %.1f", bs[i]->name, 2.0 * (double)M * (double)N * (double)K / t[i] / 1e9);
            if (t[i] < best_t)
                best_t = t[i], best = bs[i];
        }
        if (log)
            fprintf(log, " GFLOP/s -> %s\n", best ? best->name : "?");
        if (best)
            rt_gemm_table_set(flags, M, N, K, best->name);
        free(A), free(B), free(C);
    }
    int rc = rt_gemm_table_save(err);
    if (rc == 0 && log) {
        char *path = rt_gemm_table_path();
        fprintf(log, "  written to %s\n", path ? path : "?");
        free(path);
    }
    return rc;
}
