/* nvptx_kern.c - the GPU kernels of the fused schedule (nvptx.h), each
 * built once per structure key and launched once per node or row group
 * with that node's places as arguments.  Simple, correct designs (see
 * docs/gpu-lowering.md for what is not fast yet):
 *   rows      a CTA of GPU_ROW_THREADS per token row; members in order: a
 *             wide stored member is a strided column loop (unstored wide
 *             values recomputed from their operands inside the loop that
 *             needs them), a reduction a column loop then a fixed-order
 *             shared-memory tree, a width-1 member a scalar in registers
 *   gemm      fp32: 64 x 64 tiles of C through shared memory, 4 x 4 per
 *             thread in registers, k in order (beta 1 when accumulating);
 *             bf16: mma.sync on tensor cores, fp32 accumulation
 *   attention FlashAttention-style: a CTA per tile of 64 positions of one
 *             (sequence, head), a thread per position with its own online
 *             softmax, the other side's rows staged through shared memory
 *             in tiles; backward as dq per query and dk, dv per key, from
 *             the saved lse
 *   others    embed, embed_grad (a CTA per table row over its positions in
 *             order, from the host's token index: the CPU's sums), rope (tables filled by the host), cross-entropy rows
 *             and mean (in double), its gradient, sums over rows in two
 *             stages (chunks of rows, then the chunks in order),
 *             parameter-shaped loops, gradient copies. */
#include "lower/nvptx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LD(p_) LLVMBuildLoad2(cg->b, cg->real, (p_), "")
#define ST(v_, p_) LLVMBuildStore(cg->b, (v_), (p_))
#define MUL(x_, y_) LLVMBuildMul(cg->b, (x_), (y_), "")
#define ADD(x_, y_) LLVMBuildAdd(cg->b, (x_), (y_), "")
#define FADD(x_, y_) cg_fop(cg, LLVMFAdd, (x_), (y_), FM_EW)
#define FSUB(x_, y_) cg_fop(cg, LLVMFSub, (x_), (y_), FM_EW)
#define FMUL(x_, y_) cg_fop(cg, LLVMFMul, (x_), (y_), FM_EW)
#define LT(x_, y_) LLVMBuildICmp(cg->b, LLVMIntSLT, (x_), (y_), "")

/* The exp of the inline polynomial, through EXP's formula in arith.c. */
static LLVMValueRef gexp(Gpu *x, LLVMValueRef v)
{
    static IrNode e = {.op = IR_EXP};
    return lower_unary(&x->cg, &e, v);
}

static LLVMValueRef glog(Gpu *x, LLVMValueRef v)
{
    static IrNode e = {.op = IR_LOG};
    return lower_unary(&x->cg, &e, v);
}

/* ctaid.x * ntid.x + tid.x */
static LLVMValueRef global_id(Gpu *x)
{
    Cg *cg = &x->cg;
    return ADD(MUL(gpu_sreg(x, "ctaid.x"), gpu_sreg(x, "ntid.x")), gpu_sreg(x, "tid.x"));
}

/* A REAL local: alloca + initial value. */
static LLVMValueRef local(Gpu *x, LLVMValueRef init)
{
    Cg *cg = &x->cg;
    LLVMValueRef a = cg_alloca(cg, LLVMTypeOf(init), "v");
    ST(init, a);
    return a;
}

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
            LLVMValueRef acc = local(x, lower_reduce_init(cg, n));
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
            LLVMValueRef c = global_id(x), j = gpu_sreg(x, "ctaid.y");
            LLVMValueRef cs = LLVMBuildSDiv(cg->b, ADD(rows, cg_i64(cg, GPU_ROW_CHUNKS - 1)), cg_i64(cg, GPU_ROW_CHUNKS), "");
            LLVMBasicBlockRef join = cg_if(cg, LT(c, W), "col");
            LLVMValueRef r0 = MUL(j, cs), r1 = ADD(r0, cs);
            r1 = LLVMBuildSelect(cg->b, LT(r1, rows), r1, rows, "");
            LLVMValueRef s = local(x, cg_real(cg, 0));
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
            LLVMValueRef y = gpu_param(x, 0), part = gpu_param(x, 1), W = gpu_param(x, 2), c = global_id(x);
            LLVMBasicBlockRef join = cg_if(cg, LT(c, W), "col");
            LLVMValueRef yp = cg_elem(cg, y, c);
            LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
            LLVMValueRef s = local(x, LLVMBuildSelect(cg->b, keep, LD(yp), cg_real(cg, 0), ""));
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
            LLVMValueRef acc = local(x, lower_reduce_init(cg, n));
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

/* ---- matrix products ---- */

/* C (M, N) (+)= op(A) op(B) in fp32: a CTA of GPU_TILE x GPU_TILE threads
 * computes a GEMM_TILE x GEMM_TILE tile of C, each thread 4 x 4 elements
 * (rows ty + 16 i, columns tx + 16 j) in registers, over K in steps of 16
 * staged through shared memory ([k][m] and [k][n], loaded along the
 * operand's contiguous dimension); each element sums k in order.
 * (C, A, B, M, N, K, lda, ldb, ldc) */
