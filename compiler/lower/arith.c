/* arith.c - the arithmetic of every elementwise op and reduction (the
 * formulas of interp.c, as LLVM IR on one element) and an exp that
 * vectorises: the half of the lowering core (cg.h) that the row kernels
 * (rows.c) and the other loops (loops.c) share, and the GPU's kernels
 * (nvptx_kern.c: Cg.nvptx, with no libm: tanh, log and pow inline).  Fast-math: elementwise
 * arithmetic may contract (FMA), reductions may also reassociate (so they
 * vectorise); never nnan/ninf, so NaN and Inf propagate as in interp.c. */
#include "lower/cg.h"

#include <math.h>
#include <string.h>

static const double GELU_C = 0.79788456080286535588; /* sqrt(2 / pi) */

/* ---- arithmetic ---- */

LLVMValueRef cg_fop(Cg *cg, LLVMOpcode op, LLVMValueRef a, LLVMValueRef b, LLVMFastMathFlags fm)
{
    LLVMValueRef v = LLVMBuildBinOp(cg->b, op, a, b, "");
    if (LLVMIsAInstruction(v)) /* not folded to a constant */
        LLVMSetFastMathFlags(v, fm);
    return v;
}

static LLVMValueRef fp_add(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return cg_fop(cg, LLVMFAdd, a, b, FM_EW); }
static LLVMValueRef fp_sub(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return cg_fop(cg, LLVMFSub, a, b, FM_EW); }
static LLVMValueRef fp_mul(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return cg_fop(cg, LLVMFMul, a, b, FM_EW); }
static LLVMValueRef fp_div(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return cg_fop(cg, LLVMFDiv, a, b, FM_EW); }

/* A call of an LLVM intrinsic overloaded on type t (llvm.exp, ...). */
static LLVMValueRef intrinsic_t(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &t, 1);
    return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, &t, 1), fn, args, n, "");
}

static LLVMValueRef intrinsic(Cg *cg, const char *name, LLVMValueRef *args, unsigned n)
{
    return intrinsic_t(cg, name, cg->real, args, n);
}

static LLVMValueRef intrinsic1(Cg *cg, const char *name, LLVMValueRef v)
{
    return intrinsic(cg, name, &v, 1);
}

/* ---- exp ---- */

/* e^v without a library call, so that a loop around it vectorises at the
 * target's full width: v = n ln2 + r, |r| <= ln2/2 (Cody-Waite: ln2 in two
 * parts), e^r by a polynomial (Cephes expf's minimax for float; Taylor to
 * r^13, truncation error < 1e-17, for double), times 2^n built in the
 * exponent bits as two factors 2^(n/2) 2^(n - n/2), so that n down to the
 * denormal range and up to overflow stays exact.  v is clamped first (to
 * where the result is already 0 or Inf, which the product then gives); NaN
 * passes through.  About 1 ulp, as libm's. */
