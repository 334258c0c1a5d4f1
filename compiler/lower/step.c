/* step.c - the entry points of model ABI v4 (model_abi.h) and the
 * functions of the kinds of blocks (ir/kinds.h) that they call:
 *   int strata_train_step(const StrataStep *s)   every kernel of the schedule
 *   int strata_forward(const StrataStep *s)      the forward kernels the logits need
 *   int strata_decode(const StrataStep *s)       the same for new positions: rotary
 *                                                tables from kv_pos, attention over
 *                                                the KV cache (calls.c)
 *   void block.K.fwd|bwd(ptr env, ptr row, i64 l)  one pass of block l, of kind K
 * Each entry point checks its arguments (returning a StrataStatus), finds
 * the arena's regions for this B and T, fills the rotary tables, then runs
 * the kernels in schedule order: the runs of a row of blocks of one kind
 * as a loop calling the kind's function with each block's row of the
 * kind's table (its parameters, arena offsets and numbers: cg_home finds
 * the representative's nodes through it), every other kernel inline.
 * Around each block's run of kernels a branch honours StrataStep.skip
 * (copy the block's input to its output, or in the backward its output
 * gradient to its input gradient, and jump past the run); after the
 * kernels that compute them, values are copied to StrataStep.capture and
 * gradients that do not live in the gradient buffer are copied (or added)
 * there.  cg_home says where any value lives. */
#include "lower/cg.h"

#include "core/gemm.h"

#include <stdlib.h>
#include <string.h>

/* ---- gradients and captures ---- */

static LLVMValueRef grad_slot(Cg *cg, int p)
{
    return cg_elem(cg, cg->grads, cg_i64(cg, cg->param_off[p]));
}

static bool in_range(KRange r, int k)
{
    return k >= r.k0 && k < r.k1;
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

/* StrataStep.grad_sumsq, when given: the block sums of squares of a
 * finished gradient, slot[0..numel) of the gradient buffer, while it is in
 * cache (runtime/train/optim.h).  Only fp32 train steps have the field. */
static void grad_sumsq(Cg *cg, LLVMValueRef slot, int64_t numel)
{
    if (!cg->train || cg->prec != LOWER_F32)
        return;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->ptr};
    LLVMValueRef fn = cg_extern(cg, "rt_grad_sumsq_blocks", cg->voidt, t, 5);
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildIsNotNull(cg->b, cg->sumsq, ""), "grad_sumsq");
    cg_call(cg, fn, (LLVMValueRef[]){cg->pool, cg->grads, slot, cg_i64(cg, numel), cg->sumsq}, 5);
    cg_endif(cg, join);
}

/* Gradients finished by kernel k: those that live in the arena into their
 * slots, then the sums of squares of all of them. */
static void grad_epilogue(Cg *cg, int k)
{
    const IrGraph *g = cg->g;
    if (cg->kp) { /* a kind's function: the slots are columns */
        for (int i = 0; i < cg->kp->ngrads; i++) {
            const KindGrad *kg = &cg->kp->grads[i];
            if (kg->x->kernel != k)
                continue;
            LLVMValueRef slot = cg_col_ptr(cg, kg->col);
            if (!cg->ly->home[kg->x->id])
                cg_call(cg, grad_store_fn(cg),
                        (LLVMValueRef[]){slot, cg_home(cg, kg->x), cg_i64(cg, kg->param->numel), cg->acc}, 4);
            grad_sumsq(cg, slot, kg->param->numel);
        }
        return;
    }
    for (int p = cg->grad_first[k]; p >= 0; p = cg->grad_next[p]) {
        const IrNode *x = g->grads.v[p];
        int64_t numel = ((IrParam *)g->params.v[p])->numel;
        if (!cg->ly->home[x->id])
            cg_call(cg, grad_store_fn(cg), (LLVMValueRef[]){grad_slot(cg, p), cg_home(cg, x), cg_i64(cg, numel), cg->acc},
                    4);
        grad_sumsq(cg, grad_slot(cg, p), numel);
    }
}

/* capture[idx] = value of x, if a capture buffer was given (idx an i64). */
static void capture(Cg *cg, LLVMValueRef idx, const IrNode *x)
{
    if (!cg->width)
        return;
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildIsNotNull(cg->b, cg->capture, ""), "capture");
    LLVMValueRef n = LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->width), "");
    cg_copy(cg, cg_elem(cg, cg->capture, LLVMBuildMul(cg->b, n, idx, "")), cg_home(cg, x), n, false);
    cg_endif(cg, join);
}

