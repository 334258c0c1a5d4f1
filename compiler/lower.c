/* lower.c - LLVM lowering driver (lower.h): target machine, the strata_run
 * entry point, the per-node dispatch, then verify -> optimise -> emit.
 * Loop nests are generated in lower_ops.c, calls to BLAS and the runtime
 * kernels in lower_kernels.c.  Entry points: lower_module, lower_emit,
 * lower_numel; jit.c uses lower_module_in to build in its own context.
 * Memory: the LowerModule owns module and target machine (and the context
 * when owns_ctx); lowering allocates nothing else that outlives it. */
#include "lower_internal.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double lower_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *lower_strdup(const char *s)
{
    return xstrdup(s ? s : "(no message)");
}

/* Copies an LLVM-owned message into a malloc'd one and disposes it. */
static char *take_message(char *msg)
{
    char *s = lower_strdup(msg);
    LLVMDisposeMessage(msg);
    return s;
}

char *lower_error_message(LLVMErrorRef e)
{
    char *msg = LLVMGetErrorMessage(e); /* consumes e */
    char *s = lower_strdup(msg);
    LLVMDisposeErrorMessage(msg);
    return s;
}

/* ---- target ---- */

static pthread_once_t target_once = PTHREAD_ONCE_INIT;

static void init_native_target(void)
{
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    LLVMInitializeNativeAsmParser();
}

LLVMTargetMachineRef lower_target_machine(const LowerOptions *o, char **err)
{
    pthread_once(&target_once, init_native_target);
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        *err = take_message(msg);
        LLVMDisposeMessage(triple);
        return NULL;
    }
    /* The host's own name and feature list, or a named CPU with its
     * default features (x86-64-v3 = AVX2 + FMA, for portable builds). */
    char *cpu = o->cpu ? NULL : LLVMGetHostCPUName(), *features = o->cpu ? NULL : LLVMGetHostCPUFeatures();
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, o->cpu ? o->cpu : cpu,
                                                      o->cpu ? "" : features, LLVMCodeGenLevelDefault,
                                                      LLVMRelocPIC, LLVMCodeModelDefault);
    if (!tm)
        *err = lower_strdup("cannot create an LLVM target machine");
    if (cpu)
        LLVMDisposeMessage(cpu);
    if (features)
        LLVMDisposeMessage(features);
    LLVMDisposeMessage(triple);
    return tm;
}

/* ---- helpers shared with lower_ops.c and lower_kernels.c ---- */

LLVMValueRef cg_i64(Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i64, (unsigned long long)v, true);
}

LLVMValueRef cg_real(Cg *cg, double v)
{
    return LLVMConstReal(cg->real, v);
}

LLVMValueRef cg_rows(Cg *cg, const IrNode *n)
{
    return n->tok ? cg->BT : cg_i64(cg, n->rows);
}

static LLVMValueRef load_slot(Cg *cg, LLVMValueRef array, int id, const char *what)
{
    char name[32];
    snprintf(name, sizeof name, "%s%d", what, id);
    LLVMValueRef slot = LLVMBuildGEP2(cg->b, cg->ptr, array, (LLVMValueRef[]){cg_i64(cg, id)}, 1, "");
    return LLVMBuildLoad2(cg->b, cg->ptr, slot, name);
}

LLVMValueRef cg_buf(Cg *cg, const IrNode *n)
{
    return load_slot(cg, cg->bufs, n->id, "buf");
}

LLVMValueRef cg_aux(Cg *cg, const IrNode *n)
{
    return load_slot(cg, cg->aux, n->id, "aux");
}

LLVMValueRef cg_elem(Cg *cg, LLVMValueRef base, LLVMValueRef i)
{
    return LLVMBuildGEP2(cg->b, cg->real, base, &i, 1, "");
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

void cg_zero(Cg *cg, LLVMValueRef p, LLVMValueRef n)
{
    LLVMValueRef bytes = LLVMBuildMul(cg->b, n, cg_i64(cg, cg->prec == LOWER_F32 ? 4 : 8), "");
    LLVMBuildMemSet(cg->b, p, LLVMConstInt(LLVMInt8TypeInContext(cg->ctx), 0, false), bytes,
                    cg->prec == LOWER_F32 ? 4 : 8);
}

/* ---- sizes (the ABI's buffer sizes) ---- */

int64_t lower_numel(const IrNode *n, int64_t B, int64_t T)
{
    return (n->tok ? B * T : n->rows) * n->width;
}

int64_t lower_aux_numel(const IrNode *n, int64_t B, int64_t T)
{
    return lower_kernel_aux_numel(n, B, T);
}

/* ---- the entry point ---- */

/* Token ids reach only the ops that take them as ids (operand 0 of EMBED
 * and EMBED_GRAD, 1 of CROSS_ENTROPY and CE_GRAD), which read `tokens` or
 * `targets` directly; any other use would need the ids as REALs. */
static void check_id_uses(const IrGraph *g)
{
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        for (int k = 0; k < ir_op_info[x->op].arity; k++) {
            const IrNode *a = x->in[k];
            bool id_slot = ((x->op == IR_EMBED || x->op == IR_EMBED_GRAD) && k == 0) ||
                           ((x->op == IR_CROSS_ENTROPY || x->op == IR_CE_GRAD) && k == 1);
            if ((a->op == IR_INPUT_TOKENS || a->op == IR_INPUT_TARGETS) != id_slot)
                die("lower: %%%d (%s) operand %d: token ids used as values, or values as ids", x->id,
                    ir_op_info[x->op].text, k);
        }
    }
}

