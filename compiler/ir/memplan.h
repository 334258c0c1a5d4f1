/* memplan.h - buffer planning for one training step (forward + backward).
 * Over the fused kernel schedule (fuse.h), every value written to memory
 * gets a place in one activation arena; a buffer is reused once its last
 * reader has run (and in a training graph the logits' gradient takes over
 * the logits' buffer, which the CPU step holds a chunk of rows at a time:
 * MemHead).  Parameters live in their own buffer, and so do the
 * gradients a kernel writes straight into the gradient buffer (`home`).
 *
 * The plan does not depend on the batch shape: the arena is four regions
 * whose sizes are multiples of units the shape sets (the layout of model
 * ABI v1, runtime/model_abi.h):
 *   MEM_ROWS    B*T tokens: token values (B,T,w) and per-token aux state
 *   MEM_SEQ     T positions: the rotary cos/sin tables
 *   MEM_FIXED   one: non-token values (the loss, parameter-shaped values)
 *   MEM_THREAD  one per thread: the attention kernels' work area
 * Every buffer of a region scales with the same unit, so one liveness plan
 * in bytes per unit holds for every shape; a slot's byte offset is its
 * region's start plus off * units.  Per-unit sizes are rounded up to 64
 * bytes, so every buffer is 64-byte aligned whatever B and T are.
 * Memory: the arrays are malloc'd; memplan_free releases them. */
#ifndef STRATA_MEMPLAN_H
#define STRATA_MEMPLAN_H
#include "ir/ir.h"

typedef enum MemRegion {
    MEM_NONE,             /* not in the arena */
    MEM_ROWS,
    MEM_SEQ,
    MEM_FIXED,
    MEM_THREAD,
    MEM_NREGIONS
} MemRegion;

typedef struct MemSlot {
    MemRegion region;
    int64_t off;          /* bytes per unit from the region's start */
} MemSlot;

/* The CPU training step holds a 1/MEMPLAN_HEAD_DIV of the logits at a time. */
#define MEMPLAN_HEAD_DIV 4

/* The head of a training step in row chunks: the kernels k0 .. k0+4 are
 * the logits' product, the cross-entropy, its gradient (over the logits)
 * and the two products of that gradient (the input's gradient and the
 * weight's, in either order), and nothing else reads the logits or their
 * gradient.  Then the step runs the five for a chunk of rows at a time
 * (lower/calls.c), and the logits and their gradient share one MEM_ROWS
 * buffer of `unit` bytes per token, a 1/div of a logits row rounded up to
 * 64 bytes, instead of a whole row: it holds B T unit / row_bytes rows
 * (memplan_head_rows; at least B T / 4 by default: at (c) of bench/ 256 rows, 31
 * MiB instead of 125 at the peak, the start of the backward pass).  When
 * that is not one row (B T < div), the chunks are single rows in the
 * logits' aux slot, one row in MEM_FIXED. */
typedef struct MemHead {
    int k0;               /* -1: no chunks (the whole logits, as strata_forward) */
    int64_t unit, row_bytes;
    const IrNode *logits, *ce, *grad, *dx, *dw;
} MemHead;
/* Rows per chunk for B T tokens, at least 1; those of the MEM_ROWS buffer when
 * it holds any (memplan_head_spare false), else 1, in the spare row. */
int64_t memplan_head_rows(const MemHead *h, int64_t BT);
bool memplan_head_spare(const MemHead *h, int64_t BT);

