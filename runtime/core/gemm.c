/* gemm.c - the tiled matrix products of generated code (gemm.h): the grain
 * rule and the OpenBLAS backend. */
#include "core/gemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>

int64_t rt_gemm_grain(int64_t M)
{
    int64_t g = (M + 15) / 16;
    g = (g + 15) / 16 * 16;
    if (g < 64)
        g = 64;
    return M < g ? (M > 0 ? M : 1) : g;
}

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

/* OpenBLAS's own threads would split a call by their count: one thread,
 * once; the pool does the splitting. */
static void blas_one_thread(void)
{
    openblas_set_num_threads(1);
}

static void blas_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc)
{
    pthread_once(&blas_once, blas_one_thread);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static void blas_f64(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                     int64_t ldb, double beta, double *C, int64_t ldc)
{
    pthread_once(&blas_once, blas_one_thread);
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static const RtGemmBackend openblas = {"openblas", blas_f32, blas_f64};
static _Atomic(const RtGemmBackend *) current = &openblas;

const RtGemmBackend *rt_gemm_backend(void)
{
    return atomic_load_explicit(&current, memory_order_acquire);
}

const RtGemmBackend *rt_gemm_set_backend(const RtGemmBackend *b)
{
    return atomic_exchange_explicit(&current, b ? b : &openblas, memory_order_acq_rel);
}

void rt_gemm_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float beta, float *C, int64_t ldc)
{
    rt_gemm_backend()->f32(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

void rt_gemm_f64(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                 int64_t ldb, double beta, double *C, int64_t ldc)
{
    rt_gemm_backend()->f64(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
