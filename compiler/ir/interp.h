/* interp.h - fp64 reference evaluator of the tensor IR.
 * Runs every node of an IrGraph in order, in double precision, with plain
 * loops: slow and simple on purpose.  It is the oracle that gradient checks
 * and the LLVM-generated kernels are compared against.  Op semantics are in
 * ir.h.  Memory: interp_run allocates one buffer per node; interp_free
 * releases them. */
#ifndef STRATA_INTERP_H
#define STRATA_INTERP_H
#include "ir/ir.h"

typedef struct InterpInput {
    int B, T;                 /* batch size, sequence length */
    const int32_t *tokens;    /* (B,T) */
    const int32_t *targets;   /* (B,T) */
    const double *mask;       /* (B,T) loss mask, NULL = all ones */
    double *const *params;    /* params[p->index]: p->numel values, row-major */
} InterpInput;

typedef struct Interp {
    const IrGraph *g;
    int B, T;
    double **val;             /* val[node->id]: (B*T*width) or (rows*width) */
} Interp;

/* Returns false (with a message on stderr) if an input is out of range,
 * e.g. a token id >= the embedding's vocabulary. */
bool interp_run(Interp *it, const IrGraph *g, const InterpInput *in);
const double *interp_value(const Interp *it, const IrNode *n);
/* Number of doubles in a node's value for this batch. */
int64_t interp_numel(const Interp *it, const IrNode *n);
void interp_free(Interp *it);
#endif
