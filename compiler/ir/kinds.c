/* kinds.c - blocks of the same kind (kinds.h).
 * Each block's runs are encoded as an array of integers: per kernel its
 * shape (a row loop or not, how many members, needed by the logits or
 * not); per member its op, attributes and shape, where its value lives
 * (the gradient buffer, an arena region; never the offset) and its
 * operands as numbers local to the run: the nodes the run touches are
 * numbered in the order it first touches them, and a node from outside
 * the run is described where it is first read.  Equal encodings mean that
 * the i-th node one block's run touches plays the part of the i-th node of
 * the other's, so the representative's code with another block's row of
 * data (its parameters, offsets and CONST numbers) is that block's code.
 * Everything here is linear in the size of the graph. */
#include "ir/kinds.h"

#include "model_abi.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- runs and skips ---- */

static bool backward_node(const IrGraph *g, const IrNode *x)
{
    return g->nforward > 0 && x->id >= g->nforward;
}

static bool in_range(KRange r, int k)
{
    return k >= r.k0 && k < r.k1;
}

/* Each block's forward and backward kernels, as runs of the schedule when
 * they are contiguous (fuse.c makes them so); *gap[b] when a block has
 * kernels that are not one run (it then has an empty range). */
static void find_runs(Kinds *K, const IrGraph *g, bool *gap)
{
    int nb = g->blocks.n, nk = g->kernels.n;
    int *first = xmalloc((size_t)(2 * nb + 1) * sizeof *first), *count = xcalloc((size_t)(2 * nb + 1), sizeof *count);
    for (int k = 0; k < nk; k++) {
        const IrNode *f = ((IrKernel *)g->kernels.v[k])->nodes.v[0];
        if (f->block < 0 || f->block >= nb)
            continue;
        int grp = 2 * f->block + backward_node(g, f);
        if (!count[grp]++)
            first[grp] = k;
    }
    for (int b = 0; b < nb; b++)
        for (int pass = 0; pass < 2; pass++) {
            int grp = 2 * b + pass, n = count[grp];
            KRange r = {0, 0};
            bool ok = true;
            for (int k = n ? first[grp] : 0; k < (n ? first[grp] + n : 0) && ok; k++) {
                const IrNode *f = k < nk ? ((IrKernel *)g->kernels.v[k])->nodes.v[0] : NULL;
                ok = f && f->block == b && backward_node(g, f) == pass;
            }
            if (n && ok)
                r = (KRange){first[grp], first[grp] + n};
            gap[b] |= n && !ok;
            if (pass)
                K->blocks[b].bwd = r;
            else
                K->blocks[b].fwd = r;
            for (int k = r.k0; k < r.k1; k++)
                K->kernel_block[k] = b;
        }
    free(first);
    free(count);
}

/* Kernels strata_forward runs: those with a forward node the logits need. */
static void find_logits_need(Kinds *K, const IrGraph *g)
{
    if (!g->logits)
        return;
    bool *need = xcalloc((size_t)g->nodes.n + 1, sizeof *need);
    need[g->logits->id] = true;
    for (int i = g->logits->id; i >= 0; i--) {
        const IrNode *x = g->nodes.v[i];
        if (!need[i])
            continue;
        for (int a = 0; a < ir_op_info[x->op].arity; a++)
            need[x->in[a]->id] = true;
        if (x->kernel >= 0)
            K->logits_need[x->kernel] = true;
    }
    free(need);
}

/* A block can be skipped in a pass when every value its run computes is
 * read only inside the run, except what a skip sets: the forward's output
 * (read by the block's backward too), the backward's d in and the
 * parameter gradients.  One sweep over every operand finds the leaks. */