static LLVMValueRef exp_poly(Cg *cg, LLVMValueRef v)
{
    bool f32 = cg->prec == LOWER_F32;
    LLVMTypeRef it = f32 ? cg->i32 : cg->i64;
    int64_t bias = f32 ? 127 : 1023, shift = f32 ? 23 : 52;
    LLVMValueRef x = intrinsic(cg, "llvm.minnum", (LLVMValueRef[]){v, cg_real(cg, f32 ? 89.0 : 710.0)}, 2);
    x = intrinsic(cg, "llvm.maxnum", (LLVMValueRef[]){x, cg_real(cg, f32 ? -104.0 : -746.0)}, 2);
    LLVMValueRef n = intrinsic1(cg, "llvm.rint", fp_mul(cg, x, cg_real(cg, 1.4426950408889634074)));
    LLVMValueRef r = fp_sub(cg, x, fp_mul(cg, n, cg_real(cg, f32 ? 0.693359375 : 6.93145751953125e-1)));
    r = fp_sub(cg, r, fp_mul(cg, n, cg_real(cg, f32 ? -2.12194440e-4 : 1.42860682030941723212e-6)));
    LLVMValueRef p;
    if (f32) {
        static const double c[] = {1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                   4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1};
        p = cg_real(cg, c[0]);
        for (int k = 1; k < 6; k++)
            p = fp_add(cg, fp_mul(cg, p, r), cg_real(cg, c[k]));
        p = fp_add(cg, fp_add(cg, fp_mul(cg, p, fp_mul(cg, r, r)), r), cg_real(cg, 1));
    } else {
        double f = 1;
        for (int k = 2; k <= 13; k++)
            f *= k;
        p = cg_real(cg, 1 / f);
        for (int k = 12; k >= 0; k--) { /* 1/k! */
            f = 1;
            for (int j = 2; j <= k; j++)
                f *= j;
            p = fp_add(cg, fp_mul(cg, p, r), cg_real(cg, 1 / f));
        }
    }
    LLVMValueRef ni = LLVMBuildFPToSI(cg->b, n, it, ""), n1 = LLVMBuildAShr(cg->b, ni, LLVMConstInt(it, 1, false), "");
    LLVMValueRef n2 = LLVMBuildSub(cg->b, ni, n1, "");
    LLVMValueRef e[2];
    for (int k = 0; k < 2; k++) {
        LLVMValueRef bits = LLVMBuildAdd(cg->b, k ? n2 : n1, LLVMConstInt(it, (unsigned long long)bias, false), "");
        LLVMValueRef sh = LLVMBuildShl(cg->b, bits, LLVMConstInt(it, (unsigned long long)shift, false), "");
        e[k] = LLVMBuildBitCast(cg->b, sh, cg->real, "");
    }
    LLVMValueRef y = fp_mul(cg, fp_mul(cg, p, e[0]), e[1]);
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealUNO, v, v, ""), v, y, "");
}

static LLVMValueRef exp_of(Cg *cg, LLVMValueRef v)
{
    return cg->libm_exp && !cg->nvptx ? intrinsic1(cg, "llvm.exp", v) : exp_poly(cg, v);
}

/* A non-overloaded NVVM intrinsic of one float (llvm.nvvm.lg2.approx.f). */
static LLVMValueRef nvvm1(Cg *cg, const char *name, LLVMValueRef v)
{
    if (cg->gpu_emulate) /* on the host: the exact log2 / exp2 in their place */
        return intrinsic1(cg, strstr(name, "lg2") ? "llvm.log2" : "llvm.exp2", v);
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0);
    return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0), fn, &v, 1, "");
}

/* On the GPU (no libm): log through PTX's lg2.approx.f32 (absolute error
 * about 2^-22 in log2), times ln 2. */
static LLVMValueRef gpu_log(Cg *cg, LLVMValueRef v)
{
    return fp_mul(cg, nvvm1(cg, "llvm.nvvm.lg2.approx.f", v), cg_real(cg, 0.69314718055994530942));
}

/* On the GPU: tanh as Cephes tanhf, a minimax odd polynomial for
 * |v| < 0.625 (where 1 - 2 / (e^2v + 1) would cancel), else that formula
 * with the inline exp, and the sign put back. */
static LLVMValueRef gpu_tanh(Cg *cg, LLVMValueRef v)
{
    static const double c[] = {-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                               -3.33332819422e-1};
    LLVMValueRef a = intrinsic1(cg, "llvm.fabs", v), z = fp_mul(cg, v, v), p = cg_real(cg, c[0]);
    for (int k = 1; k < 5; k++)
        p = fp_add(cg, fp_mul(cg, p, z), cg_real(cg, c[k]));
    LLVMValueRef small = fp_add(cg, fp_mul(cg, fp_mul(cg, p, z), v), v);
    LLVMValueRef e = exp_poly(cg, fp_add(cg, a, a));
    LLVMValueRef big = fp_sub(cg, cg_real(cg, 1), fp_div(cg, cg_real(cg, 2), fp_add(cg, e, cg_real(cg, 1))));
    big = intrinsic(cg, "llvm.copysign", (LLVMValueRef[]){big, v}, 2);
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOLT, a, cg_real(cg, 0.625), ""), small, big, "");
}

