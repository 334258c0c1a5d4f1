/* step.c - the entry points of model ABI v1 (model_abi.h):
 *   int strata_train_step(const StrataStep *s)   every kernel of the schedule
 *   int strata_forward(const StrataStep *s)      the forward kernels the logits need
 * Each checks its arguments (returning a StrataStatus), finds the arena's
 * regions for this B and T, fills the rotary tables, then runs the kernels
 * in schedule order.  Around each block's run of kernels a branch honours
 * StrataStep.skip (copy the block's input to its output, or in the
 * backward its output gradient to its input gradient, and jump past the
 * run); after the kernels that compute them, values are copied to
 * StrataStep.capture and gradients that do not live in the gradient buffer
 * are copied (or added) there.  cg_home says where any value lives. */
#include "lower/cg.h"

#include "core/gemm.h"

#include <stdlib.h>
#include <string.h>

/* ---- gradients and captures ---- */

static LLVMValueRef grad_slot(Cg *cg, int p)
{
    return cg_elem(cg, cg->grads, cg_i64(cg, cg->param_off[p]));
}

/* dst[0..n) = src (acc 0) or += src (acc 1): an internal helper. */
static LLVMValueRef grad_store_fn(Cg *cg)
{
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, "grad_store");
    if (fn)
        return fn;
    LLVMTypeRef params[] = {cg->ptr, cg->ptr, cg->i64, cg->i1};
    fn = LLVMAddFunction(cg->mod, "grad_store", LLVMFunctionType(cg->voidt, params, 4, false));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    cg_fn_attr(cg, fn, 1, "noalias");
    cg_fn_attr(cg, fn, 2, "noalias");
    LLVMBasicBlockRef at = LLVMGetInsertBlock(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMValueRef dst = LLVMGetParam(fn, 0), src = LLVMGetParam(fn, 1), n = LLVMGetParam(fn, 2);
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, LLVMGetParam(fn, 3), ""), "copy");
    cg_copy(cg, dst, src, n, false);
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, join);
    Loop l = cg_loop_begin(cg, cg_i64(cg, 0), n, NULL, "i");
    LLVMValueRef d = cg_elem(cg, dst, l.i), v = cg_load(cg, cg_elem(cg, src, l.i));
    LLVMValueRef sum = LLVMBuildFAdd(cg->b, cg_load(cg, d), v, "");
    LLVMBuildStore(cg->b, sum, d);
    cg_loop_end(cg, &l, NULL);
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, at);
    return fn;
}

/* Gradients computed by kernel k that live in the arena: into their slots. */
static void grad_epilogue(Cg *cg, int k)
{
    const IrGraph *g = cg->g;
    for (int p = 0; p < g->grads.n; p++) {
        const IrNode *x = g->grads.v[p];
        if (!x || x->kernel != k || cg->ly->home[x->id])
            continue;
        LLVMValueRef args[] = {grad_slot(cg, p), cg_home(cg, x), cg_i64(cg, ((IrParam *)g->params.v[p])->numel),
                               cg->acc};
        cg_call(cg, grad_store_fn(cg), args, 4);
    }
}

/* capture[idx] = value of x, if a capture buffer was given. */
static void capture(Cg *cg, int idx, const IrNode *x)
{
    if (!cg->width)
        return;
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildIsNotNull(cg->b, cg->capture, ""), "capture");
    LLVMValueRef n = LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->width), "");
    cg_copy(cg, cg_elem(cg, cg->capture, LLVMBuildMul(cg->b, n, cg_i64(cg, idx), "")), cg_home(cg, x), n, false);
    cg_endif(cg, join);
}

/* Captures made right after kernel k (those of a skippable block's output
 * wait for the end of its run: see run_end). */
static void captures_after(Cg *cg, int k)
{
    const IrGraph *g = cg->g;
    if (!cg->g->blocks.n)
        return;
    const IrNode *in0 = ((IrBlock *)g->blocks.v[0])->in;
    if (in0 && in0->kernel == k)
        capture(cg, 0, in0);
    uint8_t mode = cg->train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
    for (int l = 0; l < g->blocks.n; l++) {
        const IrBlock *b = g->blocks.v[l];
        if (b->out && b->out->kernel == k && !(cg->blocks[l].skip & mode))
            capture(cg, l + 1, b->out);
    }
}

/* ---- skipping blocks ---- */

/* An open run of kernels that a skip jumps past. */
typedef struct Run {
    int block, k1;             /* block -1: none open */
    bool bwd;
    LLVMBasicBlockRef join;
} Run;

