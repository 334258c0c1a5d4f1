/* model_abi.h - model ABI v4: what a compiled model (compiler/lower/lower.c, JIT
 * or object file) exports and how a trainer calls it.  No LLVM here: the
 * runtime and an AOT-linked trainer include this header alone.
 *
 * A module exports, for REAL = float (real_bytes 4) or double (8):
 *   const StrataModelDesc strata_model;            the descriptor below
 *   int strata_train_step(const StrataStep *s);    forward + backward
 *   int strata_forward(const StrataStep *s);       forward to the logits
 *   int strata_decode(const StrataStep *s);        forward of new tokens over a KV cache
 * (the JIT renames them per compiled model; jit.h hands out pointers).
 *
 * strata_decode is strata_forward for the tokens at positions kv_pos ..
 * kv_pos + T - 1 of each sequence, given the keys and values of positions
 * 0 .. kv_pos - 1 in the caller's KV cache (StrataStep.kv), where it
 * appends those of the new positions: a prompt in one call (kv_pos 0),
 * then one token per call.  Its logits are those strata_forward gives the
 * same positions over the whole sequence (the same kernels, tiles and
 * order of sums; only matrix products of another shape may round
 * differently, see runtime/core/gemm.h).
 *
 * Buffers (the caller owns them all; the module allocates nothing except
 * a rare attention gradient nobody asked for, see lower/calls.c):
 *   params  (params_numel) REAL: every parameter at StrataParam.offset,
 *           row-major, offsets multiples of 16 REALs (64-byte aligned when
 *           the buffer is); padding between parameters is never read.
 *   grads   the same layout; strata_train_step writes every parameter's
 *           gradient (zeros where the loss does not depend on it), or adds
 *           to what is there when StrataStep.accumulate is set.
 *   arena   strata_arena_bytes(desc, B, T, threads) bytes, 64-byte aligned
 *           (REAL-aligned works, slower): every activation of the step,
 *           the state the backward pass reuses, rotary tables and kernel
 *           work areas, packed by the compile-time memory plan
 *           (compiler/ir/memplan.c).  Contents between calls: undefined,
 *           except the logits (see StrataStep.logits).
 * Threads: the row loops, the matrix products and the runtime kernels are
 * cut into tiles of rows, columns or (sequence, head) units whose size
 * follows the shapes alone, and a pool (runtime/core/pool.h) shares the tiles
 * over its threads (no pool: all on the caller).  No tile depends on the
 * thread count and no split changes the order of any sum, so results are
 * bitwise the same for every thread count (issue #13).  Matrix products go
 * through the matrix-product layer (runtime/core/gemm.h), which picks a
 * backend per shape on the host and cuts them into strips the same way.
 * One call at a time per pool and per arena;
 * calls on disjoint arenas and pools may run concurrently.
 *
 * The generated code calls rt_matmul_f32 / rt_matmul_f64 (runtime/core/gemm.h), runtime/core/kernels.h,
 * rt_pool_run (runtime/core/pool.h), rt_grad_sumsq_blocks (runtime/train/optim.h) and libc/libm
 * (memset, memmove, tanh, ...). */
#ifndef STRATA_MODEL_ABI_H
#define STRATA_MODEL_ABI_H
#include <stdint.h>

#define STRATA_ABI_VERSION 4
#define STRATA_MODEL_MAGIC 0x41525453u /* "STRA" as little-endian bytes */

/* Parameter initialisation rules (the same numbering as IrInitKind). */
enum StrataInitKind {
    STRATA_INIT_NORMAL,       /* N(0, a^2) */
    STRATA_INIT_TRUNC_NORMAL, /* N(0, a^2) truncated to [b, c] */
    STRATA_INIT_XAVIER,       /* N(0, (a sqrt(2 / (fan_in + fan_out)))^2), fan_in = dims[1] */
    STRATA_INIT_ZEROS,
    STRATA_INIT_ONES,
    STRATA_INIT_CONSTANT,     /* every element = a */
};