static void find_skips(Kinds *K, const IrGraph *g)
{
    int nb = g->blocks.n;
    bool *fwd_leak = xcalloc((size_t)nb + 1, sizeof *fwd_leak), *bwd_leak = xcalloc((size_t)nb + 1, sizeof *bwd_leak);
    bool *grad = xcalloc((size_t)g->nodes.n + 1, sizeof *grad);
    for (int p = 0; p < g->grads.n; p++)
        if (g->grads.v[p])
            grad[((IrNode *)g->grads.v[p])->id] = true;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *y = g->nodes.v[i];
        for (int a = 0; a <= ir_op_info[y->op].arity; a++) {
            const IrNode *x = a < ir_op_info[y->op].arity ? y->in[a] : y->saved;
            if (!x || x->kernel < 0 || K->kernel_block[x->kernel] < 0)
                continue;
            int b = K->kernel_block[x->kernel];
            const KindBlock *kb = &K->blocks[b];
            const IrBlock *blk = g->blocks.v[b];
            if (in_range(kb->fwd, x->kernel) && !in_range(kb->fwd, y->kernel) && !in_range(kb->bwd, y->kernel) &&
                x != blk->out)
                fwd_leak[b] = true;
            if (in_range(kb->bwd, x->kernel) && !in_range(kb->bwd, y->kernel) && x != blk->d_in && !grad[x->id])
                bwd_leak[b] = true;
        }
    }
    for (int b = 0; b < nb; b++) {
        KindBlock *kb = &K->blocks[b];
        const IrBlock *blk = g->blocks.v[b];
        const IrNode *in = blk->in, *out = blk->out, *din = blk->d_in, *dout = blk->d_out;
        kb->skip = 0;
        if (!in || !out || in == out || in->width != out->width || !in->tok || kb->fwd.k0 == kb->fwd.k1 ||
            !in_range(kb->fwd, out->kernel) || in->kernel >= kb->fwd.k0 || fwd_leak[b])
            continue;
        kb->skip = STRATA_SKIP_FORWARD;
        if (g->nforward == 0 || !dout || !din)
            continue;
        if (kb->bwd.k0 == kb->bwd.k1) {
            if (din == dout)
                kb->skip |= STRATA_SKIP_TRAIN;
            continue;
        }
        if (dout->kernel < 0 || dout->kernel >= kb->bwd.k0)
            continue;
        if ((din == dout || in_range(kb->bwd, din->kernel)) && !bwd_leak[b])
            kb->skip |= STRATA_SKIP_TRAIN;
    }
    free(fwd_leak);
    free(bwd_leak);
    free(grad);
}

/* Residual width shared by every block's in and out, else 0. */
static int64_t residual_width(const IrGraph *g)
{
    int64_t w = -1;
    for (int l = 0; l < g->blocks.n; l++) {
        const IrBlock *b = g->blocks.v[l];
        if (!b->in || !b->out || (w >= 0 && (b->in->width != w || b->out->width != w)))
            return 0;
        w = b->in->width;
    }
    return w < 0 ? 0 : w;
}

/* ---- encoding a block ---- */

/* Where a node's value lives, as the lowering finds it (lower/cg.c). */
enum { AT_NONE, AT_PARAM, AT_TOKENS, AT_TARGETS, AT_CONST, AT_LOGITS, AT_GRAD, AT_ARENA /* + region */ };

typedef struct Sig {
    int64_t *v;
    size_t n, cap;
} Sig;

static void put(Sig *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = x;
}

typedef struct Enc {
    const IrGraph *g;
    const MemLayout *ly;
    const Kinds *K;
    int *local;           /* per node id: its number in the pass being encoded, -1 */
    int *grad_head;       /* per node id: the first parameter whose gradient it is, -1 */
    int *grad_next;       /* per parameter: the next one with the same gradient node, -1 */
    Sig sig;
    PtrVec refs[2];       /* per pass: the nodes touched, in local order */
    int nmembers[2];      /* per pass: how many of them the run computes (they come first) */
    bool shareable;
} Enc;