/* Captures made right after kernel k of the entry point (those of a
 * skippable block's output wait for the end of its run: see run_end; a
 * block of a kind captures in its function). */
static void captures_after(Cg *cg, int k)
{
    const IrGraph *g = cg->g;
    if (!cg->g->blocks.n)
        return;
    const IrNode *in0 = ((IrBlock *)g->blocks.v[0])->in;
    if (in0 && in0->kernel == k)
        capture(cg, cg_i64(cg, 0), in0);
    uint8_t mode = cg->train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
    for (int l = cg->out_first[k]; l >= 0; l = cg->out_next[l])
        if (!(cg->blocks[l].skip & mode) && cg->blocks[l].kind < 0)
            capture(cg, cg_i64(cg, l + 1), ((IrBlock *)g->blocks.v[l])->out);
}

/* ---- skipping blocks ---- */

/* An open run of kernels that a skip jumps past. */
typedef struct Run {
    int block, k1;             /* block -1: none open */
    bool bwd;
    LLVMBasicBlockRef join;
} Run;

/* skip[l] != 0, l an i64. */
static LLVMValueRef skip_flag(Cg *cg, LLVMValueRef l)
{
    LLVMValueRef f = LLVMBuildLoad2(cg->b, cg->i8, cg_byte(cg, cg->skip, l), "");
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
    for (int k = r.k0; k < r.k1; k++)
        for (int p = cg->grad_first[k]; p >= 0; p = cg->grad_next[p])
            cg_zero(cg, grad_slot(cg, p), cg_i64(cg, ((IrParam *)cg->g->params.v[p])->numel));
    cg_endif(cg, join);
}

/* Opens the run of a skippable block that kernel k belongs to, if any. */
static void run_begin(Cg *cg, int k, Run *run)
{
    int l = cg->kinds->kernel_block[k];
    if (l < 0)
        return;
    const KindBlock *bi = &cg->blocks[l];
    uint8_t mode = cg->train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
    bool f = in_range(bi->fwd, k) && (bi->skip & mode);
    bool w = cg->train && in_range(bi->bwd, k) && (bi->skip & STRATA_SKIP_TRAIN);
    if (!f && !w)
        return;
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "block_end");
    LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "skip_block");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "block");
    LLVMBuildCondBr(cg->b, skip_flag(cg, cg_i64(cg, l)), skip, body);
    LLVMPositionBuilderAtEnd(cg->b, skip);
    skipped(cg, l, w);
    LLVMBuildBr(cg->b, join);
    LLVMPositionBuilderAtEnd(cg->b, body);
    *run = (Run){l, f ? bi->fwd.k1 : bi->bwd.k1, w, join};
}

/* Closes the open run: both paths meet; a forward run's output is captured. */
static void run_end(Cg *cg, Run *run)
{
    LLVMBuildBr(cg->b, run->join);
    LLVMPositionBuilderAtEnd(cg->b, run->join);
    const IrBlock *b = cg->g->blocks.v[run->block];
    if (!run->bwd && b->out)
        capture(cg, cg_i64(cg, run->block + 1), b->out);
    run->block = -1;
}

/* ---- one kernel ---- */

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

/* ---- the kinds' functions ---- */

/* The fields of the env struct an entry point gives a kind's function. */
enum {
    ENV_PARAMS, ENV_GRADS, ENV_TOKENS, ENV_TARGETS, ENV_MASK, ENV_B, ENV_T, ENV_BT, ENV_POOL, ENV_ACC,
    ENV_LOGITS, ENV_CAPTURE, ENV_SKIP, ENV_GEMM_FLAGS, ENV_KV, ENV_KV_POS, ENV_KV_LEN, ENV_SUMSQ,
    ENV_REGION, /* + MemRegion - MEM_ROWS */
    ENV_NFIELDS = ENV_REGION + MEM_NREGIONS - MEM_ROWS
};

/* The Cg fields the env carries, in field order. */
static void env_fields(Cg *cg, LLVMValueRef *f[ENV_NFIELDS])
{
    LLVMValueRef *first[] = {&cg->params, &cg->grads, &cg->tokens, &cg->targets, &cg->mask, &cg->B, &cg->T,
                             &cg->BT, &cg->pool, &cg->acc, &cg->logits, &cg->capture, &cg->skip,
                             &cg->gemm_flags, &cg->kv, &cg->kv_pos, &cg->kv_len, &cg->sumsq};
    for (int i = 0; i < ENV_REGION; i++)
        f[i] = first[i];
    for (int r = MEM_ROWS; r < MEM_NREGIONS; r++)
        f[ENV_REGION + r - MEM_ROWS] = &cg->region[r];
}

