/* nvptx_kern.c - the GPU kernels of the fused schedule besides the matrix
 * products (nvptx_gemm.c) and attention (nvptx_attn.c), each built once per
 * structure key and launched once per node or row group with that node's
 * places as arguments (nvptx.h).  Simple, correct designs (see
 * docs/gpu-lowering.md for what is not fast yet):
 *   rows      a CTA of GPU_ROW_THREADS per token row; members in order: a
 *             wide stored member is a strided column loop (unstored wide
 *             values recomputed from their operands inside the loop that
 *             needs them), a reduction a column loop then a fixed-order
 *             shared-memory tree, a width-1 member a scalar in registers
 *   others    embed, embed_grad (a CTA per table row over its positions in
 *             order, from the host's token index: the CPU's sums), rope
 *             (tables filled by the host), cross-entropy rows and mean (in
 *             double), its gradient, sums over rows in two stages (chunks
 *             of rows, then the chunks in order), parameter-shaped loops,
 *             gradient copies. */
#include "lower/nvptx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- row kernels ---- */

#define MAXM 256

typedef enum GIn { GIN_ROW, GIN_CHAN, GIN_SCALAR, GIN_CONST } GIn;

typedef struct RowK {
    const IrKernel *k;
    int nm, nin, nout, nconst;
    const IrNode *m[MAXM];
    bool wide[MAXM], reduce[MAXM];
    int ref[MAXM][2];          /* >= 0 member, else -1 - input */
    const IrNode *in[2 * MAXM];
    GIn ink[2 * MAXM];
    /* while building: */
    LLVMValueRef sval[MAXM];   /* scalars (width-1 members) */
    LLVMValueRef memo[MAXM];   /* wide values in the current column loop */
    bool emitted[MAXM];        /* a stored wide member already written */
    LLVMValueRef out[MAXM], inp[2 * MAXM], cst[2 * MAXM];
    LLVMValueRef r, col;
} RowK;

static int rk_member(const RowK *p, const IrNode *n)
{
    for (int j = 0; j < p->nm; j++)
        if (p->m[j] == n)
            return j;
    return -1;
}

static int rk_input(RowK *p, const IrNode *n, const IrNode *user)
{
    for (int i = 0; i < p->nin; i++)
        if (p->in[i] == n)
            return i;
    GIn kind = n->op == IR_CONST ? GIN_CONST : n->tok ? GIN_ROW : n->width > 1 ? GIN_CHAN : GIN_SCALAR;
    if (n->is_int || (!n->tok && n->rows != 1 && n->op != IR_CONST))
        die("lower: %%%d (%s): operand %%%d cannot be read row by row", user->id, ir_op_info[user->op].text, n->id);
    p->in[p->nin] = n;
    p->ink[p->nin] = kind;
    return p->nin++;
}

static void rk_analyse(RowK *p, const IrKernel *k)
{
    memset(p, 0, sizeof *p);
    p->k = k;
    if (k->nodes.n > MAXM)
        die("lower: a row kernel of %d members (at most %d)", k->nodes.n, MAXM);
    for (int j = 0; j < k->nodes.n; j++) {
        const IrNode *n = k->nodes.v[j];
        p->m[p->nm] = n;
        bool red = ir_op_info[n->op].reduction;
        p->reduce[j] = red && n->in[0]->width > 1;
        p->wide[j] = !red && n->width > 1;
        for (int a = 0; a < ir_op_info[n->op].arity; a++) {
            int o = rk_member(p, n->in[a]);
            p->ref[j][a] = o >= 0 ? o : -1 - rk_input(p, n->in[a], n);
        }
        p->nm++;
        p->nout += n->stored;
    }
    for (int i = 0; i < p->nin; i++)
        p->nconst += p->ink[i] == GIN_CONST;
}

static void rk_key(const RowK *p, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "rows");
    for (int i = 0; i < p->nin && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, " i%d.%lld", p->ink[i], (long long)p->in[i]->width);
    for (int j = 0; j < p->nm && n < cap; j++) {
        const IrNode *m = p->m[j];
        n += (size_t)snprintf(buf + n, cap - n, " %s.%lld.%d.%.17g(%d,%d)", ir_op_info[m->op].text,
                              (long long)m->width, m->stored, m->op == IR_POWC ? m->num : 0, p->ref[j][0],
                              ir_op_info[m->op].arity > 1 ? p->ref[j][1] : 0);
    }
    if (n >= cap)
        die("lower: a row kernel's key is too long");
}

static LLVMValueRef rk_eval(Gpu *x, RowK *p, int ref, int64_t w);

/* Member j at the current column (wide), or its scalar. */
static LLVMValueRef rk_member_val(Gpu *x, RowK *p, int j)
{
    Cg *cg = &x->cg;
    if (!p->wide[j])
        return p->sval[j];
    if (p->memo[j])
        return p->memo[j];
    const IrNode *n = p->m[j];
    LLVMValueRef v;
    if (p->emitted[j]) {
        v = LD(cg_elem(cg, p->out[j], ADD(MUL(p->r, cg_i64(cg, n->width)), p->col)));
    } else {
        LLVMValueRef a = rk_eval(x, p, p->ref[j][0], n->width);
        v = ir_op_info[n->op].arity == 2 ? lower_binary(cg, n, a, rk_eval(x, p, p->ref[j][1], n->width))
                                          : lower_unary(cg, n, a);
    }
    return p->memo[j] = v;
}