#define GEMM_TILE 64
#define GEMM_K 16
static int gemm_kernel(Gpu *x, bool ta, bool tb)
{
    Cg *cg = &x->cg;
    char key[32];
    snprintf(key, sizeof key, "gemm_%c%c", ta ? 't' : 'n', tb ? 't' : 'n');
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 9);
    LLVMValueRef C = gpu_param(x, 0), A = gpu_param(x, 1), Bm = gpu_param(x, 2), M = gpu_param(x, 3),
                 N = gpu_param(x, 4), K = gpu_param(x, 5), lda = gpu_param(x, 6), ldb = gpu_param(x, 7),
                 ldc = gpu_param(x, 8);
    LLVMValueRef As = gpu_shared(x, cg->real, GEMM_TILE * GEMM_K, "As");
    LLVMValueRef Bs = gpu_shared(x, cg->real, GEMM_TILE * GEMM_K, "Bs");
    LLVMValueRef tx = gpu_sreg(x, "tid.x"), ty = gpu_sreg(x, "tid.y"), zero = cg_i64(cg, 0);
    LLVMValueRef lid = ADD(MUL(ty, cg_i64(cg, GPU_TILE)), tx);
    LLVMValueRef m0 = MUL(gpu_sreg(x, "ctaid.x"), cg_i64(cg, GEMM_TILE)), n0 = MUL(gpu_sreg(x, "ctaid.y"), cg_i64(cg, GEMM_TILE));
    LLVMValueRef acc = cg_alloca(cg, LLVMArrayType2(cg->real, 16), "acc");
    for (int i = 0; i < 16; i++)
        ST(cg_real(cg, 0), cg_elem(cg, acc, cg_i64(cg, i)));
    Loop l = gpu_loop_begin(x, zero, K, cg_i64(cg, GEMM_K), "k0");
    int per = GEMM_TILE * GEMM_K / (GPU_TILE * GPU_TILE);
    for (int e = 0; e < per; e++) {
        LLVMValueRef idx = ADD(lid, cg_i64(cg, e * GPU_TILE * GPU_TILE));
        /* A: (m, k), contiguous along k unless transposed */
        LLVMValueRef m = ta ? LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_TILE), "") : LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_K), "");
        LLVMValueRef k = ta ? LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_TILE), "") : LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_K), "");
        LLVMValueRef gm = ADD(m0, m), gk = ADD(l.i, k);
        LLVMValueRef in = LLVMBuildAnd(cg->b, LT(gm, M), LT(gk, K), "");
        LLVMValueRef ia = ta ? ADD(MUL(gk, lda), gm) : ADD(MUL(gm, lda), gk);
        LLVMValueRef va = LD(cg_elem(cg, A, LLVMBuildSelect(cg->b, in, ia, zero, "")));
        ST(LLVMBuildSelect(cg->b, in, va, cg_real(cg, 0), ""), cg_elem(cg, As, ADD(MUL(k, cg_i64(cg, GEMM_TILE)), m)));
        /* B: (k, n), contiguous along n unless transposed */
        LLVMValueRef n = tb ? LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_K), "") : LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_TILE), "");
        LLVMValueRef kb = tb ? LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_K), "") : LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_TILE), "");
        LLVMValueRef gn = ADD(n0, n), gkb = ADD(l.i, kb);
        LLVMValueRef inb = LLVMBuildAnd(cg->b, LT(gn, N), LT(gkb, K), "");
        LLVMValueRef ib = tb ? ADD(MUL(gn, ldb), gkb) : ADD(MUL(gkb, ldb), gn);
        LLVMValueRef vb = LD(cg_elem(cg, Bm, LLVMBuildSelect(cg->b, inb, ib, zero, "")));
        ST(LLVMBuildSelect(cg->b, inb, vb, cg_real(cg, 0), ""), cg_elem(cg, Bs, ADD(MUL(kb, cg_i64(cg, GEMM_TILE)), n)));
    }
    gpu_barrier(x);
    LLVMValueRef c[16];
    for (int i = 0; i < 16; i++)
        c[i] = LD(cg_elem(cg, acc, cg_i64(cg, i)));
    for (int kk = 0; kk < GEMM_K; kk++) {
        LLVMValueRef av[4], bv[4];
        for (int i = 0; i < 4; i++) {
            av[i] = LD(cg_elem(cg, As, ADD(ty, cg_i64(cg, kk * GEMM_TILE + 16 * i))));
            bv[i] = LD(cg_elem(cg, Bs, ADD(tx, cg_i64(cg, kk * GEMM_TILE + 16 * i))));
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                c[i * 4 + j] = FADD(c[i * 4 + j], FMUL(av[i], bv[j]));
    }
    for (int i = 0; i < 16; i++)
        ST(c[i], cg_elem(cg, acc, cg_i64(cg, i)));
    gpu_barrier(x);
    gpu_loop_end(x, &l, cg_i64(cg, GEMM_K));
    LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            LLVMValueRef row = ADD(ADD(m0, ty), cg_i64(cg, 16 * i)), col = ADD(ADD(n0, tx), cg_i64(cg, 16 * j));
            LLVMBasicBlockRef join = cg_if(cg, LLVMBuildAnd(cg->b, LT(row, M), LT(col, N), ""), "out");
            LLVMValueRef cp = cg_elem(cg, C, ADD(MUL(row, ldc), col));
            LLVMValueRef prev = LLVMBuildSelect(cg->b, keep, LD(cp), cg_real(cg, 0), "");
            ST(FADD(prev, LD(cg_elem(cg, acc, cg_i64(cg, i * 4 + j)))), cp);
            cg_endif(cg, join);
        }
    gpu_end(x);
    return ki;
}

/* ---- bf16 tensor cores: mma.sync m16n8k16, fp32 accumulation ---- */

#define BF_TILE 128  /* the CTA's tile of C: 128 x 128, eight warps (2 x 4) of 64 x 32 */
#define BF_K 32      /* K staged per step: two mma k-steps of 16 */
#define BF_THREADS 256
#define BF_MI 4      /* a warp's mma tiles: BF_MI (m16) x BF_NI (n8) */
#define BF_NI 4

/* fp32 -> bf16 bits (i32, low 16), nearest even, NaN kept quiet: the
 * rounding of runtime/core/gemm_kernels.c's bf16_bits. */
static LLVMValueRef to_bf16(Gpu *x, LLVMValueRef f)
{
    Cg *cg = &x->cg;
    LLVMValueRef u = LLVMBuildBitCast(cg->b, f, cg->i32, "");
    LLVMValueRef lsb = LLVMBuildAnd(cg->b, LLVMBuildLShr(cg->b, u, cg_i32(cg, 16), ""), cg_i32(cg, 1), "");
    LLVMValueRef r = LLVMBuildLShr(cg->b, ADD(ADD(u, cg_i32(cg, 0x7fff)), lsb), cg_i32(cg, 16), "");
    LLVMValueRef q = LLVMBuildOr(cg->b, LLVMBuildLShr(cg->b, u, cg_i32(cg, 16), ""), cg_i32(cg, 0x40), "");
    LLVMValueRef nan = LLVMBuildICmp(cg->b, LLVMIntUGT, LLVMBuildAnd(cg->b, u, cg_i32(cg, 0x7fffffff), ""),
                                     cg_i32(cg, 0x7f800000), "");
    return LLVMBuildSelect(cg->b, nan, q, r, "");
}

