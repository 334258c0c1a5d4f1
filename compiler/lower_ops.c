/* lower_ops.c - generated loop nests (lower_internal.h): elementwise ops
 * with interp.c's broadcasting, the MEAN/SUM/MAX row reductions and
 * SUM_ROWS.  Each distinct loop becomes one internal, noinline function
 *   void @"mul.w512.r512c1.r1c0"(ptr noalias y, ptr noalias a [, ptr noalias b], i64 rows)
 * named by what its body depends on and called from strata_run for every
 * node that needs it, so LLVM optimises few, small functions whose widths
 * are constants and whose buffers do not alias.  Fast-math: elementwise
 * arithmetic may contract (FMA), reductions may also reassociate (so they
 * vectorise); never nnan/ninf, so NaN and Inf propagate as in interp.c. */
#include "lower_internal.h"

#include <math.h>
#include <string.h>

static const double GELU_C = 0.79788456080286535588; /* sqrt(2 / pi) */

#define FM_EW LLVMFastMathAllowContract
#define FM_RED (LLVMFastMathAllowReassoc | LLVMFastMathAllowContract)

/* ---- arithmetic ---- */

static LLVMValueRef fop(Cg *cg, LLVMOpcode op, LLVMValueRef a, LLVMValueRef b, LLVMFastMathFlags fm)
{
    LLVMValueRef v = LLVMBuildBinOp(cg->b, op, a, b, "");
    if (LLVMIsAInstruction(v)) /* not folded to a constant */
        LLVMSetFastMathFlags(v, fm);
    return v;
}

static LLVMValueRef fp_add(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return fop(cg, LLVMFAdd, a, b, FM_EW); }
static LLVMValueRef fp_sub(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return fop(cg, LLVMFSub, a, b, FM_EW); }
static LLVMValueRef fp_mul(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return fop(cg, LLVMFMul, a, b, FM_EW); }
static LLVMValueRef fp_div(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return fop(cg, LLVMFDiv, a, b, FM_EW); }

/* A call of an LLVM intrinsic overloaded on the REAL type (llvm.exp, ...). */
static LLVMValueRef intrinsic(Cg *cg, const char *name, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMTypeRef t = cg->real;
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &t, 1);
    return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, &t, 1), fn, args, n, "");
}

static LLVMValueRef intrinsic1(Cg *cg, const char *name, LLVMValueRef v)
{
    return intrinsic(cg, name, &v, 1);
}

/* tanh has no LLVM intrinsic: libm's tanh / tanhf (accurate near 0, where
 * 1 - 2 / (exp(2x) + 1) would cancel). */
static LLVMValueRef call_tanh(Cg *cg, LLVMValueRef v)
{
    LLVMValueRef fn = cg_extern(cg, cg->prec == LOWER_F32 ? "tanhf" : "tanh", cg->real, &cg->real, 1);
    return cg_call(cg, fn, &v, 1);
}

/* Numerically safe sigmoid, as interp.c: with e = exp(-|v|),
 * v >= 0: 1 / (1 + e), else e / (1 + e). */
static LLVMValueRef sigmoid(Cg *cg, LLVMValueRef v)
{
    LLVMValueRef one = cg_real(cg, 1);
    LLVMValueRef e = intrinsic1(cg, "llvm.exp", LLVMBuildFNeg(cg->b, intrinsic1(cg, "llvm.fabs", v), ""));
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
    return intrinsic(cg, "llvm.pow", (LLVMValueRef[]){v, cg_real(cg, p)}, 2);
}

/* tanh(c (v + k v^3)) of the GELU approximation */
static LLVMValueRef gelu_tanh(Cg *cg, LLVMValueRef v)
{
    LLVMValueRef v3 = fp_mul(cg, fp_mul(cg, cg_real(cg, 0.044715), v), fp_mul(cg, v, v));
    return call_tanh(cg, fp_mul(cg, cg_real(cg, GELU_C), fp_add(cg, v, v3)));
}

