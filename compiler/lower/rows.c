/* rows.c - a fused row kernel (fuse.h) as one loop over token rows.
 * For each row the members run in order: a member of width 1 (a
 * reduction's result, or arithmetic on such values) is a scalar; a wider
 * member is computed in a loop over its columns.  Column loops are grouped
 * by level: a wide member sits at the first level where every scalar it
 * reads is known (one past the loop that finished the reduction), and a
 * reduction accumulates inside the loop that computes its operand.  So
 * RMSNorm is two column loops per row: square + sum, then scale.  A wide
 * member read at a later level is reread from memory when stored, else
 * kept in a row of scratch (alloca); only `stored` members are written.
 *
 * Code: a task `rows.N(ctx, r0, r1, thread)` (lower.c's cg_task), run over
 * tiles of rows fixed by the kernel's widths (row_grain), unpacks
 * the pointers and calls `rows.N.body(outputs, inputs, constants, r0, r1)`
 * whose pointer arguments are noalias (the memory plan never overlaps a
 * kernel's outputs with its live inputs), so its column loops vectorise
 * without run-time checks.  The functions are keyed by the kernel's
 * structure (ops, widths, operand kinds; constants are arguments), so the
 * L blocks of a model share one function per distinct kernel. */
#include "lower/cg.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 256

typedef enum InKind {
    IN_ROW,            /* a token value in memory: row r at r * width */
    IN_CHAN,           /* a non-token [width] vector, the same for every row */
    IN_SCALAR,         /* a non-token [1] value in memory */
    IN_CONST,          /* a CONST: a REAL argument */
} InKind;

typedef struct RowIn {
    const IrNode *n;
    InKind kind;
} RowIn;

typedef struct RowRef {
    int member, input; /* one of them >= 0 */
} RowRef;

typedef struct RowMember {
    const IrNode *n;
    bool wide;         /* a value per column, computed in a column loop */
    bool reduce;       /* a reduction over a wide operand (its loop accumulates it) */
    int level;         /* wide or reduce: its column loop; scalar: known after loop `level` (-1: before all) */
    int64_t loop_w;    /* width of its column loop */
    bool scratch;      /* wide, not stored, read by a later loop */
    RowRef ref[2];
} RowMember;

typedef struct RowPlan {
    const IrKernel *k;
    RowMember m[MAX_MEMBERS];
    int nm;
    RowIn in[2 * MAX_MEMBERS];
    int nin, nout, nconst, maxlevel;
} RowPlan;

/* ---- analysis ---- */

static int member_index(const RowPlan *p, const IrNode *n)
{
    for (int j = 0; j < p->nm; j++)
        if (p->m[j].n == n)
            return j;
    return -1;
}

static int add_input(RowPlan *p, const IrNode *n, const IrNode *user)
{
    for (int i = 0; i < p->nin; i++)
        if (p->in[i].n == n)
            return i;
    InKind kind = n->op == IR_CONST ? IN_CONST : n->tok ? IN_ROW : n->rows != 1 ? (InKind)-1
                : n->width > 1 ? IN_CHAN : IN_SCALAR;
    if ((int)kind < 0 || n->is_int || (n->width != 1 && n->width != user->width && !ir_op_info[user->op].reduction))
        die("lower: %%%d (%s): operand %%%d cannot be read row by row", user->id, ir_op_info[user->op].text, n->id);
    p->in[p->nin] = (RowIn){n, kind};
    p->nconst += kind == IN_CONST;
    return p->nin++;
}

