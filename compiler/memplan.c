/* memplan.c - liveness-based buffer reuse over the kernel schedule.
 * A buffer is born at the kernel that writes it and dies after the last
 * kernel that reads it (a backward op that reuses a forward node's saved
 * state reads that node too); the loss and the logits live to the end.
 * Offsets come from a best-fit free list in schedule order, so a kernel's
 * outputs never overlap the inputs it is still reading. */
#include "memplan.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 64 /* bytes: a cache line, and AVX-512 friendly */

int64_t memplan_value_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem)
{
    return (n->tok ? B * T : n->rows) * n->width * elem;
}

int64_t memplan_aux_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem)
{
    if (n->op == IR_ATTENTION)
        return B * n->heads * T * elem;     /* log-sum-exp per score row */
    if (n->op == IR_CROSS_ENTROPY)
        return B * T * elem;                /* log-sum-exp per logits row */
    return 0;
}

static int64_t round_up(int64_t x)
{
    return (x + ALIGN - 1) / ALIGN * ALIGN;
}

typedef struct Block {
    int64_t off, size;
} Block;

typedef struct FreeList {
    Block *b;
    int n, cap;
    int64_t end;          /* arena high-water mark */
} FreeList;

static int64_t fl_alloc(FreeList *f, int64_t size)
{
    int best = -1;
    for (int i = 0; i < f->n; i++)
        if (f->b[i].size >= size && (best < 0 || f->b[i].size < f->b[best].size))
            best = i;
    if (best < 0) {
        /* Grow the arena, absorbing a free block that ends at its top. */
        for (int i = 0; i < f->n; i++)
            if (f->b[i].off + f->b[i].size == f->end) {
                int64_t off = f->b[i].off;
                f->end = off + size;
                f->b[i] = f->b[--f->n];
                return off;
            }
        int64_t off = f->end;
        f->end += size;
        return off;
    }
    int64_t off = f->b[best].off;
    f->b[best].off += size;
    f->b[best].size -= size;
    if (f->b[best].size == 0)
        f->b[best] = f->b[--f->n];
    return off;
}

static void fl_release(FreeList *f, int64_t off, int64_t size)
{
    /* Coalesce with neighbours. */
    for (int i = 0; i < f->n; i++) {
        if (f->b[i].off + f->b[i].size == off) {
            off = f->b[i].off;
            size += f->b[i].size;
            f->b[i--] = f->b[--f->n];
        } else if (off + size == f->b[i].off) {
            size += f->b[i].size;
            f->b[i--] = f->b[--f->n];
        }
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 64;
        f->b = xrealloc(f->b, (size_t)f->cap * sizeof *f->b);
    }
    f->b[f->n++] = (Block){off, size};
}

static bool planned(const IrGraph *g, const IrNode *n, const bool *is_grad)
{
    return n->kernel >= 0 && n->stored && !is_grad[n->id] && g->kernels.n > 0;
}

/* No two buffers whose lifetimes [birth, death] intersect may overlap in
 * the arena.  A violation is a bug here, never bad input. */
static void verify(const MemPlan *mp, const IrGraph *g, const PtrVec *born, const int *last, int64_t B, int64_t T,
                   int64_t elem)
{
    typedef struct { int64_t off, end; int from, to; int id; } Span;
    Span *s = xmalloc((size_t)(2 * mp->nbuffers + 1) * sizeof *s);
    int n = 0;
    for (int k = 0; k <= g->kernels.n; k++)
        for (int j = 0; j < born[k].n; j++) {
            const IrNode *x = born[k].v[j];
            s[n++] = (Span){mp->offset[x->id], mp->offset[x->id] + memplan_value_bytes(x, B, T, elem), k,
                            last[x->id], x->id};
            if (mp->aux_offset[x->id] >= 0)
                s[n++] = (Span){mp->aux_offset[x->id], mp->aux_offset[x->id] + memplan_aux_bytes(x, B, T, elem), k,
                                last[x->id], x->id};
        }
    for (int i = 0; i < n; i++) {
        if (s[i].end > mp->arena_bytes)
            die("memplan: %%%d ends past the arena", s[i].id);
        for (int j = i + 1; j < n; j++)
            if (s[i].from <= s[j].to && s[j].from <= s[i].to && s[i].off < s[j].end && s[j].off < s[i].end)
                die("memplan: %%%d and %%%d are live together and overlap", s[i].id, s[j].id);
    }
    free(s);
}

