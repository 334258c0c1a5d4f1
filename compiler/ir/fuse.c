/* fuse.c - greedy row fusion of the IR (fuse.h).
 * Every activation is (B*T, width) and every elementwise op or last-dim
 * reduction works row by row, so a chain of them can run as one loop over
 * rows, keeping intermediates of the current row in registers or a small
 * row buffer.  Nodes are visited in topological order; a fusable node joins
 * the newest open kernel that computes one of its operands, else the newest
 * open row kernel (horizontal fusion), else starts one.  A kernel is closed
 * (sealed) as soon as a node outside it reads one of its members: a kernel
 * runs after its last member, so nothing may join it once an outsider needs
 * its results.  Sorting kernels by their last member is then a valid
 * execution order (an outsider reading kernel K comes after K's last
 * member and is in a kernel that ends no earlier).  A kernel holds nodes of
 * one block and one pass (forward or backward) only, so each block's
 * kernels form a run of the schedule that generated code can skip, and
 * the forward kernels all come before the backward ones. */
#include "ir/fuse.h"

#include <stdlib.h>

static bool is_leaf(const IrNode *n)
{
    return n->op == IR_INPUT_TOKENS || n->op == IR_INPUT_TARGETS || n->op == IR_PARAM || n->op == IR_CONST;
}

static bool row_fusable(const IrNode *n)
{
    const IrOpInfo *info = &ir_op_info[n->op];
    return n->tok && !n->is_int && info->fusable && (info->elementwise || info->reduction);
}

/* Block and pass of a node: kernels never mix two of them. */
static bool same_group(const IrGraph *g, const IrKernel *k, const IrNode *n)
{
    const IrNode *f = k->nodes.v[0];
    bool fb = g->nforward > 0 && f->id >= g->nforward, nb = g->nforward > 0 && n->id >= g->nforward;
    return f->block == n->block && fb == nb;
}

static IrKernel *new_kernel(IrGraph *g, PtrVec *ks, bool rowwise)
{
    IrKernel *k = arena_alloc(&g->arena, sizeof *k);
    k->index = ks->n;
    k->rowwise = rowwise;
    vec_push(ks, k);
    return k;
}

static int by_last_member(const void *a, const void *b)
{
    const IrKernel *x = *(IrKernel *const *)a, *y = *(IrKernel *const *)b;
    int lx = ((IrNode *)x->nodes.v[x->nodes.n - 1])->id, ly = ((IrNode *)y->nodes.v[y->nodes.n - 1])->id;
    return (lx > ly) - (lx < ly);
}

/* The schedule is valid if every operand is a leaf, computed earlier in
 * the same row kernel, or stored by an earlier kernel.  A violation is a
 * bug in this file, never bad input. */
static void fuse_verify(const IrGraph *g)
{
    for (int i = 0; i < g->kernels.n; i++) {
        const IrKernel *k = g->kernels.v[i];
        for (int j = 0; j < k->nodes.n; j++) {
            const IrNode *n = k->nodes.v[j];
            if (n->kernel != i)
                die("fuse: %%%d lists kernel %d, not %d", n->id, n->kernel, i);
            for (int a = 0; a < ir_op_info[n->op].arity; a++) {
                const IrNode *o = n->in[a];
                if (is_leaf(o))
                    continue;
                if (o->kernel == i ? o->id >= n->id : o->kernel > i || !o->stored)
                    die("fuse: %%%d in kernel %d reads %%%d of kernel %d too early or unstored", n->id, i, o->id,
                        o->kernel);
            }
        }
    }
}

/* Index of a node's (block, pass) group: kernels never mix two of them. */
static int group_of(const IrGraph *g, const IrNode *n)
{
    if (n->block < -1 || n->block >= g->blocks.n)
        die("fuse: %%%d is in block %d of %d", n->id, n->block, g->blocks.n);
    return 2 * (n->block + 1) + (g->nforward > 0 && n->id >= g->nforward);
}