/* Level of member j from its operands (see the file comment). */
static void place_member(RowPlan *p, int j)
{
    RowMember *m = &p->m[j];
    const IrNode *x = m->n;
    int ar = ir_op_info[x->op].arity, lvl = -1;
    bool red = ir_op_info[x->op].reduction;
    const IrNode *a0 = x->in[0];
    m->reduce = red && a0->width > 1;
    m->wide = !red && x->width > 1;
    for (int a = 0; a < ar; a++) {
        int o = m->ref[a].member;
        if (o < 0)
            continue;
        const RowMember *q = &p->m[o];
        int need = m->wide || m->reduce ? (q->wide ? q->level : q->level + 1) : q->level;
        lvl = need > lvl ? need : lvl;
    }
    if (m->wide || m->reduce) {
        m->level = lvl < 0 ? 0 : lvl;
        m->loop_w = m->wide ? x->width : a0->width;
    } else {
        m->level = lvl;
    }
    if (m->level > p->maxlevel)
        p->maxlevel = m->level;
}

static void analyse(RowPlan *p, const IrKernel *k)
{
    memset(p, 0, sizeof *p);
    p->k = k;
    if (k->nodes.n > MAX_MEMBERS)
        die("lower: a row kernel of %d members (at most %d)", k->nodes.n, MAX_MEMBERS);
    for (int j = 0; j < k->nodes.n; j++) {
        const IrNode *x = k->nodes.v[j];
        RowMember *m = &p->m[p->nm++];
        m->n = x;
        if (!x->tok || (!ir_op_info[x->op].elementwise && !ir_op_info[x->op].reduction))
            die("lower: %%%d (%s) in a row kernel", x->id, ir_op_info[x->op].text);
        for (int a = 0; a < ir_op_info[x->op].arity; a++) {
            int o = member_index(p, x->in[a]);
            m->ref[a] = (RowRef){o, o < 0 ? add_input(p, x->in[a], x) : -1};
        }
        m->scratch = false;
        place_member(p, j);
        p->nout += x->stored;
    }
    for (int j = 0; j < p->nm; j++)
        for (int a = 0; a < ir_op_info[p->m[j].n->op].arity; a++) {
            int o = p->m[j].ref[a].member;
            if (o >= 0 && p->m[o].wide && p->m[j].level > p->m[o].level && !p->m[o].n->stored)
                p->m[o].scratch = true;
        }
}

/* The structure the generated function depends on, as text. */
static char *plan_key(const RowPlan *p, const char *prefix)
{
    size_t cap = 256 + (size_t)(p->nm + p->nin) * 64;
    char *s = xmalloc(cap);
    int len = snprintf(s, cap, "%s", prefix);
    for (int i = 0; i < p->nin; i++)
        len += snprintf(s + len, cap - (size_t)len, "%s%c%lld", i ? "," : "[", "RCSK"[p->in[i].kind],
                        (long long)p->in[i].n->width);
    len += snprintf(s + len, cap - (size_t)len, "]");
    for (int j = 0; j < p->nm; j++) {
        const IrNode *x = p->m[j].n;
        len += snprintf(s + len, cap - (size_t)len, "%s%s%s%lld", j ? ";" : "", ir_op_info[x->op].text,
                        x->stored ? "*" : ".", (long long)x->width);
        if (x->op == IR_POWC)
            len += snprintf(s + len, cap - (size_t)len, "^%a", x->num);
        for (int a = 0; a < ir_op_info[x->op].arity; a++) {
            RowRef r = p->m[j].ref[a];
            len += snprintf(s + len, cap - (size_t)len, "%c%c%d", a ? ',' : '(', r.member >= 0 ? 'm' : 'i',
                            r.member >= 0 ? r.member : r.input);
        }
        len += snprintf(s + len, cap - (size_t)len, ")");
    }
    return s;
}

/* ---- the body function ---- */

/* Values while one row is generated. */
typedef struct RowGen {
    const RowPlan *p;
    LLVMValueRef *out;      /* per member: its output pointer (stored), else NULL */
    LLVMValueRef *inp;      /* per input: pointer, or the REAL for a CONST */
    LLVMValueRef *in_row;   /* per input: this row's pointer (IN_ROW), or the value (width-1 / scalar) */
    LLVMValueRef *out_row;  /* per member: this row's output pointer */
    LLVMValueRef *scr;      /* per member: scratch row */
    LLVMValueRef *val;      /* per member: scalar value, or its value in the current column loop */
    LLVMValueRef *acc;      /* per member: reduction accumulator phi */
    int cur_level;
    int64_t cur_w;
} RowGen;

