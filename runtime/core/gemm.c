/* gemm.c - the matrix-product layer (gemm.h): the strips of a product, the
 * backends (strata, openblas, onednn) and the choice among them. */
#include "core/gemm.h"

#include "config.h"
#include "core/cpu.h"
#include "core/gemm_kernels.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
void omp_set_num_threads(int); /* libgomp's, linked with oneDNN */
#endif

/* ---- strips ---- */

RtGemmSplit rt_gemm_plan(int64_t M, int64_t N)
{
    /* Cut the larger dimension, so that the operand each strip repacks
     * (the other side's) is the smaller one: at most 16 strips, a multiple
     * of 32 columns (64 at least) or of 48 rows (96 at least). */
    bool rows = M > N;
    int64_t len = rows ? M : N, unit = rows ? 48 : 32, least = 2 * unit;
    int64_t size = ((len + 15) / 16 + unit - 1) / unit * unit;
    if (size < least)
        size = least;
    if (size > len)
        size = len > 0 ? len : 1;
    return (RtGemmSplit){rows, size, len > 0 ? (len + size - 1) / size : 0};
}

/* ---- backends ---- */

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

/* OpenBLAS's own threads would split a call by their count: one thread,
 * once; the pool does the splitting. */
static void blas_one_thread(void)
{
    openblas_set_num_threads(1);
}

static void openblas_f32(int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float beta, float *C, int64_t ldc)
{
    pthread_once(&blas_once, blas_one_thread);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)K,
                1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static void openblas_f64(int ta, int tb, int64_t m, int64_t n, int64_t K, const double *A, int64_t lda,
                         const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    pthread_once(&blas_once, blas_one_thread);
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)K,
                1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static void strata_tile(bool bf16, int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    RtGemmTile g = {.ta = ta, .tb = tb, .K = K, .A = A, .B = B, .lda = lda, .ldb = ldb, .beta = beta, .C = C,
                    .ldc = ldc, .i0 = 0, .i1 = m, .j0 = 0, .j1 = n};
    rt_gemm_tile_strata(rt_cpu(), bf16, &g);
}

static void strata_f32(int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float beta, float *C, int64_t ldc)
{
    strata_tile(false, ta, tb, m, n, K, A, lda, B, ldb, beta, C, ldc);
}

static void strata_bf16(int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc)
{
    strata_tile(true, ta, tb, m, n, K, A, lda, B, ldb, beta, C, ldc);
}

static const RtGemmBackend be_strata = {"strata", strata_f32, openblas_f64, strata_bf16};
static const RtGemmBackend be_openblas = {"openblas", openblas_f32, openblas_f64, NULL};

#ifdef HAVE_DNNL
/* oneDNN runs an OpenMP team per calling thread: one thread each, set
 * once per thread, so that the pool alone decides the parallelism. */
static _Thread_local int omp_one;

static void onednn_f32(int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (!omp_one) {
        omp_set_num_threads(1);
        omp_one = 1;
    }
    if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != dnnl_success) {
        fprintf(stderr, "strata: internal error: dnnl_sgemm failed on %lldx%lldx%lld\n", (long long)m, (long long)n,
                (long long)K);
        abort();
    }
}

static const RtGemmBackend be_onednn = {"onednn", onednn_f32, openblas_f64, NULL};
#endif

static const RtGemmBackend *const backends[] = {
    &be_strata, &be_openblas,
#ifdef HAVE_DNNL
    &be_onednn,
#endif
    NULL,
};

const RtGemmBackend *const *rt_gemm_backends(void)
{
    return backends;
}