static LLVMTypeRef env_type(Cg *cg)
{
    LLVMTypeRef t[ENV_NFIELDS];
    for (int i = 0; i < ENV_NFIELDS; i++)
        t[i] = i == ENV_B || i == ENV_T || i == ENV_BT || i == ENV_KV_POS || i == ENV_KV_LEN ? cg->i64
             : i == ENV_ACC ? cg->i1
             : i == ENV_GEMM_FLAGS ? cg->i32 : cg->ptr;
    return LLVMStructTypeInContext(cg->ctx, t, ENV_NFIELDS, false);
}

/* The entry point's env: its values, stored once for every call. */
static void store_env(Cg *cg)
{
    LLVMValueRef *f[ENV_NFIELDS];
    env_fields(cg, f);
    cg->env = cg_alloca(cg, cg->env_type, "env");
    for (int i = 0; i < ENV_NFIELDS; i++)
        LLVMBuildStore(cg->b, *f[i], LLVMBuildStructGEP2(cg->b, cg->env_type, cg->env, (unsigned)i, ""));
}

/* In a kind's function: the env's values into cg. */
static void load_env(Cg *cg, LLVMValueRef env)
{
    LLVMValueRef *f[ENV_NFIELDS];
    LLVMTypeRef t[ENV_NFIELDS];
    env_fields(cg, f);
    LLVMGetStructElementTypes(cg->env_type, t);
    for (int i = 0; i < ENV_NFIELDS; i++)
        *f[i] = LLVMBuildLoad2(cg->b, t[i], LLVMBuildStructGEP2(cg->b, cg->env_type, env, (unsigned)i, ""), "");
    cg->arena = NULL;
    if (!cg->train)
        cg->acc = LLVMConstInt(cg->i1, 0, false);
}

/* The table of one pass of a kind: a row per block of the kind holding the
 * columns that differ between blocks, as {i64 x[ni], REAL x[nr]} (offsets
 * in REALs or bytes per unit, then numbers); cg->col_field says where. */
static void kind_table(Cg *cg, int kind, int pass)
{
    const Kind *kd = &cg->kinds->kinds[kind];
    const KindPass *kp = pass ? &kd->bwd : &kd->fwd;
    int ni = 0, nr = 0;
    cg->col_field = xrealloc(cg->col_field, ((size_t)kp->ncols + 1) * sizeof *cg->col_field);
    for (int c = 0; c < kp->ncols; c++)
        cg->col_field[c] = kp->cols[c].uniform ? -1 : kp->cols[c].kind == KCOL_CONST ? nr++ : ni++;
    LLVMTypeRef ft[] = {LLVMArrayType2(cg->i64, (uint64_t)ni), LLVMArrayType2(cg->real, (uint64_t)nr)};
    cg->kind_row_type[kind][pass] = LLVMStructTypeInContext(cg->ctx, ft, 2, false);
    cg->kind_rows[kind][pass] = NULL;
    if (ni + nr == 0)
        return;
    LLVMValueRef *rows = xcalloc((size_t)kd->nblocks, sizeof *rows);
    LLVMValueRef *iv = xcalloc((size_t)ni + 1, sizeof *iv), *rv = xcalloc((size_t)nr + 1, sizeof *rv);
    for (int r = 0; r < kd->nblocks; r++) {
        for (int c = 0; c < kp->ncols; c++) {
            const KindCell *cell = &kp->cells[(size_t)r * (size_t)kp->ncols + (size_t)c];
            int f = cg->col_field[c];
            if (f < 0)
                continue;
            switch (kp->cols[c].kind) {
            case KCOL_PARAM: case KCOL_GRAD: iv[f] = cg_i64(cg, cg->param_off[cell->param]); break;
            case KCOL_ARENA: iv[f] = cg_i64(cg, cell->off); break;
            case KCOL_CONST: rv[f] = cg_real(cg, cell->num); break;
            }
        }
        LLVMValueRef fv[] = {LLVMConstArray2(cg->i64, iv, (uint64_t)ni), LLVMConstArray2(cg->real, rv, (uint64_t)nr)};
        rows[r] = LLVMConstStructInContext(cg->ctx, fv, 2, false);
    }
    char name[48];
    snprintf(name, sizeof name, "block.%d.%s.rows", kind, pass ? "bwd" : "fwd");
    LLVMValueRef init = LLVMConstArray2(cg->kind_row_type[kind][pass], rows, (uint64_t)kd->nblocks);
    LLVMValueRef gv = LLVMAddGlobal(cg->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, true);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    cg->kind_rows[kind][pass] = gv;
    free(rows);
    free(iv);
    free(rv);
}