/* d[0..4) = mma(a[0..4), b[0..2), c[0..4)) of one lane (values). */
static void mma(Gpu *x, LLVMValueRef *a, LLVMValueRef *b, LLVMValueRef *c, LLVMValueRef *d)
{
    Cg *cg = &x->cg;
    if (x->emulate) { /* through the hook strata_emu_mma(a, b, c, d) */
        LLVMValueRef pa = cg_alloca(cg, LLVMArrayType2(cg->i32, 4), "ma"), pb = cg_alloca(cg, LLVMArrayType2(cg->i32, 2), "mb");
        LLVMValueRef pc = cg_alloca(cg, LLVMArrayType2(cg->real, 4), "mc"), pd = cg_alloca(cg, LLVMArrayType2(cg->real, 4), "md");
        for (int i = 0; i < 4; i++) {
            LLVMValueRef ix = cg_i64(cg, i);
            ST(a[i], LLVMBuildGEP2(cg->b, cg->i32, pa, &ix, 1, ""));
            ST(c[i], cg_elem(cg, pc, ix));
            if (i < 2)
                ST(b[i], LLVMBuildGEP2(cg->b, cg->i32, pb, &ix, 1, ""));
        }
        LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, "strata_emu_mma");
        if (!gv) {
            gv = LLVMAddGlobal(cg->mod, cg->ptr, "strata_emu_mma");
            LLVMSetInitializer(gv, LLVMConstNull(cg->ptr));
        }
        LLVMTypeRef pt[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
        LLVMValueRef args[] = {pa, pb, pc, pd};
        LLVMBuildCall2(cg->b, LLVMFunctionType(cg->voidt, pt, 4, false), LLVMBuildLoad2(cg->b, cg->ptr, gv, ""), args,
                       4, "");
        for (int i = 0; i < 4; i++)
            d[i] = LD(cg_elem(cg, pd, cg_i64(cg, i)));
        return;
    }
    const char *name = "llvm.nvvm.mma.m16n8k16.row.col.bf16";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0);
    LLVMValueRef args[] = {a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], c[2], c[3]};
    LLVMValueRef r = LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0), fn, args, 10, "");
    for (int i = 0; i < 4; i++)
        d[i] = LLVMBuildExtractValue(cg->b, r, (unsigned)i, "");
}

/* C (M, N) (+)= op(A) op(B) with A and B rounded to bf16, on tensor cores.
 * A CTA of 8 warps computes a 128 x 128 tile of C, a warp 64 x 32 of it as
 * 4 x 4 mma tiles (m16 n8), over K in steps of 32 staged through shared
 * memory as bf16 (A as [m][k], B as [n][k], so each fragment register is
 * one 32-bit load; the global loads run along the operand's contiguous
 * dimension).  Fragment layouts: PTX ISA, "mma.m16n8k16" (.bf16):
 * with g = lane / 4, t = lane % 4, A regs {(g, 2t), (g+8, 2t), (g, 2t+8),
 * (g+8, 2t+8)} (two columns each), B regs {k 2t, k 2t+8} of column g, C
 * {(g, 2t..2t+1), (g+8, 2t..2t+1)}.  (C, A, B, M, N, K, lda, ldb, ldc) */
static int gemm_bf16_kernel(Gpu *x, bool ta, bool tb)
{
    Cg *cg = &x->cg;
    char key[32];
    snprintf(key, sizeof key, "gemm_bf16_%c%c", ta ? 't' : 'n', tb ? 't' : 'n');
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 9);
    LLVMValueRef C = gpu_param(x, 0), A = gpu_param(x, 1), Bm = gpu_param(x, 2), M = gpu_param(x, 3),
                 N = gpu_param(x, 4), K = gpu_param(x, 5), lda = gpu_param(x, 6), ldb = gpu_param(x, 7),
                 ldc = gpu_param(x, 8);
    LLVMTypeRef i16 = LLVMInt16TypeInContext(cg->ctx);
    LLVMValueRef As = gpu_shared(x, i16, BF_TILE * BF_K, "Ab"), Bs = gpu_shared(x, i16, BF_TILE * BF_K, "Bb");
    LLVMValueRef tid = gpu_sreg(x, "tid.x"), zero = cg_i64(cg, 0);
    LLVMValueRef m0 = MUL(gpu_sreg(x, "ctaid.x"), cg_i64(cg, BF_TILE)), n0 = MUL(gpu_sreg(x, "ctaid.y"), cg_i64(cg, BF_TILE));
    LLVMValueRef warp = LLVMBuildUDiv(cg->b, tid, cg_i64(cg, 32), ""), lane = LLVMBuildURem(cg->b, tid, cg_i64(cg, 32), "");
    LLVMValueRef wm = MUL(LLVMBuildUDiv(cg->b, warp, cg_i64(cg, 4), ""), cg_i64(cg, 16 * BF_MI));
    LLVMValueRef wn = MUL(LLVMBuildURem(cg->b, warp, cg_i64(cg, 4), ""), cg_i64(cg, 8 * BF_NI));
    LLVMValueRef g = LLVMBuildUDiv(cg->b, lane, cg_i64(cg, 4), ""), tq = LLVMBuildURem(cg->b, lane, cg_i64(cg, 4), "");
    LLVMValueRef t2 = MUL(tq, cg_i64(cg, 2));
    enum { NACC = BF_MI * BF_NI * 4 };
    LLVMValueRef acc = cg_alloca(cg, LLVMArrayType2(cg->real, NACC), "acc");
    for (int i = 0; i < NACC; i++)
        ST(cg_real(cg, 0), cg_elem(cg, acc, cg_i64(cg, i)));
    Loop l = gpu_loop_begin(x, zero, K, cg_i64(cg, BF_K), "k0");
    for (int j = 0; j < BF_TILE * BF_K / BF_THREADS; j++) { /* stage the tiles */
        LLVMValueRef idx = ADD(tid, cg_i64(cg, BF_THREADS * j));
        LLVMValueRef kq = cg_i64(cg, BF_K), tq2 = cg_i64(cg, BF_TILE);
        /* A (m, k): consecutive threads along k, or along m when transposed */
        LLVMValueRef r = ta ? LLVMBuildURem(cg->b, idx, tq2, "") : LLVMBuildUDiv(cg->b, idx, kq, "");
        LLVMValueRef kk = ta ? LLVMBuildUDiv(cg->b, idx, tq2, "") : LLVMBuildURem(cg->b, idx, kq, "");
        LLVMValueRef gk = ADD(l.i, kk), gm = ADD(m0, r);
        LLVMValueRef ina = LLVMBuildAnd(cg->b, LT(gm, M), LT(gk, K), "");
        LLVMValueRef ia = ta ? ADD(MUL(gk, lda), gm) : ADD(MUL(gm, lda), gk);
        LLVMValueRef va = LD(cg_elem(cg, A, LLVMBuildSelect(cg->b, ina, ia, zero, "")));
        va = LLVMBuildSelect(cg->b, ina, va, cg_real(cg, 0), "");
        LLVMValueRef ea = ADD(MUL(r, kq), kk);
        ST(LLVMBuildTrunc(cg->b, to_bf16(x, va), i16, ""), LLVMBuildGEP2(cg->b, i16, As, &ea, 1, ""));
        /* B (k, n): consecutive threads along n, or along k when transposed */
        LLVMValueRef nn = tb ? LLVMBuildUDiv(cg->b, idx, kq, "") : LLVMBuildURem(cg->b, idx, tq2, "");
        LLVMValueRef kb = tb ? LLVMBuildURem(cg->b, idx, kq, "") : LLVMBuildUDiv(cg->b, idx, tq2, "");
        LLVMValueRef gkb = ADD(l.i, kb), gn = ADD(n0, nn);
        LLVMValueRef inb = LLVMBuildAnd(cg->b, LT(gn, N), LT(gkb, K), "");
        LLVMValueRef ib = tb ? ADD(MUL(gn, ldb), gkb) : ADD(MUL(gkb, ldb), gn);
        LLVMValueRef vb = LD(cg_elem(cg, Bm, LLVMBuildSelect(cg->b, inb, ib, zero, "")));
        vb = LLVMBuildSelect(cg->b, inb, vb, cg_real(cg, 0), "");
        LLVMValueRef eb = ADD(MUL(nn, kq), kb);
        ST(LLVMBuildTrunc(cg->b, to_bf16(x, vb), i16, ""), LLVMBuildGEP2(cg->b, i16, Bs, &eb, 1, ""));
    }
    gpu_barrier(x);
    /* 32-bit loads of bf16 pairs: element e of a [BF_TILE][BF_K] i16 tile */
