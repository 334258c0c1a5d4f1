/* cg.c - the core of the LLVM lowering (cg.h) that every lowering file
 * uses: constants, pointers and calls, memset/memcpy, allocas, ifs, loops,
 * parallel tasks run by the pool (cg_task, cg_run_task), and where a
 * value of the graph lives in the function being built (cg_home and
 * friends; in a kind's function, at the column of the kind's table that
 * places it, for the block whose row the function got).  The scalar
 * arithmetic is arith.c, the other half of the core. */
#include "lower/cg.h"

#include <llvm-c/DebugInfo.h>

#include <stdlib.h>
#include <string.h>

/* ---- constants, pointers, calls ---- */

LLVMValueRef cg_i32(Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i32, (unsigned long long)v, true);
}

LLVMValueRef cg_i64(Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i64, (unsigned long long)v, true);
}

LLVMValueRef cg_real(Cg *cg, double v)
{
    return LLVMConstReal(cg->real, v);
}

LLVMValueRef cg_elem(Cg *cg, LLVMValueRef base, LLVMValueRef i)
{
    return LLVMBuildGEP2(cg->b, cg->real, base, &i, 1, "");
}

LLVMValueRef cg_byte(Cg *cg, LLVMValueRef base, LLVMValueRef i)
{
    return LLVMBuildGEP2(cg->b, cg->i8, base, &i, 1, "");
}

LLVMValueRef cg_load(Cg *cg, LLVMValueRef p)
{
    return LLVMBuildLoad2(cg->b, cg->real, p, "");
}

LLVMValueRef cg_extern(Cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n)
{
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    if (!fn) {
        fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(ret, params, n, false));
        LLVMSetLinkage(fn, LLVMExternalLinkage);
    }
    return fn;
}

LLVMValueRef cg_call(Cg *cg, LLVMValueRef fn, LLVMValueRef *args, unsigned n)
{
    return LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

void cg_fn_attr(Cg *cg, LLVMValueRef fn, unsigned idx, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

static LLVMValueRef real_bytes(Cg *cg, LLVMValueRef n)
{
    return LLVMBuildMul(cg->b, n, cg_i64(cg, cg->elem), "");
}

void cg_zero(Cg *cg, LLVMValueRef p, LLVMValueRef n)
{
    LLVMBuildMemSet(cg->b, p, LLVMConstInt(cg->i8, 0, false), real_bytes(cg, n), (unsigned)cg->elem);
}

void cg_copy(Cg *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n, bool overlap)
{
    unsigned al = (unsigned)cg->elem;
    if (overlap)
        LLVMBuildMemMove(cg->b, dst, al, src, al, real_bytes(cg, n));
    else
        LLVMBuildMemCpy(cg->b, dst, al, src, al, real_bytes(cg, n));
}

LLVMValueRef cg_alloca(Cg *cg, LLVMTypeRef t, const char *name)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(fn);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(cg->ctx);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first)
        LLVMPositionBuilderBefore(b, first);
    else
        LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef a = LLVMBuildAlloca(b, t, name);
    LLVMDisposeBuilder(b);
    return a;
}

LLVMBasicBlockRef cg_if(Cg *cg, LLVMValueRef cond, const char *name)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(cg->ctx, fn, name);
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, fn, "endif");
    LLVMBuildCondBr(cg->b, cond, then, join);
    LLVMPositionBuilderAtEnd(cg->b, then);
    return join;
}

void cg_endif(Cg *cg, LLVMBasicBlockRef join)
{
    LLVMBuildBr(cg->b, join);
    LLVMPositionBuilderAtEnd(cg->b, join);
}

/* ---- loops ---- */

