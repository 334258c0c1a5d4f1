/* cg.h - the core of the LLVM lowering (compiler/lower), the one header
 * besides lower.h that includes llvm-c.  One Cg per module being built:
 * context, module, builder, target machine and the cached types (the c3c
 * layout).  The files and who calls whom, bottom up (no file calls a
 * sibling of its own layer):
 *   core       cg.c (helpers, loops, parallel tasks, where values live),
 *              arith.c (the scalar formulas of every op)
 *   emitters   rows.c (fused row kernels), loops.c (non-token loops,
 *              SUM_ROWS), calls.c (matrix products and runtime kernels);
 *              abi.c (descriptor, StrataStep type, parameter offsets)
 *   entries    step.c (strata_train_step, strata_forward, strata_decode: the schedule; one
 *              function per kind of block, ir/kinds.h, that they call)
 *   driver     lower.c (target, module, verify, optimise, emit)
 *   JIT        jit.c (ORC LLJIT) */
#ifndef STRATA_LOWER_CG_H
#define STRATA_LOWER_CG_H
#include "lower/lower.h"
#include "ir/kinds.h"
#include "ir/memplan.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#define FM_EW LLVMFastMathAllowContract                                 /* elementwise arithmetic */
#define FM_RED (LLVMFastMathAllowReassoc | LLVMFastMathAllowContract)  /* reductions */

/* A task function cached by name (rt_pool_run's callback). */
typedef struct CgTask {
    const char *key;           /* malloc'd */
    LLVMValueRef fn;
    LLVMTypeRef ctx_type;
} CgTask;

