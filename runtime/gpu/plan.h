/* plan.h - what the compiler produces for the GPU (issue #18): PTX text and
 * a launch plan, pure data (no LLVM, no CUDA), so that the JIT path
 * (compiler/lower/nvptx.c's lower_gpu_program) and a built trainer run the
 * same way through runtime/gpu/exec.c.
 *
 * Sizes that depend on the batch are affine in B*T, T and B (StrataGpuAffine),
 * as the CPU memory plan is (compiler/ir/memplan.h).  A launch names a
 * kernel of the PTX, its grid (each dimension ceil(affine / div)), its block
 * and its arguments; every kernel takes (i64 B, i64 T, i32 accumulate)
 * first, then the launch's arguments in order.  A pointer argument is a
 * buffer plus a byte offset (affine) and the byte extent the kernel may
 * touch from there (for checks).  Memory: a program from lower_gpu_program
 * owns its arrays (lower_gpu_program_free); a built trainer's is static. */
#ifndef STRATA_GPU_PLAN_H
#define STRATA_GPU_PLAN_H
#include <stdint.h>
#include <stdio.h>

#define STRATA_GPU_MAGIC 0x53475055u /* "SGPU" */
#define STRATA_GPU_VERSION 1

/* c + bt * (B*T) + t * T + b * B */
typedef struct StrataGpuAffine {
    int64_t c, bt, t, b;
} StrataGpuAffine;

static inline int64_t strata_gpu_eval(StrataGpuAffine a, int64_t B, int64_t T)
{
    return a.c + a.bt * B * T + a.t * T + a.b * B;
}

/* The device buffers a pointer argument can point into. */
typedef enum StrataGpuBuf {
    STRATA_GPU_PARAMS,       /* (params_numel) floats, the CPU descriptor's layout */
    STRATA_GPU_GRADS,        /* (params_numel) floats, same offsets */
    STRATA_GPU_ARENA,        /* arena_bytes: activations, aux state, rotary tables, the loss */
    STRATA_GPU_TOKENS,       /* (B*T) int32 */
    STRATA_GPU_TARGETS,      /* (B*T) int32 */
    STRATA_GPU_MASK,         /* (B*T) floats (all ones when the caller gives none) */
    STRATA_GPU_CONSTS,       /* (nconsts) floats: the program's `consts`, uploaded once */
    STRATA_GPU_TOKEN_INDEX,  /* (B*T + index_rows + 1) int32, when index_rows > 0: the positions of the
                                batch sorted by token id, stably, then where each id's run starts
                                (index_rows + 1 entries); the host builds it from the tokens each step */
    STRATA_GPU_SCRATCH,      /* scratch_bytes: the cross-entropy's token count (a double at 0), then the
                                partial sums of the two-stage sums over rows */
    STRATA_GPU_NBUFS
} StrataGpuBuf;

typedef enum StrataGpuArgKind {
    STRATA_GPU_ARG_PTR,      /* buf + off bytes; extent `size` bytes */
    STRATA_GPU_ARG_I64,      /* the value `off` (e.g. B*T rows) */
    STRATA_GPU_ARG_F32,      /* the number `f` (a per-block constant) */
} StrataGpuArgKind;

typedef struct StrataGpuArg {
    int32_t kind;            /* StrataGpuArgKind */
    int32_t buf;             /* PTR: StrataGpuBuf */
    StrataGpuAffine off;     /* PTR: byte offset; I64: the value */
    StrataGpuAffine size;    /* PTR: bytes the kernel may read or write from off */
    double f;                /* F32 */
    int32_t writes;          /* PTR: the kernel writes there */
    int32_t node;            /* the IR node whose value (or aux, table) it is; -1 none */
} StrataGpuArg;

/* When a launch runs. */
typedef enum StrataGpuPhase {
    STRATA_GPU_FORWARD,      /* forward, needed by the logits: train step and rt_gpu_forward */
    STRATA_GPU_LOSS,         /* forward, only for the loss: train step */
    STRATA_GPU_BACKWARD,     /* train step */
    STRATA_GPU_ZERO_GRADS,   /* train step, only when not accumulating */
} StrataGpuPhase;

