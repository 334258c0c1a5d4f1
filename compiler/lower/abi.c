/* abi.c - the compile-time side of model ABI v4 (model_abi.h): the
 * parameter layout (and which kernel computes each gradient and block
 * output), the KV cache layout of strata_decode (each attention's keys
 * and values), the StrataStep type as LLVM sees it, and the strata_model
 * descriptor constant with each block's skip flags (from ir/kinds.c).  The LLVM struct types mirror the
 * C structs field by field; lower_step_type and lower_emit_desc check the
 * offsets against offsetof, so a change to model_abi.h that is not made
 * here too is caught when a model is compiled. */
#include "lower/cg.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PARAM_ALIGN 16 /* REALs: 64 bytes in float */

int64_t lower_max_width(const IrGraph *g)
{
    int64_t w = 1;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->tok && x->width > w)
            w = x->width;
    }
    return w;
}

/* ---- the KV cache ---- */

/* strata_decode's cache: every forward attention in schedule order gets
 * its keys (B, kv_len, W) at kv_off * B * kv_len REALs and its values
 * right after (kv_width = the sum of 2 W).  A block's attentions are
 * contiguous, so the blocks of a kind find theirs at their kv_base plus
 * the representative's offsets from its own (the table kv_base, indexed
 * by block, that cg_kv_home reads in a kind's function). */
static void kv_plan(Cg *cg)
{
    const IrGraph *g = cg->g;
    int nb = g->blocks.n;
    cg->kv_off = xmalloc(((size_t)g->nodes.n + 1) * sizeof *cg->kv_off);
    cg->kv_base = xmalloc(((size_t)nb + 1) * sizeof *cg->kv_base);
    for (int i = 0; i < g->nodes.n; i++)
        cg->kv_off[i] = -1;
    for (int l = 0; l < nb; l++)
        cg->kv_base[l] = -1;
    int64_t off = 0, nforward = g->nforward ? g->nforward : g->nodes.n; /* 0: no backward pass */
    for (int k = 0; k < g->kernels.n; k++) {
        const IrKernel *kn = g->kernels.v[k];
        const IrNode *x = kn->nodes.v[0];
        if (kn->rowwise || x->op != IR_ATTENTION || x->id >= nforward)
            continue;
        cg->kv_off[x->id] = off;
        int l = cg->kinds->kernel_block[k];
        if (l >= 0 && cg->kv_base[l] < 0)
            cg->kv_base[l] = off;
        off += 2 * x->width;
    }
    cg->kv_width = off;
    LLVMValueRef *v = xcalloc((size_t)nb + 1, sizeof *v);
    for (int l = 0; l < nb; l++)
        v[l] = cg_i64(cg, cg->kv_base[l] < 0 ? 0 : cg->kv_base[l]);
    cg->kv_base_table = LLVMAddGlobal(cg->mod, LLVMArrayType2(cg->i64, (uint64_t)nb), "kv_base");
    LLVMSetInitializer(cg->kv_base_table, LLVMConstArray2(cg->i64, v, (uint64_t)nb));
    LLVMSetGlobalConstant(cg->kv_base_table, true);
    LLVMSetLinkage(cg->kv_base_table, LLVMPrivateLinkage);
    free(v);
}

/* ---- parameters, gradients, block outputs ---- */

