/* kernels.c - the C kernels of kernels.h, in float and double.  The bodies
 * live once in kernels_impl.h, included here once per precision; this file
 * sets the precision macros.  exp: rt_expf_vec (kernels_vec.h) in float
 * (vectorised), libm's exp in double.
 *
 * The float kernels whose time matters in a training step (attention
 * forward, cached and backward, cross-entropy rows and gradient) exist
 * twice where the build allows (configure's KERNELS_X512): as built here
 * (`_base`: the runtime's flags, AVX2 and FMA on x86-64) and in
 * kernels_x512.c with 64-byte vectors for AVX-512.  The public name calls
 * the AVX-512 one when cpuid says the CPU has AVX-512 (cpu.h), never by
 * the environment.  Both compute every element with the same operations in
 * the same order (the width only changes which elements share a vector),
 * so they give the same bits: tests/kernels_test checks it. */
#include "core/kernels.h"

#include "core/cpu.h"
#include "core/kernels_isa.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/kernels_vec.h"

void rt_expf_array(float *x, int64_t n)
{
    expn_f32(x, n);
}

static void expn_f64(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = exp(x[i]);
}

/* The dispatched kernels' float bodies under their _base names. */
#define rt_attention_f32 rt_attention_f32_base
#define rt_attention_cached_f32 rt_attention_cached_f32_base
#define rt_attention_grad_f32 rt_attention_grad_f32_base
#define rt_cross_entropy_rows_f32 rt_cross_entropy_rows_f32_base
#define rt_cross_entropy_grad_f32 rt_cross_entropy_grad_f32_base
#define REAL float
#define VEC VecF32
#define FN(name) name##_f32
#define EXP expf_poly
#define EXPN expn_f32
#include "core/kernels_impl.h"
#undef REAL
#undef VEC
#undef FN
#undef EXP
#undef EXPN
#undef rt_attention_f32
#undef rt_attention_cached_f32
#undef rt_attention_grad_f32
#undef rt_cross_entropy_rows_f32
#undef rt_cross_entropy_grad_f32

/* ---- the dispatch ---- */

bool rt_kernels_wide(void)
{
#ifdef STRATA_KERNELS_X512
    return rt_cpu()->avx512;
#else
    return false;
#endif
}

#ifdef STRATA_KERNELS_X512
#define PICK(name) (rt_kernels_wide() ? name##_x512 : name##_base)
#else
#define PICK(name) name##_base
#endif

void rt_attention_f32(float *out, float *lse, const float *q, const float *k, const float *v, float *work, int64_t bh0,
                      int64_t bh1, int64_t T, int64_t W, int64_t heads)
{
    PICK(rt_attention_f32)(out, lse, q, k, v, work, bh0, bh1, T, W, heads);
}

void rt_attention_cached_f32(float *out, const float *q, const float *kc, const float *vc, float *work, int64_t bh0,
                             int64_t bh1, int64_t T, int64_t pos, int64_t max_T, int64_t W, int64_t heads)
{
    PICK(rt_attention_cached_f32)(out, q, kc, vc, work, bh0, bh1, T, pos, max_T, W, heads);
}

void rt_attention_grad_f32(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                           const float *out, const float *lse, const float *g, float *work, int64_t bh0, int64_t bh1,
                           int64_t T, int64_t W, int64_t heads)
{
    PICK(rt_attention_grad_f32)(dq, dk, dv, q, k, v, out, lse, g, work, bh0, bh1, T, W, heads);
}

void rt_cross_entropy_rows_f32(float *row_loss, float *lse, const float *logits, const int32_t *targets,
                               const float *mask, int64_t r0, int64_t r1, int64_t V)
{
    PICK(rt_cross_entropy_rows_f32)(row_loss, lse, logits, targets, mask, r0, r1, V);
}

void rt_cross_entropy_grad_f32(float *dlogits, const float *logits, const int32_t *targets, const float *mask,
                               const float *lse, const float *g, int64_t c0, int64_t r0, int64_t r1, int64_t rows,
                               int64_t V)
{
    PICK(rt_cross_entropy_grad_f32)(dlogits, logits, targets, mask, lse, g, c0, r0, r1, rows, V);
}

#define REAL double
#define VEC VecF64
#define FN(name) name##_f64
#define EXP exp
#define EXPN expn_f64
#include "core/kernels_impl.h"
#undef REAL
#undef VEC
#undef FN
#undef EXP
#undef EXPN