/* What a skipped block of a kind does instead of its run (skipped()). */
static void kind_skipped(Cg *cg, bool bwd)
{
    const KindPass *kp = cg->kp;
    if (kp->from < 0 || kp->to < 0)
        die("lower: a skippable kind without its input or output");
    const IrNode *from = kp->refs[kp->from].n, *to = kp->refs[kp->to].n;
    if (from != to)
        cg_copy(cg, cg_home(cg, to), cg_home(cg, from), LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, to->width), ""),
                true);
    if (!bwd)
        return;
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, cg->acc, ""), "zero_grads");
    for (int i = 0; i < kp->ngrads; i++)
        cg_zero(cg, cg_col_ptr(cg, kp->grads[i].col), cg_i64(cg, kp->grads[i].param->numel));
    cg_endif(cg, join);
}

/* void block.K.fwd|bwd(ptr env, ptr row, i64 l): the representative's run
 * of one pass, for strata_train_step (train), strata_forward or
 * strata_decode (decode), as the
 * entry point would emit it inline: the skip branch, the kernels, the
 * gradient epilogues and the capture of the output. */
static LLVMValueRef kind_function(Cg *cg, int kind, int pass, bool train, bool decode)
{
    const Kind *kd = &cg->kinds->kinds[kind];
    const KindPass *kp = pass ? &kd->bwd : &kd->fwd;
    char name[48];
    snprintf(name, sizeof name, "block.%d.%s%s", kind, pass ? "bwd" : "fwd",
             train || pass ? "" : decode ? ".decode" : ".forward");
    LLVMTypeRef params[] = {cg->ptr, cg->ptr, cg->i64};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->voidt, params, 3, false));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline"); /* one copy per kind, optimised once */
    cg->fn = fn;
    cg->train = train;
    cg->decode = decode;
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    load_env(cg, LLVMGetParam(fn, 0));
    cg->row = LLVMGetParam(fn, 1);
    cg->layer = LLVMGetParam(fn, 2);
    cg->kp = kp;
    cg->row_type = cg->kind_row_type[kind][pass];
    for (int r = 0; r < kp->nrefs; r++)
        cg->ref_of[kp->refs[r].n->id] = r;
    memset(cg->attn_grad_done, 0, (size_t)cg->g->nodes.n * sizeof *cg->attn_grad_done);

    LLVMValueRef next = LLVMBuildAdd(cg->b, cg->layer, cg_i64(cg, 1), "next"); /* the output's capture index */
    uint8_t skip = cg->blocks[kd->blocks[0]].skip, mode = train ? STRATA_SKIP_TRAIN : STRATA_SKIP_FORWARD;
    bool skippable = (skip & mode) != 0;
    const IrNode *out = !pass && kp->to >= 0 ? kp->refs[kp->to].n : NULL;
    LLVMBasicBlockRef join = NULL;
    if (skippable) {
        join = LLVMAppendBasicBlockInContext(cg->ctx, fn, "block_end");
        LLVMBasicBlockRef skipb = LLVMAppendBasicBlockInContext(cg->ctx, fn, "skip_block");
        LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "block");
        LLVMBuildCondBr(cg->b, skip_flag(cg, cg->layer), skipb, body);
        LLVMPositionBuilderAtEnd(cg->b, skipb);
        kind_skipped(cg, pass);
        LLVMBuildBr(cg->b, join);
        LLVMPositionBuilderAtEnd(cg->b, body);
    }
    for (int k = kp->run.k0; k < kp->run.k1; k++) {
        if (!train && !cg->kinds->logits_need[k])
            continue;
        emit_kernel(cg, cg->g->kernels.v[k]);
        if (train)
            grad_epilogue(cg, k);
        if (out && !skippable && out->kernel == k)
            capture(cg, next, out);
    }
    if (join) {
        LLVMBuildBr(cg->b, join);
        LLVMPositionBuilderAtEnd(cg->b, join);
        if (out)
            capture(cg, next, out);
    }
    LLVMBuildRetVoid(cg->b);
    for (int r = 0; r < kp->nrefs; r++)
        cg->ref_of[kp->refs[r].n->id] = -1;
    cg->kp = NULL;
    cg->fn = NULL;
    cg->decode = false;
    return fn;
}

