/* kernels_vec.h - the vector helpers of the float kernels, for kernels.c
 * and kernels_x512.c (the same kernels built for AVX-512): VEC, a GNU C
 * vector (gcc and clang) of 64 bytes where AVX-512 is enabled, 32 where
 * AVX is, else 16 (SSE2, the x86-64 baseline), and e^x on it.  Only the
 * attention tile products use VEC directly: auto-vectorization of a
 * register-blocked product turned out to swing by 10x between compilers
 * and flags, the vector type does not.  Every helper computes each lane
 * with the same operations, so a result does not depend on the vector
 * width: the two builds give the same bits.  No include guard needed: one
 * inclusion per file. */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef float VecF32 __attribute__((vector_size(VBYTES)));
typedef double VecF64 __attribute__((vector_size(VBYTES)));

/* e^v in float, VL lanes at a time, without a library call (libm's expf
 * is a call per element): the exp_poly of compiler/lower/arith.c written on
 * GNU C vectors, because GCC does not if-convert the clamps of a scalar
 * version (without -fno-trapping-math) and so would not vectorise loops
 * around it.  v = n ln2 + r, n = round(v / ln2) (by adding and subtracting
 * 1.5 2^23: exact for |n| < 2^22), r in two parts of ln2 (Cody-Waite), e^r
 * by Cephes expf's minimax polynomial, 2^n built in the exponent bits as
 * 2^(n/2) 2^(n - n/2) so that results down to the denormals and up to
 * overflow stay right.  v is clamped first to [-104, 89], where the result
 * is already 0 or Inf; NaN passes through.  About 1 ulp, as libm's.  Every
 * lane computes the same operations, so an element's result does not
 * depend on its position (lane or tail) or on any thread split. */
typedef int32_t VecI32 __attribute__((vector_size(VBYTES)));
#define VLF ((int64_t)(sizeof(VecF32) / sizeof(float)))

static inline VecF32 select_f32(VecI32 mask, VecF32 a, VecF32 b)
{
    return (VecF32)((mask & (VecI32)a) | (~mask & (VecI32)b));
}

static inline VecF32 rt_expf_vec(VecF32 v)
{
    const VecF32 z = {0};
    VecF32 hi = z + 89.0f, lo = z - 104.0f, round = z + 0x1.8p23f;
    VecF32 x = select_f32(v < hi, v, hi);
    x = select_f32(x > lo, x, lo);
    VecF32 n = (x * 1.44269504088896341f + round) - round;
    VecF32 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    VecF32 p = z + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    VecI32 ni = __builtin_convertvector(n, VecI32), n1 = ni >> 1, n2 = ni - n1;
    VecF32 y = p * (VecF32)((n1 + 127) << 23) * (VecF32)((n2 + 127) << 23);
    return select_f32(v != v, v, y);
}

/* x[i] = e^x[i] for i < n; the last partial vector is padded with zeros. */
static inline void expn_f32(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VLF <= n; i += VLF) {
        VecF32 v;
        memcpy(&v, x + i, sizeof v);
        v = rt_expf_vec(v);
        memcpy(x + i, &v, sizeof v);
    }
    if (i < n) {
        VecF32 v = {0};
        memcpy(&v, x + i, sizeof(float) * (size_t)(n - i));
        v = rt_expf_vec(v);
        memcpy(x + i, &v, sizeof(float) * (size_t)(n - i));
    }
}

/* One element: lane 0 of the same. */
static inline float expf_poly(float v)
{
    VecF32 x = {v};
    return rt_expf_vec(x)[0];
}