/* Operand ref at the current column of a loop over w columns (w 1: a scalar context). */
static LLVMValueRef rk_eval(Gpu *x, RowK *p, int ref, int64_t w)
{
    Cg *cg = &x->cg;
    if (ref >= 0)
        return rk_member_val(x, p, ref);
    int i = -1 - ref;
    const IrNode *n = p->in[i];
    switch (p->ink[i]) {
    case GIN_CONST: return p->cst[i];
    case GIN_SCALAR: return LD(p->inp[i]);
    case GIN_CHAN: return LD(cg_elem(cg, p->inp[i], p->col));
    case GIN_ROW:
        if (n->width == 1)
            return LD(cg_elem(cg, p->inp[i], p->r));
        if (w == 1)
            die("lower: a wide operand in a scalar context");
        return LD(cg_elem(cg, p->inp[i], ADD(MUL(p->r, cg_i64(cg, n->width)), p->col)));
    }
    return NULL;
}

/* A scalar member: every thread computes it (registers). */
static LLVMValueRef rk_scalar(Gpu *x, RowK *p, int j)
{
    Cg *cg = &x->cg;
    const IrNode *n = p->m[j];
    LLVMValueRef a = rk_eval(x, p, p->ref[j][0], 1);
    if (ir_op_info[n->op].reduction)
        return lower_reduce_final(cg, n, lower_reduce_step(cg, n, lower_reduce_init(cg, n), a), 1);
    return ir_op_info[n->op].arity == 2 ? lower_binary(cg, n, a, rk_eval(x, p, p->ref[j][1], 1))
                                        : lower_unary(cg, n, a);
}

static void rk_build(Gpu *x, RowK *p, const char *key)
{
    Cg *cg = &x->cg;
    LLVMTypeRef t[4 * MAXM];
    unsigned nt = 0;
    for (int j = 0; j < p->nm; j++)
        if (p->m[j]->stored)
            t[nt++] = cg->ptr;
    for (int i = 0; i < p->nin; i++)
        t[nt++] = p->ink[i] == GIN_CONST ? cg->real : cg->ptr;
    gpu_begin(x, key, t, nt);
    unsigned a = 0;
    for (int j = 0; j < p->nm; j++)
        p->out[j] = p->m[j]->stored ? gpu_param(x, a++) : NULL;
    for (int i = 0; i < p->nin; i++) {
        p->inp[i] = p->ink[i] == GIN_CONST ? NULL : gpu_param(x, a);
        p->cst[i] = p->ink[i] == GIN_CONST ? gpu_param(x, a) : NULL;
        a++;
    }
    LLVMValueRef scratch = gpu_shared(x, cg->real, GPU_ROW_THREADS, "red");
    p->r = gpu_sreg(x, "ctaid.x");
    LLVMValueRef tid = gpu_sreg(x, "tid.x"), step = cg_i64(cg, GPU_ROW_THREADS);
    LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, tid, cg_i64(cg, 0), "");
    for (int j = 0; j < p->nm; j++) {
        const IrNode *n = p->m[j];
        if (p->wide[j]) {
            if (!n->stored)
                continue;
            Loop l = gpu_loop_begin(x, tid, cg_i64(cg, n->width), step, "c");
            p->col = l.i;
            memset(p->memo, 0, sizeof p->memo);
            LLVMValueRef v = rk_member_val(x, p, j);
            ST(v, cg_elem(cg, p->out[j], ADD(MUL(p->r, cg_i64(cg, n->width)), l.i)));
            gpu_loop_end(x, &l, step);
            p->emitted[j] = true;
            continue;
        }
        LLVMValueRef v;
        if (p->reduce[j]) {
            int64_t w = n->in[0]->width;
            LLVMValueRef acc = gpu_local(x, lower_reduce_init(cg, n));
            Loop l = gpu_loop_begin(x, tid, cg_i64(cg, w), step, "c");
            p->col = l.i;
            memset(p->memo, 0, sizeof p->memo);
            ST(lower_reduce_step(cg, n, LD(acc), rk_eval(x, p, p->ref[j][0], w)), acc);
            gpu_loop_end(x, &l, step);
            v = lower_reduce_final(cg, n, gpu_block_reduce(x, LD(acc), n, scratch), w);
        } else {
            v = rk_scalar(x, p, j);
        }
        p->sval[j] = v;
        if (n->stored) {
            LLVMBasicBlockRef join = cg_if(cg, first, "store");
            ST(v, cg_elem(cg, p->out[j], p->r));
            cg_endif(cg, join);
        }
    }
    gpu_end(x);
}