#define PAIR(base, e) LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, i16, (base), (LLVMValueRef[]){(e)}, 1, ""), "")
    for (int ks = 0; ks < BF_K; ks += 16) {
        LLVMValueRef bfrag[BF_NI][2];
        for (int ni = 0; ni < BF_NI; ni++) {
            LLVMValueRef n = ADD(ADD(wn, cg_i64(cg, ni * 8)), g);
            LLVMValueRef e = ADD(ADD(MUL(n, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            bfrag[ni][0] = PAIR(Bs, e);
            bfrag[ni][1] = PAIR(Bs, ADD(e, cg_i64(cg, 8)));
        }
        for (int mi = 0; mi < BF_MI; mi++) {
            LLVMValueRef r0 = ADD(ADD(wm, cg_i64(cg, mi * 16)), g), r1 = ADD(r0, cg_i64(cg, 8));
            LLVMValueRef e0 = ADD(ADD(MUL(r0, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            LLVMValueRef e1 = ADD(ADD(MUL(r1, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            LLVMValueRef a[4] = {PAIR(As, e0), PAIR(As, e1), PAIR(As, ADD(e0, cg_i64(cg, 8))),
                                 PAIR(As, ADD(e1, cg_i64(cg, 8)))};
            for (int ni = 0; ni < BF_NI; ni++) {
                LLVMValueRef c[4], d[4];
                for (int i = 0; i < 4; i++)
                    c[i] = LD(cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)));
                mma(x, a, bfrag[ni], c, d);
                for (int i = 0; i < 4; i++)
                    ST(d[i], cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)));
            }
        }
    }
#undef PAIR
    gpu_barrier(x);
    gpu_loop_end(x, &l, cg_i64(cg, BF_K));
    LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
    for (int mi = 0; mi < BF_MI; mi++)
        for (int ni = 0; ni < BF_NI; ni++)
            for (int i = 0; i < 4; i++) {
                LLVMValueRef row = ADD(ADD(ADD(m0, wm), cg_i64(cg, mi * 16 + (i >= 2 ? 8 : 0))), g);
                LLVMValueRef col = ADD(ADD(ADD(n0, wn), cg_i64(cg, ni * 8 + (i & 1))), t2);
                LLVMBasicBlockRef join = cg_if(cg, LLVMBuildAnd(cg->b, LT(row, M), LT(col, N), ""), "out");
                LLVMValueRef cp = cg_elem(cg, C, ADD(MUL(row, ldc), col));
                LLVMValueRef prev = LLVMBuildSelect(cg->b, keep, LD(cp), cg_real(cg, 0), "");
                ST(FADD(prev, LD(cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)))), cp);
                cg_endif(cg, join);
            }
    gpu_end(x);
    return ki;
}

/* The launch: M rows (affine), N, K columns. */
static void gemm_launch(Gpu *x, const IrNode *n, bool ta, bool tb, StrataGpuAffine M, int64_t N, StrataGpuAffine K,
                        const IrNode *a, int64_t lda, const IrNode *b, int64_t ldb, int64_t ldc)
{
    int ki = x->bf16 ? gemm_bf16_kernel(x, ta, tb) : gemm_kernel(x, ta, tb);
    int64_t tile = x->bf16 ? BF_TILE : GEMM_TILE;
    StrataGpuLaunch *l = gpu_launch(x, ki, n->id, M, tile, x->bf16 ? BF_THREADS : GPU_TILE, x->bf16 ? 1 : GPU_TILE,
                                    x->ly->home[n->id]);
    l->grid[1] = gpu_aff(N, 0, 0);
    l->grid_div[1] = tile;
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, a, false);
    gpu_arg_value(x, b, false);
    gpu_arg_i64(x, M);
    gpu_arg_i64(x, gpu_aff(N, 0, 0));
    gpu_arg_i64(x, K);
    gpu_arg_i64(x, gpu_aff(lda, 0, 0));
    gpu_arg_i64(x, gpu_aff(ldb, 0, 0));
    gpu_arg_i64(x, gpu_aff(ldc, 0, 0));
}

static StrataGpuAffine rows_of(const IrNode *n)
{
    return n->tok ? gpu_aff(0, 1, 0) : gpu_aff(n->rows, 0, 0);
}

static void gpu_matmul(Gpu *x, const IrNode *n)
{
    const IrNode *a = n->in[0], *w = n->in[1];
    int64_t K = a->width, N = n->width;
    if (w->tok || (n->trans_b ? w->width != K || w->rows != N : w->rows != K || w->width != N) ||
        a->tok != n->tok || (!a->tok && a->rows != n->rows))
        die("lower: %%%d: matmul shapes do not agree", n->id);
    gemm_launch(x, n, false, n->trans_b, rows_of(n), N, gpu_aff(K, 0, 0), a, K, w, n->trans_b ? K : N, N);
}

static void gpu_matmul_grad_w(Gpu *x, const IrNode *n)
{
    const IrNode *a = n->in[0], *b = n->in[1];
    if (n->tok || n->rows != a->width || n->width != b->width || a->tok != b->tok || (!a->tok && a->rows != b->rows))
        die("lower: %%%d: matmul_grad_w result is not [wa, wb]", n->id);
    gemm_launch(x, n, true, false, gpu_aff(a->width, 0, 0), b->width, rows_of(a), a, a->width, b, b->width,
                b->width);
}

/* ---- embedding, rope ---- */

static void gpu_embed(Gpu *x, const IrNode *n)
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
        LLVMValueRef s = local(x, LLVMBuildSelect(cg->b, keep, LD(out), cg_real(cg, 0), ""));
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

static void gpu_embed_grad(Gpu *x, const IrNode *n)
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
                     vocab = gpu_param(x, 4), d = gpu_param(x, 5), c = global_id(x);
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
    gpu_arg_i64(x, rows_of(g));
    gpu_arg_i64(x, gpu_aff(n->rows, 0, 0));
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
}