/* Operand a of member j at column c (NULL: a scalar context). */
static LLVMValueRef operand(Cg *cg, RowGen *G, int j, int a, LLVMValueRef c)
{
    RowRef r = G->p->m[j].ref[a];
    if (r.member >= 0) {
        const RowMember *q = &G->p->m[r.member];
        if (!q->wide || (q->level == G->cur_level && q->loop_w == G->cur_w))
            return G->val[r.member];
        return cg_load(cg, cg_elem(cg, q->n->stored ? G->out_row[r.member] : G->scr[r.member], c));
    }
    const RowIn *in = &G->p->in[r.input];
    if (in->kind == IN_ROW && in->n->width > 1)
        return cg_load(cg, cg_elem(cg, G->in_row[r.input], c));
    if (in->kind == IN_CHAN)
        return cg_load(cg, cg_elem(cg, G->inp[r.input], c));
    return G->in_row[r.input]; /* a per-row, per-call or constant scalar */
}

static LLVMValueRef compute(Cg *cg, RowGen *G, int j, LLVMValueRef c)
{
    const IrNode *x = G->p->m[j].n;
    if (ir_op_info[x->op].reduction) /* over a width-1 operand: itself */
        return operand(cg, G, j, 0, c);
    LLVMValueRef a = operand(cg, G, j, 0, c);
    return ir_op_info[x->op].arity == 2 ? lower_binary(cg, x, a, operand(cg, G, j, 1, c)) : lower_unary(cg, x, a);
}

/* The column loop of `level` over width w: its wide members and reductions. */
static void column_loop(Cg *cg, RowGen *G, int level, int64_t w)
{
    const RowPlan *p = G->p;
    G->cur_level = level;
    G->cur_w = w;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    Loop l = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, w), NULL, "c");
    LLVMBasicBlockRef body = LLVMGetInsertBlock(cg->b);
    for (int j = 0; j < p->nm; j++) /* accumulators: phis at the top of the loop head */
        if (p->m[j].reduce && p->m[j].level == level && p->m[j].loop_w == w) {
            LLVMValueRef init = lower_reduce_init(cg, p->m[j].n);
            LLVMPositionBuilderBefore(cg->b, LLVMGetFirstInstruction(l.head));
            G->acc[j] = LLVMBuildPhi(cg->b, cg->real, "acc");
            LLVMAddIncoming(G->acc[j], &init, &pre, 1);
        }
    LLVMPositionBuilderAtEnd(cg->b, body);
    for (int j = 0; j < p->nm; j++) {
        const RowMember *m = &p->m[j];
        if (m->level != level || m->loop_w != w || (!m->wide && !m->reduce))
            continue;
        if (m->reduce) {
            G->val[j] = lower_reduce_step(cg, m->n, G->acc[j], operand(cg, G, j, 0, l.i));
            continue;
        }
        G->val[j] = compute(cg, G, j, l.i);
        if (m->n->stored)
            LLVMBuildStore(cg->b, G->val[j], cg_elem(cg, G->out_row[j], l.i));
        if (m->scratch)
            LLVMBuildStore(cg->b, G->val[j], cg_elem(cg, G->scr[j], l.i));
    }
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    for (int j = 0; j < p->nm; j++)
        if (p->m[j].reduce && p->m[j].level == level && p->m[j].loop_w == w)
            LLVMAddIncoming(G->acc[j], &G->val[j], &latch, 1);
    cg_loop_end(cg, &l, NULL);
    for (int j = 0; j < p->nm; j++) /* after the loop: the reductions' results */
        if (p->m[j].reduce && p->m[j].level == level && p->m[j].loop_w == w) {
            G->val[j] = lower_reduce_final(cg, p->m[j].n, G->acc[j], w);
            if (p->m[j].n->stored)
                LLVMBuildStore(cg->b, G->val[j], G->out_row[j]);
        }
    G->cur_level = -2;
}