typedef struct StrataGpuLaunch {
    int32_t kernel;          /* index into kernels */
    int32_t phase;           /* StrataGpuPhase */
    StrataGpuAffine grid[3]; /* blocks = ceil(grid[i] / grid_div[i]) */
    int64_t grid_div[3];
    uint32_t block[3];       /* threads per block */
    uint32_t shared_bytes;   /* dynamic shared memory (0: only static) */
    int32_t arg0, nargs;     /* args[arg0 .. arg0 + nargs) */
    int32_t acc;             /* pass StrataStep-style accumulate (else 0) as the i32 argument */
    int32_t node;            /* the IR node it computes (-1: a copy or zeroing) */
    int32_t block_index;     /* the model block whose run holds it, -1 none */
} StrataGpuLaunch;

typedef struct StrataGpuKernel {
    const char *name;        /* the PTX .entry name */
} StrataGpuKernel;

/* One parameter tensor, as the CPU descriptor (model_abi.h StrataParam). */
typedef struct StrataGpuParam {
    int64_t offset, numel;   /* floats from the start of params and of grads */
    int32_t decay;           /* AdamW weight decay applies (a matrix; runtime/train/train.c's rule) */
} StrataGpuParam;

/* A rotary table the host fills once per T (rt_rope_table_f32): (T, 2, hd/2). */
typedef struct StrataGpuTable {
    StrataGpuAffine off;     /* byte offset in the arena */
    int64_t hd;
    double base;
} StrataGpuTable;

/* The optimizer kernels every program has (exec.c launches them itself;
 * after the three leading arguments B, T, acc, which they ignore):
 *   strata_sumsq(ptr g, i64 n, ptr partial)   grid STRATA_GPU_NORM_BLOCKS x STRATA_GPU_NORM_THREADS:
 *       partial[block] (double) = sum of g[i]^2 over the block's grid-stride elements, in a fixed order
 *   strata_sumsq_final(ptr partial, ptr out)   1 x 1: out[0] (double) = sqrt of the partials' sum in order
 *   strata_adamw(ptr p, ptr g, ptr m, ptr v, i64 n, f32 gscale, f32 b1, f32 one_minus_b1, f32 b2,
 *                f32 one_minus_b2, f32 eps, f32 bc2_sqrt, f32 neg_step_size, f32 decay_factor)
 *       grid ceil(n / 256) x 256: runtime/train/optim.c's AdamW element update (the same FMAs), one
 *       launch per parameter tensor (decay_factor 1 for tensors that do not decay) */
#define STRATA_GPU_NORM_BLOCKS 256
#define STRATA_GPU_NORM_THREADS 128

typedef struct StrataGpuProgram {
    uint32_t magic, version;
    const char *target;      /* "sm_80", "sm_90" ("host": lower_gpu_emulation's) */
    int32_t precision;       /* STRATA_PRECISION_FP32, or _BF16: matrix products on bf16 inputs */
    const char *ptx;         /* NUL-terminated PTX text */
    int64_t ptx_len;
    const StrataGpuKernel *kernels;
    int32_t nkernels;
    const StrataGpuLaunch *launches;  /* in schedule order */
    int32_t nlaunches;
    const StrataGpuArg *args;
    int32_t nargs;
    const StrataGpuParam *params;
    int32_t nparams;
    int64_t params_numel;
    int64_t vocab;
    StrataGpuAffine arena_bytes;
    StrataGpuAffine loss_off;   /* arena byte offset of the loss (one float) */
    StrataGpuAffine logits_off; /* arena byte offset of the logits (B*T, vocab) */
    const StrataGpuTable *tables;
    int32_t ntables;
    const float *consts;     /* compile-time numbers a kernel reads through a pointer */
    int32_t nconsts;
    int64_t index_rows;      /* > 0: the token ids' range of STRATA_GPU_TOKEN_INDEX (the embedding's rows) */
    StrataGpuAffine scratch_bytes; /* of STRATA_GPU_SCRATCH */
} StrataGpuProgram;

#endif