/* What a parameter is for (the same numbering as IrParamRole). */
enum StrataParamRole {
    STRATA_ROLE_MATRIX,       /* weight of a matmul */
    STRATA_ROLE_EMBEDDING,    /* table of embed() */
    STRATA_ROLE_VECTOR,       /* per-channel vector (norm gains, LayerScale) */
    STRATA_ROLE_SCALAR,       /* a single learnable number */
};

typedef struct StrataParam {
    const char *name;         /* stable dotted name, e.g. "layers.3.attn.wq" */
    int64_t dims[2];          /* [rows, cols]; a vector is [n, 0], a scalar [0, 0] */
    int64_t numel;
    int64_t offset;           /* REALs from the start of params (and of grads) */
    double init_a, init_b, init_c; /* see StrataInitKind */
    int32_t ndim;             /* 0 scalar, 1 vector, 2 matrix */
    int32_t init;             /* enum StrataInitKind */
    int32_t role;             /* enum StrataParamRole */
    int32_t block;            /* the block that created it, -1 outside blocks */
} StrataParam;

/* StrataModelDesc.block_skip[l] bits: which entry points honour a skip of
 * block l (a block whose values feed anything but its own output cannot
 * be skipped; every block of models/ can). */
#define STRATA_SKIP_FORWARD 1
#define STRATA_SKIP_TRAIN 2

/* The arena is four regions, in this order, each a multiple of a unit the
 * call sets: arena_rows_bytes per token (B*T of them: activations and
 * per-token state), arena_seq_bytes per position (T: rotary tables),
 * arena_fixed_bytes once (non-token values, the loss), arena_thread_bytes
 * per pool thread (attention work areas).  All four are multiples of 64. */
typedef struct StrataModelDesc {
    uint32_t magic;           /* STRATA_MODEL_MAGIC */
    uint32_t abi_version;     /* STRATA_ABI_VERSION */
    int64_t real_bytes;       /* 4: REAL = float, 8: double */
    int64_t nparams;
    const StrataParam *params; /* (nparams), table order */
    int64_t params_numel;     /* REALs in params and in grads, padding included */
    int64_t nblocks;          /* transformer blocks (iterations of the model's block loop) */
    const uint8_t *block_skip; /* (nblocks) STRATA_SKIP_* bits */
    int64_t width;            /* residual stream width (capture); 0: blocks differ, no capture */
    int64_t vocab;            /* logits width */
    int64_t arena_rows_bytes, arena_seq_bytes, arena_fixed_bytes, arena_thread_bytes;
    int64_t logits_row_offset; /* logits at arena + logits_row_offset * B * T (when not redirected) */
    const char *name;         /* the model file it was compiled from */
    int64_t kv_width;         /* REALs per position and sequence of strata_decode's KV cache: the
                                 keys and values of every attention (2 x its width, summed) */
} StrataModelDesc;

struct RtPool; /* runtime/core/pool.h */