/* tanh has no LLVM intrinsic: libm's tanh / tanhf (accurate near 0, where
 * 1 - 2 / (exp(2x) + 1) would cancel). */
static LLVMValueRef call_tanh(Cg *cg, LLVMValueRef v)
{
    if (cg->nvptx)
        return gpu_tanh(cg, v);
    LLVMValueRef fn = cg_extern(cg, cg->prec == LOWER_F32 ? "tanhf" : "tanh", cg->real, &cg->real, 1);
    return cg_call(cg, fn, &v, 1);
}

/* Numerically safe sigmoid, as interp.c: with e = exp(-|v|),
 * v >= 0: 1 / (1 + e), else e / (1 + e). */
static LLVMValueRef sigmoid(Cg *cg, LLVMValueRef v)
{
    LLVMValueRef one = cg_real(cg, 1);
    LLVMValueRef e = exp_of(cg, LLVMBuildFNeg(cg->b, intrinsic1(cg, "llvm.fabs", v), ""));
    LLVMValueRef d = fp_add(cg, one, e);
    LLVMValueRef pos = LLVMBuildFCmp(cg->b, LLVMRealOGE, v, cg_real(cg, 0), "");
    return LLVMBuildSelect(cg->b, pos, fp_div(cg, one, d), fp_div(cg, e, d), "");
}

/* x ^ p: small integer exponents as products (autodiff makes x^2 and x^3
 * for rsqrt and powc), others through llvm.pow. */
static LLVMValueRef powc(Cg *cg, LLVMValueRef v, double p)
{
    if (p == (double)(int)p && p >= -4 && p <= 4) {
        int n = (int)(p < 0 ? -p : p);
        LLVMValueRef r = n ? v : cg_real(cg, 1);
        for (int k = 1; k < n; k++)
            r = fp_mul(cg, r, v);
        return p < 0 ? fp_div(cg, cg_real(cg, 1), r) : r;
    }
    if (cg->nvptx) /* 2^(p log2 v) through PTX's approximate lg2 and ex2 */
        return nvvm1(cg, "llvm.nvvm.ex2.approx.f",
                     fp_mul(cg, cg_real(cg, p), nvvm1(cg, "llvm.nvvm.lg2.approx.f", v)));
    return intrinsic(cg, "llvm.pow", (LLVMValueRef[]){v, cg_real(cg, p)}, 2);
}

/* tanh(c (v + k v^3)) of the GELU approximation */
static LLVMValueRef gelu_tanh(Cg *cg, LLVMValueRef v)
{
    LLVMValueRef v3 = fp_mul(cg, fp_mul(cg, cg_real(cg, 0.044715), v), fp_mul(cg, v, v));
    return call_tanh(cg, fp_mul(cg, cg_real(cg, GELU_C), fp_add(cg, v, v3)));
}

