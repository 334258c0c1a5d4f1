/* ir.c - construction, text dump and verifier of the tensor IR (ir.h).
 * The op properties come from ops.h; nothing here lists ops by hand. */
#include "ir/ir.h"

#include <inttypes.h>
#include <string.h>

const IrOpInfo ir_op_info[IR_NUM_OPS] = {
#define IR_OPS(name, text, arity, ew, red, fus) [IR_##name] = {text, arity, ew, red, fus},
#include "ir/ops.h"
#undef IR_OPS
};

void ir_init(IrGraph *g)
{
    memset(g, 0, sizeof *g);
}

void ir_free(IrGraph *g)
{
    vec_free(&g->nodes);
    vec_free(&g->params);
    vec_free(&g->blocks);
    vec_free(&g->plan);
    vec_free(&g->config);
    vec_free(&g->grads);
    for (int i = 0; i < g->kernels.n; i++)
        vec_free(&((IrKernel *)g->kernels.v[i])->nodes);
    vec_free(&g->kernels);
    arena_free(&g->arena);
    memset(g, 0, sizeof *g);
}

IrNode *ir_add(IrGraph *g, IrOp op, Loc loc)
{
    IrNode *n = arena_alloc(&g->arena, sizeof *n);
    n->op = op;
    n->loc = loc;
    n->rows = 1;
    n->width = 1;
    n->block = -1;
    n->kernel = -1;
    n->id = g->nodes.n;
    vec_push(&g->nodes, n);
    return n;
}

IrParam *ir_add_param(IrGraph *g, const char *name, Loc loc)
{
    IrParam *p = arena_alloc(&g->arena, sizeof *p);
    p->name = arena_strdup(&g->arena, name);
    p->loc = loc;
    p->block = -1;
    p->index = g->params.n;
    vec_push(&g->params, p);
    return p;
}

int64_t ir_param_total(const IrGraph *g)
{
    int64_t total = 0;
    for (int i = 0; i < g->params.n; i++)
        total += ((IrParam *)g->params.v[i])->numel;
    return total;
}

void ir_init_text(char *buf, size_t n, const IrInit *init)
{
    switch (init->kind) {
    case INIT_NORMAL: snprintf(buf, n, "normal(%.6g)", init->a); break;
    case INIT_TRUNC_NORMAL: snprintf(buf, n, "trunc_normal(%.6g, %.6g, %.6g)", init->a, init->b, init->c); break;
    case INIT_XAVIER: snprintf(buf, n, "xavier(%.6g)", init->a); break;
    case INIT_ZEROS: snprintf(buf, n, "zeros"); break;
    case INIT_ONES: snprintf(buf, n, "ones"); break;
    case INIT_CONSTANT: snprintf(buf, n, "constant(%.6g)", init->a); break;
    }
}

static void shape_text(char *buf, size_t n, const IrNode *x)
{
    if (x->tok)
        snprintf(buf, n, "(B,T,%" PRId64 ")%s", x->width, x->is_int ? " i32" : "");
    else if (x->rows > 1)
        snprintf(buf, n, "[%" PRId64 ",%" PRId64 "]", x->rows, x->width);
    else
        snprintf(buf, n, "[%" PRId64 "]", x->width);
}

void ir_dump(FILE *out, const IrGraph *g)
{
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        char shape[64];
        shape_text(shape, sizeof shape, x);
        fprintf(out, "%%%d = %s", x->id, ir_op_info[x->op].text);
        switch (x->op) {
        case IR_PARAM: fprintf(out, " %s", x->param->name); break;
        case IR_CONST: fprintf(out, " %.9g", x->num); break;
        case IR_POWC: fprintf(out, "[%.9g]", x->num); break;
        case IR_ROPE: fprintf(out, "[heads=%d base=%.9g]", x->heads, x->num); break;
        case IR_ATTENTION: fprintf(out, "[heads=%d causal]", x->heads); break;
        case IR_ROPE_GRAD: fprintf(out, "[heads=%d base=%.9g]", x->heads, x->num); break;
        case IR_ATTENTION_GRAD: fprintf(out, "[heads=%d d%c]", x->heads, "qkv"[x->which]); break;
        case IR_MATMUL: fprintf(out, "%s", x->trans_b ? "[W^T]" : ""); break;
        default: break;
        }
        for (int k = 0; k < ir_op_info[x->op].arity; k++)
            fprintf(out, "%s%%%d", k ? ", " : "(", x->in[k]->id);
        if (ir_op_info[x->op].arity)
            fputc(')', out);
        fprintf(out, " : %s", shape);
        if (x->block >= 0)
            fprintf(out, "  ; block %d", x->block + 1);
        fputc('\n', out);
    }
    for (int i = 0; i < g->blocks.n; i++) {
        const IrBlock *b = g->blocks.v[i];
        if (b->var)
            fprintf(out, "block %d (l = %g): residual %s in %%%d out %%%d\n", b->index + 1, b->l, b->var,
                    b->in->id, b->out->id);
        else
            fprintf(out, "block %d (l = %g): no residual stream\n", b->index + 1, b->l);
    }
    if (g->logits)
        fprintf(out, "logits = %%%d\n", g->logits->id);
    if (g->loss)
        fprintf(out, "loss = %%%d\n", g->loss->id);
    for (int i = 0; i < g->grads.n; i++) {
        const IrNode *gr = g->grads.v[i];
        const IrParam *p = g->params.v[i];
        if (gr)
            fprintf(out, "grad %s = %%%d\n", p->name, gr->id);
        else
            fprintf(out, "grad %s = 0\n", p->name);
    }
}

static bool fail(FILE *out, const IrNode *x, const char *what)
{
    fprintf(out, "ir_verify: %%%d (%s): %s\n", x->id, ir_op_info[x->op].text, what);
    return false;
}

bool ir_verify(const IrGraph *g, FILE *out)
{
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->id != i)
            return fail(out, x, "id out of order");
        if (x->width < 1 || x->rows < 1)
            return fail(out, x, "empty shape");
        for (int k = 0; k < ir_op_info[x->op].arity; k++) {
            if (!x->in[k])
                return fail(out, x, "missing operand");
            if (x->in[k]->id >= x->id)
                return fail(out, x, "operand not before its use");
            if (x->in[k]->is_int && x->op != IR_EMBED && x->op != IR_CROSS_ENTROPY && x->op != IR_EMBED_GRAD &&
                x->op != IR_CE_GRAD)
                return fail(out, x, "integer operand");
        }
        if (ir_op_info[x->op].elementwise && ir_op_info[x->op].arity == 2) {
            const IrNode *a = x->in[0], *b = x->in[1];
            if ((a->rows > 1 || b->rows > 1) && (a->rows != b->rows || a->width != b->width))
                return fail(out, x, "matrix operands of an elementwise op differ in shape");
            if (a->width != b->width && a->width != 1 && b->width != 1)
                return fail(out, x, "widths do not broadcast");
        }
        if (ir_op_info[x->op].reduction && x->width != 1)
            return fail(out, x, "reduction wider than 1");
        if (x->op == IR_PARAM && !x->param)
            return fail(out, x, "parameter node without a parameter");
        if (x->op == IR_MATMUL) {
            const IrNode *w = x->in[1];
            int64_t in = x->trans_b ? w->width : w->rows, o = x->trans_b ? w->rows : w->width;
            if (!x->in[0]->tok || in != x->in[0]->width || o != x->width)
                return fail(out, x, "matmul shapes do not agree");
        }
    }
    return true;
}