typedef struct MemLayout {
    MemSlot *value;       /* per node id: its value (MEM_NONE: leaf, unstored or in `home`) */
    MemSlot *aux;         /* per node id: ATTENTION's lse (heads per token), CROSS_ENTROPY's
                             lse and per-token loss (2 per token) */
    MemSlot *table;       /* per node id: a ROPE / ROPE_GRAD node's cos/sin table (T, 2, hd/2),
                             one per distinct head size and base, filled once per step */
    IrParam **home;       /* per node id: the parameter whose gradient buffer holds the value */
    MemHead head;
    MemSlot logits;       /* where strata_forward and strata_decode leave the logits: their value
                             slot, or with head chunks a MEM_ROWS slot of their own that only
                             keeps clear of the logits' input (in those entry points nothing else
                             is live then); the train step's chunks are value[logits], or
                             aux[logits] (the spare row) */
    MemSlot work;         /* attention work (MEM_THREAD), rt_attention*_work_numel of the largest head */
    int64_t unit_bytes[MEM_NREGIONS];  /* region size per unit */
    int64_t total_bytes[MEM_NREGIONS]; /* sum of the region's buffers per unit (no reuse) */
    int nbuffers;
} MemLayout;

typedef struct MemPlan {
    MemLayout layout;     /* the shape-free plan */
    /* The plan evaluated for one B, T and one thread (report, --dump=memory): */
    int64_t *offset;      /* per node id: byte offset in the arena, -1 if not planned */
    int64_t *aux_offset;  /* per node id: offset of its aux state, -1 if none */
    int64_t arena_bytes;  /* size of the arena (peak with fragmentation) */
    int64_t peak_live;    /* largest sum of live buffers at any kernel (lower bound) */
    int peak_kernel;      /* the first kernel where that sum is reached */
    int64_t B, T, elem;   /* the shape the plan was evaluated for */
    int64_t total_bytes;  /* sum of all planned buffers (no reuse) */
    int nbuffers;
} MemPlan;

/* Bytes of a node's value and aux state for a batch, elem bytes per number. */
int64_t memplan_value_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem);
int64_t memplan_aux_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem);
/* Numbers in a ROPE / ROPE_GRAD node's table, and in the per-thread work
 * area of an ATTENTION / ATTENTION_GRAD node (0 for other ops). */
int64_t memplan_table_numel(const IrNode *n, int64_t T);
int64_t memplan_work_numel(const IrNode *n);
/* The ATTENTION_GRAD nodes that one kernel call computes together with x
 * (same q, k, v, g and heads): sib[w] gives d(in[w]) or NULL; the first of
 * them in the schedule computes all three. */
void memplan_attention_group(const IrGraph *g, const IrNode *x, const IrNode *sib[3]);

/* g must have been through fuse_graph (and usually ad_build).  head_div:
 * the head's chunks (MemHead; MEMPLAN_HEAD_DIV for the CPU), 0 for none
 * (the GPU target). */
void memplan_layout(MemLayout *ly, const IrGraph *g, int64_t elem, int64_t head_div);
void memplan_layout_free(MemLayout *ly);
/* Byte offset of a region's start, and the arena size, for a shape. */
int64_t memplan_region_start(const MemLayout *ly, MemRegion r, int64_t B, int64_t T);
int64_t memplan_arena_bytes(const MemLayout *ly, int64_t B, int64_t T, int nthreads);
/* Byte offset of a slot (thread 0's, for MEM_THREAD). */
int64_t memplan_slot_offset(const MemLayout *ly, MemSlot s, int64_t B, int64_t T);

/* The layout, evaluated (and verified) for one batch shape. */
void memplan_build(MemPlan *mp, const IrGraph *g, int64_t B, int64_t T, int64_t elem, int64_t head_div);
void memplan_dump(FILE *out, const MemPlan *mp, const IrGraph *g);

/* A matrix product of a step, C (M, N) = op(A) (M, K) op(B) (K, N), and
 * how many times one step runs it. */
typedef struct MemProduct {
    bool ta, tb;
    int64_t M, N, K, count;
} MemProduct;
/* The distinct matrix products of g's step (forward and backward) for a
 * batch of B x T tokens, in node order, those of the head at the shapes of
 * its chunks (MemHead, head_div, fp32); at most cap, returns the count.
 * For the matrix-product layer's tuning and reports (runtime/core/gemm.h). */
int memplan_products(const IrGraph *g, int64_t B, int64_t T, int64_t head_div, MemProduct *p, int cap);
void memplan_free(MemPlan *mp);
#endif
