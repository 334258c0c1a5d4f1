/* memplan.h - buffer planning for one training step (forward + backward).
 * Over the fused kernel schedule (fuse.h), every value written to memory
 * gets an offset in one activation arena; a buffer is reused once its last
 * reader has run.  Parameters and their gradients live in their own
 * buffers and are not planned here.  Memory: the arrays are malloc'd;
 * memplan_free releases them. */
#ifndef STRATA_MEMPLAN_H
#define STRATA_MEMPLAN_H
#include "ir.h"

typedef struct MemPlan {
    int64_t *offset;      /* per node id: byte offset in the arena, -1 if not planned */
    int64_t *aux_offset;  /* per node id: offset of its aux state, -1 if none */
    int64_t arena_bytes;  /* size of the arena (peak with fragmentation) */
    int64_t peak_live;    /* largest sum of live buffers at any kernel (lower bound) */
    int64_t total_bytes;  /* sum of all planned buffers (no reuse) */
    int nbuffers;
} MemPlan;

/* Bytes of a node's value and aux state for a batch, elem bytes per number. */
int64_t memplan_value_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem);
int64_t memplan_aux_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem);
/* g must have been through ad_build and fuse_graph. */
void memplan_build(MemPlan *mp, const IrGraph *g, int64_t B, int64_t T, int64_t elem);
void memplan_dump(FILE *out, const MemPlan *mp, const IrGraph *g);
void memplan_free(MemPlan *mp);
#endif