/* Scalar members known after loop `level`. */
static void scalars(Cg *cg, RowGen *G, int level)
{
    for (int j = 0; j < G->p->nm; j++) {
        const RowMember *m = &G->p->m[j];
        if (m->wide || m->reduce || m->level != level)
            continue;
        G->val[j] = compute(cg, G, j, NULL);
        if (m->n->stored)
            LLVMBuildStore(cg->b, G->val[j], G->out_row[j]);
    }
}

/* One row r: pointers, then scalars and column loops level by level. */
static void row(Cg *cg, RowGen *G, LLVMValueRef r)
{
    const RowPlan *p = G->p;
    for (int i = 0; i < p->nin; i++)
        if (p->in[i].kind == IN_ROW) {
            LLVMValueRef at = cg_elem(cg, G->inp[i], LLVMBuildNSWMul(cg->b, r, cg_i64(cg, p->in[i].n->width), ""));
            G->in_row[i] = p->in[i].n->width > 1 ? at : cg_load(cg, at);
        }
    for (int j = 0; j < p->nm; j++)
        if (G->out[j])
            G->out_row[j] = cg_elem(cg, G->out[j], LLVMBuildNSWMul(cg->b, r, cg_i64(cg, p->m[j].n->width), ""));
    scalars(cg, G, -1);
    for (int level = 0; level <= p->maxlevel; level++) {
        for (int j = 0; j < p->nm; j++) { /* each loop width of this level, once, in member order */
            const RowMember *m = &p->m[j];
            bool first = (m->wide || m->reduce) && m->level == level;
            for (int q = 0; q < j && first; q++)
                first = !((p->m[q].wide || p->m[q].reduce) && p->m[q].level == level && p->m[q].loop_w == m->loop_w);
            if (first)
                column_loop(cg, G, level, m->loop_w);
        }
        scalars(cg, G, level);
    }
}

/* void body(ptr noalias out..., ptr noalias in..., REAL const..., i64 r0, i64 r1) */
static LLVMValueRef body_fn(Cg *cg, const RowPlan *p, const char *name)
{
    int nptr = p->nout + p->nin - p->nconst, n = nptr + p->nconst + 2;
    LLVMTypeRef *t = xcalloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        t[i] = i < nptr ? cg->ptr : i < nptr + p->nconst ? cg->real : cg->i64;
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->voidt, t, (unsigned)n, false));
    free(t);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    for (int i = 0; i < nptr; i++) {
        cg_fn_attr(cg, fn, (unsigned)i + 1, "noalias");
        if (i >= p->nout)
            cg_fn_attr(cg, fn, (unsigned)i + 1, "readonly");
    }
    return fn;
}

