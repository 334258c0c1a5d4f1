/* memplan.c - liveness-based buffer reuse over the kernel schedule.
 * A buffer is born at the kernel that writes it and dies after the last
 * kernel that reads it (a backward op that reuses a forward node's saved
 * state reads that node too); the loss and the logits live to the end
 * (the logits but in a training graph, below).
 * Offsets come from a best-fit free list in schedule order, one per region
 * (memplan.h), so a kernel's outputs never overlap the inputs it is still
 * reading, with one exception: in a training graph the logits die at the
 * cross-entropy gradient, which then takes over their buffer
 * (rt_cross_entropy_grad reads each logit before it writes its gradient;
 * the logits' buffer is the largest of the step, B x T x vocab, and this
 * saves a second one at the peak, the start of the backward pass).  With
 * head chunks (MemHead) that buffer is a quarter of it, and strata_forward
 * gets a place of its own for the whole logits.  Sizes here
 * are per unit of the region (per token, ...). */
#include "ir/memplan.h"

#include "core/kernels.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 64 /* bytes: a cache line, and AVX-512 friendly */

int64_t memplan_value_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem)
{
    return (n->tok ? B * T : n->rows) * n->width * elem;
}

/* Per token: ATTENTION the log-sum-exp of each head's score row;
 * CROSS_ENTROPY the log-sum-exp of the logits row, then the row's loss. */
static int64_t aux_per_token(const IrNode *n)
{
    return n->op == IR_ATTENTION ? n->heads : n->op == IR_CROSS_ENTROPY ? 2 : 0;
}

int64_t memplan_aux_bytes(const IrNode *n, int64_t B, int64_t T, int64_t elem)
{
    return B * T * aux_per_token(n) * elem;
}

static int64_t head_size(const IrNode *n)
{
    return n->heads > 0 ? n->width / n->heads : n->width;
}

int64_t memplan_table_numel(const IrNode *n, int64_t T)
{
    return n->op == IR_ROPE || n->op == IR_ROPE_GRAD ? T * head_size(n) : 0;
}

int64_t memplan_work_numel(const IrNode *n)
{
    if (n->op == IR_ATTENTION)
        return rt_attention_work_numel(head_size(n));
    if (n->op == IR_ATTENTION_GRAD)
        return rt_attention_grad_work_numel(head_size(n));
    return 0;
}

void memplan_attention_group(const IrGraph *g, const IrNode *x, const IrNode *sib[3])
{
    sib[0] = sib[1] = sib[2] = NULL;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *s = g->nodes.v[i];
        if (s->op == IR_ATTENTION_GRAD && s->heads == x->heads && !memcmp(s->in, x->in, sizeof s->in) &&
            s->which >= 0 && s->which <= 2 && !sib[s->which])
            sib[s->which] = s;
    }
}

static int64_t round_up(int64_t x)
{
    return (x + ALIGN - 1) / ALIGN * ALIGN;
}

/* ---- free list ---- */

typedef struct Block {
    int64_t off, size;
} Block;

typedef struct FreeList {
    Block *b;
    int n, cap;
    int64_t end;          /* region high-water mark */
} FreeList;

static void fl_release(FreeList *f, int64_t off, int64_t size);

/* A place of `size` at or above lo (0: anywhere; the head's input is
 * planned above a logits row, place_forward_logits): best fit among the
 * free blocks, else at the top, absorbing a free block that ends there. */
