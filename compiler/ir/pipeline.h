/* pipeline.h - the passes from a resolved forward graph to the training
 * graph that the memory plan and the lowering take: autodiff (ad.h), block
 * rematerialisation when asked (remat.h), fusion (fuse.h), with the IR
 * verifier after each pass that builds nodes.  The one sequence that the
 * driver, `strata build|check|gradcheck` and the benchmarks run. */
#ifndef STRATA_PIPELINE_H
#define STRATA_PIPELINE_H
#include <stdbool.h>
#include <stdio.h>

#include "ir/ir.h"

/* g: the forward graph (sema_resolve's).  Returns true, or false with the
 * verifier's findings on err and *what naming the pass that built an
 * invalid graph (an internal error). */
bool ir_train_graph(IrGraph *g, bool remat, FILE *err, const char **what);
#endif