static void gpu_rope(Gpu *x, const IrNode *n)
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

/* ---- attention: FlashAttention-style tiles ---- */

/* A CTA takes ATT_Q consecutive positions of one (sequence, head), a
 * thread each; the other operand's rows pass through shared memory in
 * tiles of att_tile(hd) rows (two tiles of hd floats within 32 KiB), and
 * each thread runs over a tile's rows in order with its own online
 * softmax: keys (and sums over keys or queries) in increasing position,
 * as the CPU's kernels define the result.  Vectors of hd are unrolled so
 * they stay in registers. */
#define ATT_Q 64
#define ATT_MAX_HD 256

static int64_t att_tile(int64_t hd)
{
    int64_t t = 4096 / hd;
    return t > ATT_Q ? ATT_Q : t;
}

static void att_check(const IrNode *n)
{
    int64_t hd = n->width / n->heads;
    if (n->heads < 1 || n->width % n->heads || hd > ATT_MAX_HD)
        die("lower: %%%d: attention with head size %lld (the GPU kernels take up to %d)", n->id, (long long)hd,
            ATT_MAX_HD);
}

/* The unit of this CTA and thread: (b, h) from ctaid.y, position pos =
 * ctaid.x * ATT_Q + tid (valid: pos < T, else clamped to T-1 for loads). */
typedef struct AttUnit {
    LLVMValueRef b, h, bh, tile0, pos, valid, cpos, tid;
} AttUnit;

static AttUnit att_unit(Gpu *x, LLVMValueRef heads)
{
    Cg *cg = &x->cg;
    AttUnit u;
    u.bh = gpu_sreg(x, "ctaid.y");
    u.b = LLVMBuildSDiv(cg->b, u.bh, heads, "");
    u.h = LLVMBuildSRem(cg->b, u.bh, heads, "");
    u.tid = gpu_sreg(x, "tid.x");
    u.tile0 = MUL(gpu_sreg(x, "ctaid.x"), cg_i64(cg, ATT_Q));
    u.pos = ADD(u.tile0, u.tid);
    u.valid = LT(u.pos, x->kT);
    u.cpos = LLVMBuildSelect(cg->b, u.valid, u.pos, LLVMBuildSub(cg->b, x->kT, cg_i64(cg, 1), ""), "");
    return u;
}

/* Element 0 of row pos of head h in a (B, T, W) buffer. */
static LLVMValueRef att_row(Gpu *x, LLVMValueRef base, const AttUnit *u, LLVMValueRef pos, LLVMValueRef W, int64_t hd)
{
    Cg *cg = &x->cg;
    return cg_elem(cg, base, ADD(MUL(ADD(MUL(u->b, x->kT), pos), W), MUL(u->h, cg_i64(cg, hd))));
}

/* The hd values of a row (registers). */
static void att_load(Gpu *x, LLVMValueRef row, int64_t hd, LLVMValueRef *v)
{
    Cg *cg = &x->cg;
    for (int64_t i = 0; i < hd; i++)
        v[i] = LD(cg_elem(cg, row, cg_i64(cg, i)));
}

/* sum_i a[i] b[i], i in order; b a pointer (shared memory) or values. */
static LLVMValueRef att_dot(Gpu *x, const LLVMValueRef *a, LLVMValueRef bp, const LLVMValueRef *bv, int64_t hd)
{
    Cg *cg = &x->cg;
    LLVMValueRef s = cg_real(cg, 0);
    for (int64_t i = 0; i < hd; i++)
        s = FADD(s, FMUL(a[i], bp ? LD(cg_elem(cg, bp, cg_i64(cg, i))) : bv[i]));
    return s;
}

/* acc[i] = acc[i] * keep + w * src[i] (keep NULL: 1), acc an alloca of hd. */
static void att_axpy(Gpu *x, LLVMValueRef acc, LLVMValueRef keep, LLVMValueRef w, LLVMValueRef srcp,
                     const LLVMValueRef *srcv, int64_t hd)
{
    Cg *cg = &x->cg;
    for (int64_t i = 0; i < hd; i++) {
        LLVMValueRef p = cg_elem(cg, acc, cg_i64(cg, i)), v = LD(p);
        if (keep)
            v = FMUL(v, keep);
        ST(FADD(v, FMUL(w, srcp ? LD(cg_elem(cg, srcp, cg_i64(cg, i))) : srcv[i])), p);
    }
}

static LLVMValueRef att_acc(Gpu *x, int64_t hd)
{
    Cg *cg = &x->cg;
    LLVMValueRef a = cg_alloca(cg, LLVMArrayType2(cg->real, (uint64_t)hd), "acc");
    for (int64_t i = 0; i < hd; i++)
        ST(cg_real(cg, 0), cg_elem(cg, a, cg_i64(cg, i)));
    return a;
}

/* Rows [r0, r0 + tile) of up to two (B, T, W) buffers of head h into shared
 * tiles [tile][hd] (zeros past T), by the CTA's ATT_Q threads. */
