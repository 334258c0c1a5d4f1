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