Loop cg_loop_begin(Cg *cg, LLVMValueRef from, LLVMValueRef n, LLVMValueRef acc_init, const char *name)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    Loop l = {.head = LLVMAppendBasicBlockInContext(cg->ctx, fn, name)};
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "body");
    l.exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "done");
    LLVMBuildBr(cg->b, l.head);
    LLVMPositionBuilderAtEnd(cg->b, l.head);
    l.i = LLVMBuildPhi(cg->b, cg->i64, name);
    LLVMAddIncoming(l.i, &from, &pre, 1);
    if (acc_init) {
        l.acc = LLVMBuildPhi(cg->b, cg->real, "acc");
        LLVMAddIncoming(l.acc, &acc_init, &pre, 1);
    }
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, l.i, n, ""), body, l.exit);
    LLVMPositionBuilderAtEnd(cg->b, body);
    return l;
}

void cg_loop_end(Cg *cg, Loop *l, LLVMValueRef acc_next)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, cg_i64(cg, 1), "");
    LLVMBuildBr(cg->b, l->head);
    LLVMAddIncoming(l->i, &next, &latch, 1);
    if (l->acc)
        LLVMAddIncoming(l->acc, &acc_next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

void cg_loop_end_rows(Cg *cg, Loop *l)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, cg_i64(cg, 1), "");
    LLVMValueRef br = LLVMBuildBr(cg->b, l->head);
    LLVMAddIncoming(l->i, &next, &latch, 1);
    /* !llvm.loop !{self, !{"llvm.loop.vectorize.enable", i1 false}} */
    LLVMMetadataRef off[] = {LLVMMDStringInContext2(cg->ctx, "llvm.loop.vectorize.enable", 26),
                             LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 0, false))};
    LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef ops[] = {self, LLVMMDNodeInContext2(cg->ctx, off, 2)};
    LLVMMetadataRef loop = LLVMMDNodeInContext2(cg->ctx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(self, loop);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, loop));
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

/* ---- parallel tasks ---- */

const CgTask *cg_task(Cg *cg, const char *key, const char *name, LLVMTypeRef *types, unsigned n, CgTaskBody *body,
                      const void *info)
{
    for (int i = 0; i < cg->ntasks; i++)
        if (!strcmp(cg->tasks[i].key, key))
            return &cg->tasks[i];
    LLVMTypeRef ctx_type = LLVMStructTypeInContext(cg->ctx, types, n, false);
    LLVMTypeRef params[] = {cg->ptr, cg->i64, cg->i64, cg->i32};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name ? name : key, LLVMFunctionType(cg->voidt, params, 4, false));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    LLVMBasicBlockRef at = LLVMGetInsertBlock(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMValueRef *v = xcalloc(n + 1, sizeof *v), ctx = LLVMGetParam(fn, 0);
    for (unsigned k = 0; k < n; k++)
        v[k] = LLVMBuildLoad2(cg->b, types[k], LLVMBuildStructGEP2(cg->b, ctx_type, ctx, k, ""), "");
    body(cg, info, v, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3));
    LLVMBuildRetVoid(cg->b);
    free(v);
    LLVMPositionBuilderAtEnd(cg->b, at);
    cg->tasks = xrealloc(cg->tasks, (size_t)(cg->ntasks + 1) * sizeof *cg->tasks);
    cg->tasks[cg->ntasks] = (CgTask){xstrdup(key), fn, ctx_type};
    return &cg->tasks[cg->ntasks++];
}

/* llvm.lifetime.start / .end of an alloca, so that the ctx structs of the
 * many call sites share stack. */
static void lifetime(Cg *cg, const char *which, LLVMValueRef size, LLVMValueRef p)
{
    unsigned id = LLVMLookupIntrinsicID(which, strlen(which));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &cg->ptr, 1);
    LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, &cg->ptr, 1), fn, (LLVMValueRef[]){size, p}, 2, "");
}

