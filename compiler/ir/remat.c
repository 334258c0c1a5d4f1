/* remat.c - rematerialisation (remat.h): which forward nodes a block's
 * backward pass redoes differs (remat_blocks, remat_pointwise), how is
 * shared (redo).  remat_blocks:
 * A forward node of block b is redone when a backward node of block b
 * reads it.  What is redone is that node and the nodes of block b it
 * needs in turn, back to the block's input; the block's output is never
 * redone, since it is the next block's input and stays in memory anyway,
 * nor is attention (below), whose gradient reads the kept output and
 * log-sum-exp with the redone q, k and v (the same numbers).  The copies go
 * just before the first backward node of block b that reads one of them,
 * in the backward pass and in block b, so fusion keeps them in the
 * block's backward run (one compiled function per block kind still) and
 * the memory plan sees the forward originals die in the forward pass.
 * Reads across blocks keep reading the originals. */
#include "ir/remat.h"

#include <stdlib.h>
#include <string.h>

static bool is_leaf(const IrNode *n)
{
    return n->op == IR_INPUT_TOKENS || n->op == IR_INPUT_TARGETS || n->op == IR_PARAM || n->op == IR_CONST;
}

/* A forward node that a block's backward pass may recompute.  Attention
 * is kept: its output and log-sum-exp take d + heads numbers per token
 * (about the residual stream's), and it is the one forward op whose cost
 * grows with T. */
static bool redoable(const IrGraph *g, const IrNode *x)
{
    if (x->id >= g->nforward || x->block < 0 || is_leaf(x) || x->op == IR_ATTENTION)
        return false;
    const IrBlock *b = g->blocks.v[x->block];
    return x != b->out;
}

static int nreads(const IrNode *x)
{
    return ir_op_info[x->op].arity + (x->saved != NULL);
}

static IrNode **read_slot(IrNode *x, int a)
{
    return a < ir_op_info[x->op].arity ? &x->in[a] : &x->saved;
}

/* Copies the needed forward nodes (need[id]) of each block just before
 * first[block], the first backward node of that block that reads one of
 * them, and points the block's backward readers at the copies.  Returns
 * the number of copies. */
static int redo(IrGraph *g, const bool *need, const int *first)
{
    int n = g->nodes.n, nf = g->nforward, nb = g->blocks.n;
    /* The needed nodes by block, in id order (a counting sort). */
    int *start = xcalloc((size_t)nb + 1, sizeof *start), *order = xmalloc((size_t)nf * sizeof *order + 1);
    int added = 0;
    for (int i = 0; i < nf; i++)
        if (need[i]) {
            start[((IrNode *)g->nodes.v[i])->block + 1]++;
            added++;
        }
    for (int b = 0; b < nb; b++)
        start[b + 1] += start[b];
    int *fill = xmalloc(((size_t)nb + 1) * sizeof *fill);
    memcpy(fill, start, ((size_t)nb + 1) * sizeof *fill);
    for (int i = 0; i < nf; i++)
        if (need[i])
            order[fill[((IrNode *)g->nodes.v[i])->block]++] = i;
    /* Blocks to redo before each backward node: a list per node. */
    int *head = xmalloc(((size_t)n + 1) * sizeof *head), *next = xmalloc((size_t)nb * sizeof *next);
    for (int i = 0; i <= n; i++)
        head[i] = -1;
    for (int b = nb - 1; b >= 0; b--)
        if (first[b] < n) {
            next[b] = head[first[b]];
            head[first[b]] = b;
        }
    IrNode **copy = xcalloc((size_t)nf, sizeof *copy);
    PtrVec nodes = {0};
    for (int i = 0; i < nf; i++)
        vec_push(&nodes, g->nodes.v[i]);
    for (int i = nf; i < n; i++) {
        for (int b = head[i]; b >= 0; b = next[b]) {
            for (int q = start[b]; q < start[b + 1]; q++) {
                const IrNode *x = g->nodes.v[order[q]];
                IrNode *c = arena_alloc(&g->arena, sizeof *c);
                *c = *x;
                c->kernel = -1;
                c->stored = false;
                for (int a = 0; a < nreads(c); a++) {
                    IrNode **s = read_slot(c, a);
                    if (*s && (*s)->id < nf && copy[(*s)->id] && (*s)->block == b)
                        *s = copy[(*s)->id];
                }
                copy[x->id] = c;
                vec_push(&nodes, c);
            }
        }
        IrNode *y = g->nodes.v[i];
        for (int a = 0; a < nreads(y); a++) {
            IrNode **s = read_slot(y, a);
            if (*s && (*s)->id < nf && copy[(*s)->id] && (*s)->block == y->block)
                *s = copy[(*s)->id];
        }
        vec_push(&nodes, y);
    }
    for (int i = 0; i < nodes.n; i++)
        ((IrNode *)nodes.v[i])->id = i;
    vec_free(&g->nodes);
    g->nodes = nodes;
    free(start), free(order), free(fill), free(head), free(next), free(copy);
    return added;
}

