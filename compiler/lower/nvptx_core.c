/* nvptx_core.c - the core of the GPU lowering (nvptx.h): kernel entry
 * points with their nvvm.annotations, PTX special registers, barriers,
 * shared memory, a deterministic block reduction, and the launch plan's
 * growing arrays with the arguments that place a node's value as the
 * memory plan does.  Memory: the keys, names, launches and arguments are
 * malloc'd into the Gpu; nvptx.c hands them to the program or frees them. */
#include "lower/nvptx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int gpu_find(Gpu *x, const char *key)
{
    for (int i = 0; i < x->nkeys; i++)
        if (!strcmp(x->keys[i].key, key))
            return x->keys[i].index;
    return -1;
}

/* Kernel names: "k<index>_<key with odd characters as _>", at most 63
 * bytes; keys starting "strata_" are the names themselves. */
static char *kernel_name(int index, const char *key)
{
    if (!strncmp(key, "strata_", 7)) /* the optimizer's, named in plan.h */
        return xstrdup(key);
    char *s = xmalloc(64);
    int n = snprintf(s, 64, "k%d_", index);
    for (const char *p = key; *p && n < 63; p++)
        s[n++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ? *p : '_');
    s[n] = 0;
    return s;
}

int gpu_begin(Gpu *x, const char *key, LLVMTypeRef *types, unsigned n)
{
    Cg *cg = &x->cg;
    int index = x->nkeys;
    x->keys = xrealloc(x->keys, (size_t)(index + 1) * sizeof *x->keys);
    x->names = xrealloc(x->names, (size_t)(index + 1) * sizeof *x->names);
    x->keys[index] = (GpuKey){xstrdup(key), index};
    x->names[index] = kernel_name(index, key);
    x->nkeys++;
    LLVMTypeRef *all = xmalloc((n + 3) * sizeof *all);
    all[0] = cg->i64;
    all[1] = cg->i64;
    all[2] = cg->i32;
    for (unsigned i = 0; i < n; i++)
        all[3 + i] = types[i];
    LLVMValueRef fn = LLVMAddFunction(cg->mod, x->names[index], LLVMFunctionType(cg->voidt, all, n + 3, false));
    free(all);
    cg_fn_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    if (x->emulate) {
        cg->fn = fn;
        LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
        x->kB = LLVMGetParam(fn, 0);
        x->kT = LLVMGetParam(fn, 1);
        x->kacc = LLVMGetParam(fn, 2);
        return index;
    }
    LLVMMetadataRef md[] = {LLVMValueAsMetadata(fn), LLVMMDStringInContext2(cg->ctx, "kernel", 6),
                            LLVMValueAsMetadata(cg_i32(cg, 1))};
    LLVMAddNamedMetadataOperand(cg->mod, "nvvm.annotations", LLVMMetadataAsValue(cg->ctx, LLVMMDNodeInContext2(cg->ctx, md, 3)));
    cg->fn = fn;
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    x->kB = LLVMGetParam(fn, 0);
    x->kT = LLVMGetParam(fn, 1);
    x->kacc = LLVMGetParam(fn, 2);
    return index;
}

LLVMValueRef gpu_param(Gpu *x, unsigned i)
{
    return LLVMGetParam(x->cg.fn, i + 3);
}

void gpu_end(Gpu *x)
{
    LLVMBuildRetVoid(x->cg.b);
    x->cg.fn = NULL;
}

/* A hook of the emulation: a global function pointer the test sets. */
static LLVMValueRef emu_hook(Gpu *x, const char *name, LLVMTypeRef fty, LLVMValueRef *args, unsigned n)
{
    Cg *cg = &x->cg;
    LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
    if (!gv) {
        gv = LLVMAddGlobal(cg->mod, cg->ptr, name);
        LLVMSetInitializer(gv, LLVMConstNull(cg->ptr));
    }
    LLVMValueRef fp = LLVMBuildLoad2(cg->b, cg->ptr, gv, "");
    return LLVMBuildCall2(cg->b, fty, fp, args, n, "");
}