/* void rt_pool_run(RtPool *p, int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t, int), void *ctx) */
void cg_run_task(Cg *cg, const CgTask *t, LLVMValueRef *vals, LLVMValueRef n, LLVMValueRef grain)
{
    LLVMValueRef ctx = cg_alloca(cg, t->ctx_type, "ctx");
    LLVMValueRef size = cg_i64(cg, (int64_t)LLVMABISizeOfType(cg->td, t->ctx_type));
    lifetime(cg, "llvm.lifetime.start", size, ctx);
    unsigned nv = LLVMCountStructElementTypes(t->ctx_type);
    for (unsigned k = 0; k < nv; k++)
        LLVMBuildStore(cg->b, vals[k], LLVMBuildStructGEP2(cg->b, t->ctx_type, ctx, k, ""));
    LLVMTypeRef params[] = {cg->ptr, cg->i64, cg->i64, cg->ptr, cg->ptr};
    LLVMValueRef run = cg_extern(cg, "rt_pool_run", cg->voidt, params, 5);
    cg_call(cg, run, (LLVMValueRef[]){cg->pool, n, grain, t->fn, ctx}, 5);
    lifetime(cg, "llvm.lifetime.end", size, ctx);
}

/* ---- where values live ---- */

static LLVMValueRef region_units(Cg *cg, MemRegion r)
{
    return r == MEM_ROWS ? cg->BT : r == MEM_SEQ ? cg->T : cg_i64(cg, 1);
}

LLVMValueRef cg_slot_ptr(Cg *cg, MemSlot s, const IrNode *n)
{
    if (s.region == MEM_NONE)
        die("lower: %%%d (%s) has no place in the arena", n->id, ir_op_info[n->op].text);
    LLVMValueRef off = LLVMBuildMul(cg->b, cg_i64(cg, s.off), region_units(cg, s.region), "");
    return cg_byte(cg, cg->region[s.region], off);
}

/* A CONST read through memory (by a runtime kernel): a private global. */
static LLVMValueRef const_global(Cg *cg, const IrNode *n)
{
    char name[32];
    snprintf(name, sizeof name, "const.%d", n->id);
    LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
    if (!gv) {
        gv = LLVMAddGlobal(cg->mod, cg->real, name);
        LLVMSetInitializer(gv, cg_real(cg, n->num));
        LLVMSetGlobalConstant(gv, true);
        LLVMSetLinkage(gv, LLVMPrivateLinkage);
    }
    return gv;
}

/* ---- in a kind's function: the columns of the table ---- */

/* The representative's ref of node n in the pass being built. */
static const KindRef *kind_ref(Cg *cg, const IrNode *n)
{
    int r = cg->ref_of[n->id];
    if (r < 0)
        die("lower: %%%d (%s) is not touched by its kind's run", n->id, ir_op_info[n->op].text);
    return &cg->kp->refs[r];
}

/* Column c's i64 datum for this block: a constant when uniform, else a
 * load from the row. */
static LLVMValueRef col_i64(Cg *cg, int c, int64_t uniform)
{
    int f = cg->col_field[c];
    if (f < 0)
        return cg_i64(cg, uniform);
    LLVMValueRef idx[] = {cg_i32(cg, 0), cg_i32(cg, 0), cg_i32(cg, f)};
    return LLVMBuildLoad2(cg->b, cg->i64, LLVMBuildGEP2(cg->b, cg->row_type, cg->row, idx, 3, ""), "");
}

/* Pointer to column c's REAL in the row (a CONST that differs between blocks). */
static LLVMValueRef col_real_ptr(Cg *cg, int c)
{
    LLVMValueRef idx[] = {cg_i32(cg, 0), cg_i32(cg, 1), cg_i32(cg, cg->col_field[c])};
    return LLVMBuildGEP2(cg->b, cg->row_type, cg->row, idx, 3, "");
}

LLVMValueRef cg_col_ptr(Cg *cg, int c)
{
    const KindCol *col = &cg->kp->cols[c];
    const KindCell *rep = &cg->kp->cells[c]; /* the representative's row (row 0) */
    switch (col->kind) {
    case KCOL_PARAM:
        return cg_elem(cg, cg->params, col_i64(cg, c, cg->param_off[rep->param]));
    case KCOL_GRAD:
        return cg_elem(cg, cg->grads, col_i64(cg, c, cg->param_off[rep->param]));
    case KCOL_ARENA: {
        LLVMValueRef off = LLVMBuildMul(cg->b, col_i64(cg, c, rep->off), region_units(cg, col->region), "");
        return cg_byte(cg, cg->region[col->region], off);
    }
    case KCOL_CONST:
        break;
    }
    if (cg->col_field[c] >= 0)
        return col_real_ptr(cg, c);
    for (int r = 0; r < cg->kp->nrefs; r++) /* uniform: the representative's own constant */
        if (cg->kp->refs[r].value == c)
            return const_global(cg, cg->kp->refs[r].n);
    die("lower: column %d of a kind has no node", c);
}

