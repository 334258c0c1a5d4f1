/* nvptx.h - the GPU side of the lowering (issue #18), internal to
 * compiler/lower: the same fused, planned graph as the CPU path lowered to
 * NVPTX kernels plus a launch plan (runtime/gpu/plan.h).  Files, bottom up:
 *   core      nvptx_core.c: kernel functions, thread ids, barriers, shared
 *             memory, the plan's growing arrays (launches, arguments)
 *   emitters  nvptx_kern.c: one kernel per fused row group, embedding,
 *             rope, cross-entropy, sums over rows, gradient copies;
 *             nvptx_gemm.c: matrix products (fp32, bf16 tensor cores);
 *             nvptx_attn.c: attention; nvptx_opt.c: gradient norm and AdamW
 *   driver    nvptx.c: target, schedule walk, verify, PTX (lower_gpu_program)
 * A kernel is built once per distinct structure (its key), so the blocks
 * of a kind share their kernels and differ only in their launches'
 * arguments (parameters, arena offsets, constants): the data of ir/kinds.h. */
#ifndef STRATA_LOWER_NVPTX_H
#define STRATA_LOWER_NVPTX_H
#include "lower/cg.h"
#include "gpu/plan.h"

/* Threads per block of the row kernels and reductions. */
#define GPU_ROW_THREADS 128
#define GPU_SCRATCH_PARTIALS 64 /* bytes of STRATA_GPU_SCRATCH before the partial sums */
#define GPU_ROW_CHUNKS 64       /* a sum over rows: this many chunks of rows, then their sums in order */
#define GPU_TILE 16 /* the fp32 matrix product's CTA: GPU_TILE x GPU_TILE threads */

typedef struct GpuKey {
    char *key;                 /* malloc'd structure key */
    int index;                 /* in the program's kernels */
} GpuKey;

/* The GPU codegen context: a Cg for arith.c's formulas (REAL = float,
 * nvptx set) and the plan being built. */
typedef struct Gpu {
    Cg cg;
    const IrGraph *g;
    const MemLayout *ly;       /* the memory plan in bytes of float (memplan.h) */
    int64_t *param_off;        /* per parameter: floats from the start of params */
    GpuKey *keys;              /* (nkeys) kernels built so far */
    int nkeys;
    char **names;              /* (nkeys) kernel names, index order */
    StrataGpuLaunch *launches;
    int nlaunches, caplaunches;
    StrataGpuArg *args;
    int nargs, capargs;
    int phase, block_index;    /* of the launches being added */
    float *consts;             /* (nconsts) the CONSTS buffer */
    int64_t index_rows;        /* the token index's id range (plan.h), 0: none yet */
    int64_t scratch_bytes;     /* STRATA_GPU_SCRATCH's size so far */
    int nconsts;
    bool *attn_done;           /* per node: an ATTENTION_GRAD launched with its group */
    bool emulate;              /* for the host (tests): hooks instead of PTX registers and barriers */
    bool bf16;                 /* matrix products on bf16 inputs (tensor cores), fp32 accumulation */
    /* The kernel being built: its i64 B, T and i32 acc parameters. */
    LLVMValueRef kB, kT, kacc;
} Gpu;

/* ---- nvptx_core.c ---- */
/* The kernel of this key if built (its index), else -1. */
int gpu_find(Gpu *x, const char *key);
/* Starts kernel `key` with extra parameters types[0..n): an entry point
 * (nvvm.annotations "kernel") taking (i64 B, i64 T, i32 acc, types...);
 * the builder is left in its entry block; returns its index. */
int gpu_begin(Gpu *x, const char *key, LLVMTypeRef *types, unsigned n);
LLVMValueRef gpu_param(Gpu *x, unsigned i);   /* extra parameter i of the kernel being built */
void gpu_end(Gpu *x);                          /* ret void */
/* llvm.nvvm.read.ptx.sreg.<name> ("tid.x", "ctaid.x", "ntid.x", ...) as i64;
 * emulated: a call of the hook strata_emu_sreg(code), GPU_SREG_NAMES order. */
#define GPU_SREG_NAMES {"tid.x", "tid.y", "tid.z", "ctaid.x", "ctaid.y", "ctaid.z", "ntid.x", "ntid.y", "ntid.z"}
LLVMValueRef gpu_sreg(Gpu *x, const char *name);
void gpu_barrier(Gpu *x);
/* A static shared-memory array of n elements of t; a pointer to it. */
LLVMValueRef gpu_shared(Gpu *x, LLVMTypeRef t, int64_t n, const char *name);
/* for (i = from; i < n; i += step), no accumulator (i64 values). */
Loop gpu_loop_begin(Gpu *x, LLVMValueRef from, LLVMValueRef n, LLVMValueRef step, const char *name);
void gpu_loop_end(Gpu *x, Loop *l, LLVMValueRef step);
/* Block-wide reduction of v over the block's GPU_ROW_THREADS threads in a
 * fixed tree order (deterministic), with the op of node r (MAX: maximum,
 * else sum) or, r NULL, a sum; every thread gets the result. */