/* Codegen context. */
typedef struct Cg {
    const IrGraph *g;
    const MemLayout *ly;       /* the memory plan, in bytes of REAL */
    LowerPrecision prec;
    int64_t elem;              /* bytes per REAL */
    bool libm_exp;             /* LowerOptions.libm_exp */
    bool inline_blocks;        /* LowerOptions.inline_blocks */
    int64_t head_div, head_cap; /* LowerOptions' (head_div 0: no head chunks) */
    bool nvptx;                /* building GPU kernels (nvptx*.c): no libm calls in arith.c */
    bool gpu_emulate;          /* the GPU kernels built for the host, for tests (nvptx.c) */
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTargetMachineRef tm;
    LLVMTargetDataRef td;
    LLVMTypeRef real;          /* float or double */
    LLVMTypeRef i1, i8, i32, i64, f64, ptr, voidt;
    LLVMTypeRef step_type;     /* StrataStep */
    int64_t *param_off;        /* per parameter index: offset in REALs (ABI) */
    int64_t params_numel;
    const Kinds *kinds;        /* the kinds of blocks, their runs and skip flags (ir/kinds.h) */
    const KindBlock *blocks;   /* = kinds->blocks */
    int64_t width;             /* residual width of every block (capture); 0: they differ, no capture */
    int *grad_first, *grad_next; /* per kernel, then per parameter: the parameters whose gradient
                                    the kernel computes (-1 ends) */
    int *out_first, *out_next; /* per kernel, then per block: the blocks whose output it computes */
    CgTask *tasks;             /* generated task functions, for reuse */
    int ntasks;
    /* The function being built (lower/step.c: an entry point or a kind's
     * function); only valid in its body. */
    LLVMValueRef fn;
    bool train;                /* for strata_train_step, else for strata_forward */
    bool decode;               /* for strata_decode (train false): attention over the KV cache */
    LLVMValueRef kv, kv_pos, kv_len; /* StrataStep's (strata_decode; kv_pos 0 elsewhere) */
    LLVMValueRef params, grads, arena, tokens, targets, mask, B, T, BT, pool, acc, logits, capture, skip;
    LLVMValueRef logits_out;   /* train step with head chunks: StrataStep.logits (may be null), where
                                  each chunk's logits are copied (cg_home of the logits: the chunk) */
    LLVMValueRef gemm_flags;   /* i32: RT_GEMM_BF16 for a bf16 step, else 0 */
    LLVMValueRef sumsq;        /* StrataStep.grad_sumsq (a null pointer outside fp32 train steps) */
    LLVMValueRef region[MEM_NREGIONS]; /* start of each arena region */
    bool *attn_grad_done;      /* per node id: an ATTENTION_GRAD emitted with its group */
    /* In a kind's function: the pass being built, the index in kp->refs of
     * each node id (-1), and this block's row of the kind's table (struct
     * {i64 x[], REAL x[]}: the columns that differ between blocks; col_field
     * says which field of the row holds column c, -1: uniform) and index. */
    const KindPass *kp;
    int *ref_of;
    int *col_field;
    LLVMTypeRef row_type;
    LLVMValueRef row, layer;
    /* The kinds' functions: per kind, [0] its forward pass for
     * strata_train_step, [1] its backward pass, [2] its forward pass for
     * strata_forward (NULL: none to call), [3] for strata_decode (the same
     * as [2] when the run has no attention), and per kind and pass its table
     * (NULL: no column differs) and row type; the entry point's env, the
     * values of the step the functions read (type env_type). */
    LLVMValueRef (*kind_fn)[4];
    LLVMValueRef (*kind_rows)[2];
    LLVMTypeRef (*kind_row_type)[2];
    LLVMTypeRef env_type;
    LLVMValueRef env;
    /* strata_decode's KV cache (abi.c): per node id the offset of a forward
     * attention's keys in REALs per B * kv_len (-1: none), per block that of
     * its first attention (-1: none), the same as an i64 global indexed by
     * block, and the REALs per position and sequence of all of them. */
    int64_t *kv_off, *kv_base;
    LLVMValueRef kv_base_table;
    int64_t kv_width;
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

/* ---- cg.c: the core ---- */
LLVMValueRef cg_i32(Cg *cg, int64_t v);
LLVMValueRef cg_i64(Cg *cg, int64_t v);
LLVMValueRef cg_real(Cg *cg, double v);
/* Pointer to element i of a REAL array, and to byte i of anything. */
LLVMValueRef cg_elem(Cg *cg, LLVMValueRef base, LLVMValueRef i);
LLVMValueRef cg_byte(Cg *cg, LLVMValueRef base, LLVMValueRef i);
LLVMValueRef cg_load(Cg *cg, LLVMValueRef p);      /* a REAL */
/* Declares (once) an external function, and calls a function. */
LLVMValueRef cg_extern(Cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n);
LLVMValueRef cg_call(Cg *cg, LLVMValueRef fn, LLVMValueRef *args, unsigned n);
void cg_fn_attr(Cg *cg, LLVMValueRef fn, unsigned idx, const char *name);
/* memset(p, 0, n REALs), memcpy / memmove of n REALs (n an i64 value). */
void cg_zero(Cg *cg, LLVMValueRef p, LLVMValueRef n);
void cg_copy(Cg *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n, bool overlap);
/* An alloca in the current function's entry block. */
LLVMValueRef cg_alloca(Cg *cg, LLVMTypeRef t, const char *name);
/* if (cond) { ...: cg_if opens the then-block, cg_endif joins. */
LLVMBasicBlockRef cg_if(Cg *cg, LLVMValueRef cond, const char *name);
void cg_endif(Cg *cg, LLVMBasicBlockRef join);

/* for (i = 0; i < n; i++) with an optional REAL accumulator: after
 * cg_loop_begin the builder is in the body; cg_loop_end closes the loop and
 * leaves the builder after it, where `acc` holds the final value. */
typedef struct Loop {
    LLVMBasicBlockRef head, exit;
    LLVMValueRef i, acc;
} Loop;
Loop cg_loop_begin(Cg *cg, LLVMValueRef from, LLVMValueRef n, LLVMValueRef acc_init, const char *name);
void cg_loop_end(Cg *cg, Loop *l, LLVMValueRef acc_next);
/* cg_loop_end for a loop over rows whose body reduces with reassoc
 * (FM_RED): marked llvm.loop.vectorize.enable false, so that LLVM never
 * vectorises across rows (once a narrow row's column loops are unrolled,
 * it otherwise may, summing a row in another order in the vector body than
 * in its scalar remainder: a row's bits would depend on how many rows the
 * call had, i.e. on the batch, the thread split, or decode against
 * forward). */
void cg_loop_end_rows(Cg *cg, Loop *l);

/* Parallel tasks: void name(ptr ctx, i64 begin, i64 end, i32 thread), run
 * by rt_pool_run over [0, n) in tiles of `grain` (an i64 value that must
 * depend on the shape alone, never on the pool: pool.h).  The body gets
 * the ctx fields (types[]) as values and must use nothing else of the
 * entry point.  cg_task builds the function on the first call with a key
 * (name NULL: the key) and returns the same one for that key afterwards. */
typedef void CgTaskBody(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef begin, LLVMValueRef end,
                        LLVMValueRef thread);
const CgTask *cg_task(Cg *cg, const char *key, const char *name, LLVMTypeRef *types, unsigned n, CgTaskBody *body,
                      const void *info);
void cg_run_task(Cg *cg, const CgTask *t, LLVMValueRef *vals, LLVMValueRef n, LLVMValueRef grain);

/* Pointer to a node's value, aux state (memplan.h) and rotary table in
 * the function being built (in a kind's function: the representative's
 * node, placed by this block's row); cg_slot_ptr: an arena slot's. */
LLVMValueRef cg_home(Cg *cg, const IrNode *n);
LLVMValueRef cg_aux_home(Cg *cg, const IrNode *n);
LLVMValueRef cg_table_home(Cg *cg, const IrNode *n);
LLVMValueRef cg_slot_ptr(Cg *cg, MemSlot s, const IrNode *n);
/* strata_decode: the keys of attention x in the KV cache, (B, kv_len, W),
 * its values W * B * kv_len REALs after them (in a kind's function: this
 * block's attention). */
LLVMValueRef cg_kv_home(Cg *cg, const IrNode *x);
/* i1: the kernel computing x adds to its gradient buffer (accumulate). */
LLVMValueRef cg_accumulates(Cg *cg, const IrNode *x);
/* The REAL value of a CONST node (in a kind's function: this block's). */
LLVMValueRef cg_const(Cg *cg, const IrNode *n);
/* In a kind's function: where column c of the table points for this block. */
LLVMValueRef cg_col_ptr(Cg *cg, int c);

/* ---- arith.c: the scalar formulas ---- */
/* A binary float instruction with fast-math flags fm (FM_EW, FM_RED). */
LLVMValueRef cg_fop(Cg *cg, LLVMOpcode op, LLVMValueRef a, LLVMValueRef b, LLVMFastMathFlags fm);
LLVMValueRef lower_unary(Cg *cg, const IrNode *x, LLVMValueRef v);
LLVMValueRef lower_binary(Cg *cg, const IrNode *x, LLVMValueRef a, LLVMValueRef b);
/* One step of MEAN/SUM (fadd) or MAX (llvm.maximum) over a row. */
LLVMValueRef lower_reduce_step(Cg *cg, const IrNode *x, LLVMValueRef acc, LLVMValueRef v);
LLVMValueRef lower_reduce_init(Cg *cg, const IrNode *x);
LLVMValueRef lower_reduce_final(Cg *cg, const IrNode *x, LLVMValueRef acc, int64_t w);

/* ---- the emitters (each uses the core alone; step.c calls them) ---- */
/* rows.c */
void lower_rows_kernel(Cg *cg, const IrKernel *k);
/* loops.c: a non-token elementwise op or reduction, and SUM_ROWS. */
void lower_loop_node(Cg *cg, const IrNode *x);
/* calls.c: MATMUL, MATMUL_GRAD_W (runtime/core/gemm.h) and the runtime
 * kernels (EMBED ... CE_GRAD); the rotary tables at the start of a step. */
void lower_call_node(Cg *cg, const IrNode *x);
/* The head's five kernels (ly->head) in chunks of rows, in a train step. */
void lower_head_chunks(Cg *cg);
void lower_rope_tables(Cg *cg);

/* ---- abi.c ---- */
/* Parameter offsets, and which kernel computes each gradient and block
 * output, into cg (cg->kinds set first). */
void lower_abi_plan(Cg *cg);
/* The StrataStep type (checked against model_abi.h's layout). */
LLVMTypeRef lower_step_type(Cg *cg);
/* The exported descriptor constant. */
void lower_emit_desc(Cg *cg);
/* Widest token row of the graph (the ABI's B*T*width limit). */
int64_t lower_max_width(const IrGraph *g);

/* ---- step.c ---- */
/* The functions of every kind of block (before the entry points). */
void lower_kinds(Cg *cg);
/* strata_train_step (train), strata_forward or strata_decode (decode). */
void lower_entry(Cg *cg, bool train, bool decode);

/* ---- lower.c: the driver ---- */
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
#endif