LLVMValueRef gpu_sreg(Gpu *x, const char *name)
{
    Cg *cg = &x->cg;
    if (x->emulate) {
        static const char *names[] = GPU_SREG_NAMES;
        int code = -1;
        for (int i = 0; i < 9; i++)
            if (!strcmp(names[i], name))
                code = i;
        if (code < 0)
            die("lower: no emulated register %s", name);
        LLVMValueRef arg = cg_i32(cg, code);
        return emu_hook(x, "strata_emu_sreg", LLVMFunctionType(cg->i64, &cg->i32, 1, false), &arg, 1);
    }
    char full[64];
    snprintf(full, sizeof full, "llvm.nvvm.read.ptx.sreg.%s", name);
    unsigned id = LLVMLookupIntrinsicID(full, strlen(full));
    if (!id)
        die("lower: no intrinsic %s", full);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0);
    LLVMValueRef v = LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0), fn, NULL, 0, "");
    return LLVMBuildZExt(cg->b, v, cg->i64, name);
}

void gpu_barrier(Gpu *x)
{
    Cg *cg = &x->cg;
    if (x->emulate) {
        emu_hook(x, "strata_emu_barrier", LLVMFunctionType(cg->voidt, NULL, 0, false), NULL, 0);
        return;
    }
    const char *name = "llvm.nvvm.barrier0";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0);
    LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0), fn, NULL, 0, "");
}

LLVMValueRef gpu_shared(Gpu *x, LLVMTypeRef t, int64_t n, const char *name)
{
    Cg *cg = &x->cg;
    LLVMTypeRef at = LLVMArrayType2(t, (uint64_t)n);
    LLVMValueRef gv = LLVMAddGlobalInAddressSpace(cg->mod, at, name, x->emulate ? 0 : 3);
    LLVMSetInitializer(gv, LLVMGetUndef(at));
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    LLVMSetAlignment(gv, 16);
    if (x->emulate) /* one CTA runs at a time on the host: a plain global is its shared memory */
        return gv;
    return LLVMBuildAddrSpaceCast(cg->b, gv, cg->ptr, name);
}

Loop gpu_loop_begin(Gpu *x, LLVMValueRef from, LLVMValueRef n, LLVMValueRef step, const char *name)
{
    (void)step;
    return cg_loop_begin(&x->cg, from, n, NULL, name);
}

void gpu_loop_end(Gpu *x, Loop *l, LLVMValueRef step)
{
    /* cg_loop_end adds 1: add step - 1 first by replacing the increment. */
    Cg *cg = &x->cg;
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildAdd(cg->b, l->i, step, "");
    LLVMBuildBr(cg->b, l->head);
    LLVMAddIncoming(l->i, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

LLVMValueRef gpu_block_reduce(Gpu *x, LLVMValueRef v, const IrNode *r, LLVMValueRef scratch)
{
    Cg *cg = &x->cg;
    LLVMTypeRef t = LLVMTypeOf(v);
    LLVMValueRef tid = gpu_sreg(x, "tid.x");
    LLVMBuildStore(cg->b, v, LLVMBuildGEP2(cg->b, t, scratch, &tid, 1, ""));
    gpu_barrier(x);
    for (int s = GPU_ROW_THREADS / 2; s >= 1; s /= 2) {
        LLVMBasicBlockRef join = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntULT, tid, cg_i64(cg, s), ""), "red");
        LLVMValueRef pa = LLVMBuildGEP2(cg->b, t, scratch, &tid, 1, "");
        LLVMValueRef j = LLVMBuildAdd(cg->b, tid, cg_i64(cg, s), "");
        LLVMValueRef pb = LLVMBuildGEP2(cg->b, t, scratch, &j, 1, "");
        LLVMValueRef a = LLVMBuildLoad2(cg->b, t, pa, ""), b = LLVMBuildLoad2(cg->b, t, pb, "");
        LLVMValueRef y = r ? lower_reduce_step(cg, r, a, b) : LLVMBuildFAdd(cg->b, a, b, "");
        LLVMBuildStore(cg->b, y, pa);
        cg_endif(cg, join);
        gpu_barrier(x);
    }
    LLVMValueRef out = LLVMBuildLoad2(cg->b, t, scratch, "");
    gpu_barrier(x); /* the scratch may be reused right after */
    return out;
}

/* ---- helpers the emitters share ---- */

LLVMValueRef gpu_exp(Gpu *x, LLVMValueRef v)
{
    static IrNode e = {.op = IR_EXP};
    return lower_unary(&x->cg, &e, v);
}

