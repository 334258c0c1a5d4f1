/* lower.h - LLVM lowering of the tensor IR (forward and backward pass).
 * lower_module turns an IrGraph that went through ad_build and fuse_graph
 * into an LLVM module implementing model ABI v1 (runtime/model_abi.h: the
 * strata_model descriptor and the strata_train_step / strata_forward entry
 * points), for float or double; lower_emit writes it as text IR, assembly
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

/* The GPU target (nvptx*.c, issue #18): g (after ad_build and fuse_graph)
 * as PTX for sm ("sm_80" or "sm_90") plus its launch plan, in float.
 * Returns 0 and a program (lower_gpu_program_free), or -1 with a
 * malloc'd message in *err (an unknown target, an LLVM without NVPTX).
 * The JIT path of `--device cuda` calls this (runtime/gpu/exec.h runs it). */
struct StrataGpuProgram;
int lower_gpu_program(const IrGraph *g, const char *sm, struct StrataGpuProgram **out, char **err);
void lower_gpu_program_free(struct StrataGpuProgram *p);
/* For tests on machines without a GPU: the same kernels and plan built for
 * this host as a position-independent object file at obj_path, each kernel
 * with a wrapper NAME_emu(void **args) taking cuLaunchKernel's arguments,
 * thread ids from the hook strata_emu_sreg (a global i64 (*)(i32 code),
 * codes in nvptx.h's GPU_SREG_NAMES order: tid.x/y/z, ctaid.x/y/z,
 * ntid.x/y/z) and barriers through the hook strata_emu_barrier (void (*)(void));
 * each CTA must run alone (shared memory is a plain global).  The
 * program's ptx is empty. */
int lower_gpu_emulation(const IrGraph *g, const char *obj_path, struct StrataGpuProgram **out, char **err);
/* The plan as text (--emit=plan). */
void lower_gpu_plan_dump(FILE *out, const struct StrataGpuProgram *p);
#endif