void fuse_graph(IrGraph *g)
{
    PtrVec ks = {0};
    bool *sealed = xcalloc((size_t)g->nodes.n + 1, sizeof *sealed); /* by kernel index */
    /* The row kernels of each group, newest first: top[group], then
     * below[kernel]; sealed ones are dropped when they reach the top, so
     * finding the newest open row kernel of a group is amortised O(1). */
    int ngroups = 2 * (g->blocks.n + 1);
    int *top = xmalloc((size_t)ngroups * sizeof *top), *below = xmalloc(((size_t)g->nodes.n + 1) * sizeof *below);
    for (int i = 0; i < ngroups; i++)
        top[i] = -1;
    for (int i = 0; i < g->nodes.n; i++) {
        IrNode *n = g->nodes.v[i];
        n->kernel = -1;
        n->stored = false;
        if (is_leaf(n))
            continue;
        int arity = ir_op_info[n->op].arity;
        IrKernel *k = NULL;
        if (row_fusable(n)) {
            /* Prefer the newest open kernel that computes an operand (the
             * value then never leaves the row); else the newest open row
             * kernel at all (one loop instead of two over the same rows). */
            for (int a = 0; a < arity; a++) {
                const IrNode *o = n->in[a];
                if (o->kernel >= 0 && !sealed[o->kernel] && ((IrKernel *)ks.v[o->kernel])->rowwise &&
                    same_group(g, ks.v[o->kernel], n) && (!k || o->kernel > k->index))
                    k = ks.v[o->kernel];
            }
            int grp = group_of(g, n);
            while (top[grp] >= 0 && sealed[top[grp]])
                top[grp] = below[top[grp]];
            if (!k && top[grp] >= 0)
                k = ks.v[top[grp]];
        }
        if (!k) {
            k = new_kernel(g, &ks, row_fusable(n));
            if (k->rowwise) {
                int grp = group_of(g, n);
                below[k->index] = top[grp];
                top[grp] = k->index;
            }
        }
        n->kernel = k->index;
        vec_push(&k->nodes, n);
        for (int a = 0; a < arity; a++) {
            IrNode *o = n->in[a];
            if (o->kernel >= 0 && o->kernel != n->kernel) {
                sealed[o->kernel] = true;
                o->stored = true;
            }
        }
        if (!k->rowwise)
            n->stored = true;
    }
    /* Values the caller reads: outputs, gradients, the residual stream. */
    IrNode *outs[] = {g->loss, g->logits};
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++)
        if (outs[i])
            outs[i]->stored = true;
    for (int i = 0; i < g->grads.n; i++)
        if (g->grads.v[i])
            ((IrNode *)g->grads.v[i])->stored = true;
    for (int i = 0; i < g->blocks.n; i++) {
        IrBlock *b = g->blocks.v[i];
        if (b->in)
            b->in->stored = true;
        if (b->out)
            b->out->stored = true;
    }
    qsort(ks.v, (size_t)ks.n, sizeof *ks.v, by_last_member);
    for (int i = 0; i < ks.n; i++) {
        IrKernel *k = ks.v[i];
        k->index = i;
        for (int j = 0; j < k->nodes.n; j++)
            ((IrNode *)k->nodes.v[j])->kernel = i;
    }
    for (int i = 0; i < g->kernels.n; i++)
        vec_free(&((IrKernel *)g->kernels.v[i])->nodes);
    vec_free(&g->kernels);
    g->kernels = ks;
    free(sealed);
    free(top);
    free(below);
    fuse_verify(g);
}

/* Distinct token-row operands of kernel k that come from outside it. */
static int64_t kernel_reads(const IrKernel *k)
{
    int64_t w = 0;
    for (int j = 0; j < k->nodes.n; j++) {
        const IrNode *n = k->nodes.v[j];
        for (int a = 0; a < ir_op_info[n->op].arity; a++) {
            const IrNode *o = n->in[a];
            if (!o->tok || o->kernel == n->kernel)
                continue;
            bool seen = false;
            for (int jj = 0; jj <= j && !seen; jj++) {
                const IrNode *m = k->nodes.v[jj];
                for (int b = 0; b < ir_op_info[m->op].arity && !seen; b++)
                    seen = (jj < j || b < a) && m->in[b] == o;
            }
            if (!seen)
                w += o->width;
        }
    }
    return w;
}

int64_t fuse_traffic_per_token(const IrGraph *g, bool fused)
{
    int64_t w = 0;
    if (!fused) {
        for (int i = 0; i < g->nodes.n; i++) {
            const IrNode *n = g->nodes.v[i];
            if (is_leaf(n))
                continue;
            if (n->tok)
                w += n->width;
            for (int a = 0; a < ir_op_info[n->op].arity; a++)
                if (n->in[a]->tok)
                    w += n->in[a]->width;
        }
        return w;
    }
    for (int i = 0; i < g->kernels.n; i++) {
        const IrKernel *k = g->kernels.v[i];
        w += kernel_reads(k);
        for (int j = 0; j < k->nodes.n; j++) {
            const IrNode *n = k->nodes.v[j];
            if (n->tok && n->stored)
                w += n->width;
        }
    }
    return w;
}

void fuse_dump(FILE *out, const IrGraph *g)
{
    int fused = 0, members = 0;
    for (int i = 0; i < g->kernels.n; i++) {
        const IrKernel *k = g->kernels.v[i];
        fprintf(out, "kernel %d: %s", k->index, k->rowwise ? "rows [" : "");
        for (int j = 0; j < k->nodes.n; j++) {
            const IrNode *n = k->nodes.v[j];
            fprintf(out, "%s%%%d %s%s", j ? ", " : "", n->id, ir_op_info[n->op].text, n->stored ? "*" : "");
        }
        fprintf(out, "%s\n", k->rowwise ? "]" : "");
        if (k->rowwise && k->nodes.n > 1) {
            fused++;
            members += k->nodes.n;
        }
    }
    fprintf(out, "%d kernels for %d ops; %d fused row loops hold %d ops (* = written to memory)\n", g->kernels.n,
            g->nodes.n, fused, members);
    fprintf(out, "activation traffic per token: %lld values unfused, %lld fused\n",
            (long long)fuse_traffic_per_token(g, false), (long long)fuse_traffic_per_token(g, true));
}