void gpu_rows_kernel(Gpu *x, const IrKernel *k)
{
    static RowK p; /* large; the lowering is single-threaded per Gpu */
    static char key[16384];
    rk_analyse(&p, k);
    rk_key(&p, key, sizeof key);
    int ki = gpu_find(x, key);
    if (ki < 0) {
        ki = x->nkeys;
        rk_build(x, &p, key);
    }
    const IrNode *last = k->nodes.v[k->nodes.n - 1];
    gpu_launch(x, ki, last->id, gpu_aff(0, 1, 0), 1, GPU_ROW_THREADS, 1, false);
    for (int j = 0; j < p.nm; j++)
        if (p.m[j]->stored)
            gpu_arg_value(x, p.m[j], true);
    for (int i = 0; i < p.nin; i++) {
        if (p.ink[i] == GIN_CONST)
            gpu_arg_f32(x, p.in[i]->num);
        else
            gpu_arg_value(x, p.in[i], false);
    }
}

/* ---- parameter-shaped loops (loops.c's, one CTA) ---- */

static LLVMValueRef operand_at(Gpu *x, const IrNode *n, const IrNode *a, LLVMValueRef ap, LLVMValueRef r,
                               LLVMValueRef c)
{
    Cg *cg = &x->cg;
    if (a->op == IR_CONST)
        return ap;
    LLVMValueRef i = cg_i64(cg, 0);
    if (a->rows != 1)
        i = MUL(r, cg_i64(cg, a->width));
    if (a->width != 1)
        i = ADD(i, c);
    (void)n;
    return LD(cg_elem(cg, ap, i));
}

