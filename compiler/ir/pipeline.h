/* pipeline.h - the passes from a resolved forward graph to the training
 * graph that the memory plan and the lowering take: autodiff (ad.h),
 * rematerialisation (remat.h), fusion (fuse.h), with the IR
 * verifier after each pass that builds nodes.  The one sequence that the
 * driver, `strata build|check|gradcheck` and the benchmarks run. */
#ifndef STRATA_PIPELINE_H
#define STRATA_PIPELINE_H
#include <stdbool.h>
#include <stdio.h>

#include "ir/ir.h"

/* What the backward pass recomputes instead of keeping (remat.h); the
 * same numbers, bit for bit, whichever.  `--remat=MODE` of strata check,
 * gradcheck, build, train and sft; plain `--remat` is blocks. */
typedef enum IrRemat {
    IR_REMAT_POINTWISE, /* the default: elementwise values (remat_pointwise) */
    IR_REMAT_NONE,      /* keep every forward value the backward pass reads */
    IR_REMAT_BLOCKS,    /* each block's forward values (remat_blocks) */
} IrRemat;

/* "none", "pointwise" or "blocks"; false for anything else. */
bool ir_remat_parse(const char *s, IrRemat *out);
const char *ir_remat_name(IrRemat r);

/* g: the forward graph (sema_resolve's).  Returns true, or false with the
 * verifier's findings on err and *what naming the pass that built an
 * invalid graph (an internal error). */
bool ir_train_graph(IrGraph *g, IrRemat remat, FILE *err, const char **what);
#endif