static int at(const Enc *E, const IrNode *y)
{
    switch (y->op) {
    case IR_PARAM: return AT_PARAM;
    case IR_INPUT_TOKENS: return AT_TOKENS;
    case IR_INPUT_TARGETS: return AT_TARGETS;
    case IR_CONST: return AT_CONST;
    default: break;
    }
    if (y == E->g->logits)
        return AT_LOGITS;
    if (E->ly->home[y->id])
        return AT_GRAD;
    if (E->ly->value[y->id].region != MEM_NONE)
        return AT_ARENA + E->ly->value[y->id].region;
    return AT_NONE;
}

/* The local number of y in pass `pass`; a node first read here (from
 * outside the run) gets the next number and its description. */
static int64_t ref(Enc *E, int pass, const IrNode *y)
{
    if (!y)
        return -1;
    if (E->local[y->id] >= 0)
        return E->local[y->id];
    E->local[y->id] = E->refs[pass].n;
    vec_push(&E->refs[pass], (void *)y);
    int where = at(E, y);
    E->shareable &= where != AT_LOGITS;
    /* Not its op: the code reads it from where it lives, whatever made it. */
    int64_t d[] = {-7, y->tok, y->is_int, y->rows, y->width, where, E->ly->aux[y->id].region,
                   E->ly->table[y->id].region};
    for (size_t i = 0; i < sizeof d / sizeof *d; i++)
        put(&E->sig, d[i]);
    return E->local[y->id];
}