void gpu_loop_node(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    if (n->op == IR_SUM_ROWS) {
        const IrNode *a = n->in[0];
        if (n->tok || n->rows != 1 || n->width != a->width || !a->tok)
            die("lower: %%%d: sum_rows is not (B,T,w) -> [w]", n->id);
        /* stage 1: GPU_ROW_CHUNKS chunks of rows, a thread per (column, chunk), rows in order:
         * partial[j][c].  (partial, x, rows, W) */
        int k1 = gpu_find(x, "sum_rows_partial");
        if (k1 < 0) {
            LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->i64, cg->i64};
            k1 = gpu_begin(x, "sum_rows_partial", t, 4);
            LLVMValueRef part = gpu_param(x, 0), xs = gpu_param(x, 1), rows = gpu_param(x, 2), W = gpu_param(x, 3);
            LLVMValueRef c = gpu_global_id(x), j = gpu_sreg(x, "ctaid.y");
            LLVMValueRef cs = LLVMBuildSDiv(cg->b, ADD(rows, cg_i64(cg, GPU_ROW_CHUNKS - 1)), cg_i64(cg, GPU_ROW_CHUNKS), "");
            LLVMBasicBlockRef join = cg_if(cg, LT(c, W), "col");
            LLVMValueRef r0 = MUL(j, cs), r1 = ADD(r0, cs);
            r1 = LLVMBuildSelect(cg->b, LT(r1, rows), r1, rows, "");
            LLVMValueRef s = gpu_local(x, cg_real(cg, 0));
            Loop l = cg_loop_begin(cg, r0, r1, NULL, "r");
            ST(FADD(LD(s), LD(cg_elem(cg, xs, ADD(MUL(l.i, W), c)))), s);
            cg_loop_end(cg, &l, NULL);
            ST(LD(s), cg_elem(cg, part, ADD(MUL(j, W), c)));
            cg_endif(cg, join);
            gpu_end(x);
        }
        /* stage 2: y[c] = (acc ? y[c] : 0) + the chunks' sums in order.  (y, partial, W) */
        int k2 = gpu_find(x, "sum_rows_final");
        if (k2 < 0) {
            LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->i64};
            k2 = gpu_begin(x, "sum_rows_final", t, 3);
            LLVMValueRef y = gpu_param(x, 0), part = gpu_param(x, 1), W = gpu_param(x, 2), c = gpu_global_id(x);
            LLVMBasicBlockRef join = cg_if(cg, LT(c, W), "col");
            LLVMValueRef yp = cg_elem(cg, y, c);
            LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
            LLVMValueRef s = gpu_local(x, LLVMBuildSelect(cg->b, keep, LD(yp), cg_real(cg, 0), ""));
            Loop l = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, GPU_ROW_CHUNKS), NULL, "j");
            ST(FADD(LD(s), LD(cg_elem(cg, part, ADD(MUL(l.i, W), c)))), s);
            cg_loop_end(cg, &l, NULL);
            ST(LD(s), yp);
            cg_endif(cg, join);
            gpu_end(x);
        }
        int64_t pbytes = GPU_ROW_CHUNKS * n->width * 4;
        if (GPU_SCRATCH_PARTIALS + pbytes > x->scratch_bytes)
            x->scratch_bytes = GPU_SCRATCH_PARTIALS + pbytes;
        StrataGpuLaunch *l = gpu_launch(x, k1, n->id, gpu_aff(n->width, 0, 0), GPU_ROW_THREADS, GPU_ROW_THREADS, 1, false);
        l->grid[1] = gpu_aff(GPU_ROW_CHUNKS, 0, 0);
        gpu_arg_ptr(x, STRATA_GPU_SCRATCH, gpu_aff(GPU_SCRATCH_PARTIALS, 0, 0), gpu_aff(pbytes, 0, 0), true, -1);
        gpu_arg_value(x, a, false);
        gpu_arg_i64(x, gpu_aff(0, 1, 0));
        gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
        gpu_launch(x, k2, n->id, gpu_aff(n->width, 0, 0), GPU_ROW_THREADS, GPU_ROW_THREADS, 1, x->ly->home[n->id]);
        gpu_arg_value(x, n, true);
        gpu_arg_ptr(x, STRATA_GPU_SCRATCH, gpu_aff(GPU_SCRATCH_PARTIALS, 0, 0), gpu_aff(pbytes, 0, 0), false, -1);
        gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
        return;
    }
    if (n->tok)
        die("lower: %%%d (%s): a token op outside a row kernel", n->id, ir_op_info[n->op].text);
    bool ew = ir_op_info[n->op].elementwise, red = ir_op_info[n->op].reduction;
    if (!ew && !red)
        die("lower: %s is not a loop op", ir_op_info[n->op].text);
    int ar = ir_op_info[n->op].arity;
    char key[256];
    size_t kl = (size_t)snprintf(key, sizeof key, "loop %s %.17g %lldx%lld", ir_op_info[n->op].text,
                                 n->op == IR_POWC ? n->num : 0, (long long)n->rows, (long long)n->width);
    for (int a = 0; a < ar; a++) {
        const IrNode *o = n->in[a];
        if (o->tok || (o->op != IR_CONST && !(o->width == n->width || o->width == 1)))
            die("lower: %%%d (%s): operand %%%d does not broadcast to the result", n->id, ir_op_info[n->op].text,
                o->id);
        kl += (size_t)snprintf(key + kl, sizeof key - kl, " %d.%lldx%lld", o->op == IR_CONST, (long long)o->rows,
                               (long long)o->width);
    }
    int ki = gpu_find(x, key);
    if (ki < 0) { /* (y, operands: ptr, or float for a CONST), one CTA striding */
        LLVMTypeRef t[3] = {cg->ptr};
        for (int a = 0; a < ar; a++)
            t[1 + a] = n->in[a]->op == IR_CONST ? cg->real : cg->ptr;
        ki = gpu_begin(x, key, t, (unsigned)(1 + ar));
        LLVMValueRef y = gpu_param(x, 0), step = cg_i64(cg, GPU_ROW_THREADS), tid = gpu_sreg(x, "tid.x");
        if (ew) {
            Loop l = gpu_loop_begin(x, tid, cg_i64(cg, n->rows * n->width), step, "i");
            LLVMValueRef r = LLVMBuildSDiv(cg->b, l.i, cg_i64(cg, n->width), "");
            LLVMValueRef c = LLVMBuildSRem(cg->b, l.i, cg_i64(cg, n->width), "");
            LLVMValueRef v0 = operand_at(x, n, n->in[0], gpu_param(x, 1), r, c);
            LLVMValueRef v = ar == 2 ? lower_binary(cg, n, v0, operand_at(x, n, n->in[1], gpu_param(x, 2), r, c))
                                     : lower_unary(cg, n, v0);
            ST(v, cg_elem(cg, y, l.i));
            gpu_loop_end(x, &l, step);
        } else {
            const IrNode *a = n->in[0];
            if (n->width != 1 || a->rows != n->rows)
                die("lower: %%%d (%s): reduction shape is not (rows of the operand, 1)", n->id,
                    ir_op_info[n->op].text);
            Loop l = gpu_loop_begin(x, tid, cg_i64(cg, n->rows), step, "r");
            LLVMValueRef acc = gpu_local(x, lower_reduce_init(cg, n));
            Loop lc = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, a->width), NULL, "c");
            LLVMValueRef v = a->op == IR_CONST ? gpu_param(x, 1)
                                               : LD(cg_elem(cg, gpu_param(x, 1), ADD(MUL(l.i, cg_i64(cg, a->width)), lc.i)));
            ST(lower_reduce_step(cg, n, LD(acc), v), acc);
            cg_loop_end(cg, &lc, NULL);
            ST(lower_reduce_final(cg, n, LD(acc), a->width), cg_elem(cg, y, l.i));
            gpu_loop_end(x, &l, step);
        }
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(1, 0, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_value(x, n, true);
    for (int a = 0; a < ar; a++) {
        if (n->in[a]->op == IR_CONST)
            gpu_arg_f32(x, n->in[a]->num);
        else
            gpu_arg_value(x, n->in[a], false);
    }
}

/* ---- embedding, rope ---- */