LLVMValueRef gpu_block_reduce(Gpu *x, LLVMValueRef v, const IrNode *r, LLVMValueRef scratch);
/* e^v and log v by arith.c's formulas (EXP, LOG); ctaid.x * ntid.x +
 * tid.x; an alloca holding init; the rows of a value (B*T or its rows). */
LLVMValueRef gpu_exp(Gpu *x, LLVMValueRef v);
LLVMValueRef gpu_log(Gpu *x, LLVMValueRef v);
LLVMValueRef gpu_global_id(Gpu *x);
LLVMValueRef gpu_local(Gpu *x, LLVMValueRef init);
StrataGpuAffine gpu_rows_of(const IrNode *n);
/* Plan building: a launch of kernel k (its arguments follow with gpu_arg_*). */
StrataGpuLaunch *gpu_launch(Gpu *x, int k, int node, StrataGpuAffine grid, int64_t div, unsigned bx, unsigned by,
                            bool acc);
void gpu_arg_ptr(Gpu *x, StrataGpuBuf buf, StrataGpuAffine off, StrataGpuAffine size, bool writes, int node);
void gpu_arg_i64(Gpu *x, StrataGpuAffine v);
void gpu_arg_f32(Gpu *x, double f);
/* Arguments of a node's value, aux state and rotary table, as the memory
 * plan (or the gradient buffer, for a `home` value) places them. */
void gpu_arg_value(Gpu *x, const IrNode *n, bool writes);
void gpu_arg_aux(Gpu *x, const IrNode *n, bool writes);
void gpu_arg_table(Gpu *x, const IrNode *n);
StrataGpuAffine gpu_aff(int64_t c, int64_t bt, int64_t t);
/* Byte offset of a slot in the arena (affine). */
StrataGpuAffine gpu_slot_off(const Gpu *x, MemSlot s);

/* ---- the emitters: one launch (and its kernel, once per key) per node or row group ---- */
/* nvptx_kern.c */
void gpu_rows_kernel(Gpu *x, const IrKernel *k);
void gpu_loop_node(Gpu *x, const IrNode *n);   /* parameter-shaped ops, SUM_ROWS */
void gpu_embed(Gpu *x, const IrNode *n);
void gpu_embed_grad(Gpu *x, const IrNode *n);
void gpu_rope(Gpu *x, const IrNode *n);        /* ROPE, ROPE_GRAD */
void gpu_cross_entropy(Gpu *x, const IrNode *n);
void gpu_ce_grad(Gpu *x, const IrNode *n);
/* nvptx_gemm.c */
void gpu_matmul(Gpu *x, const IrNode *n);
void gpu_matmul_grad_w(Gpu *x, const IrNode *n);
/* nvptx_attn.c */
void gpu_attention(Gpu *x, const IrNode *n);
void gpu_attention_grad(Gpu *x, const IrNode *n); /* the first of a group launches it */
/* dst (+)= src, n floats (acc: the step's accumulate), and dst = 0. */
void gpu_grad_store(Gpu *x, StrataGpuAffine dst_off, const IrNode *src, int64_t n);
void gpu_zero(Gpu *x, StrataGpuBuf buf, StrataGpuAffine off, int64_t n);

/* ---- nvptx_opt.c ---- */
/* strata_sumsq, strata_sumsq_final, strata_adamw, strata_scale (plan.h). */
void gpu_optimizer_kernels(Gpu *x);
/* Emulated: void NAME_emu(ptr args) for each kernel, args[i] pointing at
 * argument i as cuLaunchKernel takes them. */
void gpu_emu_wrappers(Gpu *x);
/* Shorthands of the kernel emitters (nvptx_kern.c, nvptx_gemm.c,
 * nvptx_attn.c), with a Cg *cg in scope: loads and stores of reals, i64
 * arithmetic, elementwise float operations, a signed comparison. */
#define LD(p_) LLVMBuildLoad2(cg->b, cg->real, (p_), "")
#define ST(v_, p_) LLVMBuildStore(cg->b, (v_), (p_))
#define MUL(x_, y_) LLVMBuildMul(cg->b, (x_), (y_), "")
#define ADD(x_, y_) LLVMBuildAdd(cg->b, (x_), (y_), "")
#define FADD(x_, y_) cg_fop(cg, LLVMFAdd, (x_), (y_), FM_EW)
#define FSUB(x_, y_) cg_fop(cg, LLVMFSub, (x_), (y_), FM_EW)
#define FMUL(x_, y_) cg_fop(cg, LLVMFMul, (x_), (y_), FM_EW)
#define LT(x_, y_) LLVMBuildICmp(cg->b, LLVMIntSLT, (x_), (y_), "")

#endif