static int64_t num_bits(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* Encodes the run r of one pass: kernels, members, operands. */
static void encode_run(Enc *E, int pass, KRange r)
{
    const IrGraph *g = E->g;
    put(&E->sig, -1);
    put(&E->sig, r.k1 - r.k0);
    /* Members first, so that local numbers below nmembers are the run's own. */
    for (int k = r.k0; k < r.k1; k++) {
        const IrKernel *kn = g->kernels.v[k];
        for (int j = 0; j < kn->nodes.n; j++) {
            const IrNode *x = kn->nodes.v[j];
            if (E->local[x->id] >= 0)
                die("kinds: %%%d is in two kernels", x->id);
            E->local[x->id] = E->refs[pass].n;
            vec_push(&E->refs[pass], (void *)x);
        }
    }
    E->nmembers[pass] = E->refs[pass].n;
    for (int k = r.k0; k < r.k1; k++) {
        const IrKernel *kn = g->kernels.v[k];
        put(&E->sig, -2);
        put(&E->sig, kn->rowwise);
        put(&E->sig, kn->nodes.n);
        put(&E->sig, E->K->logits_need[k]);
        for (int j = 0; j < kn->nodes.n; j++) {
            const IrNode *x = kn->nodes.v[j];
            int ngrads = 0;
            for (int p = E->grad_head[x->id]; p >= 0; p = E->grad_next[p])
                ngrads++;
            int64_t d[] = {-3, x->op, x->tok, x->is_int, x->rows, x->width, x->heads, x->trans_b, x->which,
                           num_bits(x->num), x->stored, at(E, x), E->ly->aux[x->id].region,
                           E->ly->table[x->id].region, ngrads};
            for (size_t i = 0; i < sizeof d / sizeof *d; i++)
                put(&E->sig, d[i]);
            E->shareable &= at(E, x) != AT_LOGITS;
            for (int a = 0; a < ir_op_info[x->op].arity; a++)
                put(&E->sig, ref(E, pass, x->in[a]));
            put(&E->sig, ref(E, pass, x->saved));
        }
    }
}

/* Encodes block b (both passes); false if it cannot be shared. */
static bool encode_block(Enc *E, int b, bool gap)
{
    const IrGraph *g = E->g;
    const IrBlock *blk = g->blocks.v[b];
    const KindBlock *kb = &E->K->blocks[b];
    E->sig.n = 0;
    E->shareable = !gap && kb->fwd.k0 < kb->fwd.k1;
    for (int pass = 0; pass < 2; pass++) {
        E->refs[pass].n = 0;
        encode_run(E, pass, pass ? kb->bwd : kb->fwd);
        const IrNode *from = pass ? blk->d_out : blk->in, *to = pass ? blk->d_in : blk->out;
        put(&E->sig, -4);
        put(&E->sig, ref(E, pass, from));
        put(&E->sig, ref(E, pass, to));
        for (int i = 0; i < E->refs[pass].n; i++)
            E->local[((IrNode *)E->refs[pass].v[i])->id] = -1;
    }
    put(&E->sig, kb->skip);
    /* The capture of the block's output happens in its forward run. */
    if (E->K->width && (!blk->out || blk->out->kernel < kb->fwd.k0 || blk->out->kernel >= kb->fwd.k1))
        E->shareable = false;
    return E->shareable;
}

static uint64_t sig_hash(const Sig *s)
{
    uint64_t h = 0x9e3779b97f4a7c15u; /* one multiply-xorshift step per word */
    for (size_t i = 0; i < s->n; i++) {
        h = (h ^ (uint64_t)s->v[i]) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    return h;
}

/* ---- kinds and their tables ---- */

/* What a column says about its ref. */
typedef enum ColWhat {
    COL_VALUE,
    COL_AUX,
    COL_TABLE,
    COL_GRAD,             /* the k-th parameter whose gradient the ref is */
} ColWhat;

typedef struct ColSrc {
    int ref;
    ColWhat what;
    int k;
} ColSrc;

/* Build state of one kind. */
typedef struct KindBuild {
    Sig sig;              /* the representative's encoding */
    uint64_t hash;
    ColSrc *src[2];       /* per pass, per column */
    int capcells[2];      /* rows allocated */
    int capblocks;
} KindBuild;

static int add_col(KindPass *kp, ColSrc **src, KindColKind kind, MemRegion region, int ref, ColWhat what, int k)
{
    kp->cols = xrealloc(kp->cols, (size_t)(kp->ncols + 1) * sizeof *kp->cols);
    *src = xrealloc(*src, (size_t)(kp->ncols + 1) * sizeof **src);
    kp->cols[kp->ncols] = (KindCol){kind, region, true};
    (*src)[kp->ncols] = (ColSrc){ref, what, k};
    return kp->ncols++;
}

/* The columns of one pass, from the representative's refs. */
static void make_columns(Enc *E, KindPass *kp, ColSrc **src, int pass, KRange run)
{
    const MemLayout *ly = E->ly;
    int n = E->refs[pass].n;
    kp->run = run;
    kp->nrefs = n;
    kp->refs = xcalloc((size_t)n + 1, sizeof *kp->refs);
    for (int i = 0; i < n; i++) {
        const IrNode *y = E->refs[pass].v[i];
        KindRef *r = &kp->refs[i];
        *r = (KindRef){y, i < E->nmembers[pass], -1, -1, -1};
        int where = at(E, y);
        if (where == AT_PARAM)
            r->value = add_col(kp, src, KCOL_PARAM, MEM_NONE, i, COL_VALUE, 0);
        else if (where == AT_CONST)
            r->value = add_col(kp, src, KCOL_CONST, MEM_NONE, i, COL_VALUE, 0);
        else if (where == AT_GRAD)
            r->value = add_col(kp, src, KCOL_GRAD, MEM_NONE, i, COL_VALUE, 0);
        else if (where >= AT_ARENA)
            r->value = add_col(kp, src, KCOL_ARENA, ly->value[y->id].region, i, COL_VALUE, 0);
        if (ly->aux[y->id].region != MEM_NONE)
            r->aux = add_col(kp, src, KCOL_ARENA, ly->aux[y->id].region, i, COL_AUX, 0);
        if (ly->table[y->id].region != MEM_NONE)
            r->table = add_col(kp, src, KCOL_ARENA, ly->table[y->id].region, i, COL_TABLE, 0);
        if (!r->member)
            continue;
        int k = 0;
        for (int p = E->grad_head[y->id]; p >= 0; p = E->grad_next[p], k++) {
            kp->grads = xrealloc(kp->grads, (size_t)(kp->ngrads + 1) * sizeof *kp->grads);
            kp->grads[kp->ngrads++] = (KindGrad){y, E->g->params.v[p], add_col(kp, src, KCOL_GRAD, MEM_NONE, i,
                                                                                    COL_GRAD, k)};
        }
    }
}

/* Appends block b's row to one pass's table. */
static void add_row(Enc *E, KindPass *kp, const ColSrc *src, int *cap, int row, int pass)
{
    if (row >= *cap) {
        *cap = *cap ? 2 * *cap : 4;
        kp->cells = xrealloc(kp->cells, (size_t)*cap * (size_t)(kp->ncols ? kp->ncols : 1) * sizeof *kp->cells);
    }
    const MemLayout *ly = E->ly;
    if (E->refs[pass].n != kp->nrefs)
        die("kinds: blocks of one kind touch %d and %d nodes", E->refs[pass].n, kp->nrefs);
    for (int c = 0; c < kp->ncols; c++) {
        const IrNode *y = E->refs[pass].v[src[c].ref];
        KindCell cell = {-1, 0, 0};
        switch (src[c].what) {
        case COL_VALUE:
            if (kp->cols[c].kind == KCOL_PARAM)
                cell.param = y->param->index;
            else if (kp->cols[c].kind == KCOL_CONST)
                cell.num = y->num;
            else if (kp->cols[c].kind == KCOL_GRAD)
                cell.param = ly->home[y->id]->index;
            else
                cell.off = ly->value[y->id].off;
            break;
        case COL_AUX: cell.off = ly->aux[y->id].off; break;
        case COL_TABLE: cell.off = ly->table[y->id].off; break;
        case COL_GRAD: {
            int p = E->grad_head[y->id];
            for (int k = 0; k < src[c].k && p >= 0; k++)
                p = E->grad_next[p];
            if (p < 0)
                die("kinds: a gradient node of one kind is missing a parameter");
            cell.param = p;
            break;
        }
        }
        kp->cells[(size_t)row * (size_t)kp->ncols + (size_t)c] = cell;
    }
}

static bool same_cell(KindColKind kind, const KindCell *a, const KindCell *b)
{
    switch (kind) {
    case KCOL_PARAM: case KCOL_GRAD: return a->param == b->param;
    case KCOL_ARENA: return a->off == b->off;
    case KCOL_CONST: return num_bits(a->num) == num_bits(b->num);
    }
    return false;
}

static void mark_uniform(KindPass *kp, int rows)
{
    for (int c = 0; c < kp->ncols; c++)
        for (int r = 1; r < rows && kp->cols[c].uniform; r++)
            kp->cols[c].uniform = same_cell(kp->cols[c].kind, &kp->cells[c], &kp->cells[(size_t)r * kp->ncols + c]);
}

void kinds_find(Kinds *K, const IrGraph *g, const MemLayout *ly)
{
    int nb = g->blocks.n, nk = g->kernels.n, n = g->nodes.n;
    memset(K, 0, sizeof *K);
    K->blocks = xcalloc((size_t)nb + 1, sizeof *K->blocks);
    K->logits_need = xcalloc((size_t)nk + 1, sizeof *K->logits_need);
    K->kernel_block = xmalloc(((size_t)nk + 1) * sizeof *K->kernel_block);
    for (int k = 0; k < nk; k++)
        K->kernel_block[k] = -1;
    bool *gap = xcalloc((size_t)nb + 1, sizeof *gap);
    find_runs(K, g, gap);
    find_logits_need(K, g);
    find_skips(K, g);
    K->width = residual_width(g);

    Enc E = {.g = g, .ly = ly, .K = K};
    E.local = xmalloc(((size_t)n + 1) * sizeof *E.local);
    E.grad_head = xmalloc(((size_t)n + 1) * sizeof *E.grad_head);
    E.grad_next = xmalloc(((size_t)g->params.n + 1) * sizeof *E.grad_next);
    for (int i = 0; i < n; i++)
        E.local[i] = E.grad_head[i] = -1;
    for (int p = g->params.n - 1; p >= 0; p--) { /* chains in parameter order */
        const IrNode *x = p < g->grads.n ? g->grads.v[p] : NULL;
        E.grad_next[p] = x ? E.grad_head[x->id] : -1;
        if (x)
            E.grad_head[x->id] = p;
    }
    KindBuild *kb = NULL;
    int cap = 0;
    size_t hcap = 16;
    while (hcap < 2 * (size_t)nb + 2)
        hcap *= 2;
    int *table = xmalloc(hcap * sizeof *table); /* open addressing by hash: kind index, -1 empty */
    for (size_t i = 0; i < hcap; i++)
        table[i] = -1;
    for (int b = 0; b < nb; b++) {
        K->blocks[b].kind = -1;
        if (!encode_block(&E, b, gap[b]))
            continue;
        uint64_t h = sig_hash(&E.sig);
        size_t i = h & (hcap - 1);
        int kind = -1;
        for (; table[i] >= 0; i = (i + 1) & (hcap - 1)) {
            const KindBuild *o = &kb[table[i]];
            if (o->hash == h && o->sig.n == E.sig.n && !memcmp(o->sig.v, E.sig.v, E.sig.n * sizeof *E.sig.v)) {
                kind = table[i];
                break;
            }
        }
        if (kind < 0) { /* a new kind, with b as its representative */
            kind = K->nkinds++;
            table[i] = kind;
            if (kind >= cap) {
                cap = cap ? 2 * cap : 4;
                kb = xrealloc(kb, (size_t)cap * sizeof *kb);
                K->kinds = xrealloc(K->kinds, (size_t)cap * sizeof *K->kinds);
            }
            memset(&kb[kind], 0, sizeof kb[kind]);
            memset(&K->kinds[kind], 0, sizeof K->kinds[kind]);
            kb[kind].hash = h;
            kb[kind].sig.n = kb[kind].sig.cap = E.sig.n;
            kb[kind].sig.v = xmalloc(E.sig.n * sizeof *E.sig.v + 1);
            memcpy(kb[kind].sig.v, E.sig.v, E.sig.n * sizeof *E.sig.v);
            make_columns(&E, &K->kinds[kind].fwd, &kb[kind].src[0], 0, K->blocks[b].fwd);
            make_columns(&E, &K->kinds[kind].bwd, &kb[kind].src[1], 1, K->blocks[b].bwd);
            Kind *kd = &K->kinds[kind];
            for (int pass = 0; pass < 2; pass++) {
                KindPass *kp = pass ? &kd->bwd : &kd->fwd;
                const IrBlock *blk = g->blocks.v[b];
                const IrNode *from = pass ? blk->d_out : blk->in, *to = pass ? blk->d_in : blk->out;
                kp->from = kp->to = -1;
                for (int r = 0; r < kp->nrefs; r++) {
                    if (from && kp->refs[r].n == from)
                        kp->from = r;
                    if (to && kp->refs[r].n == to)
                        kp->to = r;
                }
            }
        }
        Kind *kd = &K->kinds[kind];
        KindBuild *bd = &kb[kind];
        if (kd->nblocks == bd->capblocks) {
            bd->capblocks = bd->capblocks ? 2 * bd->capblocks : 4;
            kd->blocks = xrealloc(kd->blocks, (size_t)bd->capblocks * sizeof *kd->blocks);
        }
        K->blocks[b].kind = kind;
        K->blocks[b].row = kd->nblocks;
        kd->blocks[kd->nblocks] = b;
        add_row(&E, &kd->fwd, bd->src[0], &bd->capcells[0], kd->nblocks, 0);
        add_row(&E, &kd->bwd, bd->src[1], &bd->capcells[1], kd->nblocks, 1);
        kd->nblocks++;
    }
    for (int k = 0; k < K->nkinds; k++) {
        mark_uniform(&K->kinds[k].fwd, K->kinds[k].nblocks);
        mark_uniform(&K->kinds[k].bwd, K->kinds[k].nblocks);
        free(kb[k].sig.v);
        free(kb[k].src[0]);
        free(kb[k].src[1]);
    }
    free(kb);
    free(table);
    free(gap);
    free(E.local);
    free(E.grad_head);
    free(E.grad_next);
    free(E.sig.v);
    vec_free(&E.refs[0]);
    vec_free(&E.refs[1]);
}

static void pass_free(KindPass *kp)
{
    free(kp->refs);
    free(kp->grads);
    free(kp->cols);
    free(kp->cells);
}

void kinds_free(Kinds *K)
{
    for (int k = 0; k < K->nkinds; k++) {
        free(K->kinds[k].blocks);
        pass_free(&K->kinds[k].fwd);
        pass_free(&K->kinds[k].bwd);
    }
    free(K->kinds);
    free(K->blocks);
    free(K->logits_need);
    free(K->kernel_block);
    memset(K, 0, sizeof *K);
}

/* ---- the report ---- */

/* "1-3, 7, 9-12": the blocks of kind k (1-based), at most ~12 ranges. */
static void block_list(FILE *out, const Kind *kd)
{
    int shown = 0;
    for (int i = 0; i < kd->nblocks; i++) {
        int j = i;
        while (j + 1 < kd->nblocks && kd->blocks[j + 1] == kd->blocks[j] + 1)
            j++;
        if (shown == 12) {
            fprintf(out, ", ...");
            return;
        }
        fprintf(out, "%s%d", shown ? ", " : "", kd->blocks[i] + 1);
        if (j > i)
            fprintf(out, "-%d", kd->blocks[j] + 1);
        shown++;
        i = j;
    }
}

void kinds_print(FILE *out, const Kinds *K, const IrGraph *g)
{
    int nb = g->blocks.n, alone = 0;
    for (int b = 0; b < nb; b++)
        alone += K->blocks[b].kind < 0;
    fprintf(out, "blocks: %d block%s, %d kind%s", nb, nb == 1 ? "" : "s", K->nkinds, K->nkinds == 1 ? "" : "s");
    if (alone)
        fprintf(out, " + %d compiled kernel by kernel", alone);
    fprintf(out, " (one compiled forward and backward per kind)\n");
    for (int k = 0; k < K->nkinds && k < 32; k++) {
        const Kind *kd = &K->kinds[k];
        /* Numbers that differ between its blocks (a CONST read by both
         * passes counts once). */
        int varying = 0;
        for (int pass = 0; pass < 2; pass++) {
            const KindPass *kp = pass ? &kd->bwd : &kd->fwd;
            for (int c = 0; c < kp->ncols; c++) {
                if (kp->cols[c].kind != KCOL_CONST || kp->cols[c].uniform)
                    continue;
                bool counted = false;
                for (int r = 0; pass && r < kd->fwd.nrefs && !counted; r++)
                    for (int q = 0; q < kp->nrefs && !counted; q++)
                        counted = kp->refs[q].value == c && kd->fwd.refs[r].n == kp->refs[q].n;
                varying += !counted;
            }
        }
        fprintf(out, "  kind %d: %d block%s (", k + 1, kd->nblocks, kd->nblocks == 1 ? "" : "s");
        block_list(out, kd);
        fprintf(out, ")");
        if (varying)
            fprintf(out, ", %d number%s per block", varying, varying == 1 ? "" : "s");
        fputc('\n', out);
    }
    if (K->nkinds > 32)
        fprintf(out, "  ... %d more kinds\n", K->nkinds - 32);
}
