/* tune.c - the matrix products of a model as the matrix-product layer
 * (runtime/core/gemm.h) will run them: `strata check` lists each distinct
 * product with the backend it gets on this host, and `strata tune` times
 * every candidate backend on them and caches the winners (the tuning
 * table of this CPU model), which every later run then uses.
 * Entry points: tune_products, tune_report, tune_run. */
#include "driver/tune.h"

#include "core/cpu.h"
#include "core/gemm.h"
#include "core/gemm_kernels.h"
#include "ir/memplan.h"

#include <stdlib.h>
#include <string.h>

int tune_products(const IrGraph *g, int64_t B, int64_t T, int64_t (*p)[4], int cap)
{
    MemProduct q[128];
    int n = memplan_products(g, B, T, MEMPLAN_HEAD_DIV, q, cap < 128 ? cap : 128);
    for (int i = 0; i < n; i++) {
        p[i][0] = (q[i].ta ? RT_GEMM_TA : 0) | (q[i].tb ? RT_GEMM_TB : 0);
        p[i][1] = q[i].M, p[i][2] = q[i].N, p[i][3] = q[i].K;
    }
    return n;
}

void tune_report(FILE *out, const IrGraph *g, int64_t B, int64_t T)
{
    int64_t p[64][4];
    int n = tune_products(g, B, T, p, 64);
    if (n == 0)
        return;
    const RtCpu *cpu = rt_cpu();
    fprintf(out, "\nmatrix products (batch %lld x %lld) on this host (%s%s%s; runtime/core/gemm.h):\n",
            (long long)B, (long long)T, cpu->brand[0] ? cpu->brand : cpu->vendor, ", ", rt_cpu_isa_name(cpu));
    for (int i = 0; i < n; i++) {
        char f32[96], bf16[96], shape[64];
        rt_gemm_describe((int)p[i][0], p[i][1], p[i][2], p[i][3], f32, sizeof f32);
        rt_gemm_describe((int)p[i][0] | RT_GEMM_BF16, p[i][1], p[i][2], p[i][3], bf16, sizeof bf16);
        snprintf(shape, sizeof shape, "%lld x %lld x %lld%s", (long long)p[i][1], (long long)p[i][2],
                 (long long)p[i][3], p[i][0] & RT_GEMM_TA ? " (A^T)" : p[i][0] & RT_GEMM_TB ? " (B^T)" : "");
        fprintf(out, "  %-28s fp32: %-26s bf16: %s\n", shape, f32, bf16);
    }
}

int tune_run(FILE *out, const IrGraph *g, int64_t B, int64_t T, bool fp32, bool bf16, int reps, int threads)
{
    int64_t p[128][4];
    int n = tune_products(g, B, T, p, 64);
    if (bf16)
        for (int i = 0, m = n; i < m; i++) {
            memcpy(p[n], p[i], sizeof p[i]);
            p[n++][0] |= RT_GEMM_BF16;
        }
    int first = fp32 ? 0 : n / 2;
    const RtCpu *cpu = rt_cpu();
    RtPool *pool = rt_pool_create(threads);
    fprintf(out, "strata: timing %d matrix products (batch %lld x %lld) on %d thread%s, %s (%s), best of %d:\n",
            n - first, (long long)B, (long long)T, rt_pool_size(pool), rt_pool_size(pool) == 1 ? "" : "s",
            cpu->brand[0] ? cpu->brand : cpu->vendor, rt_cpu_isa_name(cpu), reps);
    char *err = NULL;
    int rc = rt_gemm_tune((const int64_t(*)[4])(p + first), n - first, reps, pool, out, &err);
    rt_pool_free(pool);
    if (rc) {
        fprintf(stderr, "strata: error: %s\n", err ? err : "tuning failed");
        free(err);
        return 1;
    }
    return 0;
}
