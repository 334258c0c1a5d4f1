/* ad.c - reverse-mode autodiff over the IR (ad.h).
 * Walks the forward nodes from the loss backwards.  For each node with an
 * adjoint (the gradient of the loss with respect to its value), the rule
 * for its op adds a contribution to each operand's adjoint; contributions
 * are summed with ADD and reduced to the operand's shape where the forward
 * op broadcast it (SUM over the width, SUM_ROWS over the tokens).  Only
 * nodes on a path from a parameter to the loss are differentiated. */
#include "ir/ad.h"

#include <stdlib.h>
#include <string.h>

typedef struct Ad {
    IrGraph *g;
    IrNode **adj;      /* adjoint per forward node id */
    bool *needs;       /* node depends on a parameter */
    const IrNode *at;  /* forward node being differentiated (loc, block) */
} Ad;

static IrNode *mk(Ad *A, IrOp op, IrNode *a, IrNode *b)
{
    IrNode *n = ir_add(A->g, op, A->at->loc);
    n->block = A->at->block;
    n->in[0] = a;
    n->in[1] = b;
    int ar = ir_op_info[op].arity;
    bool tok = a && a->tok;
    int64_t w = a ? a->width : 1;
    if (ar >= 2 && ir_op_info[op].elementwise) {
        tok = a->tok || b->tok;
        w = a->width > b->width ? a->width : b->width;
    }
    n->tok = tok;
    n->width = w;
    n->rows = 1;
    return n;
}

static IrNode *cnst(Ad *A, double v)
{
    IrNode *n = ir_add(A->g, IR_CONST, A->at->loc);
    n->block = A->at->block;
    n->num = v;
    return n;
}

static IrNode *mul(Ad *A, IrNode *a, IrNode *b) { return mk(A, IR_MUL, a, b); }
static IrNode *neg(Ad *A, IrNode *a) { return mk(A, IR_NEG, a, NULL); }

static IrNode *powc(Ad *A, IrNode *a, double p)
{
    IrNode *n = mk(A, IR_POWC, a, NULL);
    n->num = p;
    return n;
}

static IrNode *expand(Ad *A, IrNode *a, int64_t width)
{
    IrNode *n = mk(A, IR_EXPAND, a, NULL);
    n->width = width;
    return n;
}

/* Adds contribution c to the adjoint of operand x, reducing c to x's shape. */
static void acc(Ad *A, IrNode *x, IrNode *c)
{
    if (!A->needs[x->id])
        return;
    if (c->width != x->width) {
        if (x->width == 1)
            c = mk(A, IR_SUM, c, NULL), c->width = 1;
        else if (c->width == 1)
            c = expand(A, c, x->width);
        else
            die("adjoint of width %lld for a node of width %lld", (long long)c->width, (long long)x->width);
    }
    if (c->tok && !x->tok) {
        c = mk(A, IR_SUM_ROWS, c, NULL);
        c->tok = false;
    }
    if (c->tok != x->tok || c->width != x->width)
        die("adjoint shape does not match its node");
    A->adj[x->id] = A->adj[x->id] ? mk(A, IR_ADD, A->adj[x->id], c) : c;
}

/* Adds the gradient c of matrix parameter w (c made by mk, which does not
 * know matrix shapes) to w's adjoint. */
static void acc_matrix(Ad *A, IrNode *w, IrNode *c)
{
    c->tok = false;
    c->rows = w->rows;
    c->width = w->width;
    A->adj[w->id] = A->adj[w->id] ? mk(A, IR_ADD, A->adj[w->id], c) : c;
    A->adj[w->id]->rows = w->rows;
}

/* Builds a contribution only for operands that need one. */
#define ACC(x, expr) do { if (A->needs[(x)->id]) acc(A, (x), (expr)); } while (0)