static void lower_node(Cg *cg, const IrNode *x)
{
    const IrOpInfo *info = &ir_op_info[x->op];
    if (info->elementwise || info->reduction || x->op == IR_SUM_ROWS) {
        lower_loop_node(cg, x);
        return;
    }
    switch (x->op) {
    case IR_INPUT_TOKENS:
    case IR_INPUT_TARGETS:
    case IR_PARAM: /* the caller's buffers already hold these */
        break;
    case IR_CONST:
        LLVMBuildStore(cg->b, cg_real(cg, x->num), cg_buf(cg, x));
        break;
    default:
        lower_call_node(cg, x);
    }
}

/* void strata_run(REAL **bufs, REAL **aux, const int32_t *tokens,
 *                 const int32_t *targets, const REAL *mask, int64_t B, int64_t T) */
static void build_entry(Cg *cg)
{
    LLVMTypeRef params[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64};
    LLVMTypeRef fty = LLVMFunctionType(cg->voidt, params, 7, false);
    cg->run = LLVMAddFunction(cg->mod, LOWER_ENTRY, fty);
    static const char *names[] = {"bufs", "aux", "tokens", "targets", "mask", "B", "T"};
    LLVMValueRef *slots[] = {&cg->bufs, &cg->aux, &cg->tokens, &cg->targets, &cg->mask, &cg->B, &cg->T};
    for (unsigned i = 0; i < 7; i++) {
        *slots[i] = LLVMGetParam(cg->run, i);
        LLVMSetValueName2(*slots[i], names[i], strlen(names[i]));
    }
    LLVMAddAttributeAtIndex(cg->run, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(cg->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->run, "entry"));
    cg->BT = LLVMBuildMul(cg->b, cg->B, cg->T, "BT");
    for (int i = 0; i < cg->g->nodes.n; i++)
        lower_node(cg, cg->g->nodes.v[i]);
    LLVMBuildRetVoid(cg->b);
}

static void verify_or_die(LLVMModuleRef mod)
{
    char *msg = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        fprintf(stderr, "%s\n", msg);
        die("lower: the generated LLVM module does not verify");
    }
    LLVMDisposeMessage(msg);
}

/* default<O2> with the target's cost model (vector widths, FMA). */
static bool optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, char **err)
{
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(mod, "default<O2>", tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (e) {
        *err = lower_error_message(e);
        return false;
    }
    return true;
}

LowerModule *lower_module_in(LLVMContextRef ctx, bool owns_ctx, const IrGraph *g, const LowerOptions *o,
                             char **err)
{
    double t0 = lower_now();
    *err = NULL;
    check_id_uses(g);
    LLVMTargetMachineRef tm = lower_target_machine(o, err);
    if (!tm)
        return NULL;
    Cg cg = {.g = g, .prec = o->precision, .ctx = ctx, .tm = tm};
    cg.mod = LLVMModuleCreateWithNameInContext(g->model_name ? g->model_name : "strata", ctx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(cg.mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(cg.mod, dl);
    LLVMDisposeTargetData(dl);
    cg.b = LLVMCreateBuilderInContext(ctx);
    cg.real = o->precision == LOWER_F32 ? LLVMFloatTypeInContext(ctx) : LLVMDoubleTypeInContext(ctx);
    cg.i32 = LLVMInt32TypeInContext(ctx);
    cg.i64 = LLVMInt64TypeInContext(ctx);
    cg.ptr = LLVMPointerTypeInContext(ctx, 0);
    cg.voidt = LLVMVoidTypeInContext(ctx);
    cg.attn_grad_done = xcalloc((size_t)g->nodes.n + 1, sizeof *cg.attn_grad_done);
    build_entry(&cg);
    LLVMDisposeBuilder(cg.b);
    free(cg.attn_grad_done);
    verify_or_die(cg.mod);

    LowerModule *m = xcalloc(1, sizeof *m);
    *m = (LowerModule){.ctx = ctx, .owns_ctx = owns_ctx, .mod = cg.mod, .tm = tm, .prec = o->precision};
    double t1 = lower_now();
    m->lower_s = t1 - t0;
    if (o->opt_level > 0 && !optimise(m->mod, tm, err)) {
        m->owns_ctx = false; /* the caller disposes of ctx */
        lower_module_free(m);
        return NULL;
    }
    m->opt_s = lower_now() - t1;
    return m;
}

LowerModule *lower_module(const IrGraph *g, const LowerOptions *o, char **err)
{
    LLVMContextRef ctx = LLVMContextCreate();
    LowerModule *m = lower_module_in(ctx, true, g, o, err);
    if (!m)
        LLVMContextDispose(ctx);
    return m;
}

bool lower_emit(LowerModule *m, LowerEmitKind kind, const char *path, char **err)
{
    char *msg = NULL;
    *err = NULL;
    if (!m->mod)
        die("lower_emit: the module was handed to the JIT");
    LLVMBool failed = kind == LOWER_EMIT_LLVM
                          ? LLVMPrintModuleToFile(m->mod, path, &msg)
                          : LLVMTargetMachineEmitToFile(m->tm, m->mod, path,
                                                        kind == LOWER_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile,
                                                        &msg);
    if (failed) {
        *err = take_message(msg);
        return false;
    }
    if (msg)
        LLVMDisposeMessage(msg);
    return true;
}

void lower_module_free(LowerModule *m)
{
    if (!m)
        return;
    if (m->mod)
        LLVMDisposeModule(m->mod);
    if (m->tm)
        LLVMDisposeTargetMachine(m->tm);
    if (m->owns_ctx)
        LLVMContextDispose(m->ctx);
    free(m);
}
