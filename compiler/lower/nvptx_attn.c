/* nvptx_attn.c - the GPU's attention (nvptx.h), FlashAttention-style: a
 * CTA per tile of 64 positions of one (sequence, head), a thread per
 * position with its own online softmax, the other side's rows staged
 * through shared memory in tiles; the backward as dq per query and dk, dv
 * per key from the saved log-sum-exp (FlashAttention-2's D = g . out). */
#include "lower/nvptx.h"

#include <math.h>
#include <string.h>

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
void gpu_attention(Gpu *x, const IrNode *n)
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
        LLVMValueRef acc = att_acc(x, hd), m = gpu_local(x, cg_real(cg, -INFINITY)), sum = gpu_local(x, cg_real(cg, 0));
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
        LLVMValueRef corr = gpu_exp(x, FSUB(m0, m1)), p = gpu_exp(x, FSUB(sc, m1));
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
        ST(FADD(LD(m), gpu_log(x, l)), cg_elem(cg, lse, ADD(MUL(u.bh, x->kT), u.pos)));
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
    LLVMValueRef p = gpu_exp(x, FSUB(FMUL(att_dot(x, qv, krow, NULL, hd), scale), ls));
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
    LLVMValueRef p = gpu_exp(x, FSUB(FMUL(att_dot(x, kv, qrow, NULL, hd), scale), LD(cg_elem(cg, Ls, lr.i))));
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
void gpu_attention_grad(Gpu *x, const IrNode *n)
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