static LLVMValueRef skip_flag(Cg *cg, int l)
{
    LLVMValueRef f = LLVMBuildLoad2(cg->b, cg->i8, cg_byte(cg, cg->skip, cg_i64(cg, l)), "");
    return LLVMBuildICmp(cg->b, LLVMIntNE, f, LLVMConstInt(cg->i8, 0, false), "");
}

/* What a skipped block does instead of its run: the forward copies in to
 * out; the backward copies d out to d in and zeroes the gradients of the
 * parameters whose gradient kernels are in the run (unless accumulating). */
static void skipped(Cg *cg, int l, bool bwd)
{
    const IrBlock *b = cg->g->blocks.v[l];
    const IrNode *from = bwd ? b->d_out : b->in, *to = bwd ? b->d_in : b->out;
    if (from != to)
        cg_copy(cg, cg_home(cg, to), cg_home(cg, from), LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, to->width), ""),
                true);
    if (!bwd)
        return;
    KRange r = cg->blocks[l].bwd;
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, cg->acc, ""), "zero_grads");
    for (int p = 0; p < cg->g->grads.n; p++) {
        const IrNode *x = cg->g->grads.v[p];
        if (x && x->kernel >= r.k0 && x->kernel < r.k1)
            cg_zero(cg, grad_slot(cg, p), cg_i64(cg, ((IrParam *)cg->g->params.v[p])->numel));
    }
    cg_endif(cg, join);
}

/* Opens the run of a skippable block that kernel k belongs to, if any. */
static void run_begin(Cg *cg, int k, Run *run)
{
    for (int l = 0; l < cg->g->blocks.n; l++) {
        const BlockInfo *bi = &cg->blocks[l];
        uint8_t mode = cg->train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
        bool f = k >= bi->fwd.k0 && k < bi->fwd.k1 && (bi->skip & mode);
        bool w = cg->train && k >= bi->bwd.k0 && k < bi->bwd.k1 && (bi->skip & STRATA_SKIP_TRAIN);
        if (!f && !w)
            continue;
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "block_end");
        LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "skip_block");
        LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "block");
        LLVMBuildCondBr(cg->b, skip_flag(cg, l), skip, body);
        LLVMPositionBuilderAtEnd(cg->b, skip);
        skipped(cg, l, w);
        LLVMBuildBr(cg->b, join);
        LLVMPositionBuilderAtEnd(cg->b, body);
        *run = (Run){l, f ? bi->fwd.k1 : bi->bwd.k1, w, join};
        return;
    }
}

/* Closes the open run: both paths meet; a forward run's output is captured. */
static void run_end(Cg *cg, Run *run)
{
    LLVMBuildBr(cg->b, run->join);
    LLVMPositionBuilderAtEnd(cg->b, run->join);
    const IrBlock *b = cg->g->blocks.v[run->block];
    if (!run->bwd && b->out)
        capture(cg, run->block + 1, b->out);
    run->block = -1;
}

/* ---- the schedule ---- */

static void emit_kernel(Cg *cg, const IrKernel *k)
{
    if (k->rowwise) {
        lower_rows_kernel(cg, k);
        return;
    }
    const IrNode *x = k->nodes.v[0];
    const IrOpInfo *info = &ir_op_info[x->op];
    if (info->elementwise || info->reduction || x->op == IR_SUM_ROWS)
        lower_loop_node(cg, x);
    else
        lower_call_node(cg, x);
}

/* Kernels strata_forward runs: those with a forward node the logits need. */
static bool *forward_kernels(const IrGraph *g)
{
    bool *need = xcalloc((size_t)g->nodes.n + 1, sizeof *need), *run = xcalloc((size_t)g->kernels.n + 1, sizeof *run);
    need[g->logits->id] = true;
    for (int i = g->logits->id; i >= 0; i--) {
        const IrNode *x = g->nodes.v[i];
        if (!need[i])
            continue;
        for (int a = 0; a < ir_op_info[x->op].arity; a++)
            need[x->in[a]->id] = true;
        if (x->kernel >= 0)
            run[x->kernel] = true;
    }
    free(need);
    return run;
}

static void emit_schedule(Cg *cg)
{
    const IrGraph *g = cg->g;
    bool *fwd = cg->train ? NULL : forward_kernels(g);
    Run run = {.block = -1};
    for (int k = 0; k < g->kernels.n; k++) {
        if (fwd && !fwd[k])
            continue;
        if (run.block >= 0 && k >= run.k1)
            run_end(cg, &run);
        if (run.block < 0)
            run_begin(cg, k, &run);
        emit_kernel(cg, g->kernels.v[k]);
        if (cg->train)
            grad_epilogue(cg, k);
        captures_after(cg, k);
    }
    if (run.block >= 0)
        run_end(cg, &run);
    free(fwd);
}