int remat_blocks(IrGraph *g)
{
    int n = g->nodes.n, nf = g->nforward, nb = g->blocks.n;
    if (nf == 0 || nf >= n)
        return 0;
    bool *need = xcalloc((size_t)nf, sizeof *need);
    int *first = xmalloc((size_t)nb * sizeof *first + 1); /* first backward reader per block, by id */
    for (int b = 0; b < nb; b++)
        first[b] = n;
    for (int i = nf; i < n; i++) {
        IrNode *y = g->nodes.v[i];
        for (int a = 0; a < nreads(y); a++) {
            const IrNode *o = *read_slot(y, a);
            if (o && redoable(g, o) && o->block == y->block) {
                need[o->id] = true;
                if (i < first[y->block])
                    first[y->block] = i;
            }
        }
    }
    /* What the needed nodes need, within their block (operands come first). */
    for (int i = nf - 1; i >= 0; i--) {
        IrNode *x = g->nodes.v[i];
        if (!need[i])
            continue;
        for (int a = 0; a < nreads(x); a++) {
            const IrNode *o = *read_slot(x, a);
            if (o && redoable(g, o) && o->block == x->block)
                need[o->id] = true;
        }
    }
    int added = redo(g, need, first);
    free(need), free(first);
    return added;
}

/* A forward value that remat_pointwise may redo: an elementwise op's
 * per-token value wider than one number, inside a block, not the block's
 * output. */
static bool pointwise(const IrGraph *g, const IrNode *x)
{
    if (x->id >= g->nforward || x->block < 0 || is_leaf(x) || !ir_op_info[x->op].elementwise || !x->tok ||
        x->width <= 1)
        return false;
    return x != ((const IrBlock *)g->blocks.v[x->block])->out;
}

int remat_pointwise(IrGraph *g)
{
    int n = g->nodes.n, nf = g->nforward, nb = g->blocks.n;
    if (nf == 0 || nf >= n)
        return 0;
    /* kept[i]: a backward node reads forward node i (so it stays in memory
     * unless redone); away[i]: one of another block does (so it stays). */
    bool *kept = xcalloc((size_t)nf, sizeof *kept), *away = xcalloc((size_t)nf, sizeof *away);
    bool *need = xcalloc((size_t)nf, sizeof *need);
    for (int i = nf; i < n; i++) {
        const IrNode *y = g->nodes.v[i];
        for (int a = 0; a < nreads(y); a++) {
            const IrNode *o = *read_slot((IrNode *)y, a);
            if (o && o->id < nf) {
                kept[o->id] = true;
                away[o->id] |= o->block != y->block;
            }
        }
    }
    for (int i = 0; i < nf; i++)
        need[i] = kept[i] && !away[i] && pointwise(g, g->nodes.v[i]);
    /* A candidate's elementwise operand in its block that nothing else
     * keeps is redone too, so that a chain of them (LNS's norm, gain, then
     * depth scale) is redone whole rather than its last value kept; from
     * the last node down, since operands come first. */
    for (int i = nf - 1; i >= 0; i--) {
        IrNode *x = g->nodes.v[i];
        for (int a = 0; need[i] && a < nreads(x); a++) {
            const IrNode *o = *read_slot(x, a);
            if (o && o->id < nf && !is_leaf(o) && !need[o->id] && !kept[o->id] && o->block == x->block &&
                pointwise(g, o))
                need[o->id] = true;
        }
    }
    /* Drop a candidate whose operand would stay in memory only for it: one
     * no backward node reads, that is not redone itself (in its block). */
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < nf; i++) {
            IrNode *x = g->nodes.v[i];
            for (int a = 0; need[i] && a < nreads(x); a++) {
                const IrNode *o = *read_slot(x, a);
                if (o && !is_leaf(o) && !(need[o->id] && o->block == x->block) && !kept[o->id])
                    need[i] = false, changed = true;
            }
        }
    }
    int *first = xmalloc((size_t)nb * sizeof *first + 1);
    for (int b = 0; b < nb; b++)
        first[b] = n;
    for (int i = nf; i < n; i++) {
        const IrNode *y = g->nodes.v[i];
        for (int a = 0; a < nreads(y); a++) {
            const IrNode *o = *read_slot((IrNode *)y, a);
            if (o && o->id < nf && need[o->id] && i < first[y->block])
                first[y->block] = i;
        }
    }
    int added = redo(g, need, first);
    free(kept), free(away), free(need), free(first);
    return added;
}
