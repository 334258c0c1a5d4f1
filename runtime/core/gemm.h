/* gemm.h - the matrix-product layer that generated code calls (issue #15):
 * rt_matmul_f32 / rt_matmul_f64 do one product C = op(A) op(B) + beta C
 * on the pool, picking an implementation (a backend) for its shape and
 * precision on this host, and cutting it into tiles.
 *
 * Tiles (issue #13): the larger of C's two dimensions is cut into at most
 * 16 strips of a size fixed by the shape (rt_gemm_plan), never by the
 * thread count, and each strip is one backend call on one thread; a sum
 * over K is never split.  So the bits depend on the shape and the backend
 * alone, for any --threads.
 *
 * Backends (RtGemmBackend: one strip at a time):
 *   strata    gemm_kernels.c: packed micro-kernels for the host's ISA from
 *             cpuid (AVX-512, AVX2+FMA, portable); the only one with bf16
 *             (AVX-512 BF16, or the same sums widened to fp32 elsewhere)
 *   openblas  cblas_?gemm, held to one thread of its own
 *   onednn    dnnl_sgemm (when configure found oneDNN), one OpenMP thread
 * The choice: $STRATA_GEMM names one (a user's override, e.g. for a
 * bench); else the tuning table of this CPU model (`strata tune` measures
 * every candidate on a model's shapes and caches the winners in
 * $XDG_CACHE_HOME/strata/gemm-CPU.json, see gemm_tune.c); else bf16 goes to
 * strata, and fp32 to strata on CPUs with AVX-512 (its 12x32 kernel: 1.8x
 * OpenBLAS on an AVX-512 host whose environment holds OpenBLAS to its
 * Haswell kernels, which the layer may not read) and to openblas on the
 * others.  Nothing is measured during a run, so every
 * process on a host makes the same choice.  fp64 (the tests' reference
 * precision) always uses openblas.  rt_gemm_describe says what a product
 * gets, for reports. */
#ifndef STRATA_GEMM_H
#define STRATA_GEMM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pool.h"

/* flags of rt_matmul_*: op(A) = A^T, op(B) = B^T, operands in bf16. */
enum { RT_GEMM_TA = 1, RT_GEMM_TB = 2, RT_GEMM_BF16 = 4 };

/* C (M, N) = op(A) op(B) + beta C, row-major, alpha 1: op(A) is A (M, K)
 * with row stride lda, or A^T for A (K, M) with RT_GEMM_TA; op(B) is B
 * (K, N), or B^T for B (N, K) with RT_GEMM_TB.  RT_GEMM_BF16: A and B are
 * rounded to bf16 (nearest even) and multiplied with fp32 accumulation.
 * Sizes < 2^31.  pool may be NULL.  Not reentrant on one pool. */
void rt_matmul_f32(RtPool *pool, int flags, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void rt_matmul_f64(RtPool *pool, int flags, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda,
                   const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* A backend: one strip, C (m, n) = op(A) op(B) + beta C with the pointers
 * at the strip's corner; bf16 NULL when it has none. */
typedef void RtGemmF32(int ta, int tb, int64_t m, int64_t n, int64_t K, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float beta, float *C, int64_t ldc);
typedef void RtGemmF64(int ta, int tb, int64_t m, int64_t n, int64_t K, const double *A, int64_t lda,
                       const double *B, int64_t ldb, double beta, double *C, int64_t ldc);
typedef struct RtGemmBackend {
    const char *name;
    RtGemmF32 *f32;
    RtGemmF64 *f64;
    RtGemmF32 *bf16;
} RtGemmBackend;

/* The backends of this build, NULL-terminated. */
const RtGemmBackend *const *rt_gemm_backends(void);
const RtGemmBackend *rt_gemm_backend_named(const char *name);

/* How a product is cut: `rows` strips of C's rows (else of its columns)
 * of `size` each (the last one shorter), `count` of them. */
typedef struct RtGemmSplit {
    bool rows;
    int64_t size, count;
} RtGemmSplit;
RtGemmSplit rt_gemm_plan(int64_t M, int64_t N);

/* The time rt_matmul_f32's calls take, summed while `on` (for
 * bench/train_bench: how long a step's products take inside the step,
 * against the same products alone).  For one calling thread: the step's
 * (its products run one at a time; the pool works inside each call). */
enum { RT_GEMM_CLOCK_SHAPES = 64 };
typedef struct RtGemmClock {
    bool on;
    double seconds;
    int64_t calls;
    int nshapes;             /* the same per product shape, first seen first */
    struct {
        int flags;
        int64_t M, N, K, calls;
        double seconds;
    } shape[RT_GEMM_CLOCK_SHAPES];
} RtGemmClock;
extern RtGemmClock rt_gemm_clock;

/* The backend that rt_matmul_f32 uses for this product, and why
 * ("STRATA_GEMM", "tuned", "default", "test"). */
const RtGemmBackend *rt_gemm_choose(int flags, int64_t M, int64_t N, int64_t K, const char **why);
/* "strata (avx512_bf16, default)" into buf. */
void rt_gemm_describe(int flags, int64_t M, int64_t N, int64_t K, char *buf, size_t n);

/* Tests: every product goes to b (NULL: back to the normal choice);
 * returns the previous override.  Not while a product runs. */
const RtGemmBackend *rt_gemm_set_backend(const RtGemmBackend *b);

/* The tuned backend for (flags, M, N, K), or NULL. */
const RtGemmBackend *rt_gemm_tuned(int flags, int64_t M, int64_t N, int64_t K);

/* ---- the tuning table (gemm_table.c) ---- */
/* The table's file for this CPU model (malloc'd). */
char *rt_gemm_table_path(void);
/* The backend name tuned for (flags, N, K) at the M nearest M, or NULL
 * (valid until the next rt_gemm_table_set). */
const char *rt_gemm_table_lookup(int flags, int64_t M, int64_t N, int64_t K);
void rt_gemm_table_set(int flags, int64_t M, int64_t N, int64_t K, const char *backend);
/* Writes the table atomically; 0, or -1 with a malloc'd *err. */
int rt_gemm_table_save(char **err);

/* ---- tuning (gemm_tune.c) ---- */
/* Times every candidate on each product as a step runs it (the strips on
 * `pool`, NULL: the calling thread; best of `reps`, the candidates taking
 * turns rep by rep, so that a noisy moment does not fall on one of them),
 * prints a line per product to `log` (may be NULL), merges the winners
 * into the table and writes it atomically.  shapes: n rows of
 * {flags, M, N, K}.  0, or -1 with a malloc'd *err. */
int rt_gemm_tune(const int64_t (*shapes)[4], int n, int reps, RtPool *pool, void *log, char **err);
#endif