/* One call.  REAL buffers are of the module's precision (real_bytes). */
typedef struct StrataStep {
    void *params;             /* in: (params_numel) REAL */
    void *grads;              /* out, train step: (params_numel) REAL; unused by forward */
    void *arena;              /* scratch: arena_bytes bytes */
    int64_t arena_bytes;      /* checked against strata_arena_bytes(desc, B, T, pool threads) */
    const int32_t *tokens;    /* in: (B, T) ids, trusted to be < every embedding's rows */
    const int32_t *targets;   /* in, train step: (B, T) ids < vocab where mask != 0 (else unread) */
    const void *mask;         /* in, train step: (B, T) REAL loss weights; NULL = all ones */
    int64_t B, T;             /* batch size, sequence length; 1 <= B*T*width < 2^31 */
    double *loss;             /* out, train step: mean masked cross-entropy; NULL = not wanted */
    void *logits;             /* out: NULL or (B, T, vocab) REAL; NULL leaves the logits of
                                 strata_forward and strata_decode in the arena
                                 (strata_logits_in_arena), valid until the next call;
                                 strata_train_step holds them a chunk of rows at a time
                                 (compiler/ir/memplan.h MemHead) and leaves none there: it
                                 copies each chunk here when this is given */
    void *capture;            /* out: NULL or (nblocks + 1, B, T, width) REAL: the residual stream
                                 entering block 0, then leaving each block */
    const uint8_t *skip;      /* in: NULL or (nblocks) flags; block l skipped: its output is its
                                 input, and (train step) its parameters get zero gradients (or
                                 none added) while the gradient passes through unchanged */
    struct RtPool *pool;      /* NULL: everything on the calling thread */
    int32_t accumulate;       /* train step: 0 grads = gradient, 1 grads += gradient */
    int32_t precision;        /* STRATA_PRECISION_*: of the matrix products (fp32 modules) */
    /* strata_decode only (the other entry points ignore them): */
    void *kv;                 /* in/out: the KV cache, B * kv_len * kv_width REALs (NULL when
                                 kv_width is 0); positions < kv_pos are read, the T new ones written */
    int64_t kv_pos;           /* position of the first new token, 0 <= kv_pos */
    int64_t kv_len;           /* positions the cache holds per sequence, kv_pos + T <= kv_len */
    /* strata_train_step of fp32 modules only (v4): */
    double *grad_sumsq;       /* out: NULL, or rt_grad_norm_blocks(params_numel) doubles: right after
                                 the kernel that finishes a parameter's gradient (in grads, with
                                 what accumulate added), the sums of squares of the blocks of
                                 RT_NORM_BLOCK elements wholly inside it (rt_grad_sumsq_blocks);
                                 rt_grad_norm_finish makes the norm of them.  Other entries, and
                                 those of the parameters of skipped blocks, are not written */
} StrataStep;

/* StrataStep.precision: the matrix products' operands in fp32, or rounded
 * to bf16 with fp32 accumulation (runtime/core/gemm.h); everything else
 * (norms, softmax, the loss, the optimizer, master weights) stays fp32. */
enum StrataPrecision {
    STRATA_PRECISION_FP32 = 0,
    STRATA_PRECISION_BF16 = 1,
};

/* Return codes of the entry points. */
enum StrataStatus {
    STRATA_OK = 0,
    STRATA_ERR_ARGS = 1,      /* a required pointer is NULL */
    STRATA_ERR_SHAPE = 2,     /* B or T < 1, or B*T*width >= 2^31 */
    STRATA_ERR_ARENA = 3,     /* arena NULL or arena_bytes too small */
    STRATA_ERR_SKIP = 4,      /* skip of a block this entry point cannot skip */
    STRATA_ERR_CACHE = 5,     /* decode: kv NULL, kv_pos < 0 or kv_pos + T > kv_len */
};

typedef int (*StrataStepFn)(const StrataStep *s);

/* Bytes of strata_decode's KV cache for B sequences of kv_len positions. */
static inline int64_t strata_kv_bytes(const StrataModelDesc *d, int64_t B, int64_t kv_len)
{
    return d->kv_width * B * kv_len * d->real_bytes;
}

static inline int64_t strata_arena_bytes(const StrataModelDesc *d, int64_t B, int64_t T, int nthreads)
{
    return d->arena_rows_bytes * B * T + d->arena_seq_bytes * T + d->arena_fixed_bytes +
           d->arena_thread_bytes * (nthreads > 1 ? nthreads : 1);
}

/* Where the logits are after a call with StrataStep.logits NULL. */
static inline void *strata_logits_in_arena(const StrataModelDesc *d, void *arena, int64_t B, int64_t T)
{
    return (char *)arena + d->logits_row_offset * B * T;
}
#endif