/* The formulas of interp.c's unary(). */
static LLVMValueRef unary(Cg *cg, const IrNode *x, LLVMValueRef v)
{
    LLVMValueRef one = cg_real(cg, 1), half = cg_real(cg, 0.5), zero = cg_real(cg, 0);
    switch (x->op) {
    case IR_NEG: return LLVMBuildFNeg(cg->b, v, "");
    case IR_POWC: return powc(cg, v, x->num);
    case IR_EXP: return intrinsic1(cg, "llvm.exp", v);
    case IR_LOG: return intrinsic1(cg, "llvm.log", v);
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

static LLVMValueRef binary(Cg *cg, const IrNode *x, LLVMValueRef a, LLVMValueRef b)
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

/* ---- loops ---- */

/* for (i = 0; i < n; i++), optionally carrying an accumulator: after
 * loop_begin the builder is in the body; loop_end closes the loop and
 * leaves the builder after it, where `acc` holds the final value. */
typedef struct Loop {
    LLVMBasicBlockRef head, exit;
    LLVMValueRef i, acc;
} Loop;

static Loop loop_begin(Cg *cg, LLVMValueRef n, LLVMValueRef acc_init, const char *name)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    Loop l = {.head = LLVMAppendBasicBlockInContext(cg->ctx, fn, name)};
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "body");
    l.exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "done");
    LLVMBuildBr(cg->b, l.head);
    LLVMPositionBuilderAtEnd(cg->b, l.head);
    l.i = LLVMBuildPhi(cg->b, cg->i64, name);
    LLVMValueRef zero = cg_i64(cg, 0);
    LLVMAddIncoming(l.i, &zero, &pre, 1);
    if (acc_init) {
        l.acc = LLVMBuildPhi(cg->b, cg->real, "acc");
        LLVMAddIncoming(l.acc, &acc_init, &pre, 1);
    }
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, l.i, n, ""), body, l.exit);
    LLVMPositionBuilderAtEnd(cg->b, body);
    return l;
}