LLVMValueRef gpu_log(Gpu *x, LLVMValueRef v)
{
    static IrNode e = {.op = IR_LOG};
    return lower_unary(&x->cg, &e, v);
}

LLVMValueRef gpu_global_id(Gpu *x)
{
    Cg *cg = &x->cg;
    return LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, gpu_sreg(x, "ctaid.x"), gpu_sreg(x, "ntid.x"), ""),
                        gpu_sreg(x, "tid.x"), "");
}

LLVMValueRef gpu_local(Gpu *x, LLVMValueRef init)
{
    Cg *cg = &x->cg;
    LLVMValueRef a = cg_alloca(cg, LLVMTypeOf(init), "v");
    LLVMBuildStore(cg->b, init, a);
    return a;
}

StrataGpuAffine gpu_rows_of(const IrNode *n)
{
    return n->tok ? gpu_aff(0, 1, 0) : gpu_aff(n->rows, 0, 0);
}

/* ---- the plan ---- */

StrataGpuAffine gpu_aff(int64_t c, int64_t bt, int64_t t)
{
    return (StrataGpuAffine){c, bt, t, 0};
}

StrataGpuLaunch *gpu_launch(Gpu *x, int k, int node, StrataGpuAffine grid, int64_t div, unsigned bx, unsigned by,
                            bool acc)
{
    if (x->nlaunches == x->caplaunches) {
        x->caplaunches = x->caplaunches ? 2 * x->caplaunches : 256;
        x->launches = xrealloc(x->launches, (size_t)x->caplaunches * sizeof *x->launches);
    }
    StrataGpuLaunch *l = &x->launches[x->nlaunches++];
    *l = (StrataGpuLaunch){.kernel = k, .phase = x->phase, .grid = {grid, {1, 0, 0, 0}, {1, 0, 0, 0}},
                           .grid_div = {div, 1, 1}, .block = {bx, by, 1}, .arg0 = x->nargs, .acc = acc,
                           .node = node, .block_index = x->block_index};
    return l;
}

static StrataGpuArg *new_arg(Gpu *x)
{
    if (x->nlaunches == 0)
        die("lower: a GPU argument before its launch");
    if (x->nargs == x->capargs) {
        x->capargs = x->capargs ? 2 * x->capargs : 1024;
        x->args = xrealloc(x->args, (size_t)x->capargs * sizeof *x->args);
    }
    x->launches[x->nlaunches - 1].nargs++;
    StrataGpuArg *a = &x->args[x->nargs++];
    memset(a, 0, sizeof *a);
    a->node = -1;
    return a;
}

void gpu_arg_ptr(Gpu *x, StrataGpuBuf buf, StrataGpuAffine off, StrataGpuAffine size, bool writes, int node)
{
    StrataGpuArg *a = new_arg(x);
    a->kind = STRATA_GPU_ARG_PTR;
    a->buf = buf;
    a->off = off;
    a->size = size;
    a->writes = writes;
    a->node = node;
}

void gpu_arg_i64(Gpu *x, StrataGpuAffine v)
{
    StrataGpuArg *a = new_arg(x);
    a->kind = STRATA_GPU_ARG_I64;
    a->off = v;
}

void gpu_arg_f32(Gpu *x, double f)
{
    StrataGpuArg *a = new_arg(x);
    a->kind = STRATA_GPU_ARG_F32;
    a->f = f;
}

StrataGpuAffine gpu_slot_off(const Gpu *x, MemSlot s)
{
    const MemLayout *ly = x->ly;
    int64_t rows = ly->unit_bytes[MEM_ROWS], seq = ly->unit_bytes[MEM_SEQ];
    switch (s.region) {
    case MEM_ROWS: return gpu_aff(0, s.off, 0);
    case MEM_SEQ: return gpu_aff(0, rows, s.off);
    case MEM_FIXED: return gpu_aff(s.off, rows, seq);
    case MEM_THREAD: return gpu_aff(ly->unit_bytes[MEM_FIXED] + s.off, rows, seq);
    default: die("lower: a GPU argument with no place in the arena");
    }
}

static StrataGpuAffine value_size(const IrNode *n)
{
    return n->tok ? gpu_aff(0, n->width * 4, 0) : gpu_aff(n->rows * n->width * 4, 0, 0);
}