static void att_stage(Gpu *x, const AttUnit *u, LLVMValueRef r0, int64_t tile, int64_t hd, LLVMValueRef W,
                      LLVMValueRef src0, LLVMValueRef dst0, LLVMValueRef src1, LLVMValueRef dst1)
{
    Cg *cg = &x->cg;
    LLVMValueRef step = cg_i64(cg, ATT_Q);
    Loop l = gpu_loop_begin(x, u->tid, cg_i64(cg, tile * hd), step, "st");
    LLVMValueRef r = LLVMBuildSDiv(cg->b, l.i, cg_i64(cg, hd), ""), i = LLVMBuildSRem(cg->b, l.i, cg_i64(cg, hd), "");
    LLVMValueRef pos = ADD(r0, r), in = LT(pos, x->kT);
    LLVMValueRef cp = LLVMBuildSelect(cg->b, in, pos, cg_i64(cg, 0), "");
    LLVMValueRef srcs[2] = {src0, src1}, dsts[2] = {dst0, dst1};
    for (int k = 0; k < 2; k++) {
        if (!srcs[k])
            continue;
        LLVMValueRef v = LD(cg_elem(cg, att_row(x, srcs[k], u, cp, W, hd), i));
        ST(LLVMBuildSelect(cg->b, in, v, cg_real(cg, 0), ""), cg_elem(cg, dsts[k], l.i));
    }
    gpu_loop_end(x, &l, step);
}

static LLVMValueRef imin(Gpu *x, LLVMValueRef a, LLVMValueRef b)
{
    Cg *cg = &x->cg;
    return LLVMBuildSelect(cg->b, LT(a, b), a, b, "");
}

static void att_launch(Gpu *x, int ki, const IrNode *n)
{
    StrataGpuLaunch *l = gpu_launch(x, ki, n->id, gpu_aff(0, 0, 1), ATT_Q, ATT_Q, 1, false);
    l->grid[1] = (StrataGpuAffine){0, 0, 0, n->heads};
    l->grid_div[1] = 1;
}

/* Forward.  (out, lse, q, k, v, heads, W) */
static void gpu_attention(Gpu *x, const IrNode *n)
{
    Cg *cg = &x->cg;
    att_check(n);
    int64_t hd = n->width / n->heads, KT = att_tile(hd);
    char key[48];
    snprintf(key, sizeof key, "attention_%lld", (long long)hd);
    int ki = gpu_find(x, key);
    if (ki < 0) {
        LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64};
        ki = gpu_begin(x, key, t, 7);
        LLVMValueRef out = gpu_param(x, 0), lse = gpu_param(x, 1), q = gpu_param(x, 2), k = gpu_param(x, 3),
                     v = gpu_param(x, 4), heads = gpu_param(x, 5), W = gpu_param(x, 6);
        LLVMValueRef Ks = gpu_shared(x, cg->real, KT * hd, "Ks"), Vs = gpu_shared(x, cg->real, KT * hd, "Vs");
        AttUnit u = att_unit(x, heads);
        LLVMValueRef scale = cg_real(cg, (float)(1 / sqrt((double)hd)));
        LLVMValueRef qv[ATT_MAX_HD];
        att_load(x, att_row(x, q, &u, u.cpos, W, hd), hd, qv);
        LLVMValueRef acc = att_acc(x, hd), m = local(x, cg_real(cg, -INFINITY)), sum = local(x, cg_real(cg, 0));
        LLVMValueRef kend = imin(x, ADD(u.tile0, cg_i64(cg, ATT_Q)), x->kT);
        Loop lt = gpu_loop_begin(x, cg_i64(cg, 0), kend, cg_i64(cg, KT), "kt");
        att_stage(x, &u, lt.i, KT, hd, W, k, Ks, v, Vs);
        gpu_barrier(x);
        /* keys kt .. min(kt + KT, pos + 1) of this thread's query (none when not valid) */
        LLVMValueRef rmax = imin(x, cg_i64(cg, KT), LLVMBuildSub(cg->b, ADD(u.pos, cg_i64(cg, 1)), lt.i, ""));
        rmax = LLVMBuildSelect(cg->b, u.valid, rmax, cg_i64(cg, 0), "");
        Loop lr = cg_loop_begin(cg, cg_i64(cg, 0), rmax, NULL, "r");
        LLVMValueRef krow = cg_elem(cg, Ks, MUL(lr.i, cg_i64(cg, hd)));
        LLVMValueRef sc = FMUL(att_dot(x, qv, krow, NULL, hd), scale);
        static IrNode mx = {.op = IR_MAX};
        LLVMValueRef m0 = LD(m), m1 = lower_reduce_step(cg, &mx, m0, sc);
        LLVMValueRef corr = gexp(x, FSUB(m0, m1)), p = gexp(x, FSUB(sc, m1));
        ST(FADD(FMUL(LD(sum), corr), p), sum);
        att_axpy(x, acc, corr, p, cg_elem(cg, Vs, MUL(lr.i, cg_i64(cg, hd))), NULL, hd);
        ST(m1, m);
        cg_loop_end(cg, &lr, NULL);
        gpu_barrier(x);
        gpu_loop_end(x, &lt, cg_i64(cg, KT));
        LLVMBasicBlockRef join = cg_if(cg, u.valid, "store");
        LLVMValueRef orow = att_row(x, out, &u, u.pos, W, hd), l = LD(sum);
        for (int64_t i = 0; i < hd; i++)
            ST(cg_fop(cg, LLVMFDiv, LD(cg_elem(cg, acc, cg_i64(cg, i))), l, FM_EW), cg_elem(cg, orow, cg_i64(cg, i)));
        ST(FADD(LD(m), glog(x, l)), cg_elem(cg, lse, ADD(MUL(u.bh, x->kT), u.pos)));
        cg_endif(cg, join);
        gpu_end(x);
    }
    att_launch(x, ki, n);
    gpu_arg_value(x, n, true);
    gpu_arg_aux(x, n, true);
    for (int i = 0; i < 3; i++)
        gpu_arg_value(x, n->in[i], false);
    gpu_arg_i64(x, gpu_aff(n->heads, 0, 0));
    gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
}

/* dq: a thread per query, keys and values staged; p = e^(s - lse),
 * D = g . out of the query, dq = scale sum_u p (g . v_u - D) k_u.
 * (dq; q, k, v, out, lse, g, heads, W) */