static int64_t fl_alloc(FreeList *f, int64_t size, int64_t lo)
{
    int best = -1;
    for (int i = 0; i < f->n; i++) {
        int64_t from = f->b[i].off > lo ? f->b[i].off : lo;
        if (f->b[i].off + f->b[i].size >= from + size && (best < 0 || f->b[i].size < f->b[best].size))
            best = i;
    }
    if (best < 0) {
        int64_t at = f->end > lo ? f->end : lo;
        for (int i = 0; i < f->n; i++)
            if (f->b[i].off + f->b[i].size == f->end) {
                Block b = f->b[i];
                int64_t from = b.off > lo ? b.off : lo;
                f->b[i] = f->b[--f->n];
                if (from > b.off)
                    fl_release(f, b.off, from - b.off);
                f->end = from + size;
                return from;
            }
        if (at > f->end)
            fl_release(f, f->end, at - f->end);
        f->end = at + size;
        return at;
    }
    Block b = f->b[best];
    int64_t from = b.off > lo ? b.off : lo;
    if (from == b.off) { /* the block's start: shrink it */
        f->b[best].off += size;
        f->b[best].size -= size;
        if (f->b[best].size == 0)
            f->b[best] = f->b[--f->n];
        return from;
    }
    f->b[best] = f->b[--f->n];
    fl_release(f, b.off, from - b.off);
    if (b.off + b.size > from + size)
        fl_release(f, from + size, b.off + b.size - from - size);
    return from;
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

/* ---- items: the buffers to place ---- */

typedef struct Item {
    const IrNode *n;
    bool aux;             /* the node's aux state, not its value */
    MemRegion region;     /* MEM_ROWS or MEM_FIXED */
    int64_t size;         /* bytes per unit, rounded */
    int birth, death;     /* kernels */
    int takes;            /* the item whose buffer it takes over at its birth (-1: none) */
    bool given;           /* taken over at its death: not released */
} Item;

typedef struct Items {
    Item *v;
    int n;
} Items;

/* A gradient goes straight into the gradient buffer when one parameter
 * owns it, nothing else reads it, and its kernel can add to what is there
 * (StrataStep.accumulate): a matrix product (beta), the embedding scatter
 * and the sum over tokens.  Others are planned and copied out after. */
static void find_homes(MemLayout *ly, const IrGraph *g, const int *readers)
{
    int *owners = xcalloc((size_t)g->nodes.n, sizeof *owners);
    for (int p = 0; p < g->grads.n; p++)
        if (g->grads.v[p])
            owners[((IrNode *)g->grads.v[p])->id]++;
    for (int p = 0; p < g->grads.n; p++) {
        const IrNode *x = g->grads.v[p];
        if (x && owners[x->id] == 1 && readers[x->id] == 0 && x != g->loss && x != g->logits &&
            (x->op == IR_MATMUL_GRAD_W || x->op == IR_EMBED_GRAD || x->op == IR_SUM_ROWS))
            ly->home[x->id] = g->params.v[p];
    }
    free(owners);
}

/* For every ATTENTION_GRAD node, the first kernel of its group
 * (memplan_attention_group), found through the nodes sharing its incoming
 * gradient in[3], so the pass stays linear in the graph. */
static void attention_group_births(const IrGraph *g, int *first)
{
    int n = g->nodes.n;
    int *head = xmalloc((size_t)(n + 1) * sizeof *head), *next = xmalloc((size_t)(n + 1) * sizeof *next);
    for (int i = 0; i < n; i++)
        head[i] = next[i] = -1;
    for (int i = n - 1; i >= 0; i--) { /* chains in node order */
        const IrNode *x = g->nodes.v[i];
        if (x->op == IR_ATTENTION_GRAD) {
            next[i] = head[x->in[3]->id];
            head[x->in[3]->id] = i;
        }
    }
    for (int i = 0; i < n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->op != IR_ATTENTION_GRAD || x->kernel < 0)
            continue;
        /* The first node of each `which` in node order, as memplan_attention_group. */
        const IrNode *sib[3] = {NULL, NULL, NULL};
        for (int j = head[x->in[3]->id]; j >= 0; j = next[j]) {
            const IrNode *s = g->nodes.v[j];
            if (s->heads == x->heads && !memcmp(s->in, x->in, sizeof s->in) && s->which >= 0 && s->which <= 2 &&
                !sib[s->which])
                sib[s->which] = s;
        }
        for (int w = 0; w < 3; w++)
            if (sib[w] && sib[w]->kernel < first[i])
                first[i] = sib[w]->kernel;
    }
    free(head);
    free(next);
}

/* Per node id: how many operands (and saved-state links) read it. */
static int *count_readers(const IrGraph *g)
{
    int *readers = xcalloc((size_t)g->nodes.n + 1, sizeof *readers);
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        for (int a = 0; a < ir_op_info[x->op].arity; a++)
            readers[x->in[a]->id]++;
        if (x->saved)
            readers[x->saved->id]++;
    }
    return readers;
}