void gpu_arg_value(Gpu *x, const IrNode *n, bool writes)
{
    if (n->op == IR_INPUT_TOKENS || n->op == IR_INPUT_TARGETS) {
        gpu_arg_ptr(x, n->op == IR_INPUT_TOKENS ? STRATA_GPU_TOKENS : STRATA_GPU_TARGETS, gpu_aff(0, 0, 0),
                    gpu_aff(0, 4, 0), false, n->id);
        return;
    }
    if (n->op == IR_PARAM) {
        gpu_arg_ptr(x, STRATA_GPU_PARAMS, gpu_aff(x->param_off[n->param->index] * 4, 0, 0),
                    gpu_aff(n->param->numel * 4, 0, 0), writes, n->id);
        return;
    }
    if (n->op == IR_CONST) {
        int i = 0;
        while (i < x->nconsts && x->consts[i] != (float)n->num)
            i++;
        if (i == x->nconsts) {
            x->consts = xrealloc(x->consts, (size_t)(i + 1) * sizeof *x->consts);
            x->consts[x->nconsts++] = (float)n->num;
        }
        gpu_arg_ptr(x, STRATA_GPU_CONSTS, gpu_aff(4 * i, 0, 0), gpu_aff(4, 0, 0), false, n->id);
        return;
    }
    const IrParam *home = x->ly->home[n->id];
    if (home) {
        gpu_arg_ptr(x, STRATA_GPU_GRADS, gpu_aff(x->param_off[home->index] * 4, 0, 0), gpu_aff(home->numel * 4, 0, 0),
                    writes, n->id);
        return;
    }
    MemSlot s = x->ly->value[n->id];
    if (s.region == MEM_NONE)
        die("lower: %%%d (%s) has no place in memory for the GPU", n->id, ir_op_info[n->op].text);
    gpu_arg_ptr(x, STRATA_GPU_ARENA, gpu_slot_off(x, s), value_size(n), writes, n->id);
}

void gpu_arg_aux(Gpu *x, const IrNode *n, bool writes)
{
    MemSlot s = x->ly->aux[n->id];
    if (s.region != MEM_ROWS)
        die("lower: %%%d (%s) has no aux state", n->id, ir_op_info[n->op].text);
    int64_t per = n->op == IR_ATTENTION ? n->heads : 2;
    gpu_arg_ptr(x, STRATA_GPU_ARENA, gpu_slot_off(x, s), gpu_aff(0, per * 4, 0), writes, n->id);
}

void gpu_arg_table(Gpu *x, const IrNode *n)
{
    MemSlot s = x->ly->table[n->id];
    if (s.region != MEM_SEQ)
        die("lower: %%%d (%s) has no rotary table", n->id, ir_op_info[n->op].text);
    int64_t hd = n->width / n->heads;
    gpu_arg_ptr(x, STRATA_GPU_ARENA, gpu_slot_off(x, s), gpu_aff(0, 0, hd * 4), false, n->id);
}

void gpu_emu_wrappers(Gpu *x)
{
    Cg *cg = &x->cg;
    for (int i = 0; i < x->nkeys; i++) {
        LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, x->names[i]);
        LLVMTypeRef fty = LLVMGlobalGetValueType(fn);
        unsigned n = LLVMCountParamTypes(fty);
        LLVMTypeRef *pt = xmalloc((n + 1) * sizeof *pt);
        LLVMValueRef *av = xmalloc((n + 1) * sizeof *av);
        LLVMGetParamTypes(fty, pt);
        char name[96];
        snprintf(name, sizeof name, "%s_emu", x->names[i]);
        LLVMValueRef w = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->voidt, &cg->ptr, 1, false));
        LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, w, "entry"));
        for (unsigned a = 0; a < n; a++) {
            LLVMValueRef idx = cg_i64(cg, a);
            LLVMValueRef slot = LLVMBuildGEP2(cg->b, cg->ptr, LLVMGetParam(w, 0), &idx, 1, "");
            av[a] = LLVMBuildLoad2(cg->b, pt[a], LLVMBuildLoad2(cg->b, cg->ptr, slot, ""), "");
        }
        LLVMBuildCall2(cg->b, fty, fn, av, n, "");
        LLVMBuildRetVoid(cg->b);
        free(pt);
        free(av);
    }
}