static int att_dq_kernel(Gpu *x, int64_t hd)
{
    Cg *cg = &x->cg;
    int64_t KT = att_tile(hd);
    char key[48];
    snprintf(key, sizeof key, "attention_grad_q_%lld", (long long)hd);
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 9);
    LLVMValueRef dq = gpu_param(x, 0), q = gpu_param(x, 1), k = gpu_param(x, 2), v = gpu_param(x, 3),
                 o = gpu_param(x, 4), lse = gpu_param(x, 5), g = gpu_param(x, 6), heads = gpu_param(x, 7),
                 W = gpu_param(x, 8);
    LLVMValueRef Ks = gpu_shared(x, cg->real, KT * hd, "Ks"), Vs = gpu_shared(x, cg->real, KT * hd, "Vs");
    AttUnit u = att_unit(x, heads);
    LLVMValueRef scale = cg_real(cg, (float)(1 / sqrt((double)hd)));
    LLVMValueRef qv[ATT_MAX_HD], gv[ATT_MAX_HD], ov[ATT_MAX_HD];
    att_load(x, att_row(x, q, &u, u.cpos, W, hd), hd, qv);
    att_load(x, att_row(x, g, &u, u.cpos, W, hd), hd, gv);
    att_load(x, att_row(x, o, &u, u.cpos, W, hd), hd, ov);
    LLVMValueRef D = att_dot(x, gv, NULL, ov, hd), ls = LD(cg_elem(cg, lse, ADD(MUL(u.bh, x->kT), u.cpos)));
    LLVMValueRef acc = att_acc(x, hd);
    LLVMValueRef kend = imin(x, ADD(u.tile0, cg_i64(cg, ATT_Q)), x->kT);
    Loop lt = gpu_loop_begin(x, cg_i64(cg, 0), kend, cg_i64(cg, KT), "kt");
    att_stage(x, &u, lt.i, KT, hd, W, k, Ks, v, Vs);
    gpu_barrier(x);
    LLVMValueRef rmax = imin(x, cg_i64(cg, KT), LLVMBuildSub(cg->b, ADD(u.pos, cg_i64(cg, 1)), lt.i, ""));
    rmax = LLVMBuildSelect(cg->b, u.valid, rmax, cg_i64(cg, 0), "");
    Loop lr = cg_loop_begin(cg, cg_i64(cg, 0), rmax, NULL, "r");
    LLVMValueRef krow = cg_elem(cg, Ks, MUL(lr.i, cg_i64(cg, hd))), vrow = cg_elem(cg, Vs, MUL(lr.i, cg_i64(cg, hd)));
    LLVMValueRef p = gexp(x, FSUB(FMUL(att_dot(x, qv, krow, NULL, hd), scale), ls));
    LLVMValueRef ds = FMUL(p, FSUB(att_dot(x, gv, vrow, NULL, hd), D));
    att_axpy(x, acc, NULL, ds, krow, NULL, hd);
    cg_loop_end(cg, &lr, NULL);
    gpu_barrier(x);
    gpu_loop_end(x, &lt, cg_i64(cg, KT));
    LLVMBasicBlockRef join = cg_if(cg, u.valid, "store");
    LLVMValueRef out = att_row(x, dq, &u, u.pos, W, hd);
    for (int64_t i = 0; i < hd; i++)
        ST(FMUL(LD(cg_elem(cg, acc, cg_i64(cg, i))), scale), cg_elem(cg, out, cg_i64(cg, i)));
    cg_endif(cg, join);
    gpu_end(x);
    return ki;
}

/* dk, dv: a thread per key u, queries t >= u staged with their g rows,
 * lse and D = g_t . out_t; dv = sum_t p g_t, dk = scale sum_t p (g_t . v_u
 * - D_t) q_t.  (dk, dv; q, k, v, out, lse, g, heads, W) */
static int att_dkv_kernel(Gpu *x, int64_t hd)
{
    Cg *cg = &x->cg;
    int64_t QT = att_tile(hd);
    char key[48];
    snprintf(key, sizeof key, "attention_grad_kv_%lld", (long long)hd);
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 10);
    LLVMValueRef dk = gpu_param(x, 0), dv = gpu_param(x, 1), q = gpu_param(x, 2), k = gpu_param(x, 3),
                 v = gpu_param(x, 4), o = gpu_param(x, 5), lse = gpu_param(x, 6), g = gpu_param(x, 7),
                 heads = gpu_param(x, 8), W = gpu_param(x, 9);
    LLVMValueRef Qs = gpu_shared(x, cg->real, QT * hd, "Qs"), Gs = gpu_shared(x, cg->real, QT * hd, "Gs");
    LLVMValueRef Ls = gpu_shared(x, cg->real, QT, "Ls"), Ds = gpu_shared(x, cg->real, QT, "Ds");
    AttUnit u = att_unit(x, heads);
    LLVMValueRef scale = cg_real(cg, (float)(1 / sqrt((double)hd)));
    LLVMValueRef kv[ATT_MAX_HD], vv[ATT_MAX_HD];
    att_load(x, att_row(x, k, &u, u.cpos, W, hd), hd, kv);
    att_load(x, att_row(x, v, &u, u.cpos, W, hd), hd, vv);
    LLVMValueRef ak = att_acc(x, hd), av = att_acc(x, hd);
    Loop lt = gpu_loop_begin(x, u.tile0, x->kT, cg_i64(cg, QT), "qt");
    att_stage(x, &u, lt.i, QT, hd, W, q, Qs, g, Gs);
    /* thread r < QT: lse and D of query lt + r */
    LLVMBasicBlockRef jd = cg_if(cg, LT(u.tid, cg_i64(cg, QT)), "rowstat");
    LLVMValueRef tq = ADD(lt.i, u.tid), inq = LT(tq, x->kT);
    LLVMValueRef ctq = LLVMBuildSelect(cg->b, inq, tq, cg_i64(cg, 0), "");
    LLVMValueRef grow[ATT_MAX_HD], orow[ATT_MAX_HD];
    att_load(x, att_row(x, g, &u, ctq, W, hd), hd, grow);
    att_load(x, att_row(x, o, &u, ctq, W, hd), hd, orow);
    ST(att_dot(x, grow, NULL, orow, hd), cg_elem(cg, Ds, u.tid));
    ST(LD(cg_elem(cg, lse, ADD(MUL(u.bh, x->kT), ctq))), cg_elem(cg, Ls, u.tid));
    cg_endif(cg, jd);
    gpu_barrier(x);
    /* queries lt + r >= pos, < T, of this thread's key (none when not valid) */
    LLVMValueRef rmin = LLVMBuildSub(cg->b, u.pos, lt.i, "");
    rmin = LLVMBuildSelect(cg->b, LT(rmin, cg_i64(cg, 0)), cg_i64(cg, 0), rmin, "");
    LLVMValueRef rend = imin(x, cg_i64(cg, QT), LLVMBuildSub(cg->b, x->kT, lt.i, ""));
    rend = LLVMBuildSelect(cg->b, u.valid, rend, cg_i64(cg, 0), "");
    Loop lr = cg_loop_begin(cg, rmin, rend, NULL, "r");
    LLVMValueRef qrow = cg_elem(cg, Qs, MUL(lr.i, cg_i64(cg, hd))), gr = cg_elem(cg, Gs, MUL(lr.i, cg_i64(cg, hd)));
    LLVMValueRef p = gexp(x, FSUB(FMUL(att_dot(x, kv, qrow, NULL, hd), scale), LD(cg_elem(cg, Ls, lr.i))));
    att_axpy(x, av, NULL, p, gr, NULL, hd);
    LLVMValueRef ds = FMUL(p, FSUB(att_dot(x, vv, gr, NULL, hd), LD(cg_elem(cg, Ds, lr.i))));
    att_axpy(x, ak, NULL, ds, qrow, NULL, hd);
    cg_loop_end(cg, &lr, NULL);
    gpu_barrier(x);
    gpu_loop_end(x, &lt, cg_i64(cg, QT));
    LLVMBasicBlockRef join = cg_if(cg, u.valid, "store");
    LLVMValueRef kout = att_row(x, dk, &u, u.pos, W, hd), vout = att_row(x, dv, &u, u.pos, W, hd);
    for (int64_t i = 0; i < hd; i++) {
        ST(FMUL(LD(cg_elem(cg, ak, cg_i64(cg, i))), scale), cg_elem(cg, kout, cg_i64(cg, i)));
        ST(LD(cg_elem(cg, av, cg_i64(cg, i))), cg_elem(cg, vout, cg_i64(cg, i)));
    }
    cg_endif(cg, join);
    gpu_end(x);
    return ki;
}