void memplan_build(MemPlan *mp, const IrGraph *g, int64_t B, int64_t T, int64_t elem)
{
    int n = g->nodes.n, nk = g->kernels.n;
    memset(mp, 0, sizeof *mp);
    mp->offset = xmalloc((size_t)n * sizeof *mp->offset);
    mp->aux_offset = xmalloc((size_t)n * sizeof *mp->aux_offset);
    bool *is_grad = xcalloc((size_t)n, sizeof *is_grad);
    int *last = xmalloc((size_t)n * sizeof *last);
    for (int i = 0; i < g->grads.n; i++)
        if (g->grads.v[i])
            is_grad[((IrNode *)g->grads.v[i])->id] = true;
    for (int i = 0; i < n; i++) {
        const IrNode *x = g->nodes.v[i];
        mp->offset[i] = mp->aux_offset[i] = -1;
        last[i] = x->kernel;
    }
    for (int i = 0; i < n; i++) {
        const IrNode *x = g->nodes.v[i];
        for (int a = 0; a < ir_op_info[x->op].arity; a++)
            if (last[x->in[a]->id] < x->kernel)
                last[x->in[a]->id] = x->kernel;
        if (x->saved && last[x->saved->id] < x->kernel)
            last[x->saved->id] = x->kernel;
    }
    if (g->loss)
        last[g->loss->id] = nk;
    if (g->logits)
        last[g->logits->id] = nk;
    /* Births and deaths per kernel. */
    PtrVec *born = xcalloc((size_t)nk + 1, sizeof *born), *dies = xcalloc((size_t)nk + 1, sizeof *dies);
    for (int i = 0; i < n; i++) {
        IrNode *x = g->nodes.v[i];
        if (!planned(g, x, is_grad))
            continue;
        vec_push(&born[x->kernel], x);
        vec_push(&dies[last[i]], x);
    }
    FreeList fl = {0};
    int64_t live = 0;
    for (int k = 0; k <= nk; k++) {
        for (int j = 0; j < born[k].n; j++) {
            IrNode *x = born[k].v[j];
            int64_t sz = round_up(memplan_value_bytes(x, B, T, elem)), az = memplan_aux_bytes(x, B, T, elem);
            mp->offset[x->id] = fl_alloc(&fl, sz);
            live += sz;
            mp->total_bytes += sz;
            if (az) {
                az = round_up(az);
                mp->aux_offset[x->id] = fl_alloc(&fl, az);
                live += az;
                mp->total_bytes += az;
            }
            mp->nbuffers++;
        }
        if (live > mp->peak_live)
            mp->peak_live = live;
        for (int j = 0; j < dies[k].n; j++) {
            IrNode *x = dies[k].v[j];
            int64_t sz = round_up(memplan_value_bytes(x, B, T, elem)), az = memplan_aux_bytes(x, B, T, elem);
            fl_release(&fl, mp->offset[x->id], sz);
            live -= sz;
            if (az) {
                fl_release(&fl, mp->aux_offset[x->id], round_up(az));
                live -= round_up(az);
            }
        }
    }
    mp->arena_bytes = fl.end;
    verify(mp, g, born, last, B, T, elem);
    for (int k = 0; k <= nk; k++) {
        vec_free(&born[k]);
        vec_free(&dies[k]);
    }
    free(born);
    free(dies);
    free(fl.b);
    free(last);
    free(is_grad);
}

void memplan_dump(FILE *out, const MemPlan *mp, const IrGraph *g)
{
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (mp->offset[i] < 0)
            continue;
        fprintf(out, "%%%d %s @ %lld", x->id, ir_op_info[x->op].text, (long long)mp->offset[i]);
        if (mp->aux_offset[i] >= 0)
            fprintf(out, " aux @ %lld", (long long)mp->aux_offset[i]);
        fputc('\n', out);
    }
    fprintf(out, "%d buffers, %lld bytes without reuse, peak live %lld, arena %lld\n", mp->nbuffers,
            (long long)mp->total_bytes, (long long)mp->peak_live, (long long)mp->arena_bytes);
}

void memplan_free(MemPlan *mp)
{
    free(mp->offset);
    free(mp->aux_offset);
    memset(mp, 0, sizeof *mp);
}