void gpu_embed(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    int ki = gpu_find(x, "embed");
    if (ki < 0) { /* y[r] = table[ids[r]], a CTA per row.  (y, ids, table, d) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64};
        ki = gpu_begin(x, "embed", t, 4);
        LLVMValueRef r = gpu_sreg(x, "ctaid.x"), d = gpu_param(x, 3), step = cg_i64(cg, GPU_ROW_THREADS);
        LLVMValueRef id = LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, cg->i32, gpu_param(x, 1), &r, 1, ""), "");
        LLVMValueRef src = MUL(LLVMBuildSExt(cg->b, id, cg->i64, ""), d);
        Loop l = gpu_loop_begin(x, gpu_sreg(x, "tid.x"), d, step, "c");
        ST(LD(cg_elem(cg, gpu_param(x, 2), ADD(src, l.i))), cg_elem(cg, gpu_param(x, 0), ADD(MUL(r, d), l.i)));
        gpu_loop_end(x, &l, step);
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(0, 1, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, n->in[0], false);
    gpu_arg_value(x, n->in[1], false);
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
}

/* EMBED_GRAD of the token ids: a CTA per row v of the table, a thread per
 * column, over the batch positions holding v in increasing order (from the
 * token index the host builds, plan.h): dt[v][c] = (acc ? dt[v][c] : 0) +
 * g[p1][c] + g[p2][c] + ..., the sum in the CPU's order; every row is
 * written, so nothing is zeroed first.  (dt, index, g, d) */
static void embed_grad_indexed(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    int ki = gpu_find(x, "embed_grad");
    if (ki < 0) {
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64};
        ki = gpu_begin(x, "embed_grad", t, 4);
        LLVMValueRef dt = gpu_param(x, 0), idx = gpu_param(x, 1), gr = gpu_param(x, 2), d = gpu_param(x, 3);
        LLVMValueRef v = gpu_sreg(x, "ctaid.x"), step = cg_i64(cg, GPU_ROW_THREADS), BT = MUL(x->kB, x->kT);
#define IDX(i_) LLVMBuildSExt(cg->b, LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, cg->i32, idx, (LLVMValueRef[]){(i_)}, 1, ""), ""), cg->i64, "")
        LLVMValueRef p0 = IDX(ADD(BT, v)), p1 = IDX(ADD(ADD(BT, v), cg_i64(cg, 1)));
        LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
        Loop lc = gpu_loop_begin(x, gpu_sreg(x, "tid.x"), d, step, "c");
        LLVMValueRef out = cg_elem(cg, dt, ADD(MUL(v, d), lc.i));
        LLVMValueRef s = gpu_local(x, LLVMBuildSelect(cg->b, keep, LD(out), cg_real(cg, 0), ""));
        Loop lp = cg_loop_begin(cg, p0, p1, NULL, "p");
        ST(FADD(LD(s), LD(cg_elem(cg, gr, ADD(MUL(IDX(lp.i), d), lc.i)))), s);
        cg_loop_end(cg, &lp, NULL);
#undef IDX
        ST(LD(s), out);
        gpu_loop_end(x, &lc, step);
        gpu_end(x);
    }
    const IrNode *g = n->in[1];
    if (x->index_rows && x->index_rows != n->rows)
        die("lower: %%%d: two embedding tables of different sizes read the tokens", n->id);
    x->index_rows = n->rows;
    gpu_launch(x, ki, n->id, gpu_aff(n->rows, 0, 0), 1, GPU_ROW_THREADS, 1, x->ly->home[n->id]);
    gpu_arg_value(x, n, true);
    gpu_arg_ptr(x, STRATA_GPU_TOKEN_INDEX, gpu_aff(0, 0, 0), gpu_aff((n->rows + 1) * 4, 4, 0), false, -1);
    gpu_arg_value(x, g, false);
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
}

void gpu_embed_grad(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    if (n->in[0]->op == IR_INPUT_TOKENS && n->in[1]->tok) {
        embed_grad_indexed(x, n);
        return;
    }
    int ki = gpu_find(x, "embed_grad_columns");
    if (ki < 0) { /* a thread per column c: zero it (unless acc), then rows in order.  (dt, ids, g, rows, vocab, d) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i64};
        ki = gpu_begin(x, "embed_grad_columns", t, 6);
        LLVMValueRef dt = gpu_param(x, 0), ids = gpu_param(x, 1), gr = gpu_param(x, 2), rows = gpu_param(x, 3),
                     vocab = gpu_param(x, 4), d = gpu_param(x, 5), c = gpu_global_id(x);
        LLVMBasicBlockRef join = cg_if(cg, LT(c, d), "col");
        LLVMBasicBlockRef jz = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, x->kacc, cg_i32(cg, 0), ""), "zero");
        Loop lz = cg_loop_begin(cg, cg_i64(cg, 0), vocab, NULL, "v");
        ST(cg_real(cg, 0), cg_elem(cg, dt, ADD(MUL(lz.i, d), c)));
        cg_loop_end(cg, &lz, NULL);
        cg_endif(cg, jz);
        Loop l = cg_loop_begin(cg, cg_i64(cg, 0), rows, NULL, "r");
        LLVMValueRef id = LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, cg->i32, ids, &l.i, 1, ""), "");
        LLVMValueRef p = cg_elem(cg, dt, ADD(MUL(LLVMBuildSExt(cg->b, id, cg->i64, ""), d), c));
        ST(FADD(LD(p), LD(cg_elem(cg, gr, ADD(MUL(l.i, d), c)))), p);
        cg_loop_end(cg, &l, NULL);
        cg_endif(cg, join);
        gpu_end(x);
    }
    const IrNode *g = n->in[1];
    gpu_launch(x, ki, n->id, gpu_aff(n->width, 0, 0), GPU_ROW_THREADS, GPU_ROW_THREADS, 1, x->ly->home[n->id]);
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, n->in[0], false);
    gpu_arg_value(x, g, false);
    gpu_arg_i64(x, gpu_rows_of(g));
    gpu_arg_i64(x, gpu_aff(n->rows, 0, 0));
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
}

void gpu_rope(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    int64_t hd = n->width / n->heads;
    if (hd % 2 || !n->tok || !n->in[0]->tok || n->in[0]->width != n->width)
        die("lower: %%%d: rope needs (B,T,heads x even head size)", n->id);
    bool inv = n->op == IR_ROPE_GRAD;
    const char *key = inv ? "rope_inverse" : "rope";
    int ki = gpu_find(x, key);
    if (ki < 0) { /* a CTA per row, a thread per pair.  (y, x, table, W, hd) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64};
        ki = gpu_begin(x, key, t, 5);
        LLVMValueRef y = gpu_param(x, 0), xs = gpu_param(x, 1), tab = gpu_param(x, 2), W = gpu_param(x, 3),
                     hdv = gpu_param(x, 4), r = gpu_sreg(x, "ctaid.x"), step = cg_i64(cg, GPU_ROW_THREADS);
        LLVMValueRef half = LLVMBuildSDiv(cg->b, hdv, cg_i64(cg, 2), ""), pos = LLVMBuildSRem(cg->b, r, x->kT, "");
        Loop l = gpu_loop_begin(x, gpu_sreg(x, "tid.x"), LLVMBuildSDiv(cg->b, W, cg_i64(cg, 2), ""), step, "p");
        LLVMValueRef h = LLVMBuildSDiv(cg->b, l.i, half, ""), i = LLVMBuildSRem(cg->b, l.i, half, "");
        LLVMValueRef base = ADD(MUL(r, W), MUL(h, hdv));
        LLVMValueRef pa = ADD(base, i), pb = ADD(pa, half);
        LLVMValueRef a = LD(cg_elem(cg, xs, pa)), b = LD(cg_elem(cg, xs, pb));
        LLVMValueRef cs = LD(cg_elem(cg, tab, ADD(MUL(pos, hdv), i)));
        LLVMValueRef sn = LD(cg_elem(cg, tab, ADD(ADD(MUL(pos, hdv), half), i)));
        if (inv)
            sn = LLVMBuildFNeg(cg->b, sn, "");
        ST(FSUB(FMUL(a, cs), FMUL(b, sn)), cg_elem(cg, y, pa));
        ST(FADD(FMUL(a, sn), FMUL(b, cs)), cg_elem(cg, y, pb));
        gpu_loop_end(x, &l, step);
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(0, 1, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, n->in[0], false);
    gpu_arg_table(x, n);
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
    gpu_arg_i64(x, gpu_aff(hd, 0, 0));
}

/* ---- cross-entropy ---- */

void gpu_cross_entropy(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    const IrNode *lg = n->in[0];
    if (!lg->tok || n->tok || n->width != 1)
        die("lower: %%%d: cross_entropy is not logits -> scalar", n->id);
    int ki = gpu_find(x, "ce_rows");
    if (ki < 0) { /* a CTA per row.  (aux: lse then row losses; logits, targets, mask, V) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64};
        ki = gpu_begin(x, "ce_rows", t, 5);
        LLVMValueRef aux = gpu_param(x, 0), lgp = gpu_param(x, 1), tg = gpu_param(x, 2), mask = gpu_param(x, 3),
                     V = gpu_param(x, 4);
        LLVMValueRef scratch = gpu_shared(x, cg->real, GPU_ROW_THREADS, "red");
        LLVMValueRef r = gpu_sreg(x, "ctaid.x"), tid = gpu_sreg(x, "tid.x"), step = cg_i64(cg, GPU_ROW_THREADS);
        LLVMValueRef BT = MUL(x->kB, x->kT), first = LLVMBuildICmp(cg->b, LLVMIntEQ, tid, cg_i64(cg, 0), "");
        LLVMValueRef mr = LD(cg_elem(cg, mask, r)), row = MUL(r, V);
        LLVMValueRef lsep = cg_elem(cg, aux, r), lossp = cg_elem(cg, aux, ADD(BT, r));
        LLVMValueRef off = LLVMBuildFCmp(cg->b, LLVMRealOEQ, mr, cg_real(cg, 0), "");
        LLVMValueRef fn = cg->fn;
        LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(cg->ctx, fn, "masked"),
                          body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "row"),
                          done = LLVMAppendBasicBlockInContext(cg->ctx, fn, "done");
        LLVMBuildCondBr(cg->b, off, skip, body); /* uniform over the CTA */
        LLVMPositionBuilderAtEnd(cg->b, skip);
        LLVMBasicBlockRef j0 = cg_if(cg, first, "zero");
        ST(cg_real(cg, 0), lsep);
        ST(cg_real(cg, 0), lossp);
        cg_endif(cg, j0);
        LLVMBuildBr(cg->b, done);
        LLVMPositionBuilderAtEnd(cg->b, body);
        static IrNode mx = {.op = IR_MAX}, sm = {.op = IR_SUM};
        LLVMValueRef m = gpu_local(x, cg_real(cg, -INFINITY));
        Loop l = gpu_loop_begin(x, tid, V, step, "c");
        ST(lower_reduce_step(cg, &mx, LD(m), LD(cg_elem(cg, lgp, ADD(row, l.i)))), m);
        gpu_loop_end(x, &l, step);
        LLVMValueRef mxv = gpu_block_reduce(x, LD(m), &mx, scratch);
        LLVMValueRef s = gpu_local(x, cg_real(cg, 0));
        Loop l2 = gpu_loop_begin(x, tid, V, step, "c");
        ST(FADD(LD(s), gpu_exp(x, FSUB(LD(cg_elem(cg, lgp, ADD(row, l2.i))), mxv))), s);
        gpu_loop_end(x, &l2, step);
        LLVMValueRef sum = gpu_block_reduce(x, LD(s), &sm, scratch);
        LLVMValueRef lse = FADD(mxv, gpu_log(x, sum));
        LLVMBasicBlockRef j1 = cg_if(cg, first, "store");
        LLVMValueRef tgt = LLVMBuildSExt(cg->b, LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, cg->i32, tg, &r, 1, ""), ""), cg->i64, "");
        ST(lse, lsep);
        ST(FMUL(mr, FSUB(lse, LD(cg_elem(cg, lgp, ADD(row, tgt))))), lossp);
        cg_endif(cg, j1);
        LLVMBuildBr(cg->b, done);
        LLVMPositionBuilderAtEnd(cg->b, done);
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(0, 1, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_aux(x, n, true);
    gpu_arg_value(x, lg, false);
    gpu_arg_value(x, n->in[1], false);
    gpu_arg_ptr(x, STRATA_GPU_MASK, gpu_aff(0, 0, 0), gpu_aff(0, 4, 0), false, -1);
    gpu_arg_i64(x, gpu_aff(lg->width, 0, 0));

    ki = gpu_find(x, "ce_mean");
    if (ki < 0) { /* a CTA; sums in double, each thread's rows strided, then a fixed tree.
                   * loss = sum / count (0 if count is 0); the count to the scratch (a double).
                   * (loss, aux, mask, scratch) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
        ki = gpu_begin(x, "ce_mean", t, 4);
        LLVMValueRef red = gpu_shared(x, cg->f64, GPU_ROW_THREADS, "red64");
        LLVMValueRef BT = MUL(x->kB, x->kT), tid = gpu_sreg(x, "tid.x"), step = cg_i64(cg, GPU_ROW_THREADS);
        LLVMValueRef sum = gpu_local(x, LLVMConstReal(cg->f64, 0)), cnt = gpu_local(x, LLVMConstReal(cg->f64, 0));
        Loop l = gpu_loop_begin(x, tid, BT, step, "r");
        LLVMValueRef rl = LLVMBuildFPExt(cg->b, LD(cg_elem(cg, gpu_param(x, 1), ADD(BT, l.i))), cg->f64, "");
        LLVMValueRef mk = LLVMBuildFPExt(cg->b, LD(cg_elem(cg, gpu_param(x, 2), l.i)), cg->f64, "");
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f64, sum, ""), rl, ""), sum);
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f64, cnt, ""), mk, ""), cnt);
        gpu_loop_end(x, &l, step);
        LLVMValueRef tot = gpu_block_reduce(x, LLVMBuildLoad2(cg->b, cg->f64, sum, ""), NULL, red);
        LLVMValueRef c = gpu_block_reduce(x, LLVMBuildLoad2(cg->b, cg->f64, cnt, ""), NULL, red);
        LLVMBasicBlockRef join = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, tid, cg_i64(cg, 0), ""), "store");
        LLVMValueRef q = LLVMBuildFDiv(cg->b, tot, c, "");
        LLVMValueRef nz = LLVMBuildFCmp(cg->b, LLVMRealUNE, c, LLVMConstReal(cg->f64, 0), "");
        ST(LLVMBuildSelect(cg->b, nz, LLVMBuildFPTrunc(cg->b, q, cg->real, ""), cg_real(cg, 0), ""), gpu_param(x, 0));
        LLVMBuildStore(cg->b, c, gpu_param(x, 3));
        cg_endif(cg, join);
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(1, 0, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_value(x, n, true);
    gpu_arg_aux(x, n, false);
    gpu_arg_ptr(x, STRATA_GPU_MASK, gpu_aff(0, 0, 0), gpu_aff(0, 4, 0), false, -1);
    gpu_arg_ptr(x, STRATA_GPU_SCRATCH, gpu_aff(0, 0, 0), gpu_aff(8, 0, 0), true, -1);
}

void gpu_ce_grad(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    const IrNode *lg = n->in[0], *gn = n->in[2], *ce = n->saved;
    if (!n->tok || n->width != lg->width || gn->tok || gn->width != 1 || !ce || ce->op != IR_CROSS_ENTROPY)
        die("lower: %%%d: cross_entropy_grad is not (B,T,V) with a scalar gradient", n->id);
    int ki = gpu_find(x, "ce_grad");
    if (ki < 0) { /* a CTA per row; count: the mask's sum that ce_mean left in the scratch.
                   * (d, logits, targets, mask, aux, g, V, scratch) */
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->ptr};
        ki = gpu_begin(x, "ce_grad", t, 8);
        LLVMValueRef d = gpu_param(x, 0), lgp = gpu_param(x, 1), tg = gpu_param(x, 2), mask = gpu_param(x, 3),
                     aux = gpu_param(x, 4), gp = gpu_param(x, 5), V = gpu_param(x, 6);
        LLVMValueRef r = gpu_sreg(x, "ctaid.x"), tid = gpu_sreg(x, "tid.x"), step = cg_i64(cg, GPU_ROW_THREADS);
        LLVMValueRef row = MUL(r, V);
        LLVMValueRef count = LLVMBuildLoad2(cg->b, cg->f64, gpu_param(x, 7), "count"); /* ce_mean's */
        LLVMValueRef mr = LD(cg_elem(cg, mask, r));
        LLVMValueRef zero = LLVMBuildOr(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOEQ, mr, cg_real(cg, 0), ""),
                                        LLVMBuildFCmp(cg->b, LLVMRealOEQ, count, LLVMConstReal(cg->f64, 0), ""), "");
        LLVMValueRef w64 = LLVMBuildFDiv(cg->b,
                                         LLVMBuildFMul(cg->b, LLVMBuildFPExt(cg->b, LD(gp), cg->f64, ""),
                                                       LLVMBuildFPExt(cg->b, mr, cg->f64, ""), ""),
                                         count, "");
        LLVMValueRef w = LLVMBuildSelect(cg->b, zero, cg_real(cg, 0), LLVMBuildFPTrunc(cg->b, w64, cg->real, ""), "");
        LLVMValueRef ls = LD(cg_elem(cg, aux, r));
        /* a masked row's target is not read (it may be -100) */
        LLVMValueRef tp = LLVMBuildGEP2(cg->b, cg->i32, tg, &r, 1, "");
        LLVMValueRef tgt = LLVMBuildSelect(cg->b, zero, cg_i64(cg, -1),
                                           LLVMBuildSExt(cg->b, LLVMBuildLoad2(cg->b, cg->i32, tp, ""), cg->i64, ""), "");
        Loop l2 = gpu_loop_begin(x, tid, V, step, "j");
        LLVMValueRef e = FMUL(gpu_exp(x, FSUB(LD(cg_elem(cg, lgp, ADD(row, l2.i))), ls)), w);
        LLVMValueRef hit = LLVMBuildICmp(cg->b, LLVMIntEQ, l2.i, tgt, "");
        e = LLVMBuildSelect(cg->b, hit, FSUB(e, w), e, "");
        ST(LLVMBuildSelect(cg->b, zero, cg_real(cg, 0), e, ""), cg_elem(cg, d, ADD(row, l2.i)));
        gpu_loop_end(x, &l2, step);
        gpu_end(x);
    }
    gpu_launch(x, ki, n->id, gpu_aff(0, 1, 0), 1, GPU_ROW_THREADS, 1, false);
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, lg, false);
    gpu_arg_value(x, n->in[1], false);
    gpu_arg_ptr(x, STRATA_GPU_MASK, gpu_aff(0, 0, 0), gpu_aff(0, 4, 0), false, -1);
    gpu_arg_aux(x, ce, false);
    gpu_arg_value(x, gn, false);
    gpu_arg_i64(x, gpu_aff(lg->width, 0, 0));
    gpu_arg_ptr(x, STRATA_GPU_SCRATCH, gpu_aff(0, 0, 0), gpu_aff(8, 0, 0), false, -1);
}