/* ---- the entry point ---- */

static LLVMValueRef field(Cg *cg, LLVMValueRef s, unsigned i, LLVMTypeRef t, const char *name)
{
    return LLVMBuildLoad2(cg->b, t, LLVMBuildStructGEP2(cg->b, cg->step_type, s, i, ""), name);
}

static void fail_if(Cg *cg, LLVMValueRef bad, enum StrataStatus code)
{
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "fail");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "ok");
    LLVMBuildCondBr(cg->b, bad, fail, ok);
    LLVMPositionBuilderAtEnd(cg->b, fail);
    LLVMBuildRet(cg->b, cg_i32(cg, code));
    LLVMPositionBuilderAtEnd(cg->b, ok);
}

static LLVMValueRef is_null(Cg *cg, LLVMValueRef p)
{
    return LLVMBuildIsNull(cg->b, p, "");
}

static LLVMValueRef slt(Cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildICmp(cg->b, LLVMIntSLT, a, b, "");
}

/* Loads the StrataStep and returns its argument errors. */
static void load_step(Cg *cg, LLVMValueRef s)
{
    LLVMTypeRef p = cg->ptr, i64 = cg->i64;
    cg->params = field(cg, s, 0, p, "params");
    cg->grads = field(cg, s, 1, p, "grads");
    cg->arena = field(cg, s, 2, p, "arena");
    LLVMValueRef arena_bytes = field(cg, s, 3, i64, "arena_bytes");
    cg->tokens = field(cg, s, 4, p, "tokens");
    cg->targets = field(cg, s, 5, p, "targets");
    cg->mask = field(cg, s, 6, p, "mask");
    cg->B = field(cg, s, 7, i64, "B");
    cg->T = field(cg, s, 8, i64, "T");
    cg->capture = field(cg, s, 11, p, "capture");
    cg->pool = field(cg, s, 13, p, "pool");
    cg->acc = LLVMBuildICmp(cg->b, LLVMIntNE, field(cg, s, 14, cg->i32, "accumulate"), cg_i32(cg, 0), "acc");
    /* the products' flags: RT_GEMM_BF16 when precision is bf16 (fp32 modules) */
    LLVMValueRef bf16 = LLVMBuildICmp(cg->b, LLVMIntEQ, field(cg, s, 15, cg->i32, "precision"),
                                      cg_i32(cg, STRATA_PRECISION_BF16), "");
    cg->gemm_flags = cg->prec == LOWER_F32 ? LLVMBuildSelect(cg->b, bf16, cg_i32(cg, RT_GEMM_BF16), cg_i32(cg, 0), "")
                                           : cg_i32(cg, 0);
    if (!cg->train)
        cg->acc = LLVMConstInt(cg->i1, 0, false);
    LLVMValueRef bad = LLVMBuildOr(cg->b, is_null(cg, cg->params), is_null(cg, cg->tokens), "");
    if (cg->train)
        bad = LLVMBuildOr(cg->b, bad, LLVMBuildOr(cg->b, is_null(cg, cg->grads), is_null(cg, cg->targets), ""), "");
    fail_if(cg, bad, STRATA_ERR_ARGS);
    /* 1 <= B, T and B*T*width < 2^31 (BLAS takes int sizes) */
    LLVMValueRef lim = cg_i64(cg, INT32_MAX);
    bad = LLVMBuildOr(cg->b, slt(cg, cg->B, cg_i64(cg, 1)), slt(cg, cg->T, cg_i64(cg, 1)), "");
    bad = LLVMBuildOr(cg->b, bad, LLVMBuildOr(cg->b, slt(cg, lim, cg->B), slt(cg, lim, cg->T), ""), "");
    fail_if(cg, bad, STRATA_ERR_SHAPE);
    cg->BT = LLVMBuildMul(cg->b, cg->B, cg->T, "BT");
    fail_if(cg, slt(cg, cg_i64(cg, INT32_MAX / lower_max_width(cg->g)), cg->BT), STRATA_ERR_SHAPE);
    LLVMValueRef pool_size = cg_extern(cg, "rt_pool_size", cg->i32, &cg->ptr, 1);
    LLVMValueRef threads = LLVMBuildSExt(cg->b, cg_call(cg, pool_size, &cg->pool, 1), i64, "threads");
    const MemLayout *ly = cg->ly;
    LLVMValueRef need = LLVMBuildMul(cg->b, cg_i64(cg, ly->unit_bytes[MEM_ROWS]), cg->BT, "");
    need = LLVMBuildAdd(cg->b, need, LLVMBuildMul(cg->b, cg_i64(cg, ly->unit_bytes[MEM_SEQ]), cg->T, ""), "");
    need = LLVMBuildAdd(cg->b, need, cg_i64(cg, ly->unit_bytes[MEM_FIXED]), "");
    need = LLVMBuildAdd(cg->b, need, LLVMBuildMul(cg->b, cg_i64(cg, ly->unit_bytes[MEM_THREAD]), threads, ""), "");
    fail_if(cg, LLVMBuildOr(cg->b, is_null(cg, cg->arena), slt(cg, arena_bytes, need), ""), STRATA_ERR_ARENA);
    /* No skip given reads as all zeros. */
    int nb = cg->g->blocks.n;
    LLVMValueRef zeros = LLVMAddGlobal(cg->mod, LLVMArrayType2(cg->i8, (uint64_t)nb + 1), "no_skip");
    LLVMSetInitializer(zeros, LLVMConstNull(LLVMArrayType2(cg->i8, (uint64_t)nb + 1)));
    LLVMSetGlobalConstant(zeros, true);
    LLVMSetLinkage(zeros, LLVMPrivateLinkage);
    LLVMValueRef skip = field(cg, s, 12, p, "skip");
    cg->skip = LLVMBuildSelect(cg->b, is_null(cg, skip), zeros, skip, "skip");
    uint8_t mode = cg->train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
    for (int l = 0; l < nb; l++)
        if (!(cg->blocks[l].skip & mode))
            fail_if(cg, skip_flag(cg, l), STRATA_ERR_SKIP);
}