/* The single node of kernel k, or NULL (a row loop, or past the end). */
static const IrNode *single(const IrGraph *g, int k)
{
    if (k < 0 || k >= g->kernels.n)
        return NULL;
    const IrKernel *kn = g->kernels.v[k];
    return kn->rowwise || kn->nodes.n != 1 ? NULL : kn->nodes.v[0];
}

int64_t memplan_head_rows(const MemHead *h, int64_t BT)
{
    int64_t r = BT * h->unit / h->row_bytes;
    return r > 0 ? r : 1;
}

bool memplan_head_spare(const MemHead *h, int64_t BT)
{
    return BT * h->unit < h->row_bytes;
}

/* The head in chunks of 1/div (MemHead), when the schedule has it. */
static void find_head(MemHead *h, const IrGraph *g, const int *readers, int64_t div, int64_t elem)
{
    memset(h, 0, sizeof *h);
    h->k0 = -1;
    const IrNode *L = g->logits;
    if (div < 1 || !L || L->op != IR_MATMUL || !L->tok || !L->in[0]->tok || L->kernel < 0)
        return;
    int k0 = L->kernel;
    const IrNode *ce = single(g, k0 + 1), *d = single(g, k0 + 2), *p = single(g, k0 + 3), *q = single(g, k0 + 4);
    if (single(g, k0) != L || !ce || !d || !p || !q || ce->op != IR_CROSS_ENTROPY || ce->in[0] != L ||
        ce != g->loss || d->op != IR_CE_GRAD || d->in[0] != L || d->saved != ce || !d->tok ||
        readers[L->id] != 2 || readers[d->id] != 2)
        return;
    const IrNode *dx = p->op == IR_MATMUL ? p : q, *dw = p->op == IR_MATMUL ? q : p;
    if (dx->op != IR_MATMUL || dx->in[0] != d || !dx->tok || dw->op != IR_MATMUL_GRAD_W ||
        (dw->in[0] != d && dw->in[1] != d) || !dw->in[0]->tok || !dw->in[1]->tok || dw->tok)
        return;
    int64_t row = L->width * elem;
    *h = (MemHead){k0, round_up((row + div - 1) / div), row, L, ce, d, dx, dw};
}

static bool in_head(const MemLayout *ly, const IrNode *x)
{
    return ly->head.k0 >= 0 && (x == ly->head.logits || x == ly->head.grad);
}

/* Births, deaths and sizes of every buffer, in node order. */
static Items collect(const MemLayout *ly, const IrGraph *g, int64_t elem)
{
    int n = g->nodes.n, nk = g->kernels.n;
    int *last = xmalloc((size_t)n * sizeof *last), *first = xmalloc((size_t)n * sizeof *first);
    for (int i = 0; i < n; i++) {
        const IrNode *x = g->nodes.v[i];
        last[i] = first[i] = x->kernel;
    }
    attention_group_births(g, first); /* written with its group */
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
    bool trains = false; /* a cross-entropy gradient reads the logits */
    for (int i = g->nforward; i < n && g->logits; i++) {
        const IrNode *x = g->nodes.v[i];
        trains |= x->op == IR_CE_GRAD && x->in[0] == g->logits;
    }
    if (g->logits && !trains)
        last[g->logits->id] = nk;
    Items it = {xmalloc((size_t)(2 * n + 1) * sizeof *it.v), 0};
    int logits_item = -1;
    for (int i = 0; i < n && nk > 0; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->kernel < 0 || !x->stored || ly->home[i])
            continue;
        MemRegion r = x->tok ? MEM_ROWS : MEM_FIXED;
        int64_t unit = in_head(ly, x) ? ly->head.unit
                     : x->tok        ? x->width * elem
                                     : memplan_value_bytes(x, 1, 1, elem);
        int takes = -1;
        if (x->op == IR_CE_GRAD && logits_item >= 0 && x->in[0] == g->logits) {
            Item *lg = &it.v[logits_item];
            if (lg->death == x->kernel && lg->size == round_up(unit) && !lg->given) {
                takes = logits_item;
                lg->given = true;
            }
        }
        if (x == g->logits && trains)
            logits_item = it.n;
        it.v[it.n++] = (Item){x, false, r, round_up(unit), first[i], last[i], takes, false};
        if (aux_per_token(x))
            it.v[it.n++] = (Item){x, true, MEM_ROWS, round_up(aux_per_token(x) * elem), first[i], last[i], -1, false};
        if (ly->head.k0 >= 0 && x == ly->head.logits) /* the spare row, through the gradient's last reader */
            it.v[it.n++] = (Item){x, true, MEM_FIXED, round_up(ly->head.row_bytes), first[i], ly->head.k0 + 4, -1,
                                  false};
    }
    free(last);
    free(first);
    return it;
}