/* The formulas of interp.c's unary(). */
LLVMValueRef lower_unary(Cg *cg, const IrNode *x, LLVMValueRef v)
{
    LLVMValueRef one = cg_real(cg, 1), half = cg_real(cg, 0.5), zero = cg_real(cg, 0);
    switch (x->op) {
    case IR_NEG: return LLVMBuildFNeg(cg->b, v, "");
    case IR_POWC: return powc(cg, v, x->num);
    case IR_EXP: return exp_of(cg, v);
    case IR_LOG: return cg->nvptx ? gpu_log(cg, v) : intrinsic1(cg, "llvm.log", v);
    case IR_TANH: return call_tanh(cg, v);
    case IR_SIGMOID: return sigmoid(cg, v);
    case IR_SILU: return fp_mul(cg, v, sigmoid(cg, v));
    case IR_GELU: return fp_mul(cg, fp_mul(cg, half, v), fp_add(cg, one, gelu_tanh(cg, v)));
    case IR_SQRT: return intrinsic1(cg, "llvm.sqrt", v);
    case IR_RSQRT: return fp_div(cg, one, intrinsic1(cg, "llvm.sqrt", v));
    case IR_ABS: return intrinsic1(cg, "llvm.fabs", v);
    case IR_SQUARE: return fp_mul(cg, v, v);
    case IR_EXPAND: return v;
    case IR_SIGN: { /* (v > 0) - (v < 0); NaN gives 0 as in C */
        LLVMValueRef gt = LLVMBuildFCmp(cg->b, LLVMRealOGT, v, zero, "");
        LLVMValueRef lt = LLVMBuildFCmp(cg->b, LLVMRealOLT, v, zero, "");
        return LLVMBuildSelect(cg->b, gt, one, LLVMBuildSelect(cg->b, lt, cg_real(cg, -1), zero, ""), "");
    }
    case IR_SILU_GRAD: { /* s (1 + v (1 - s)) */
        LLVMValueRef s = sigmoid(cg, v);
        return fp_mul(cg, s, fp_add(cg, one, fp_mul(cg, v, fp_sub(cg, one, s))));
    }
    case IR_GELU_GRAD: { /* 0.5 (1 + th) + 0.5 v (1 - th^2) c (1 + 3k v^2) */
        LLVMValueRef th = gelu_tanh(cg, v);
        LLVMValueRef a = fp_mul(cg, half, fp_add(cg, one, th));
        LLVMValueRef d = fp_mul(cg, fp_mul(cg, fp_mul(cg, half, v), fp_sub(cg, one, fp_mul(cg, th, th))),
                              cg_real(cg, GELU_C));
        LLVMValueRef k = fp_add(cg, one, fp_mul(cg, cg_real(cg, 3 * 0.044715), fp_mul(cg, v, v)));
        return fp_add(cg, a, fp_mul(cg, d, k));
    }
    default: die("lower: %s is not a unary elementwise op", ir_op_info[x->op].text);
    }
}

LLVMValueRef lower_binary(Cg *cg, const IrNode *x, LLVMValueRef a, LLVMValueRef b)
{
    switch (x->op) {
    case IR_ADD: return fp_add(cg, a, b);
    case IR_SUB: return fp_sub(cg, a, b);
    case IR_MUL: return fp_mul(cg, a, b);
    case IR_DIV: return fp_div(cg, a, b);
    case IR_EQ_MASK:
        return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOEQ, a, b, ""), cg_real(cg, 1), cg_real(cg, 0),
                               "");
    default: die("lower: %s is not a binary elementwise op", ir_op_info[x->op].text);
    }
}

/* ---- reductions: MEAN SUM MAX over the last dimension ---- */

LLVMValueRef lower_reduce_init(Cg *cg, const IrNode *x)
{
    return cg_real(cg, x->op == IR_MAX ? -INFINITY : 0);
}

/* MAX uses llvm.maximum, which propagates NaN like interp.c's max_nan. */
LLVMValueRef lower_reduce_step(Cg *cg, const IrNode *x, LLVMValueRef acc, LLVMValueRef v)
{
    if (x->op != IR_MAX)
        return cg_fop(cg, LLVMFAdd, acc, v, FM_RED);
    LLVMValueRef m = intrinsic(cg, "llvm.maximum", (LLVMValueRef[]){acc, v}, 2);
    LLVMSetFastMathFlags(m, FM_RED);
    return m;
}

LLVMValueRef lower_reduce_final(Cg *cg, const IrNode *x, LLVMValueRef acc, int64_t w)
{
    return x->op == IR_MEAN ? fp_div(cg, acc, cg_real(cg, (double)w)) : acc;
}
