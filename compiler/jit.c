/* jit.c - ORC LLJIT through the LLVM-C API (jit.h).
 * One LLJIT for this host; each jit_compile builds its module in a fresh
 * thread-safe context, renames strata_run to a unique name (many models can
 * live in one JIT), adds it under its own resource tracker (so jit_release
 * can drop the code) and looks the entry up, which is when ORC generates
 * machine code.  Symbols: the runtime kernels and cblas_?gemm are defined
 * as absolute addresses taken here, so the code calls exactly the copies
 * linked into this program even when the linker dropped an unreferenced
 * shared library; everything else (libm, malloc) is found in the process. */
#include "jit.h"

#include "kernels.h"
#include "lower_internal.h"

#include <cblas.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct Jit {
    LLVMOrcLLJITRef lljit;
    pthread_mutex_t lock;  /* around adding modules and looking up symbols */
    unsigned long serial;  /* makes each entry point's name unique */
};

/* Functions the generated code calls that this program provides. */
#define KERNEL_PAIR(name) {#name "_f32", (void (*)(void))name##_f32}, {#name "_f64", (void (*)(void))name##_f64}
static const struct {
    const char *name;
    void (*fn)(void);
} host_symbols[] = {
    KERNEL_PAIR(rt_embed),          KERNEL_PAIR(rt_embed_grad),     KERNEL_PAIR(rt_rope_table),
    KERNEL_PAIR(rt_rope),           KERNEL_PAIR(rt_attention),      KERNEL_PAIR(rt_attention_grad),
    KERNEL_PAIR(rt_cross_entropy),  KERNEL_PAIR(rt_cross_entropy_grad),
    {"cblas_sgemm", (void (*)(void))cblas_sgemm},
    {"cblas_dgemm", (void (*)(void))cblas_dgemm},
};

static bool failed(LLVMErrorRef e, char **err)
{
    if (!e)
        return false;
    *err = lower_error_message(e);
    return true;
}

static bool define_host_symbols(Jit *j, char **err)
{
    size_t n = sizeof host_symbols / sizeof *host_symbols;
    LLVMOrcCSymbolMapPair pairs[sizeof host_symbols / sizeof *host_symbols];
    for (size_t i = 0; i < n; i++) {
        LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0};
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->lljit, host_symbols[i].name);
        pairs[i].Sym = (LLVMJITEvaluatedSymbol){(LLVMOrcExecutorAddress)(uintptr_t)host_symbols[i].fn, flags};
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->lljit);
    return !failed(LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(pairs, n)), err);
}

Jit *jit_create(char **err)
{
    *err = NULL;
    LowerOptions host = {.precision = LOWER_F64, .cpu = NULL};
    LLVMTargetMachineRef tm = lower_target_machine(&host, err);
    if (!tm)
        return NULL;
    Jit *j = xcalloc(1, sizeof *j);
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    /* The host CPU and its features (the default builder would too, but
     * this keeps the JIT's code generator identical to lower's). */
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    if (failed(LLVMOrcCreateLLJIT(&j->lljit, builder), err)) {
        free(j);
        return NULL;
    }
    LLVMOrcDefinitionGeneratorRef gen;
    bool ok = !failed(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                          &gen, LLVMOrcLLJITGetGlobalPrefix(j->lljit), NULL, NULL),
                      err);
    if (ok)
        LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->lljit), gen); /* the dylib owns it */
    if (!ok || !define_host_symbols(j, err)) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
        if (e)
            LLVMConsumeError(e);
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->lock, NULL);
    return j;
}

/* Adds the module under a new tracker and looks `name` up (compiling it). */
static bool add_and_lookup(Jit *j, LLVMOrcThreadSafeModuleRef tsm, const char *name, JitModel *out, char **err)
{
    LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(j->lljit));
    LLVMOrcExecutorAddress addr = 0;
    bool ok = !failed(LLVMOrcLLJITAddLLVMIRModuleWithRT(j->lljit, rt, tsm), err) &&
              !failed(LLVMOrcLLJITLookup(j->lljit, &addr, name), err);
    if (!ok) {
        LLVMErrorRef e = LLVMOrcResourceTrackerRemove(rt);
        if (e)
            LLVMConsumeError(e);
        LLVMOrcReleaseResourceTracker(rt);
        return false;
    }
    out->tracker = rt;
    if (out->precision == LOWER_F32)
        out->run_f32 = (StrataRunF32)(uintptr_t)addr;
    else
        out->run_f64 = (StrataRunF64)(uintptr_t)addr;
    return true;
}

bool jit_compile(Jit *j, const IrGraph *g, const LowerOptions *o, JitModel *out, char **err)
{
    double t0 = lower_now();
    *err = NULL;
    *out = (JitModel){.precision = o->precision};
    LowerOptions lo = *o;
    lo.cpu = NULL;
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LowerModule *m = lower_module_in(LLVMOrcThreadSafeContextGetContext(tsc), false, g, &lo, err);
    if (!m) {
        LLVMOrcDisposeThreadSafeContext(tsc);
        return false;
    }
    out->stats.lower_s = m->lower_s;
    out->stats.opt_s = m->opt_s;

    pthread_mutex_lock(&j->lock);
    char name[64];
    snprintf(name, sizeof name, "%s.%lu", LOWER_ENTRY, ++j->serial);
    LLVMValueRef entry = LLVMGetNamedFunction(m->mod, LOWER_ENTRY);
    LLVMSetValueName2(entry, name, strlen(name));
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m->mod, tsc);
    m->mod = NULL; /* the thread-safe module owns it now, and keeps tsc alive */
    LLVMOrcDisposeThreadSafeContext(tsc);
    lower_module_free(m);
    double t1 = lower_now();
    bool ok = add_and_lookup(j, tsm, name, out, err);
    pthread_mutex_unlock(&j->lock);
    double t2 = lower_now();
    out->stats.codegen_s = t2 - t1;
    out->stats.total_s = t2 - t0;
    return ok;
}

void jit_release(Jit *j, JitModel *m)
{
    if (!m->tracker)
        return;
    pthread_mutex_lock(&j->lock);
    LLVMOrcResourceTrackerRef rt = m->tracker;
    LLVMErrorRef e = LLVMOrcResourceTrackerRemove(rt);
    if (e)
        LLVMConsumeError(e);
    LLVMOrcReleaseResourceTracker(rt);
    pthread_mutex_unlock(&j->lock);
    *m = (JitModel){.precision = m->precision};
}

void jit_free(Jit *j)
{
    if (!j)
        return;
    LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
    if (e)
        LLVMConsumeError(e);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