/* The items of region r by kernel: order[start[k] .. start[k+1]) are the
 * items born (by_death: dying) at kernel k, in item order (a stable
 * counting sort, so the plan is what a scan of every item per kernel
 * would give). */
static int *by_kernel(const Items *it, MemRegion r, int nk, bool by_death, int **start_out)
{
    int *start = xcalloc((size_t)nk + 3, sizeof *start), *order = xmalloc((size_t)it->n * sizeof *order + 1);
    for (int j = 0; j < it->n; j++)
        if (it->v[j].region == r)
            start[(by_death ? it->v[j].death : it->v[j].birth) + 1]++;
    for (int k = 0; k <= nk; k++)
        start[k + 1] += start[k];
    int *fill = xmalloc((size_t)(nk + 2) * sizeof *fill);
    memcpy(fill, start, (size_t)(nk + 2) * sizeof *fill);
    for (int j = 0; j < it->n; j++)
        if (it->v[j].region == r)
            order[fill[by_death ? it->v[j].death : it->v[j].birth]++] = j;
    free(fill);
    *start_out = start;
    return order;
}

/* Places the items of region r, kernel by kernel: births first, then the
 * deaths of that kernel, so outputs never overlap live inputs. */
static void place(MemLayout *ly, const Items *it, MemRegion r, int nk)
{
    FreeList fl = {0};
    /* With head chunks, the logits' input goes above a logits row per token:
     * strata_forward's logits take [0, row) (place_forward_logits). */
    const IrNode *hin = ly->head.k0 >= 0 ? ly->head.logits->in[0] : NULL;
    int *bstart, *dstart;
    int *born = by_kernel(it, r, nk, false, &bstart), *dying = by_kernel(it, r, nk, true, &dstart);
    for (int k = 0; k <= nk; k++) {
        for (int q = bstart[k]; q < bstart[k + 1]; q++) {
            const Item *m = &it->v[born[q]];
            MemSlot *s = m->aux ? &ly->aux[m->n->id] : &ly->value[m->n->id];
            int64_t off = m->takes >= 0          ? -1
                        : m->n == hin && !m->aux ? fl_alloc(&fl, m->size, round_up(ly->head.row_bytes))
                                                 : fl_alloc(&fl, m->size, 0);
            *s = m->takes >= 0 ? ly->value[it->v[m->takes].n->id] : (MemSlot){r, off};
            ly->total_bytes[r] += m->size;
            ly->nbuffers += !m->aux;
        }
        for (int q = dstart[k]; q < dstart[k + 1]; q++) {
            const Item *m = &it->v[dying[q]];
            if (!m->given)
                fl_release(&fl, (m->aux ? ly->aux : ly->value)[m->n->id].off, m->size);
        }
    }
    ly->unit_bytes[r] = fl.end;
    free(fl.b);
    free(born), free(bstart), free(dying), free(dstart);
}

/* No two buffers whose lifetimes [birth, death] intersect may overlap.  A
 * violation is a bug here, never bad input.  The check replays the plan
 * over a map of the region's 64-byte cells (every offset and size is a
 * multiple of 64), so it costs the planned bytes / 64, not items^2. */
