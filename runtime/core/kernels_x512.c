/* kernels_x512.c - the float kernels of kernels_impl.h built with 64-byte
 * vectors, compiled with AVX-512 flags (Makefile.am) and named `_x512`;
 * kernels.c calls them on CPUs with AVX-512 (kernels_isa.h).  Attention's
 * tile products run twice as many lanes per instruction, with the same
 * operations per element as kernels.c's build: the same bits. */
#include "core/kernels_isa.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifndef __AVX512F__
#error "kernels_x512.c needs -mavx512f (see Makefile.am)"
#endif
#include "core/kernels_vec.h"

#define REAL float
#define VEC VecF32
#define FN(name) name##_f32_x512
#define EXP expf_poly
#define EXPN expn_f32
#include "core/kernels_impl.h"
