/* loops.c - the loops of the ops that are not in a row kernel: elementwise
 * ops and reductions on parameter-shaped (non-token) values, small and
 * serial, and SUM_ROWS (split over threads in tiles of 64 columns, so each
 * column's sum keeps its order).  Their arithmetic is arith.c's. */
#include "lower/cg.h"

#include <math.h>
#include <string.h>

/* ---- loops outside row kernels (non-token values: small, serial) ---- */

/* Element (r, c) of an operand is v[r * rs + c * cs] (interp.c's Operand):
 * rs = 0 broadcasts a one-row operand over the rows, cs = 0 a width-1
 * operand over the columns. */
static LLVMValueRef operand_at(Cg *cg, const IrNode *x, const IrNode *a, LLVMValueRef r, LLVMValueRef c)
{
    bool row_bcast = a->rows == 1, same_rows = !a->tok && a->rows == x->rows;
    if (a->tok || !(a->width == x->width || a->width == 1) || !(row_bcast || same_rows))
        die("lower: %%%d (%s): operand %%%d does not broadcast to the result", x->id, ir_op_info[x->op].text,
            a->id);
    if (a->op == IR_CONST)
        return cg_const(cg, a);
    LLVMValueRef i = cg_i64(cg, 0);
    if (!row_bcast)
        i = LLVMBuildNSWMul(cg->b, r, cg_i64(cg, a->width), "");
    if (a->width != 1)
        i = LLVMBuildNSWAdd(cg->b, i, c, "");
    return cg_load(cg, cg_elem(cg, cg_home(cg, a), i));
}

/* y (rows, W) = f(a, b) with broadcasting. */
static void elementwise_loop(Cg *cg, const IrNode *x)
{
    LLVMValueRef y = cg_home(cg, x);
    Loop lr = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, x->rows), NULL, "r");
    Loop lc = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, x->width), NULL, "c");
    LLVMValueRef a = operand_at(cg, x, x->in[0], lr.i, lc.i);
    LLVMValueRef v = ir_op_info[x->op].arity == 2 ? lower_binary(cg, x, a, operand_at(cg, x, x->in[1], lr.i, lc.i))
                                                   : lower_unary(cg, x, a);
    LLVMValueRef yi = LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, lr.i, cg_i64(cg, x->width), ""), lc.i, "");
    LLVMBuildStore(cg->b, v, cg_elem(cg, y, yi));
    cg_loop_end(cg, &lc, NULL);
    cg_loop_end(cg, &lr, NULL);
}

/* y[r] = f(a[r][0..W)) */
static void reduce_loop(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0];
    if (x->width != 1 || a->tok || a->rows != x->rows)
        die("lower: %%%d (%s): reduction shape is not (rows of the operand, 1)", x->id, ir_op_info[x->op].text);
    LLVMValueRef y = cg_home(cg, x), src = a->op == IR_CONST ? NULL : cg_home(cg, a);
    Loop lr = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, x->rows), NULL, "r");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, lr.i, cg_i64(cg, a->width), "");
    Loop lc = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, a->width), lower_reduce_init(cg, x), "c");
    LLVMValueRef v = src ? cg_load(cg, cg_elem(cg, src, LLVMBuildNSWAdd(cg->b, row, lc.i, ""))) : cg_const(cg, a);
    cg_loop_end(cg, &lc, lower_reduce_step(cg, x, lc.acc, v));
    LLVMBuildStore(cg->b, lower_reduce_final(cg, x, lc.acc, a->width), cg_elem(cg, y, lr.i));
    cg_loop_end(cg, &lr, NULL);
}

/* SUM_ROWS over columns [c0, c1): y[c] (+)= sum over rows r of x[r][c],
 * rows in order.  ctx: y, x, rows, W, accumulate. */
static void sum_rows_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef c0, LLVMValueRef c1,
                          LLVMValueRef thread)
{
    LLVMValueRef y = v[0], x = v[1], rows = v[2], W = v[3];
    LLVMValueRef n = LLVMBuildSub(cg->b, c1, c0, "");
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, v[4], ""), "zero");
    cg_zero(cg, cg_elem(cg, y, c0), n);
    cg_endif(cg, join);
    Loop lr = cg_loop_begin(cg, cg_i64(cg, 0), rows, NULL, "r");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, lr.i, W, "");
    Loop lc = cg_loop_begin(cg, c0, c1, NULL, "c");
    LLVMValueRef yp = cg_elem(cg, y, lc.i);
    LLVMValueRef xv = cg_load(cg, cg_elem(cg, x, LLVMBuildNSWAdd(cg->b, row, lc.i, "")));
    LLVMBuildStore(cg->b, cg_fop(cg, LLVMFAdd, cg_load(cg, yp), xv, FM_EW), yp);
    cg_loop_end(cg, &lc, NULL);
    cg_loop_end(cg, &lr, NULL);
}

static void lower_sum_rows(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0];
    if (x->tok || x->rows != 1 || x->width != a->width || !a->tok)
        die("lower: %%%d: sum_rows is not (B,T,w) -> [w]", x->id);
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i1};
    const CgTask *task = cg_task(cg, cg->prec == LOWER_F32 ? "task.sum_rows.f32" : "task.sum_rows.f64", NULL, t,
                                 5, sum_rows_task, NULL);
    LLVMValueRef v[] = {cg_home(cg, x), cg_home(cg, a), cg->BT, cg_i64(cg, x->width), cg_accumulates(cg, x)};
    cg_run_task(cg, task, v, cg_i64(cg, x->width), cg_i64(cg, 64));
}

void lower_loop_node(Cg *cg, const IrNode *x)
{
    if (x->op == IR_SUM_ROWS)
        lower_sum_rows(cg, x);
    else if (x->tok)
        die("lower: %%%d (%s): a token op outside a row kernel", x->id, ir_op_info[x->op].text);
    else if (ir_op_info[x->op].elementwise)
        elementwise_loop(cg, x);
    else if (ir_op_info[x->op].reduction)
        reduce_loop(cg, x);
    else
        die("lower: %s is not a loop op", ir_op_info[x->op].text);
}