static void verify(const MemLayout *ly, const Items *it, MemRegion r, int nk)
{
    int64_t ncells = ly->unit_bytes[r] / ALIGN;
    int *owner = xcalloc((size_t)ncells + 1, sizeof *owner); /* item + 1, 0 free */
    int *bstart, *dstart;
    int *born = by_kernel(it, r, nk, false, &bstart), *dying = by_kernel(it, r, nk, true, &dstart);
    for (int k = 0; k <= nk; k++) {
        for (int q = bstart[k]; q < bstart[k + 1]; q++) {
            const Item *a = &it->v[born[q]];
            MemSlot s = a->aux ? ly->aux[a->n->id] : ly->value[a->n->id];
            if (s.off % ALIGN || a->size % ALIGN || s.off + a->size > ly->unit_bytes[r])
                die("memplan: %%%d ends past its region", a->n->id);
            for (int64_t c = s.off / ALIGN; c < (s.off + a->size) / ALIGN; c++) {
                if (owner[c] && owner[c] - 1 != a->takes)
                    die("memplan: %%%d and %%%d are live together and overlap", it->v[owner[c] - 1].n->id,
                        a->n->id);
                owner[c] = born[q] + 1;
            }
        }
        for (int q = dstart[k]; q < dstart[k + 1]; q++) {
            const Item *a = &it->v[dying[q]];
            MemSlot s = a->aux ? ly->aux[a->n->id] : ly->value[a->n->id];
            if (a->given) /* its cells belong to the taker now */
                continue;
            for (int64_t c = s.off / ALIGN; c < (s.off + a->size) / ALIGN; c++)
                owner[c] = 0;
        }
    }
    free(owner);
    free(born), free(bstart), free(dying), free(dstart);
}

/* One cos/sin table per distinct (head size, base), and the work area. */
static void place_shared(MemLayout *ly, const IrGraph *g, int64_t elem)
{
    int64_t work = 0;
    PtrVec firsts = {0}; /* the first node of each distinct table (few) */
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        int64_t w = memplan_work_numel(x) * elem;
        work = w > work ? w : work;
        if (!memplan_table_numel(x, 1) || x->kernel < 0)
            continue;
        for (int j = 0; j < firsts.n && ly->table[i].region == MEM_NONE; j++) {
            const IrNode *y = firsts.v[j];
            if (head_size(y) == head_size(x) && y->num == x->num)
                ly->table[i] = ly->table[y->id];
        }
        if (ly->table[i].region == MEM_NONE) {
            int64_t sz = round_up(memplan_table_numel(x, 1) * elem);
            ly->table[i] = (MemSlot){MEM_SEQ, ly->unit_bytes[MEM_SEQ]};
            ly->unit_bytes[MEM_SEQ] += sz;
            ly->total_bytes[MEM_SEQ] += sz;
            vec_push(&firsts, (void *)x);
        }
    }
    vec_free(&firsts);
    ly->work = (MemSlot){work ? MEM_THREAD : MEM_NONE, 0};
    ly->unit_bytes[MEM_THREAD] = ly->total_bytes[MEM_THREAD] = round_up(work);
}

/* strata_forward's logits with head chunks: [0, a row) of MEM_ROWS, clear
 * of their input (place() put it above), the one value live at their
 * kernel there. */
static void place_forward_logits(MemLayout *ly, const IrGraph *g, int64_t elem)
{
    const IrNode *L = g->logits;
    if (ly->head.k0 < 0) {
        ly->logits = L ? ly->value[L->id] : (MemSlot){MEM_NONE, 0};
        return;
    }
    int64_t size = round_up(L->width * elem);
    MemSlot in = ly->value[L->in[0]->id];
    if (in.region == MEM_ROWS && in.off < size)
        die("memplan: the logits' input %%%d overlaps strata_forward's logits", L->in[0]->id);
    ly->logits = (MemSlot){MEM_ROWS, 0};
    if (ly->unit_bytes[MEM_ROWS] < size)
        ly->unit_bytes[MEM_ROWS] = size;
    ly->total_bytes[MEM_ROWS] += size;
}

void memplan_layout(MemLayout *ly, const IrGraph *g, int64_t elem, int64_t head_div)
{
    int n = g->nodes.n;
    memset(ly, 0, sizeof *ly);
    ly->value = xcalloc((size_t)n + 1, sizeof *ly->value);
    ly->aux = xcalloc((size_t)n + 1, sizeof *ly->aux);
    ly->table = xcalloc((size_t)n + 1, sizeof *ly->table);
    ly->home = xcalloc((size_t)n + 1, sizeof *ly->home);
    int *readers = count_readers(g);
    find_homes(ly, g, readers);
    find_head(&ly->head, g, readers, head_div, elem);
    free(readers);
    Items it = collect(ly, g, elem);
    place(ly, &it, MEM_ROWS, g->kernels.n);
    place(ly, &it, MEM_FIXED, g->kernels.n);
    place_forward_logits(ly, g, elem);
    verify(ly, &it, MEM_ROWS, g->kernels.n);
    verify(ly, &it, MEM_FIXED, g->kernels.n);
    free(it.v);
    place_shared(ly, g, elem);
}

