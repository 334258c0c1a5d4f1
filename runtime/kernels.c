/* kernels.c - the C kernels of kernels.h, in float and double.  The bodies
 * live once in kernels_impl.h, included here once per precision; this file
 * sets the precision macros and holds the precision-free helpers.
 *
 * VEC is a GNU C vector (gcc and clang) of 32 bytes where AVX is enabled,
 * else 16 (SSE2, the x86-64 baseline).  Only the attention tile products
 * use it: auto-vectorization of a register-blocked product turned out to
 * swing by 10x between compilers and flags, the vector type does not. */
#include "kernels.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef float VecF32 __attribute__((vector_size(VBYTES)));
typedef double VecF64 __attribute__((vector_size(VBYTES)));

int64_t rt_attention_work_numel(int64_t hd)
{
    /* qst (hd, BQ); acc (BQ, hd); st (BK, BQ) */
    return 2 * RT_ATTN_TILE_Q * hd + RT_ATTN_TILE_K * RT_ATTN_TILE_Q;
}

int64_t rt_attention_grad_work_numel(int64_t hd)
{
    /* kt, vt (hd, BK); dka, dva (BK, hd); p, ds (BQ, BK) */
    return 4 * hd * RT_ATTN_TILE_K + 2 * RT_ATTN_TILE_Q * RT_ATTN_TILE_K;
}

#define REAL float
#define VEC VecF32
#define FN(name) name##_f32
#define EXP expf
#include "kernels_impl.h"
#undef REAL
#undef VEC
#undef FN
#undef EXP

#define REAL double
#define VEC VecF64
#define FN(name) name##_f64
#define EXP exp
#include "kernels_impl.h"
#undef REAL
#undef VEC
#undef FN
#undef EXP