/* Region starts, the logits' place, the tables; zero gradients nobody writes. */
static void prologue(Cg *cg, LLVMValueRef s)
{
    const MemLayout *ly = cg->ly;
    cg->region[MEM_ROWS] = cg->arena;
    cg->region[MEM_SEQ] = cg_byte(cg, cg->arena, LLVMBuildMul(cg->b, cg_i64(cg, ly->unit_bytes[MEM_ROWS]), cg->BT, ""));
    cg->region[MEM_FIXED] =
        cg_byte(cg, cg->region[MEM_SEQ], LLVMBuildMul(cg->b, cg_i64(cg, ly->unit_bytes[MEM_SEQ]), cg->T, ""));
    cg->region[MEM_THREAD] = cg_byte(cg, cg->region[MEM_FIXED], cg_i64(cg, ly->unit_bytes[MEM_FIXED]));
    LLVMValueRef out = field(cg, s, 10, cg->ptr, "logits_out");
    cg->logits = NULL; /* cg_home of the logits: their arena slot */
    LLVMValueRef in_arena = cg_slot_ptr(cg, ly->value[cg->g->logits->id], cg->g->logits);
    cg->logits = LLVMBuildSelect(cg->b, is_null(cg, out), in_arena, out, "logits");
    lower_rope_tables(cg);
    if (!cg->train)
        return;
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, cg->acc, ""), "zero_unused_grads");
    for (int p = 0; p < cg->g->grads.n; p++)
        if (!cg->g->grads.v[p])
            cg_zero(cg, grad_slot(cg, p), cg_i64(cg, ((IrParam *)cg->g->params.v[p])->numel));
    cg_endif(cg, join);
}

/* *s->loss = the loss, as a double, if asked for. */
static void store_loss(Cg *cg, LLVMValueRef s)
{
    LLVMValueRef out = field(cg, s, 9, cg->ptr, "loss_out");
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildIsNotNull(cg->b, out, ""), "loss");
    LLVMValueRef v = cg_load(cg, cg_home(cg, cg->g->loss));
    LLVMBuildStore(cg->b, cg->prec == LOWER_F64 ? v : LLVMBuildFPExt(cg->b, v, cg->f64, ""), out);
    cg_endif(cg, join);
}

void lower_entry(Cg *cg, bool train)
{
    LLVMTypeRef fty = LLVMFunctionType(cg->i32, &cg->ptr, 1, false);
    cg->fn = LLVMAddFunction(cg->mod, train ? LOWER_TRAIN_ENTRY : LOWER_FORWARD_ENTRY, fty);
    cg->train = train;
    cg_fn_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "nounwind");
    memset(cg->attn_grad_done, 0, (size_t)cg->g->nodes.n * sizeof *cg->attn_grad_done);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry"));
    LLVMValueRef s = LLVMGetParam(cg->fn, 0);
    LLVMSetValueName2(s, "s", 1);
    load_step(cg, s);
    prologue(cg, s);
    emit_schedule(cg);
    if (train)
        store_loss(cg, s);
    LLVMBuildRet(cg->b, cg_i32(cg, STRATA_OK));
    cg->fn = NULL;
}