void lower_kinds(Cg *cg)
{
    const Kinds *K = cg->kinds;
    cg->env_type = env_type(cg);
    cg->kind_fn = xcalloc((size_t)K->nkinds + 1, sizeof *cg->kind_fn);
    cg->kind_rows = xcalloc((size_t)K->nkinds + 1, sizeof *cg->kind_rows);
    cg->kind_row_type = xcalloc((size_t)K->nkinds + 1, sizeof *cg->kind_row_type);
    cg->ref_of = xmalloc(((size_t)cg->g->nodes.n + 1) * sizeof *cg->ref_of);
    for (int i = 0; i < cg->g->nodes.n; i++)
        cg->ref_of[i] = -1;
    bool used = false;
    for (int l = 0; l < cg->g->blocks.n; l++)
        used |= cg->blocks[l].kind >= 0;
    for (int kind = 0; kind < K->nkinds && used; kind++) {
        const Kind *kd = &K->kinds[kind];
        for (int pass = 0; pass < 2; pass++) {
            const KindPass *kp = pass ? &kd->bwd : &kd->fwd;
            if (kp->run.k0 == kp->run.k1)
                continue;
            kind_table(cg, kind, pass);
            cg->kind_fn[kind][pass] = kind_function(cg, kind, pass, true, false);
            if (pass)
                continue;
            /* strata_forward: the same function when it runs the same code
             * (every kernel needed, the same skip bit, no gradient), none
             * when it needs nothing. */
            bool all = true, any = false, attention = false;
            for (int k = kp->run.k0; k < kp->run.k1; k++) {
                const IrKernel *kn = cg->g->kernels.v[k];
                all &= K->logits_need[k];
                any |= K->logits_need[k];
                attention |= K->logits_need[k] && !kn->rowwise && ((IrNode *)kn->nodes.v[0])->op == IR_ATTENTION;
            }
            uint8_t skip = cg->blocks[kd->blocks[0]].skip;
            if (all && !kp->ngrads && !(skip & STRATA_SKIP_FORWARD) == !(skip & STRATA_SKIP_TRAIN))
                cg->kind_fn[kind][2] = cg->kind_fn[kind][0];
            else if (any)
                cg->kind_fn[kind][2] = kind_function(cg, kind, pass, false, false);
            /* strata_decode: differs from strata_forward in attention only */
            cg->kind_fn[kind][3] = attention ? kind_function(cg, kind, pass, false, true) : cg->kind_fn[kind][2];
        }
    }
    free(cg->col_field);
    cg->col_field = NULL;
}

/* Calls the function of block l's kind for its run that holds kernel k,
 * and for the runs right after it in the schedule of the blocks next to
 * it (l+1, l+2 ... or l-1, l-2 ...) of the same kind: one loop over their
 * rows.  Returns the kernel after the last run. */
static int call_kinds(Cg *cg, int l, int k)
{
    const Kinds *K = cg->kinds;
    int kind = cg->blocks[l].kind, nk = cg->g->kernels.n;
    int pass = in_range(cg->blocks[l].bwd, k);
    KRange r = pass ? cg->blocks[l].bwd : cg->blocks[l].fwd;
    int n = 1, dir = 0, last = l, end = r.k1;
    while (end < nk) {
        int m = K->kernel_block[end];
        if (m < 0 || cg->blocks[m].kind != kind)
            break;
        KRange rm = pass ? cg->blocks[m].bwd : cg->blocks[m].fwd;
        int d = m - last;
        if (rm.k0 != end || (d != 1 && d != -1) || (dir && d != dir))
            break;
        dir = d;
        last = m;
        end = rm.k1;
        n++;
    }
    LLVMValueRef fn = cg->kind_fn[kind][pass ? 1 : cg->train ? 0 : cg->decode ? 3 : 2];
    if (!fn)
        return end;
    LLVMValueRef table = cg->kind_rows[kind][pass];
    LLVMTypeRef row_type = cg->kind_row_type[kind][pass];
    LLVMValueRef l0 = cg_i64(cg, l), row0 = cg_i64(cg, cg->blocks[l].row);
    Loop lp = {0};
    if (n > 1) { /* i = 0 .. n-1: block l + dir i, row row0 + dir i */
        lp = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, n), NULL, "blocks");
        LLVMValueRef step = LLVMBuildMul(cg->b, lp.i, cg_i64(cg, dir), "");
        l0 = LLVMBuildAdd(cg->b, l0, step, "l");
        row0 = LLVMBuildAdd(cg->b, row0, step, "");
    }
    LLVMValueRef row = table ? LLVMBuildGEP2(cg->b, row_type, table, &row0, 1, "row") : LLVMConstNull(cg->ptr);
    cg_call(cg, fn, (LLVMValueRef[]){cg->env, row, l0}, 3);
    if (n > 1)
        cg_loop_end(cg, &lp, NULL);
    return end;
}

