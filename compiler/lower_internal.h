/* lower_internal.h - what the LLVM lowering files share (lower.c, the loop
 * and elementwise code in lower_ops.c, the BLAS and runtime-kernel calls in
 * lower_kernels.c, and jit.c).  The only header besides those files that
 * includes llvm-c.  One Cg per module being built: context, module,
 * builder, target machine and the cached types (the c3c layout). */
#ifndef STRATA_LOWER_INTERNAL_H
#define STRATA_LOWER_INTERNAL_H
#include "lower.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/TargetMachine.h>

/* Codegen context. */
typedef struct Cg {
    const IrGraph *g;
    LowerPrecision prec;
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTargetMachineRef tm;
    LLVMTypeRef real;          /* float or double */
    LLVMTypeRef i32, i64, ptr, voidt;
    /* strata_run, while its body is being built */
    LLVMValueRef run;
    LLVMValueRef bufs, aux, tokens, targets, mask, B, T;
    LLVMValueRef BT;           /* B * T, computed in the entry block */
    bool *attn_grad_done;      /* per node id: an ATTENTION_GRAD emitted with its siblings */
} Cg;

/* A LowerModule: either owns its context (AOT) or borrows one (the JIT's
 * thread-safe context); the JIT takes the module away on compile. */
struct LowerModule {
    LLVMContextRef ctx;
    bool owns_ctx;
    LLVMModuleRef mod;
    LLVMTargetMachineRef tm;
    LowerPrecision prec;
    double lower_s, opt_s;     /* seconds spent building and optimising */
};

/* ---- lower.c ---- */
/* Creates a target machine for o->cpu (NULL = host); NULL + *err on failure. */
LLVMTargetMachineRef lower_target_machine(const LowerOptions *o, char **err);
/* Lowers g into a new module in ctx; the LowerModule disposes of ctx when
 * owns_ctx, but never on failure (NULL), which leaves ctx to the caller. */
LowerModule *lower_module_in(LLVMContextRef ctx, bool owns_ctx, const IrGraph *g, const LowerOptions *o,
                             char **err);
double lower_now(void);        /* monotonic seconds */
char *lower_strdup(const char *s);
/* A malloc'd copy of an LLVM error's message; consumes e. */
char *lower_error_message(LLVMErrorRef e);

/* ---- helpers shared by the emitters (lower.c) ---- */
LLVMValueRef cg_i64(Cg *cg, int64_t v);
LLVMValueRef cg_real(Cg *cg, double v);
/* Rows of a node's value in strata_run: B*T for an activation, else constant. */
LLVMValueRef cg_rows(Cg *cg, const IrNode *n);
/* bufs[id] / aux[id] loaded in strata_run. */
LLVMValueRef cg_buf(Cg *cg, const IrNode *n);
LLVMValueRef cg_aux(Cg *cg, const IrNode *n);
/* Pointer to element i of a REAL array. */
LLVMValueRef cg_elem(Cg *cg, LLVMValueRef base, LLVMValueRef i);
/* Declares (once) an external function. */
LLVMValueRef cg_extern(Cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n);
LLVMValueRef cg_call(Cg *cg, LLVMValueRef fn, LLVMValueRef *args, unsigned n);
/* memset(p, 0, n REALs) */
void cg_zero(Cg *cg, LLVMValueRef p, LLVMValueRef n);

/* ---- lower_ops.c: generated loops ---- */
/* Elementwise ops (ops.h ew = 1, EXPAND included), MEAN/SUM/MAX and
 * SUM_ROWS: a per-node function with the loop nest, called from strata_run. */
void lower_loop_node(Cg *cg, const IrNode *x);

/* ---- lower_kernels.c: calls out of the module ---- */
/* MATMUL, MATMUL_GRAD_W (BLAS) and the runtime kernels (EMBED ... CE_GRAD). */
void lower_call_node(Cg *cg, const IrNode *x);
int64_t lower_kernel_aux_numel(const IrNode *n, int64_t B, int64_t T);
#endif
