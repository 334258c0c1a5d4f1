/* fuse.h - fusion of the tensor IR into kernels.
 * fuse_graph partitions the computing nodes of a graph (forward and
 * backward) into IrKernels in execution order and marks which values must
 * be written to memory; fuse_dump prints the result (--dump=fused). */
#ifndef STRATA_FUSE_H
#define STRATA_FUSE_H
#include "ir/ir.h"

void fuse_graph(IrGraph *g);
void fuse_dump(FILE *out, const IrGraph *g);
/* Row values a kernel reads from and writes to memory per token (for the
 * report): the traffic fusion saves shows as a smaller number. */
int64_t fuse_traffic_per_token(const IrGraph *g, bool fused);
#endif