static void loop_end(Cg *cg, Loop *l, LLVMValueRef acc_next)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, cg_i64(cg, 1), "");
    LLVMBuildBr(cg->b, l->head);
    LLVMAddIncoming(l->i, &next, &latch, 1);
    if (l->acc)
        LLVMAddIncoming(l->acc, &acc_next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

/* ---- per-node functions ---- */

static void add_fn_attr(Cg *cg, LLVMValueRef fn, unsigned idx, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

/* Starts `void @key(ptr y, ptr in0 .. ptr in[nin-1], i64 rows)` and leaves
 * the builder in its entry block; p[] gets y, the inputs and rows.  The
 * result and operands are distinct buffers (ABI), hence noalias. */
static LLVMValueRef node_fn_begin(Cg *cg, const char *key, int nin, LLVMValueRef *p)
{
    LLVMTypeRef params[4] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
    params[nin + 1] = cg->i64;
    LLVMValueRef fn = LLVMAddFunction(cg->mod, key, LLVMFunctionType(cg->voidt, params, (unsigned)nin + 2, false));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline");
    add_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    for (int k = 0; k <= nin; k++) {
        add_fn_attr(cg, fn, (unsigned)k + 1, "noalias");
        if (k > 0)
            add_fn_attr(cg, fn, (unsigned)k + 1, "readonly");
    }
    for (int k = 0; k < nin + 2; k++)
        p[k] = LLVMGetParam(fn, (unsigned)k);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    return fn;
}

/* The loop nest of node x, given the function's parameters p[]. */
typedef void LoopBody(Cg *cg, const IrNode *x, LLVMValueRef *p);

/* Calls, from strata_run, the loop function named `key`, building it on
 * first use.  The key spells out everything the body depends on (op,
 * widths, broadcast strides, exponent), so the nodes of all blocks share
 * one function per distinct loop: an L-block model compiles each loop
 * once, not L times.  Rows are passed at run time (B*T). */
static void loop_node(Cg *cg, const IrNode *x, const char *key, int nin, const IrNode *rows_of, LoopBody *body)
{
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, key);
    if (!fn) {
        LLVMBasicBlockRef at = LLVMGetInsertBlock(cg->b);
        LLVMValueRef p[4];
        fn = node_fn_begin(cg, key, nin, p);
        body(cg, x, p);
        LLVMBuildRetVoid(cg->b);
        LLVMPositionBuilderAtEnd(cg->b, at);
    }
    LLVMValueRef args[4];
    args[0] = cg_buf(cg, x);
    for (int k = 0; k < nin; k++)
        args[k + 1] = cg_buf(cg, x->in[k]);
    args[nin + 1] = cg_rows(cg, rows_of);
    cg_call(cg, fn, args, (unsigned)nin + 2);
}

/* ---- elementwise ---- */

/* Element (r, c) of an operand is v[r * rs + c * cs] (interp.c's Operand):
 * rs = 0 broadcasts a one-row non-token operand over the rows, cs = 0 a
 * width-1 operand over the columns. */
typedef struct Operand {
    LLVMValueRef v;
    int64_t rs, cs;
} Operand;

static Operand operand(const IrNode *x, const IrNode *a, LLVMValueRef v)
{
    bool row_bcast = !a->tok && a->rows == 1, same_rows = a->tok == x->tok && (a->tok || a->rows == x->rows);
    if (!(a->width == x->width || a->width == 1) || !(row_bcast || same_rows))
        die("lower: %%%d (%s): operand %%%d does not broadcast to the result", x->id, ir_op_info[x->op].text,
            a->id);
    return (Operand){v, row_bcast ? 0 : a->width, a->width == 1 ? 0 : 1};
}

static LLVMValueRef load_at(Cg *cg, const Operand *o, LLVMValueRef i)
{
    return LLVMBuildLoad2(cg->b, cg->real, cg_elem(cg, o->v, i), "");
}

/* y[i] = f(a[i], b[i]) at flat index i (or r*W + c). */
static void ew_body(Cg *cg, const IrNode *x, LLVMValueRef y, const Operand *ops, int nin, LLVMValueRef *idx,
                    LLVMValueRef yi)
{
    LLVMValueRef va = load_at(cg, &ops[0], idx[0]);
    LLVMValueRef v = nin == 2 ? binary(cg, x, va, load_at(cg, &ops[1], idx[1])) : unary(cg, x, va);
    LLVMBuildStore(cg->b, v, cg_elem(cg, y, yi));
}

/* Index r * rs + c * cs with constant strides. */
static LLVMValueRef index2(Cg *cg, LLVMValueRef r, LLVMValueRef c, const Operand *o)
{
    LLVMValueRef i = cg_i64(cg, 0);
    if (o->rs)
        i = LLVMBuildNSWMul(cg->b, r, cg_i64(cg, o->rs), "");
    if (o->cs)
        i = LLVMBuildNSWAdd(cg->b, i, c, "");
    return i;
}

static void elementwise_body(Cg *cg, const IrNode *x, LLVMValueRef *p)
{
    int nin = ir_op_info[x->op].arity;
    LLVMValueRef y = p[0], rows = p[nin + 1];
    int64_t W = x->width;
    Operand ops[2];
    bool flat = true; /* every operand full-shape or a scalar: one loop over rows * W */
    for (int k = 0; k < nin; k++) {
        ops[k] = operand(x, x->in[k], p[k + 1]);
        flat &= (ops[k].rs == W && ops[k].cs == 1) || (ops[k].rs == 0 && ops[k].cs == 0);
    }
    LLVMValueRef idx[2];
    if (flat) {
        Loop l = loop_begin(cg, LLVMBuildNSWMul(cg->b, rows, cg_i64(cg, W), "n"), NULL, "i");
        for (int k = 0; k < nin; k++)
            idx[k] = ops[k].cs ? l.i : cg_i64(cg, 0);
        ew_body(cg, x, y, ops, nin, idx, l.i);
        loop_end(cg, &l, NULL);
    } else {
        Loop lr = loop_begin(cg, rows, NULL, "r");
        Loop lc = loop_begin(cg, cg_i64(cg, W), NULL, "c");
        for (int k = 0; k < nin; k++)
            idx[k] = index2(cg, lr.i, lc.i, &ops[k]);
        LLVMValueRef yi = LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, lr.i, cg_i64(cg, W), ""), lc.i, "");
        ew_body(cg, x, y, ops, nin, idx, yi);
        loop_end(cg, &lc, NULL);
        loop_end(cg, &lr, NULL);
    }
}

