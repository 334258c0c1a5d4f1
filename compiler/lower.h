/* lower.h - LLVM lowering of the tensor IR (forward and backward pass).
 * lower_module turns an IrGraph into an LLVM module with one entry point,
 * strata_run (the model ABI below), for float or double; lower_emit writes
 * it as text IR, assembly or an object file; jit.h compiles it in process.
 * This header does not expose LLVM: only lower*.c and jit.c include llvm-c.
 * Memory: a LowerModule owns its LLVM context, module and target machine. */
#ifndef STRATA_LOWER_H
#define STRATA_LOWER_H
#include "ir.h"

/* Model ABI v0.  The generated module exports, for REAL = float or double:
 *
 *   void strata_run(REAL **bufs, REAL **aux, const int32_t *tokens,
 *                   const int32_t *targets, const REAL *mask,
 *                   int64_t B, int64_t T);
 *
 * It runs every node of the graph in order: the forward pass, then (if
 * ad_build ran) the backward pass.  B and T are run-time values; every
 * width is compiled in.
 *   bufs[id]   the value of node `id`, lower_numel(node, B, T) REALs,
 *              row-major: an activation is (B*T, width), anything else
 *              (rows, width).  The caller allocates every buffer, and no
 *              two may overlap.  PARAM buffers hold the parameter values
 *              (the caller fills them; strata_run only reads them).  INPUT
 *              buffers are unused and may be NULL: ids come from `tokens`
 *              and `targets`.  After the call, bufs[g->loss->id][0] is the
 *              loss, bufs[g->logits->id] the logits and
 *              bufs[g->grads[p]->id] the gradient of parameter p.
 *   aux[id]    scratch of lower_aux_numel(node, B, T) REALs, NULL when
 *              that is 0; what a node keeps for its backward pass plus the
 *              kernels' work space:
 *                ATTENTION      log-sum-exp of each score row (B, heads, T),
 *                               then the forward's and (later in the same
 *                               run) the backward kernel's work area
 *                ROPE, ROPE_GRAD  cos/sin table (T, 2, head size / 2)
 *                CROSS_ENTROPY  log-sum-exp of each logits row (B*T), then
 *                               the per-row losses (B*T)
 *              The sizes call runtime/kernels.h, so this library links it.
 *   tokens, targets   (B, T) ids; tokens must be < the embedding tables'
 *              rows and targets < the logits width (not checked here).
 *   mask       (B, T) loss weights; NULL means all ones.
 * strata_run keeps no state between calls and may run concurrently on
 * disjoint buffers.  It calls cblas_sgemm/cblas_dgemm (OpenBLAS), the
 * runtime kernels of runtime/kernels.h and libm, which the program that
 * links or JIT-loads the module must provide. */
#define LOWER_ENTRY "strata_run"
#define LOWER_ABI_VERSION 0

typedef enum LowerPrecision {
    LOWER_F32,            /* REAL = float */
    LOWER_F64,            /* REAL = double */
} LowerPrecision;

typedef struct LowerOptions {
    LowerPrecision precision;
    const char *cpu;      /* target CPU, e.g. "x86-64-v3"; NULL = this host (with its features) */
    int opt_level;        /* 0 = no optimisation passes, else default<O2> */
} LowerOptions;

typedef enum LowerEmitKind {
    LOWER_EMIT_LLVM,      /* textual LLVM IR (.ll) */
    LOWER_EMIT_ASM,       /* assembly (.s) */
    LOWER_EMIT_OBJ,       /* object file (.o) */
} LowerEmitKind;

typedef struct LowerModule LowerModule;

typedef void (*StrataRunF32)(float **bufs, float **aux, const int32_t *tokens, const int32_t *targets,
                             const float *mask, int64_t B, int64_t T);
typedef void (*StrataRunF64)(double **bufs, double **aux, const int32_t *tokens, const int32_t *targets,
                             const double *mask, int64_t B, int64_t T);

/* Lowers, verifies and optimises g.  Returns NULL with a malloc'd message in
 * *err when the target cannot be set up (e.g. an unknown cpu); a graph the
 * lowering cannot handle is an internal bug (die). */
LowerModule *lower_module(const IrGraph *g, const LowerOptions *o, char **err);
/* Writes the module to path; false with a malloc'd message in *err. */
bool lower_emit(LowerModule *m, LowerEmitKind kind, const char *path, char **err);
void lower_module_free(LowerModule *m);

/* REALs in bufs[n->id] / aux[n->id] for a batch of B x T tokens. */
int64_t lower_numel(const IrNode *n, int64_t B, int64_t T);
int64_t lower_aux_numel(const IrNode *n, int64_t B, int64_t T);
#endif