static void build_body(Cg *cg, const RowPlan *p, LLVMValueRef fn)
{
    LLVMBasicBlockRef at = LLVMGetInsertBlock(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    size_t nm = (size_t)p->nm, ni = (size_t)p->nin;
    RowGen G = {.p = p, .cur_level = -2};
    LLVMValueRef *mem = xcalloc(6 * nm + 2 * ni, sizeof *mem);
    G.out = mem, G.out_row = mem + nm, G.scr = mem + 2 * nm, G.val = mem + 3 * nm, G.acc = mem + 4 * nm;
    G.inp = mem + 6 * nm, G.in_row = mem + 6 * nm + ni;
    unsigned arg = 0, carg = (unsigned)(p->nout + p->nin - p->nconst);
    for (int j = 0; j < p->nm; j++)
        if (p->m[j].n->stored)
            G.out[j] = LLVMGetParam(fn, arg++);
    for (int i = 0; i < p->nin; i++) {
        G.inp[i] = LLVMGetParam(fn, p->in[i].kind == IN_CONST ? carg++ : arg++);
        if (p->in[i].kind == IN_CONST)
            G.in_row[i] = G.inp[i];
        else if (p->in[i].kind == IN_SCALAR)
            G.in_row[i] = cg_load(cg, G.inp[i]);
    }
    for (int j = 0; j < p->nm; j++)
        if (p->m[j].scratch)
            G.scr[j] = cg_alloca(cg, LLVMArrayType2(cg->real, (uint64_t)p->m[j].n->width), "scratch");
    Loop lr = cg_loop_begin(cg, LLVMGetParam(fn, carg), LLVMGetParam(fn, carg + 1), NULL, "r");
    row(cg, &G, lr.i);
    cg_loop_end_rows(cg, &lr);
    LLVMBuildRetVoid(cg->b);
    free(mem);
    LLVMPositionBuilderAtEnd(cg->b, at);
}

/* ---- the task and the call ---- */

/* Rows per pool tile: about 16k elements of the widest member, 1 to 256
 * rows; a function of the kernel's shape, never of the pool (pool.h). */
static int64_t row_grain(const RowPlan *p)
{
    int64_t w = 1;
    for (int j = 0; j < p->nm; j++)
        w = p->m[j].n->width > w ? p->m[j].n->width : w;
    for (int i = 0; i < p->nin; i++)
        w = p->in[i].n->width > w ? p->in[i].n->width : w;
    int64_t g = 16384 / w;
    return g < 1 ? 1 : g > 256 ? 256 : g;
}

typedef struct RowTask {
    const RowPlan *p;
    LLVMValueRef body;
} RowTask;

/* rows.N(ctx, r0, r1, thread): the ctx holds the body's arguments. */
static void row_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef t)
{
    const RowTask *rt = info;
    int n = rt->p->nout + rt->p->nin;
    LLVMValueRef *args = xcalloc((size_t)n + 2, sizeof *args);
    memcpy(args, v, (size_t)n * sizeof *args);
    args[n] = r0;
    args[n + 1] = r1;
    cg_call(cg, rt->body, args, (unsigned)n + 2);
    free(args);
}

void lower_rows_kernel(Cg *cg, const IrKernel *k)
{
    RowPlan *p = xmalloc(sizeof *p);
    analyse(p, k);
    char *key = plan_key(p, "rows");
    int n = p->nout + p->nin, nptr = n - p->nconst;
    LLVMTypeRef *t = xcalloc((size_t)n + 1, sizeof *t);
    LLVMValueRef *v = xcalloc((size_t)n + 1, sizeof *v);
    int a = 0, c = nptr;
    for (int j = 0; j < p->nm; j++)
        if (p->m[j].n->stored)
            t[a] = cg->ptr, v[a++] = cg_home(cg, p->m[j].n);
    for (int i = 0; i < p->nin; i++) {
        bool cst = p->in[i].kind == IN_CONST;
        int at = cst ? c++ : a++;
        t[at] = cst ? cg->real : cg->ptr;
        v[at] = cst ? cg_const(cg, p->in[i].n) : cg_home(cg, p->in[i].n);
    }
    char name[32];
    snprintf(name, sizeof name, "rows.%d", cg->ntasks);
    RowTask rt = {p, NULL};
    bool fresh = true;
    for (int i = 0; i < cg->ntasks && fresh; i++)
        fresh = strcmp(cg->tasks[i].key, key) != 0;
    if (fresh) {
        char bname[48];
        snprintf(bname, sizeof bname, "%s.body", name);
        rt.body = body_fn(cg, p, bname);
        build_body(cg, p, rt.body);
    }
    const CgTask *task = cg_task(cg, key, name, t, (unsigned)n, row_task, &rt);
    cg_run_task(cg, task, v, cg->BT, cg_i64(cg, row_grain(p)));
    free(key);
    free(t);
    free(v);
    free(p);
}
