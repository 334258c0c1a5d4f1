/* gemm.h - the matrix products of generated code, one row tile at a time.
 * The lowering (compiler/lower/calls.c) cuts the rows of C into tiles of
 * rt_gemm_grain(M) rows, a number that depends on the shape alone, and
 * calls rt_gemm_f32 / rt_gemm_f64 once per tile on whichever pool thread
 * gets it (pool.h).  A row of C is then always computed by a call of the
 * same shape at the same position, whatever the thread count, so the bits
 * do not depend on it even with a BLAS whose edge kernels compute a row
 * differently by where it falls in a call (issue #13).
 *
 * The products go to a backend: OpenBLAS (cblas_?gemm, held to one thread
 * of its own, since its own split follows its thread count) unless a test
 * installs another with rt_gemm_set_backend.  Entry points: rt_gemm_grain,
 * rt_gemm_f32, rt_gemm_f64, rt_gemm_set_backend, rt_gemm_backend. */
#ifndef STRATA_GEMM_H
#define STRATA_GEMM_H
#include <stdint.h>

/* Rows per tile for a product with M rows of C: M / 16 rounded up to a
 * multiple of 16, at least 64 (or M itself when smaller), so a product
 * has at most 16 tiles.  Pure: the same M gives the same grain in every
 * process on every host. */
int64_t rt_gemm_grain(int64_t M);

/* C (M, N) = op(A) op(B) + beta C, row-major, alpha 1: op(A) is A (M, K)
 * with row stride lda, or A^T for A (K, M) when ta; op(B) is B (K, N), or
 * B^T for B (N, K) when tb.  Sizes < 2^31. */
void rt_gemm_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float beta, float *C, int64_t ldc);
void rt_gemm_f64(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                 int64_t ldb, double beta, double *C, int64_t ldc);

/* A backend: the two products with the contract above. */
typedef struct RtGemmBackend {
    const char *name;
    void (*f32)(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                int64_t ldb, float beta, float *C, int64_t ldc);
    void (*f64)(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                int64_t ldb, double beta, double *C, int64_t ldc);
} RtGemmBackend;

/* The backend in use (OpenBLAS unless one was set). */
const RtGemmBackend *rt_gemm_backend(void);
/* Installs b (NULL: back to OpenBLAS) and returns the previous one.  For
 * tests; not while a product runs. */
const RtGemmBackend *rt_gemm_set_backend(const RtGemmBackend *b);
#endif
