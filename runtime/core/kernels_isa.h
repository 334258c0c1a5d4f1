/* kernels_isa.h - the two builds of the dispatched float kernels
 * (kernels.c): `_base` with the runtime's flags and `_x512` with AVX-512
 * (kernels_x512.c, only where configure enabled it: STRATA_KERNELS_X512).
 * The public names of kernels.h pick one; tests call both. */
#ifndef STRATA_KERNELS_ISA_H
#define STRATA_KERNELS_ISA_H
#include "config.h"

#include <stdbool.h>

#include "core/kernels.h"

RT_KERNELS_DECLARE(float, _f32_base)
#ifdef STRATA_KERNELS_X512
RT_KERNELS_DECLARE(float, _f32_x512)
#endif

/* Whether the public float kernels run the AVX-512 build: the build has
 * it and cpuid says this CPU has AVX-512 F, BW, VL and DQ. */
bool rt_kernels_wide(void);
#endif