void lower_abi_plan(Cg *cg)
{
    const IrGraph *g = cg->g;
    int nk = g->kernels.n;
    cg->param_off = xcalloc((size_t)g->params.n + 1, sizeof *cg->param_off);
    int64_t off = 0;
    for (int p = 0; p < g->params.n; p++) {
        cg->param_off[p] = off;
        off += (((IrParam *)g->params.v[p])->numel + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
    }
    cg->params_numel = off;
    cg->blocks = cg->kinds->blocks;
    cg->width = cg->kinds->width;
    /* Chains in parameter (block) order, so the code keeps that order. */
    cg->grad_first = xmalloc(((size_t)nk + 1) * sizeof *cg->grad_first);
    cg->out_first = xmalloc(((size_t)nk + 1) * sizeof *cg->out_first);
    cg->grad_next = xmalloc(((size_t)g->params.n + 1) * sizeof *cg->grad_next);
    cg->out_next = xmalloc(((size_t)g->blocks.n + 1) * sizeof *cg->out_next);
    for (int k = 0; k < nk; k++)
        cg->grad_first[k] = cg->out_first[k] = -1;
    for (int p = g->grads.n - 1; p >= 0; p--) {
        const IrNode *x = g->grads.v[p];
        cg->grad_next[p] = -1;
        if (x && x->kernel >= 0) {
            cg->grad_next[p] = cg->grad_first[x->kernel];
            cg->grad_first[x->kernel] = p;
        }
    }
    for (int l = g->blocks.n - 1; l >= 0; l--) {
        const IrNode *x = ((IrBlock *)g->blocks.v[l])->out;
        cg->out_next[l] = -1;
        if (x && x->kernel >= 0) {
            cg->out_next[l] = cg->out_first[x->kernel];
            cg->out_first[x->kernel] = l;
        }
    }
    cg->attn_grad_done = xcalloc((size_t)g->nodes.n + 1, sizeof *cg->attn_grad_done);
    kv_plan(cg);
}

/* ---- struct types ---- */

/* Dies unless LLVM lays out `t` at the C offsets off[]. */
static void check_layout(Cg *cg, LLVMTypeRef t, const size_t *off, unsigned n, size_t size, const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (LLVMOffsetOfElement(cg->td, t, i) != off[i])
            die("lower: %s field %u is at %llu for LLVM, %zu in model_abi.h", name, i,
                (unsigned long long)LLVMOffsetOfElement(cg->td, t, i), off[i]);
    if (LLVMABISizeOfType(cg->td, t) != size)
        die("lower: %s is %llu bytes for LLVM, %zu in model_abi.h", name,
            (unsigned long long)LLVMABISizeOfType(cg->td, t), size);
}

LLVMTypeRef lower_step_type(Cg *cg)
{
    LLVMTypeRef p = cg->ptr, i64 = cg->i64;
    LLVMTypeRef f[] = {p, p, p, i64, p, p, p, i64, i64, p, p, p, p, p, cg->i32, cg->i32, p, i64, i64, p};
    static const size_t off[] = {
        offsetof(StrataStep, params),  offsetof(StrataStep, grads),       offsetof(StrataStep, arena),
        offsetof(StrataStep, arena_bytes), offsetof(StrataStep, tokens),  offsetof(StrataStep, targets),
        offsetof(StrataStep, mask),    offsetof(StrataStep, B),           offsetof(StrataStep, T),
        offsetof(StrataStep, loss),    offsetof(StrataStep, logits),      offsetof(StrataStep, capture),
        offsetof(StrataStep, skip),    offsetof(StrataStep, pool),        offsetof(StrataStep, accumulate),
        offsetof(StrataStep, precision), offsetof(StrataStep, kv),     offsetof(StrataStep, kv_pos),
        offsetof(StrataStep, kv_len),  offsetof(StrataStep, grad_sumsq)};
    LLVMTypeRef t = LLVMStructTypeInContext(cg->ctx, f, 20, false);
    check_layout(cg, t, off, 20, sizeof(StrataStep), "StrataStep");
    return t;
}

static LLVMTypeRef param_type(Cg *cg)
{
    LLVMTypeRef i64 = cg->i64, i32 = cg->i32, d = cg->f64;
    LLVMTypeRef f[] = {cg->ptr, LLVMArrayType2(i64, 2), i64, i64, d, d, d, i32, i32, i32, i32};
    static const size_t off[] = {offsetof(StrataParam, name),   offsetof(StrataParam, dims),
                                 offsetof(StrataParam, numel),  offsetof(StrataParam, offset),
                                 offsetof(StrataParam, init_a), offsetof(StrataParam, init_b),
                                 offsetof(StrataParam, init_c), offsetof(StrataParam, ndim),
                                 offsetof(StrataParam, init),   offsetof(StrataParam, role),
                                 offsetof(StrataParam, block)};
    LLVMTypeRef t = LLVMStructTypeInContext(cg->ctx, f, 11, false);
    check_layout(cg, t, off, 11, sizeof(StrataParam), "StrataParam");
    return t;
}

static LLVMTypeRef desc_type(Cg *cg)
{
    LLVMTypeRef p = cg->ptr, i64 = cg->i64;
    LLVMTypeRef f[] = {cg->i32, cg->i32, i64, i64, p, i64, i64, p, i64, i64, i64, i64, i64, i64, i64, p, i64};
    static const size_t off[] = {
        offsetof(StrataModelDesc, magic),          offsetof(StrataModelDesc, abi_version),
        offsetof(StrataModelDesc, real_bytes),     offsetof(StrataModelDesc, nparams),
        offsetof(StrataModelDesc, params),         offsetof(StrataModelDesc, params_numel),
        offsetof(StrataModelDesc, nblocks),        offsetof(StrataModelDesc, block_skip),
        offsetof(StrataModelDesc, width),          offsetof(StrataModelDesc, vocab),
        offsetof(StrataModelDesc, arena_rows_bytes), offsetof(StrataModelDesc, arena_seq_bytes),
        offsetof(StrataModelDesc, arena_fixed_bytes), offsetof(StrataModelDesc, arena_thread_bytes),
        offsetof(StrataModelDesc, logits_row_offset), offsetof(StrataModelDesc, name),
        offsetof(StrataModelDesc, kv_width)};
    LLVMTypeRef t = LLVMStructTypeInContext(cg->ctx, f, 17, false);
    check_layout(cg, t, off, 17, sizeof(StrataModelDesc), "StrataModelDesc");
    return t;
}

/* ---- the descriptor ---- */

static LLVMValueRef private_const(Cg *cg, LLVMValueRef init, const char *name)
{
    LLVMValueRef gv = LLVMAddGlobal(cg->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, true);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    return gv;
}

static LLVMValueRef const_string(Cg *cg, const char *s)
{
    return private_const(cg, LLVMConstStringInContext(cg->ctx, s, (unsigned)strlen(s), false), "str");
}

static LLVMValueRef const_i(LLVMTypeRef t, int64_t v)
{
    return LLVMConstInt(t, (unsigned long long)v, true);
}

static LLVMValueRef param_table(Cg *cg, LLVMTypeRef pt)
{
    const IrGraph *g = cg->g;
    int n = g->params.n;
    LLVMValueRef *rows = xcalloc((size_t)n + 1, sizeof *rows);
    for (int i = 0; i < n; i++) {
        const IrParam *p = g->params.v[i];
        /* Only the numbers the rule uses (StrataInitKind); the others are 0. */
        IrInitKind k = p->init.kind;
        bool uses_a = k != INIT_ZEROS && k != INIT_ONES, uses_bc = k == INIT_TRUNC_NORMAL;
        LLVMValueRef dims[] = {const_i(cg->i64, p->ndim > 0 ? p->dims[0] : 0),
                               const_i(cg->i64, p->ndim > 1 ? p->dims[1] : 0)};
        LLVMValueRef f[] = {const_string(cg, p->name),  LLVMConstArray2(cg->i64, dims, 2),
                            const_i(cg->i64, p->numel), const_i(cg->i64, cg->param_off[i]),
                            LLVMConstReal(cg->f64, uses_a ? p->init.a : 0),
                            LLVMConstReal(cg->f64, uses_bc ? p->init.b : 0),
                            LLVMConstReal(cg->f64, uses_bc ? p->init.c : 0), const_i(cg->i32, p->ndim),
                            const_i(cg->i32, (int64_t)p->init.kind), const_i(cg->i32, (int64_t)p->role),
                            const_i(cg->i32, p->block)};
        rows[i] = LLVMConstNamedStruct(pt, f, 11);
    }
    LLVMValueRef table = private_const(cg, LLVMConstArray2(pt, rows, (uint64_t)n), "params");
    free(rows);
    return table;
}

static LLVMValueRef skip_table(Cg *cg)
{
    int n = cg->g->blocks.n;
    LLVMValueRef *v = xcalloc((size_t)n + 1, sizeof *v);
    for (int l = 0; l < n; l++)
        v[l] = LLVMConstInt(cg->i8, cg->blocks[l].skip, false);
    LLVMValueRef t = private_const(cg, LLVMConstArray2(cg->i8, v, (uint64_t)n), "block_skip");
    free(v);
    return t;
}

/* The enums of model_abi.h number what ir.h numbers. */
_Static_assert((int)STRATA_INIT_CONSTANT == (int)INIT_CONSTANT && (int)STRATA_INIT_XAVIER == (int)INIT_XAVIER,
               "StrataInitKind and IrInitKind differ");
_Static_assert((int)STRATA_ROLE_SCALAR == (int)PARAM_SCALAR && (int)STRATA_ROLE_EMBEDDING == (int)PARAM_EMBEDDING,
               "StrataParamRole and IrParamRole differ");

void lower_emit_desc(Cg *cg)
{
    const IrGraph *g = cg->g;
    const MemLayout *ly = cg->ly;
    LLVMTypeRef pt = LLVMStructCreateNamed(cg->ctx, "StrataParam");
    LLVMTypeRef dt = LLVMStructCreateNamed(cg->ctx, "StrataModelDesc");
    LLVMTypeRef pl = param_type(cg), dl = desc_type(cg);
    LLVMTypeRef pf[11], df[17];
    LLVMGetStructElementTypes(pl, pf);
    LLVMGetStructElementTypes(dl, df);
    LLVMStructSetBody(pt, pf, 11, false);
    LLVMStructSetBody(dt, df, 17, false);
    const char *name = g->model_name ? g->model_name : "strata";
    LLVMValueRef f[] = {const_i(cg->i32, STRATA_MODEL_MAGIC),
                        const_i(cg->i32, STRATA_ABI_VERSION),
                        const_i(cg->i64, cg->elem),
                        const_i(cg->i64, g->params.n),
                        param_table(cg, pt),
                        const_i(cg->i64, cg->params_numel),
                        const_i(cg->i64, g->blocks.n),
                        skip_table(cg),
                        const_i(cg->i64, cg->width),
                        const_i(cg->i64, g->logits->width),
                        const_i(cg->i64, ly->unit_bytes[MEM_ROWS]),
                        const_i(cg->i64, ly->unit_bytes[MEM_SEQ]),
                        const_i(cg->i64, ly->unit_bytes[MEM_FIXED]),
                        const_i(cg->i64, ly->unit_bytes[MEM_THREAD]),
                        const_i(cg->i64, ly->logits.off),
                        const_string(cg, name),
                        const_i(cg->i64, cg->kv_width)};
    if (ly->logits.region != MEM_ROWS)
        die("lower: the logits are not a planned token value");
    LLVMValueRef gv = LLVMAddGlobal(cg->mod, dt, LOWER_DESC_SYMBOL);
    LLVMSetInitializer(gv, LLVMConstNamedStruct(dt, f, 17));
    LLVMSetGlobalConstant(gv, true);
    LLVMSetLinkage(gv, LLVMExternalLinkage);
}