void memplan_layout_free(MemLayout *ly)
{
    free(ly->value);
    free(ly->aux);
    free(ly->table);
    free(ly->home);
    memset(ly, 0, sizeof *ly);
}

/* Units of a region for a shape (MEM_THREAD: one thread). */
static int64_t units(MemRegion r, int64_t B, int64_t T)
{
    return r == MEM_ROWS ? B * T : r == MEM_SEQ ? T : 1;
}

int64_t memplan_region_start(const MemLayout *ly, MemRegion r, int64_t B, int64_t T)
{
    int64_t off = 0;
    for (MemRegion q = MEM_ROWS; q < r; q++)
        off += ly->unit_bytes[q] * units(q, B, T);
    return off;
}

int64_t memplan_arena_bytes(const MemLayout *ly, int64_t B, int64_t T, int nthreads)
{
    return memplan_region_start(ly, MEM_THREAD, B, T) + ly->unit_bytes[MEM_THREAD] * (nthreads > 1 ? nthreads : 1);
}

int64_t memplan_slot_offset(const MemLayout *ly, MemSlot s, int64_t B, int64_t T)
{
    if (s.region == MEM_NONE)
        return -1;
    return memplan_region_start(ly, s.region, B, T) + s.off * units(s.region, B, T);
}

/* Largest sum of buffers live at one kernel, for a shape: the live bytes
 * change by +size at a birth and -size after a death. */
static int64_t peak_live(const MemPlan *mp, const IrGraph *g, int64_t B, int64_t T, int64_t elem, int *at)
{
    const MemLayout *ly = &mp->layout;
    Items it = collect(ly, g, elem);
    int nk = g->kernels.n;
    int64_t *delta = xcalloc((size_t)nk + 2, sizeof *delta);
    for (int j = 0; j < it.n; j++) {
        int64_t bytes = it.v[j].size * units(it.v[j].region, B, T);
        delta[it.v[j].birth] += bytes;
        delta[it.v[j].death + !it.v[j].given] -= bytes; /* a given buffer is counted as its taker's */
    }
    int64_t peak = 0, live = ly->unit_bytes[MEM_SEQ] * T + ly->unit_bytes[MEM_THREAD];
    *at = 0;
    for (int k = 0; k <= nk; k++) {
        live += delta[k];
        if (live > peak)
            peak = live, *at = k;
    }
    free(delta);
    free(it.v);
    return peak;
}

void memplan_build(MemPlan *mp, const IrGraph *g, int64_t B, int64_t T, int64_t elem, int64_t head_div)
{
    int n = g->nodes.n;
    memset(mp, 0, sizeof *mp);
    memplan_layout(&mp->layout, g, elem, head_div);
    const MemLayout *ly = &mp->layout;
    mp->offset = xmalloc((size_t)n * sizeof *mp->offset);
    mp->aux_offset = xmalloc((size_t)n * sizeof *mp->aux_offset);
    for (int i = 0; i < n; i++) {
        mp->offset[i] = memplan_slot_offset(ly, ly->value[i], B, T);
        mp->aux_offset[i] = memplan_slot_offset(ly, ly->aux[i], B, T);
    }
    mp->arena_bytes = memplan_arena_bytes(ly, B, T, 1);
    for (MemRegion r = MEM_ROWS; r < MEM_NREGIONS; r++)
        mp->total_bytes += ly->total_bytes[r] * units(r, B, T);
    mp->peak_live = peak_live(mp, g, B, T, elem, &mp->peak_kernel);
    mp->B = B, mp->T = T, mp->elem = elem;
    mp->nbuffers = ly->nbuffers;
}

static int cmp_bytes_desc(const void *a, const void *b)
{
    int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return x < y ? 1 : x > y ? -1 : ((const int64_t *)a)[1] < ((const int64_t *)b)[1] ? -1 : 1;
}

