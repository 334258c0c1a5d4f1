/* lower.h - LLVM lowering of the tensor IR (forward and backward pass).
 * lower_module turns an IrGraph that went through ad_build and fuse_graph
 * into an LLVM module implementing model ABI v4 (runtime/model_abi.h: the
 * strata_model descriptor and the strata_train_step / strata_forward /
 * strata_decode entry points), for float or double; lower_emit writes it as text IR, assembly
 * or an object file; jit.h compiles it in process.
 *
 * What the code does: each fused kernel (fuse.h) of the schedule runs in
 * order, a block's kernels in the function of its kind (ir/kinds.h: blocks
 * of the same structure share one function per pass, called per block
 * with the block's parameters, arena offsets and numbers as data); a row kernel is one loop over the B*T token rows that computes
 * every member for the row (values only its own row loop needs stay in
 * registers or a row of scratch) and writes only the stored ones; matrix
 * products call rt_matmul_f32/_f64 (runtime/core/gemm.h); attention, rotary embedding, embedding and
 * cross-entropy call runtime/core/kernels.h.  Row loops and runtime kernels run
 * on the StrataStep's thread pool.  Every stored value lives in the arena
 * at the offset of the compile-time memory plan (memplan.h), which is
 * affine in B*T and T, so B and T stay run-time values.
 *
 * This header does not expose LLVM: only lower*.c and jit.c include llvm-c.
 * Memory: a LowerModule owns its LLVM context, module and target machine. */
#ifndef STRATA_LOWER_H
#define STRATA_LOWER_H
#include "ir/ir.h"
#include "model_abi.h"

#define LOWER_TRAIN_ENTRY "strata_train_step"
#define LOWER_FORWARD_ENTRY "strata_forward"
#define LOWER_DECODE_ENTRY "strata_decode"
#define LOWER_DESC_SYMBOL "strata_model"

typedef enum LowerPrecision {
    LOWER_F32,            /* REAL = float */
    LOWER_F64,            /* REAL = double */
} LowerPrecision;

typedef struct LowerOptions {
    LowerPrecision precision;
    const char *cpu;      /* target CPU, e.g. "x86-64-v3"; NULL = this host (with its features) */
    int opt_level;        /* 0 = no optimisation passes, else default<O2> */
    bool libm_exp;        /* exp through llvm.exp (a libm call per element) instead of the
                             inline polynomial that vectorises (for measurements) */
    bool inline_blocks;   /* every block's kernels one by one in the entry points, instead of
                             one function per kind of block (ir/kinds.h; for tests and measurements) */
    int64_t head_div;     /* the train step's head chunks (ir/memplan.h MemHead): 0 =
                             MEMPLAN_HEAD_DIV, -1 = none, the whole logits (for tests) */
    int64_t head_cap;     /* at most this many rows per head chunk, 0 = no cap (for tests) */
} LowerOptions;

typedef enum LowerEmitKind {
    LOWER_EMIT_LLVM,      /* textual LLVM IR (.ll) */
    LOWER_EMIT_ASM,       /* assembly (.s) */
    LOWER_EMIT_OBJ,       /* object file (.o) */
} LowerEmitKind;

typedef struct LowerModule LowerModule;

/* Lowers, verifies and optimises g.  Returns NULL with a malloc'd message in
 * *err when the target cannot be set up (e.g. an unknown cpu); a graph the
 * lowering cannot handle is an internal bug (die). */
LowerModule *lower_module(const IrGraph *g, const LowerOptions *o, char **err);
/* Writes the module to path; false with a malloc'd message in *err. */
bool lower_emit(LowerModule *m, LowerEmitKind kind, const char *path, char **err);
void lower_module_free(LowerModule *m);

/* The GPU target (nvptx*.c, issue #18; the
 * JIT path of `--device cuda` and `strata build --device cuda` call it):
 * g (after ad_build and fuse_graph) as PTX plus its launch plan
 * (runtime/gpu/plan.h, run by runtime/gpu/exec.h).  Returns 0 and a
 * program (lower_gpu_program_free), or -1 with a message in err (an
 * unknown architecture, an LLVM without NVPTX). */
typedef struct StrataGpuProgram StrataGpuProgram;
typedef struct LowerGpuOptions {
    int sm;               /* target architecture: 80 for sm_80, 90 for sm_90 */
    int precision;        /* STRATA_PRECISION_FP32 or _BF16: the matrix products' inputs */
} LowerGpuOptions;
int lower_gpu_program(const IrGraph *g, const LowerGpuOptions *o, StrataGpuProgram **out, char *err,
                      size_t errlen);
void lower_gpu_program_free(StrataGpuProgram *p);
/* The plan as text (--emit=plan). */
void lower_gpu_plan_dump(FILE *out, const StrataGpuProgram *p);
/* The program as C source that defines `const StrataGpuProgram NAME`
 * (what a built trainer links, with runtime/ on its include path); 0, or
 * -1 with a message in err (a failed write). */
int lower_gpu_program_c(const StrataGpuProgram *p, const char *name, FILE *f, char *err, size_t errlen);
/* For tests on machines without a GPU: the same kernels and plan built for
 * this host as a position-independent object file at obj_path, each kernel
 * with a wrapper NAME_emu(void **args) taking cuLaunchKernel's arguments,
 * thread ids from the hook strata_emu_sreg (a global i64 (*)(i32 code),
 * codes in nvptx.h's GPU_SREG_NAMES order: tid.x/y/z, ctaid.x/y/z,
 * ntid.x/y/z), barriers through the hook strata_emu_barrier (void (*)(void))
 * and bf16 mma through strata_emu_mma (void (*)(const int32_t a[4], const
 * int32_t b[2], const float c[4], float d[4]), one call per lane of a warp);
 * each CTA must run alone (shared memory is a plain global).  o->sm is
 * ignored; the program's ptx is empty. */
int lower_gpu_emulation(const IrGraph *g, const LowerGpuOptions *o, const char *obj_path, StrataGpuProgram **out,
                        char *err, size_t errlen);
#endif