/* ---- gradient copies and zeroing ---- */

static int copy_kernel(Gpu *x, bool zero)
{
    Cg *cg = &x->cg;
    const char *key = zero ? "zero" : "grad_store";
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->i64, cg->ptr};
    ki = gpu_begin(x, key, t, zero ? 2 : 3); /* (dst, n[, src]): dst = 0, or dst = src / dst += src (acc) */
    LLVMValueRef i = gpu_global_id(x);
    LLVMBasicBlockRef join = cg_if(cg, LT(i, gpu_param(x, 1)), "in");
    LLVMValueRef dp = cg_elem(cg, gpu_param(x, 0), i);
    if (zero) {
        ST(cg_real(cg, 0), dp);
    } else {
        LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
        LLVMValueRef prev = LLVMBuildSelect(cg->b, keep, LD(dp), cg_real(cg, 0), "");
        ST(FADD(prev, LD(cg_elem(cg, gpu_param(x, 2), i))), dp);
    }
    cg_endif(cg, join);
    gpu_end(x);
    return ki;
}

void gpu_grad_store(Gpu *x, StrataGpuAffine dst_off, const IrNode *src, int64_t n)
{
    int ki = copy_kernel(x, false);
    gpu_launch(x, ki, src->id, gpu_aff(n, 0, 0), 256, 256, 1, true);
    gpu_arg_ptr(x, STRATA_GPU_GRADS, dst_off, gpu_aff(n * 4, 0, 0), true, -1);
    gpu_arg_i64(x, gpu_aff(n, 0, 0));
    gpu_arg_value(x, src, false);
}

void gpu_zero(Gpu *x, StrataGpuBuf buf, StrataGpuAffine off, int64_t n)
{
    int ki = copy_kernel(x, true);
    gpu_launch(x, ki, -1, gpu_aff(n, 0, 0), 256, 256, 1, false);
    gpu_arg_ptr(x, buf, off, gpu_aff(n * 4, 0, 0), true, -1);
    gpu_arg_i64(x, gpu_aff(n, 0, 0));
}