/* ---- where values live ---- */

LLVMValueRef cg_home(Cg *cg, const IrNode *n)
{
    const MemLayout *ly = cg->ly;
    if (cg->kp) {
        const KindRef *r = kind_ref(cg, n);
        if (r->value >= 0)
            return cg_col_ptr(cg, r->value);
    }
    switch (n->op) {
    case IR_PARAM: return cg_elem(cg, cg->params, cg_i64(cg, cg->param_off[n->param->index]));
    case IR_INPUT_TOKENS: return cg->tokens;
    case IR_INPUT_TARGETS: return cg->targets;
    case IR_CONST: return const_global(cg, n);
    default: break;
    }
    if (n == cg->g->logits)
        return cg->logits;
    if (cg->kp)
        die("lower: %%%d (%s) has no column in its kind's table", n->id, ir_op_info[n->op].text);
    if (ly->home[n->id])
        return cg_elem(cg, cg->grads, cg_i64(cg, cg->param_off[ly->home[n->id]->index]));
    return cg_slot_ptr(cg, ly->value[n->id], n);
}

LLVMValueRef cg_aux_home(Cg *cg, const IrNode *n)
{
    if (cg->kp) {
        const KindRef *r = kind_ref(cg, n);
        if (r->aux < 0)
            die("lower: %%%d (%s) has no aux column", n->id, ir_op_info[n->op].text);
        return cg_col_ptr(cg, r->aux);
    }
    return cg_slot_ptr(cg, cg->ly->aux[n->id], n);
}

LLVMValueRef cg_table_home(Cg *cg, const IrNode *n)
{
    if (cg->kp) {
        const KindRef *r = kind_ref(cg, n);
        if (r->table < 0)
            die("lower: %%%d (%s) has no table column", n->id, ir_op_info[n->op].text);
        return cg_col_ptr(cg, r->table);
    }
    return cg_slot_ptr(cg, cg->ly->table[n->id], n);
}

LLVMValueRef cg_kv_home(Cg *cg, const IrNode *x)
{
    int64_t off = x->id < cg->g->nodes.n ? cg->kv_off[x->id] : -1;
    if (off < 0)
        die("lower: %%%d (%s) has no place in the KV cache", x->id, ir_op_info[x->op].text);
    LLVMValueRef at = cg_i64(cg, off);
    if (cg->kp) { /* this block's base plus the representative's offset from its own */
        int rep = cg->kinds->kernel_block[x->kernel];
        LLVMValueRef base = LLVMBuildLoad2(
            cg->b, cg->i64, LLVMBuildGEP2(cg->b, cg->i64, cg->kv_base_table, &cg->layer, 1, ""), "kv_base");
        at = LLVMBuildAdd(cg->b, base, cg_i64(cg, off - cg->kv_base[rep]), "");
    }
    LLVMValueRef per = LLVMBuildMul(cg->b, cg->B, cg->kv_len, "");
    return cg_elem(cg, cg->kv, LLVMBuildMul(cg->b, at, per, ""));
}

LLVMValueRef cg_accumulates(Cg *cg, const IrNode *x)
{
    return cg->ly->home[x->id] ? cg->acc : LLVMConstInt(cg->i1, 0, false);
}

LLVMValueRef cg_const(Cg *cg, const IrNode *n)
{
    if (cg->kp) {
        const KindRef *r = kind_ref(cg, n);
        if (r->value >= 0 && cg->col_field[r->value] >= 0)
            return cg_load(cg, col_real_ptr(cg, r->value));
    }
    return cg_real(cg, n->num);
}