/* The derivative rules, in the order of ops.h. */
static void backward(Ad *A, IrNode *x, IrNode *gx)
{
    IrNode *a = x->in[0], *b = x->in[1];
    switch (x->op) {
    case IR_INPUT_TOKENS: case IR_INPUT_TARGETS: case IR_PARAM: case IR_CONST:
        break;
    case IR_ADD: ACC(a, gx); ACC(b, gx); break;
    case IR_SUB: ACC(a, gx); ACC(b, neg(A, gx)); break;
    case IR_MUL: ACC(a, mul(A, gx, b)); ACC(b, mul(A, gx, a)); break;
    case IR_DIV: /* d/da = 1/b; d/db = -x/b */
        ACC(a, mk(A, IR_DIV, gx, b));
        ACC(b, neg(A, mk(A, IR_DIV, mul(A, gx, x), b)));
        break;
    case IR_NEG: ACC(a, neg(A, gx)); break;
    case IR_POWC: /* p a^(p-1) */
        ACC(a, mul(A, gx, mul(A, cnst(A, x->num), powc(A, a, x->num - 1))));
        break;
    case IR_EXP: ACC(a, mul(A, gx, x)); break;
    case IR_LOG: ACC(a, mk(A, IR_DIV, gx, a)); break;
    case IR_TANH: ACC(a, mul(A, gx, mk(A, IR_SUB, cnst(A, 1), mk(A, IR_SQUARE, x, NULL)))); break;
    case IR_SIGMOID: ACC(a, mul(A, gx, mul(A, x, mk(A, IR_SUB, cnst(A, 1), x)))); break;
    case IR_SILU: ACC(a, mul(A, gx, mk(A, IR_SILU_GRAD, a, NULL))); break;
    case IR_GELU: ACC(a, mul(A, gx, mk(A, IR_GELU_GRAD, a, NULL))); break;
    case IR_SQRT: ACC(a, mul(A, gx, mk(A, IR_DIV, cnst(A, 0.5), x))); break;
    case IR_RSQRT: ACC(a, mul(A, gx, mul(A, cnst(A, -0.5), powc(A, x, 3)))); break;
    case IR_ABS: ACC(a, mul(A, gx, mk(A, IR_SIGN, a, NULL))); break;
    case IR_SQUARE: ACC(a, mul(A, gx, mul(A, cnst(A, 2), a))); break;
    case IR_MEAN: ACC(a, expand(A, mul(A, gx, cnst(A, 1.0 / (double)a->width)), a->width)); break;
    case IR_SUM: ACC(a, expand(A, gx, a->width)); break;
    case IR_MAX: /* to every element equal to the maximum */
        ACC(a, mul(A, gx, mk(A, IR_EQ_MASK, a, x)));
        break;
    case IR_MATMUL: {
        /* trans_b: y = a W^T, W [out,in]: da = g W, dW = g^T a.
         * else:    y = a W,   W [in,out]: da = g W^T, dW = a^T g. */
        if (A->needs[a->id]) {
            IrNode *da = mk(A, IR_MATMUL, gx, b);
            da->trans_b = !x->trans_b;
            da->width = a->width;
            acc(A, a, da);
        }
        if (A->needs[b->id])
            acc_matrix(A, b, x->trans_b ? mk(A, IR_MATMUL_GRAD_W, gx, a) : mk(A, IR_MATMUL_GRAD_W, a, gx));
        break;
    }
    case IR_EMBED:
        acc_matrix(A, b, mk(A, IR_EMBED_GRAD, a, gx));
        break;
    case IR_ROPE: {
        IrNode *d = mk(A, IR_ROPE_GRAD, gx, NULL);
        d->heads = x->heads;
        d->num = x->num;
        ACC(a, d);
        break;
    }
    case IR_ATTENTION:
        for (int w = 0; w < 3; w++) {
            if (!A->needs[x->in[w]->id])
                continue;
            IrNode *d = mk(A, IR_ATTENTION_GRAD, x->in[0], x->in[1]);
            d->in[2] = x->in[2];
            d->in[3] = gx;
            d->heads = x->heads;
            d->which = w;
            d->saved = x;
            d->tok = true;
            d->width = x->width;
            ACC(x->in[w], d);
        }
        break;
    case IR_CROSS_ENTROPY: {
        IrNode *d = mk(A, IR_CE_GRAD, a, b);
        d->in[2] = gx;
        d->saved = x;
        d->tok = true;
        d->width = a->width;
        ACC(a, d);
        break;
    }
    default:
        die("no derivative rule for %s (autodiff of a backward op)", ir_op_info[x->op].text);
    }
}

void ad_build(IrGraph *g)
{
    if (!g->loss)
        die("autodiff without a loss");
    int n = g->nodes.n;
    g->nforward = n;
    Ad A = {.g = g, .adj = xcalloc((size_t)n, sizeof *A.adj), .needs = xcalloc((size_t)n, sizeof *A.needs)};
    for (int i = 0; i < n; i++) {
        IrNode *x = g->nodes.v[i];
        A.needs[i] = x->op == IR_PARAM;
        for (int k = 0; k < ir_op_info[x->op].arity; k++)
            A.needs[i] |= A.needs[x->in[k]->id];
    }
    A.at = g->loss;
    A.adj[g->loss->id] = cnst(&A, 1.0);
    for (int i = g->loss->id; i >= 0; i--) {
        IrNode *x = g->nodes.v[i];
        if (!A.adj[i] || !A.needs[i])
            continue;
        A.at = x;
        backward(&A, x, A.adj[i]);
    }
    for (int i = 0; i < g->params.n; i++)
        vec_push(&g->grads, NULL);
    for (int i = 0; i < n; i++) {
        IrNode *x = g->nodes.v[i];
        if (x->op == IR_PARAM)
            g->grads.v[x->param->index] = A.adj[i];
    }
    for (int i = 0; i < g->blocks.n; i++) { /* for skipping a block in the backward pass */
        IrBlock *b = g->blocks.v[i];
        b->d_in = b->in ? A.adj[b->in->id] : NULL;
        b->d_out = b->out ? A.adj[b->out->id] : NULL;
    }
    free(A.adj);
    free(A.needs);
}
