/* kinds.h - blocks of the same structure, compiled once each (issue #19).
 * kinds_find groups the blocks of a fused, planned graph into kinds: two
 * blocks are of one kind when their runs of the kernel schedule (the
 * forward kernels of the block, then its backward kernels) compute the
 * same ops on the same shapes in the same kernels and read and write the
 * same kinds of places (the same arena regions, the gradient buffer, ...),
 * differing only in data: which parameters, which arena offsets (memplan.h)
 * and which compile-time numbers (LNS's 1/sqrt(l), DeepNorm's alpha).
 * Blocks are hashed with that data left out, then compared in full.
 *
 * A kind keeps its first block as the representative: a target compiles
 * the representative's runs, one function per pass, and calls it once per
 * block of the kind with that block's row of the kind's table.  A column
 * of the table is one place or number that the representative's code
 * reads; a row holds the block's own.  Columns equal in every row are
 * marked uniform (the code may take them as constants).
 *
 * Also here, for every target: each block's runs of the schedule and
 * whether a skip of it can be honoured (model ABI's block_skip), and which
 * kernels the logits need (strata_forward runs only those).
 * Memory: kinds_free releases what kinds_find allocated; the KindRefs point
 * into the graph. */
#ifndef STRATA_KINDS_H
#define STRATA_KINDS_H
#include "ir/memplan.h"

/* A run of the schedule: kernels [k0, k1); empty when k0 == k1. */
typedef struct KRange {
    int k0, k1;
} KRange;

typedef enum KindColKind {
    KCOL_PARAM,           /* a parameter's values: KindCell.param */
    KCOL_GRAD,            /* a parameter's gradient buffer: KindCell.param */
    KCOL_ARENA,           /* an arena slot in KindCol.region: KindCell.off (bytes per unit) */
    KCOL_CONST,           /* a compile-time number (a CONST node): KindCell.num */
} KindColKind;

typedef struct KindCol {
    KindColKind kind;
    MemRegion region;     /* KCOL_ARENA */
    bool uniform;         /* the same in every row */
} KindCol;

/* One block's datum for one column. */
typedef struct KindCell {
    int param;            /* KCOL_PARAM, KCOL_GRAD: parameter index */
    int64_t off;          /* KCOL_ARENA: MemSlot.off */
    double num;           /* KCOL_CONST */
} KindCell;

/* A node of the representative's run that its code reads or writes, with
 * the columns that place it (-1: none: token ids, or a value that never
 * leaves its kernel). */
typedef struct KindRef {
    const IrNode *n;
    bool member;          /* computed by the run (else read from outside it) */
    int value, aux, table; /* columns of its value, aux state, rotary table */
} KindRef;

/* A gradient the run computes: node x is param's gradient, which goes to
 * column col (KCOL_GRAD) of each row. */
typedef struct KindGrad {
    const IrNode *x;
    const IrParam *param; /* the representative's (for its size) */
    int col;
} KindGrad;

/* One pass of a kind: the representative's run and the table. */
typedef struct KindPass {
    KRange run;           /* the representative's kernels (empty: none) */
    KindRef *refs;        /* (nrefs) in the order the run first touches them */
    int nrefs;
    KindGrad *grads;      /* (ngrads) in node order */
    int ngrads;
    int from, to;         /* refs a skip copies: forward in -> out, backward d out -> d in (-1: none) */
    KindCol *cols;        /* (ncols) */
    int ncols;
    KindCell *cells;      /* (rows x ncols) row-major, one row per block of the kind */
} KindPass;

typedef struct Kind {
    int *blocks;          /* (nblocks) ascending; blocks[0] is the representative */
    int nblocks;
    KindPass fwd, bwd;
} Kind;

typedef struct KindBlock {
    KRange fwd, bwd;      /* its runs; empty when it has none or they are not contiguous */
    uint8_t skip;         /* STRATA_SKIP_FORWARD | STRATA_SKIP_TRAIN (model_abi.h) */
    int kind;             /* index in Kinds.kinds; -1: not shared (its kernels are emitted one by one) */
    int row;              /* its row in the kind's tables */
} KindBlock;

typedef struct Kinds {
    KindBlock *blocks;    /* per block */
    Kind *kinds;          /* (nkinds) in order of their first block */
    int nkinds;
    int64_t width;        /* residual width of every block's in and out (capture); 0: they differ */
    bool *logits_need;    /* per kernel: a forward kernel the logits need (strata_forward runs it) */
    int *kernel_block;    /* per kernel: the block whose run (forward or backward) holds it, -1: none */
} Kinds;

/* g must have been through ad_build and fuse_graph, ly planned for it. */
void kinds_find(Kinds *k, const IrGraph *g, const MemLayout *ly);
void kinds_free(Kinds *k);
/* For `strata check`: "blocks: 12, 1 kind" and each kind's blocks. */
void kinds_print(FILE *out, const Kinds *k, const IrGraph *g);
#endif