/* ATTENTION_GRAD: the first node of a group (memplan_attention_group)
 * launches dq and dk, dv for all its siblings; dk and dv come together. */
static void gpu_attention_grad(Gpu *x, const IrNode *n)
{
    if (x->attn_done[n->id])
        return;
    att_check(n);
    const IrNode *fwd = n->saved, *sib[3];
    if (!fwd || fwd->op != IR_ATTENTION)
        die("lower: %%%d: attention_grad without its forward attention", n->id);
    memplan_attention_group(x->g, n, sib);
    int64_t hd = n->width / n->heads;
    for (int w = 0; w < 3; w++)
        if (sib[w])
            x->attn_done[sib[w]->id] = true;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0 ? !sib[0] : !sib[1] && !sib[2])
            continue;
        if (pass == 1 && (!sib[1] || !sib[2]))
            die("lower: %%%d: attention_grad needs dk and dv together on the GPU", n->id);
        att_launch(x, pass == 0 ? att_dq_kernel(x, hd) : att_dkv_kernel(x, hd), n);
        if (pass == 0) {
            gpu_arg_value(x, sib[0], true);
        } else {
            gpu_arg_value(x, sib[1], true);
            gpu_arg_value(x, sib[2], true);
        }
        for (int i = 0; i < 3; i++)
            gpu_arg_value(x, n->in[i], false);
        gpu_arg_value(x, fwd, false);
        gpu_arg_aux(x, fwd, false);
        gpu_arg_value(x, n->in[3], false);
        gpu_arg_i64(x, gpu_aff(n->heads, 0, 0));
        gpu_arg_i64(x, gpu_aff(n->width, 0, 0));
    }
}

/* ---- cross-entropy ---- */

static void gpu_cross_entropy(Gpu *x, const IrNode *n)
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
        LLVMValueRef m = local(x, cg_real(cg, -INFINITY));
        Loop l = gpu_loop_begin(x, tid, V, step, "c");
        ST(lower_reduce_step(cg, &mx, LD(m), LD(cg_elem(cg, lgp, ADD(row, l.i)))), m);
        gpu_loop_end(x, &l, step);
        LLVMValueRef mxv = gpu_block_reduce(x, LD(m), &mx, scratch);
        LLVMValueRef s = local(x, cg_real(cg, 0));
        Loop l2 = gpu_loop_begin(x, tid, V, step, "c");
        ST(FADD(LD(s), gexp(x, FSUB(LD(cg_elem(cg, lgp, ADD(row, l2.i))), mxv))), s);
        gpu_loop_end(x, &l2, step);
        LLVMValueRef sum = gpu_block_reduce(x, LD(s), &sm, scratch);
        LLVMValueRef lse = FADD(mxv, glog(x, sum));
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
        LLVMValueRef sum = local(x, LLVMConstReal(cg->f64, 0)), cnt = local(x, LLVMConstReal(cg->f64, 0));
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

static void gpu_ce_grad(Gpu *x, const IrNode *n)
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
        LLVMValueRef e = FMUL(gexp(x, FSUB(LD(cg_elem(cg, lgp, ADD(row, l2.i))), ls)), w);
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

void gpu_call_node(Gpu *x, const IrNode *n)
{
    switch (n->op) {
    case IR_MATMUL: gpu_matmul(x, n); break;
    case IR_MATMUL_GRAD_W: gpu_matmul_grad_w(x, n); break;
    case IR_EMBED: gpu_embed(x, n); break;
    case IR_EMBED_GRAD: gpu_embed_grad(x, n); break;
    case IR_ROPE:
    case IR_ROPE_GRAD: gpu_rope(x, n); break;
    case IR_ATTENTION: gpu_attention(x, n); break;
    case IR_ATTENTION_GRAD: gpu_attention_grad(x, n); break;
    case IR_CROSS_ENTROPY: gpu_cross_entropy(x, n); break;
    case IR_CE_GRAD: gpu_ce_grad(x, n); break;
    default: die("lower: no GPU rule for op %s", ir_op_info[n->op].text);
    }
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
    LLVMValueRef i = global_id(x);
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