/* ---- the schedule ---- */

static void emit_schedule(Cg *cg)
{
    const IrGraph *g = cg->g;
    const bool *need = cg->train ? NULL : cg->kinds->logits_need;
    Run run = {.block = -1};
    bool shared = false;
    for (int l = 0; l < g->blocks.n && !shared; l++)
        shared = cg->blocks[l].kind >= 0;
    if (shared)
        store_env(cg);
    for (int k = 0; k < g->kernels.n; k++) {
        if (need && !need[k])
            continue;
        if (run.block >= 0 && k >= run.k1)
            run_end(cg, &run);
        int l = cg->kinds->kernel_block[k];
        if (l >= 0 && cg->blocks[l].kind >= 0) {
            k = call_kinds(cg, l, k) - 1;
            continue;
        }
        if (cg->train && k == cg->ly->head.k0) {
            if (run.block >= 0)
                die("lower: the head's kernels inside block %d's run", run.block);
            lower_head_chunks(cg);
            for (int j = k; j < k + 5; j++) {
                grad_epilogue(cg, j);
                captures_after(cg, j);
            }
            k += 4;
            continue;
        }
        if (run.block < 0)
            run_begin(cg, k, &run);
        emit_kernel(cg, g->kernels.v[k]);
        if (cg->train)
            grad_epilogue(cg, k);
        captures_after(cg, k);
    }
    if (run.block >= 0)
        run_end(cg, &run);
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
    cg->kv = cg->decode ? field(cg, s, 16, p, "kv") : LLVMConstNull(p);
    cg->kv_pos = cg->decode ? field(cg, s, 17, i64, "kv_pos") : cg_i64(cg, 0);
    cg->kv_len = cg->decode ? field(cg, s, 18, i64, "kv_len") : cg_i64(cg, 0);
    cg->sumsq = cg->train && cg->prec == LOWER_F32 ? field(cg, s, 19, p, "grad_sumsq") : LLVMConstNull(p);
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
    if (cg->decode) { /* 0 <= kv_pos <= kv_len - T, a cache when there is one to keep */
        bad = LLVMBuildOr(cg->b, slt(cg, cg->kv_pos, cg_i64(cg, 0)),
                          slt(cg, LLVMBuildSub(cg->b, cg->kv_len, cg->T, ""), cg->kv_pos), "");
        if (cg->kv_width)
            bad = LLVMBuildOr(cg->b, bad, is_null(cg, cg->kv), "");
        fail_if(cg, bad, STRATA_ERR_CACHE);
    }
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
            fail_if(cg, skip_flag(cg, cg_i64(cg, l)), STRATA_ERR_SKIP);
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
    const IrNode *L = cg->g->logits;
    cg->logits_out = NULL;
    if (cg->train && ly->head.k0 >= 0) { /* lower_head_chunks places them; copies to out when given */
        cg->logits = cg_slot_ptr(cg, ly->value[L->id], L);
        cg->logits_out = out;
    } else {
        cg->logits = LLVMBuildSelect(cg->b, is_null(cg, out), cg_slot_ptr(cg, ly->logits, L), out, "logits");
    }
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

void lower_entry(Cg *cg, bool train, bool decode)
{
    LLVMTypeRef fty = LLVMFunctionType(cg->i32, &cg->ptr, 1, false);
    cg->fn = LLVMAddFunction(cg->mod, train ? LOWER_TRAIN_ENTRY : decode ? LOWER_DECODE_ENTRY : LOWER_FORWARD_ENTRY,
                             fty);
    cg->train = train;
    cg->decode = decode;
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
    cg->decode = false;
}