const RtGemmBackend *rt_gemm_backend_named(const char *name)
{
    for (int i = 0; name && backends[i]; i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

/* ---- the choice ---- */

const RtGemmBackend *rt_gemm_tuned(int flags, int64_t M, int64_t N, int64_t K)
{
    return rt_gemm_backend_named(rt_gemm_table_lookup(flags, M, N, K));
}

static _Atomic(const RtGemmBackend *) forced; /* tests */

const RtGemmBackend *rt_gemm_set_backend(const RtGemmBackend *b)
{
    return atomic_exchange_explicit(&forced, b, memory_order_acq_rel);
}

static const RtGemmBackend *env_choice;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void read_env(void)
{
    const char *s = getenv("STRATA_GEMM");
    if (!s || !*s)
        return;
    env_choice = rt_gemm_backend_named(s);
    if (!env_choice) {
        fprintf(stderr, "strata: STRATA_GEMM=%s: no such matrix-product backend (", s);
        for (int i = 0; backends[i]; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", backends[i]->name);
        fprintf(stderr, "); using the default\n");
    }
}

const RtGemmBackend *rt_gemm_choose(int flags, int64_t M, int64_t N, int64_t K, const char **why)
{
    const char *w;
    const RtGemmBackend *b = atomic_load_explicit(&forced, memory_order_acquire);
    if (b) {
        w = "test";
    } else {
        pthread_once(&env_once, read_env);
        if ((b = env_choice))
            w = "STRATA_GEMM";
        else if ((b = rt_gemm_tuned(flags, M, N, K)))
            w = "tuned";
        else
            b = flags & RT_GEMM_BF16 || rt_cpu()->avx512 ? &be_strata : &be_openblas, w = "default";
    }
    if ((flags & RT_GEMM_BF16) && !b->bf16) /* only strata multiplies in bf16 */
        b = &be_strata, w = "bf16";
    if (why)
        *why = w;
    return b;
}

void rt_gemm_describe(int flags, int64_t M, int64_t N, int64_t K, char *buf, size_t n)
{
    const char *why;
    const RtGemmBackend *b = rt_gemm_choose(flags, M, N, K, &why);
    if (b == &be_strata)
        snprintf(buf, n, "strata %s (%s)", rt_gemm_kernel_name(rt_cpu(), flags & RT_GEMM_BF16), why);
    else
        snprintf(buf, n, "%s (%s)", b->name, why);
}

/* ---- the products ---- */

typedef struct Job {
    const RtGemmBackend *b;
    RtGemmSplit sp;
    int flags;
    int64_t M, N, K, lda, ldb, ldc;
    const void *A, *B;
    void *C;
    double beta;
    bool f64;
} Job;

/* Strips [s0, s1): each one backend call. */
static void strips(void *ctx, int64_t s0, int64_t s1, int thread)
{
    const Job *j = ctx;
    int ta = j->flags & RT_GEMM_TA ? 1 : 0, tb = j->flags & RT_GEMM_TB ? 1 : 0;
    for (int64_t s = s0; s < s1; s++) {
        int64_t lo = s * j->sp.size, hi = lo + j->sp.size < (j->sp.rows ? j->M : j->N) ? lo + j->sp.size
                                                                                      : (j->sp.rows ? j->M : j->N);
        int64_t i0 = j->sp.rows ? lo : 0, m = j->sp.rows ? hi - lo : j->M;
        int64_t j0 = j->sp.rows ? 0 : lo, n = j->sp.rows ? j->N : hi - lo;
        /* the strip's corner in each operand */
        int64_t ao = ta ? i0 : i0 * j->lda, bo = tb ? j0 * j->ldb : j0, co = i0 * j->ldc + j0;
        if (j->f64)
            j->b->f64(ta, tb, m, n, j->K, (const double *)j->A + ao, j->lda, (const double *)j->B + bo, j->ldb,
                      j->beta, (double *)j->C + co, j->ldc);
        else
            (j->flags & RT_GEMM_BF16 ? j->b->bf16 : j->b->f32)(ta, tb, m, n, j->K, (const float *)j->A + ao, j->lda,
                                                                  (const float *)j->B + bo, j->ldb, (float)j->beta,
                                                                  (float *)j->C + co, j->ldc);
    }
}

static void run(RtPool *pool, Job *j)
{
    if (j->M <= 0 || j->N <= 0)
        return;
    j->sp = rt_gemm_plan(j->M, j->N);
    if (j->b == &be_strata && !j->f64) { /* its shared side packed once for all strips */
        RtGemmTile g = {.ta = j->flags & RT_GEMM_TA ? 1 : 0, .tb = j->flags & RT_GEMM_TB ? 1 : 0, .K = j->K,
                        .A = j->A, .B = j->B, .lda = j->lda, .ldb = j->ldb, .beta = (float)j->beta, .C = j->C,
                        .ldc = j->ldc, .i0 = 0, .i1 = j->M, .j0 = 0, .j1 = j->N};
        rt_gemm_product_strata(pool, rt_cpu(), j->flags & RT_GEMM_BF16, &g, j->sp);
        return;
    }
    rt_pool_run(pool, j->sp.count, 1, strips, j);
}

RtGemmClock rt_gemm_clock;

static double clock_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void rt_matmul_f32(RtPool *pool, int flags, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    Job j = {.b = rt_gemm_choose(flags, M, N, K, NULL), .flags = flags, .M = M, .N = N, .K = K, .lda = lda,
             .ldb = ldb, .ldc = ldc, .A = A, .B = B, .C = C, .beta = beta};
    if (!rt_gemm_clock.on) {
        run(pool, &j);
        return;
    }
    double t0 = clock_s();
    run(pool, &j);
    double dt = clock_s() - t0;
    RtGemmClock *c = &rt_gemm_clock;
    c->seconds += dt;
    c->calls++;
    int i = 0;
    while (i < c->nshapes && (c->shape[i].flags != flags || c->shape[i].M != M || c->shape[i].N != N ||
                              c->shape[i].K != K))
        i++;
    if (i == c->nshapes && i < RT_GEMM_CLOCK_SHAPES) {
        c->shape[i].flags = flags, c->shape[i].M = M, c->shape[i].N = N, c->shape[i].K = K;
        c->nshapes++;
    }
    if (i < c->nshapes)
        c->shape[i].seconds += dt, c->shape[i].calls++;
}

void rt_matmul_f64(RtPool *pool, int flags, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda,
                   const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    const RtGemmBackend *b = atomic_load_explicit(&forced, memory_order_acquire);
    Job j = {.b = b ? b : &be_openblas, .flags = flags & ~RT_GEMM_BF16, .M = M, .N = N, .K = K, .lda = lda,
             .ldb = ldb, .ldc = ldc, .A = A, .B = B, .C = C, .beta = beta, .f64 = true};
    run(pool, &j);
}