/* The buffers live at the peak kernel, largest first: what to shrink. */
static void dump_peak(FILE *out, const MemPlan *mp, const IrGraph *g)
{
    if (!g->kernels.n)
        return;
    Items it = collect(&mp->layout, g, mp->elem);
    int k = mp->peak_kernel;
    int64_t(*live)[2] = xmalloc((size_t)(it.n + 1) * sizeof *live);
    int nl = 0;
    for (int j = 0; j < it.n; j++) {
        const Item *m = &it.v[j];
        if (m->birth <= k && (k < m->death || (k == m->death && !m->given)))
            live[nl][0] = m->size * units(m->region, mp->B, mp->T), live[nl++][1] = j;
    }
    qsort(live, (size_t)nl, sizeof *live, cmp_bytes_desc);
    const IrKernel *kk = k < g->kernels.n ? g->kernels.v[k] : NULL;
    fprintf(out, "peak at kernel %d of %d%s%s: %d buffers live\n", k, g->kernels.n, kk ? ", " : " (the end)",
            kk ? ir_op_info[((const IrNode *)kk->nodes.v[0])->op].text : "", nl);
    for (int q = 0; q < nl; q++) {
        const Item *m = &it.v[live[q][1]];
        fprintf(out, "  %10.1f KiB  %%%d %s%s  kernels %d..%d\n", live[q][0] / 1024.0, m->n->id,
                ir_op_info[m->n->op].text, m->aux ? " (aux)" : "", m->birth, m->death);
    }
    free(live);
    free(it.v);
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
    const MemLayout *ly = &mp->layout;
    if (ly->head.k0 >= 0)
        fprintf(out, "head: kernels %d..%d in chunks of %lld rows%s; strata_forward's logits @ %lld\n", ly->head.k0,
                ly->head.k0 + 4, (long long)memplan_head_rows(&ly->head, mp->B * mp->T),
                memplan_head_spare(&ly->head, mp->B * mp->T) ? " (the spare row)" : "",
                (long long)memplan_slot_offset(ly, ly->logits, mp->B, mp->T));
    fprintf(out, "%d buffers, %lld bytes without reuse, peak live %lld, arena %lld\n", mp->nbuffers,
            (long long)mp->total_bytes, (long long)mp->peak_live, (long long)mp->arena_bytes);
    dump_peak(out, mp, g);
}

static void add_product(MemProduct *p, int *n, int cap, MemProduct q)
{
    if (q.count < 1)
        return;
    for (int i = 0; i < *n; i++)
        if (p[i].ta == q.ta && p[i].tb == q.tb && p[i].M == q.M && p[i].N == q.N && p[i].K == q.K) {
            p[i].count += q.count;
            return;
        }
    if (*n < cap)
        p[(*n)++] = q;
}

int memplan_products(const IrGraph *g, int64_t B, int64_t T, int64_t head_div, MemProduct *p, int cap)
{
    int nn = g->nodes.n, n = 0;
    int *readers = count_readers(g);
    MemHead h;
    find_head(&h, g, readers, head_div, 4);
    free(readers);
    int64_t BT = B * T, R = h.k0 >= 0 ? memplan_head_rows(&h, BT) : 1, full = BT / R, rest = BT % R;
    for (int i = 0; i < nn; i++) {
        const IrNode *x = g->nodes.v[i];
        bool chunked = h.k0 >= 0 && (x == h.logits || x == h.dx || x == h.dw);
        if (x->op == IR_MATMUL) { /* y (rows, width) = a W or a W^T */
            MemProduct q = {false, x->trans_b, x->tok ? BT : x->rows, x->width, x->in[0]->width, 1};
            if (chunked) {
                add_product(p, &n, cap, (MemProduct){q.ta, q.tb, R, q.N, q.K, full});
                q.M = rest, q.count = rest > 0;
            }
            add_product(p, &n, cap, q);
        } else if (x->op == IR_MATMUL_GRAD_W) { /* y [wa, wb] = a^T b over the rows */
            const IrNode *a = x->in[0], *b = x->in[1];
            MemProduct q = {true, false, a->width, b->width, a->tok ? BT : a->rows, 1};
            if (chunked) {
                add_product(p, &n, cap, (MemProduct){q.ta, q.tb, q.M, q.N, R, full});
                q.K = rest, q.count = rest > 0;
            }
            add_product(p, &n, cap, q);
        }
    }
    return n;
}

void memplan_free(MemPlan *mp)
{
    memplan_layout_free(&mp->layout);
    free(mp->offset);
    free(mp->aux_offset);
    memset(mp, 0, sizeof *mp);
}