/* Key: op, width, each operand's (row, column) strides, POWC's exponent. */
static void lower_elementwise(Cg *cg, const IrNode *x)
{
    int nin = ir_op_info[x->op].arity;
    char key[160];
    int len = snprintf(key, sizeof key, "%s.w%lld", ir_op_info[x->op].text, (long long)x->width);
    for (int k = 0; k < nin; k++) {
        Operand o = operand(x, x->in[k], NULL);
        len += snprintf(key + len, sizeof key - (size_t)len, ".r%lldc%lld", (long long)o.rs, (long long)o.cs);
    }
    if (x->op == IR_POWC)
        snprintf(key + len, sizeof key - (size_t)len, ".p%a", x->num);
    loop_node(cg, x, key, nin, x, elementwise_body);
}

/* ---- reductions ---- */

/* MEAN SUM MAX over the last dimension: y[r] = f(a[r][0..W)).  MAX uses
 * llvm.maximum, which propagates NaN like interp.c's max_nan. */
static void reduce_body(Cg *cg, const IrNode *x, LLVMValueRef *p)
{
    int64_t W = x->in[0]->width;
    bool max = x->op == IR_MAX;
    Loop lr = loop_begin(cg, p[2], NULL, "r");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, lr.i, cg_i64(cg, W), "");
    Loop lc = loop_begin(cg, cg_i64(cg, W), cg_real(cg, max ? -INFINITY : 0), "c");
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg->real, cg_elem(cg, p[1], LLVMBuildNSWAdd(cg->b, row, lc.i, "")), "");
    LLVMValueRef next;
    if (max) {
        next = intrinsic(cg, "llvm.maximum", (LLVMValueRef[]){lc.acc, v}, 2);
        LLVMSetFastMathFlags(next, FM_RED);
    } else {
        next = fop(cg, LLVMFAdd, lc.acc, v, FM_RED);
    }
    loop_end(cg, &lc, next);
    LLVMValueRef r = x->op == IR_MEAN ? fp_div(cg, lc.acc, cg_real(cg, (double)W)) : lc.acc;
    LLVMBuildStore(cg->b, r, cg_elem(cg, p[0], lr.i));
    loop_end(cg, &lr, NULL);
}

static void lower_reduce(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0];
    if (x->width != 1 || a->tok != x->tok || (!a->tok && a->rows != x->rows))
        die("lower: %%%d (%s): reduction shape is not (rows of the operand, 1)", x->id, ir_op_info[x->op].text);
    char key[64];
    snprintf(key, sizeof key, "%s.w%lld", ir_op_info[x->op].text, (long long)a->width);
    loop_node(cg, x, key, 1, x, reduce_body);
}

/* SUM_ROWS: y[c] = sum over all rows r of a[r][c], rows in order. */
static void sum_rows_body(Cg *cg, const IrNode *x, LLVMValueRef *p)
{
    int64_t W = x->width;
    cg_zero(cg, p[0], cg_i64(cg, W));
    Loop lr = loop_begin(cg, p[2], NULL, "r");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, lr.i, cg_i64(cg, W), "");
    Loop lc = loop_begin(cg, cg_i64(cg, W), NULL, "c");
    LLVMValueRef yp = cg_elem(cg, p[0], lc.i);
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg->real, cg_elem(cg, p[1], LLVMBuildNSWAdd(cg->b, row, lc.i, "")), "");
    LLVMBuildStore(cg->b, fop(cg, LLVMFAdd, LLVMBuildLoad2(cg->b, cg->real, yp, ""), v, FM_RED), yp);
    loop_end(cg, &lc, NULL);
    loop_end(cg, &lr, NULL);
}

static void lower_sum_rows(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0];
    if (x->tok || x->rows != 1 || x->width != a->width)
        die("lower: %%%d: sum_rows result is not [width]", x->id);
    char key[64];
    snprintf(key, sizeof key, "sum_rows.w%lld", (long long)x->width);
    loop_node(cg, x, key, 1, a, sum_rows_body);
}

void lower_loop_node(Cg *cg, const IrNode *x)
{
    if (ir_op_info[x->op].elementwise)
        lower_elementwise(cg, x);
    else if (ir_op_info[x->op].reduction)
        lower_reduce(cg, x);
    else if (x->op == IR_SUM_ROWS)
        lower_sum_rows(cg, x);
    else
        die("lower: %s is not a loop op", ir_op_info[x->op].text);
}
