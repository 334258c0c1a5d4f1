/* lower.c - the driver of the LLVM lowering (lower.h): target machine,
 * then plan -> kinds of blocks -> build the descriptor (abi.c), each kind's
 * functions and both entry points (step.c) -> verify -> optimise -> emit.
 * The files below it are listed in cg.h.
 * Entry points: lower_module, lower_emit; jit.c uses lower_module_in to
 * build in its own context.  Memory: the LowerModule owns module and
 * target machine (and the context when owns_ctx); the Cg's tables are
 * freed before lower_module_in returns. */
#include "lower/cg.h"

#include <llvm-c/Analysis.h>
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

/* ---- the module ---- */

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

/* Token ids reach only the ops that take them as ids (operand 0 of EMBED
 * and EMBED_GRAD, 1 of CROSS_ENTROPY and CE_GRAD), which read `tokens` or
 * `targets` directly; any other use would need the ids as REALs. */
static void check_graph(const IrGraph *g)
{
    if (!g->logits || !g->loss || g->kernels.n == 0)
        die("lower: the graph needs logits, a loss and fuse_graph");
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

static void cg_types(Cg *cg)
{
    LLVMContextRef c = cg->ctx;
    cg->real = cg->prec == LOWER_F32 ? LLVMFloatTypeInContext(c) : LLVMDoubleTypeInContext(c);
    cg->elem = cg->prec == LOWER_F32 ? 4 : 8;
    cg->i1 = LLVMInt1TypeInContext(c);
    cg->i8 = LLVMInt8TypeInContext(c);
    cg->i32 = LLVMInt32TypeInContext(c);
    cg->i64 = LLVMInt64TypeInContext(c);
    cg->f64 = LLVMDoubleTypeInContext(c);
    cg->ptr = LLVMPointerTypeInContext(c, 0);
    cg->voidt = LLVMVoidTypeInContext(c);
}

static void cg_free(Cg *cg)
{
    for (int i = 0; i < cg->ntasks; i++)
        free((char *)cg->tasks[i].key);
    free(cg->tasks);
    free(cg->param_off);
    free(cg->grad_first);
    free(cg->grad_next);
    free(cg->out_first);
    free(cg->out_next);
    free(cg->attn_grad_done);
    free(cg->kv_off);
    free(cg->kv_base);
    free(cg->ref_of);
    free(cg->kind_fn);
    free(cg->kind_rows);
    free(cg->kind_row_type);
    LLVMDisposeBuilder(cg->b);
    LLVMDisposeTargetData(cg->td);
}

/* Plans memory, builds the descriptor and both entry points. */
static LLVMModuleRef build_module(Cg *cg)
{
    const IrGraph *g = cg->g;
    cg->mod = LLVMModuleCreateWithNameInContext(g->model_name ? g->model_name : "strata", cg->ctx);
    char *triple = LLVMGetTargetMachineTriple(cg->tm);
    LLVMSetTarget(cg->mod, triple);
    LLVMDisposeMessage(triple);
    cg->td = LLVMCreateTargetDataLayout(cg->tm);
    LLVMSetModuleDataLayout(cg->mod, cg->td);
    cg->b = LLVMCreateBuilderInContext(cg->ctx);
    cg_types(cg);
    MemLayout ly;
    memplan_layout(&ly, g, cg->elem, cg->head_div);
    cg->ly = &ly;
    Kinds kinds;
    kinds_find(&kinds, g, &ly);
    for (int l = 0; l < g->blocks.n && cg->inline_blocks; l++)
        kinds.blocks[l].kind = -1;
    cg->kinds = &kinds;
    lower_abi_plan(cg);
    cg->step_type = lower_step_type(cg);
    lower_emit_desc(cg);
    lower_kinds(cg);
    lower_entry(cg, true, false);
    lower_entry(cg, false, false);
    lower_entry(cg, false, true);
    kinds_free(&kinds);
    cg->kinds = NULL;
    cg->blocks = NULL;
    memplan_layout_free(&ly);
    cg->ly = NULL;
    return cg->mod;
}

LowerModule *lower_module_in(LLVMContextRef ctx, bool owns_ctx, const IrGraph *g, const LowerOptions *o,
                             char **err)
{
    double t0 = lower_now();
    *err = NULL;
    check_graph(g);
    LLVMTargetMachineRef tm = lower_target_machine(o, err);
    if (!tm)
        return NULL;
    int64_t div = o->head_div == 0 ? MEMPLAN_HEAD_DIV : o->head_div < 0 ? 0 : o->head_div;
    Cg cg = {.g = g, .prec = o->precision, .libm_exp = o->libm_exp, .inline_blocks = o->inline_blocks,
             .head_div = div, .head_cap = o->head_cap, .ctx = ctx, .tm = tm};
    LLVMModuleRef mod = build_module(&cg);
    cg_free(&cg);
    verify_or_die(mod);

    LowerModule *m = xcalloc(1, sizeof *m);
    *m = (LowerModule){.ctx = ctx, .owns_ctx = owns_ctx, .mod = mod, .tm = tm, .prec = o->precision};
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
