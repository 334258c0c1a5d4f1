/* gemm_kernels.h - Strata's own matrix-product kernels (gemm_kernels.c),
 * behind the matrix-product layer (gemm.h), which splits a product into
 * tiles and calls rt_gemm_tile_strata for each.  Also the fp32 -> bf16
 * rounding that the bf16 products use, for tests. */
#ifndef STRATA_GEMM_KERNELS_H
#define STRATA_GEMM_KERNELS_H
#include <stdbool.h>
#include <stdint.h>

#include "core/cpu.h"
#include "core/gemm.h"
#include "core/pool.h"

/* One tile: C[i0:i1, j0:j1] = op(A) op(B) + beta C over the full K, for
 * C (M, N) = op(A) (M, K) op(B) (K, N), row-major: op(A)[i][k] is
 * A[i lda + k], or A[k lda + i] when ta; op(B)[k][j] is B[k ldb + j], or
 * B[j ldb + k] when tb.  The pointers are those of the whole product. */
typedef struct RtGemmTile {
    int ta, tb;
    int64_t K;
    const float *A, *B;
    int64_t lda, ldb;
    float beta;
    float *C;
    int64_t ldc;
    int64_t i0, i1, j0, j1;
} RtGemmTile;

/* The tile with the best kernel of cpu: fp32, or bf16 operands (rounded
 * to nearest even) with fp32 accumulation. */
void rt_gemm_tile_strata(const RtCpu *cpu, bool bf16, const RtGemmTile *g);
/* A whole product (g's i0 = j0 = 0, i1 = M, j1 = N) cut into the strips of
 * sp on the pool: the operand that every strip uses (op(A) for column
 * strips, op(B) for row strips) is packed once, in parallel, into a buffer
 * of the calling thread, then each strip packs only its own side.  The
 * same bits as tile by tile: packing moves values, it computes nothing. */
void rt_gemm_product_strata(RtPool *pool, const RtCpu *cpu, bool bf16, const RtGemmTile *g, RtGemmSplit sp);
/* The most bytes rt_gemm_product_strata packs of the shared side at once
 * (4 MiB, which holds every weight of LLaMA-71M's blocks packed whole;
 * the head's backward product, 64 MiB of W, goes in 16 groups, and is no
 * slower than in 8): a larger one is packed and multiplied in groups of K
 * slices, with the same bits.  A variable only so that tests can shrink
 * it. */
extern size_t rt_gemm_shared_cap;
/* That kernel's name ("avx512", "avx512_bf16", "avx2-bf16emul", ...). */
const char *rt_gemm_kernel_name(const RtCpu *cpu, bool bf16);
/* Tests: the tile with the kernel named `name` (fp32 or bf16 by its kind):
 * 1 done, 0 this CPU cannot run it, -1 no such kernel in this build. */
int rt_gemm_tile_named(const char *name, const RtGemmTile *g);
/* f rounded to bf16 and back, as the bf16 products round their operands. */
float rt_bf16_round(float f);
#endif
