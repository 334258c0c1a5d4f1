/* init.h - deterministic parameter initialisation from each StrataParam's
 * rule (model_abi.h, StrataInitKind).
 *
 * Every parameter draws from its own random stream: xoshiro256** seeded
 * with four splitmix64 outputs started at seed ^ (0x9E3779B97F4A7C15 *
 * (index + 1)), so its values depend on the seed and its index in the
 * table only, never on the other parameters.  Normals are Box-Muller pairs
 * computed in double and rounded to float once.  Truncated normals are
 * drawn by rejection from N(0, a^2) (torch.nn.init.trunc_normal_ gives the
 * same distribution); after 64 rejections in a row (bounds far in a tail)
 * the value is uniform in [b, c].  Xavier: std = a sqrt(2 / (fan_in +
 * fan_out)) with fan_in = dims[1], fan_out = dims[0] (a vector: both n).
 * The caller owns the buffer; padding between parameters is left alone. */
#ifndef STRATA_INIT_H
#define STRATA_INIT_H
#include <stdint.h>

#include "model_abi.h"

/* Fills params (desc->params_numel floats) with every parameter's init. */
void rt_init_params(const StrataModelDesc *desc, float *params, uint64_t seed);
/* One parameter (table index `index`) into out (p->numel floats). */
void rt_init_param(const StrataParam *p, int64_t index, uint64_t seed, float *out);
#endif
