/* ad.h - reverse-mode automatic differentiation of the tensor IR.
 * ad_build appends the backward pass to the graph (after g->nforward
 * forward nodes) and sets g->grads: for each parameter, the node holding
 * d loss / d parameter.  Every op's derivative rule is in ad.c, in the order
 * of ops.h; backward nodes inherit the source location and block of the
 * forward node they come from. */
#ifndef STRATA_AD_H
#define STRATA_AD_H
#include "ir/ir.h"

void ad_build(IrGraph *g);
#endif
