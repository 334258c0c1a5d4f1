/* check.h - what `strata check` prints about a resolved model: the
 * per-block plan, the parameter table and totals, FLOPs per token and a
 * memory estimate for a given batch and sequence length. */
#ifndef STRATA_REPORT_H
#define STRATA_REPORT_H
#include "ir/ir.h"
#include "ir/memplan.h"

typedef struct ReportCost {
    double fwd_flops, bwd_flops;  /* per token */
    int64_t params, embedding_params;
    double param_bytes, grad_bytes, optim_bytes, act_bytes;
} ReportCost;

/* Costs for a batch of `batch` sequences of `seq` tokens.  Counts the
 * forward nodes only (g->nforward when autodiff ran). */
ReportCost report_cost(const IrGraph *g, int64_t batch, int64_t seq);
/* mp: the memory plan of the training step for this batch, fp32. */
void report_print(FILE *out, const IrGraph *g, const MemPlan *mp, int64_t batch, int64_t seq);
#endif
