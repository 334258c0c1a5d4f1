/* jit.c - ORC LLJIT through the LLVM-C API (jit.h).
 * One LLJIT for this host; each jit_compile builds its module in a fresh
 * thread-safe context, renames the ABI's three symbols to unique names
 * (many models can live in one JIT), adds it under its own resource
 * tracker (so jit_release can drop the code) and looks them up, which is
 * when ORC generates machine code.  Symbols: the runtime kernels, the
 * thread pool, the tiled products (gemm.h) and the gradient norm's block
 * sums (train/optim.h) are defined as absolute addresses taken
 * here, so the code calls exactly the copies linked into this program even
 * when the linker dropped an unreferenced shared library; everything else
 * (libm, memset, malloc) is found in the process. */
#include "lower/jit.h"

#include "core/gemm.h"
#include "core/kernels.h"
#include "lower/cg.h"
#include "core/pool.h"
#include "train/optim.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
    KERNEL_PAIR(rt_attention_cached), KERNEL_PAIR(rt_kv_append),
    KERNEL_PAIR(rt_cross_entropy_rows), KERNEL_PAIR(rt_cross_entropy_mean), KERNEL_PAIR(rt_cross_entropy_grad),
    KERNEL_PAIR(rt_matmul),
    {"rt_pool_run", (void (*)(void))rt_pool_run},
    {"rt_pool_size", (void (*)(void))rt_pool_size},
    {"rt_grad_sumsq_blocks", (void (*)(void))rt_grad_sumsq_blocks},
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

/* The ABI's symbols, in the order of JitModel's fields. */
static const char *const abi_symbols[] = {LOWER_TRAIN_ENTRY, LOWER_FORWARD_ENTRY, LOWER_DECODE_ENTRY,
                                          LOWER_DESC_SYMBOL};
#define NSYMBOLS 4

/* Adds the module under a new tracker and looks the renamed symbols up
 * (compiling the module). */
static bool add_and_lookup(Jit *j, LLVMOrcThreadSafeModuleRef tsm, char names[NSYMBOLS][64], JitModel *out,
                           char **err)
{
    LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(j->lljit));
    LLVMOrcExecutorAddress addr[NSYMBOLS] = {0, 0, 0, 0};
    bool ok = !failed(LLVMOrcLLJITAddLLVMIRModuleWithRT(j->lljit, rt, tsm), err);
    for (int k = 0; k < NSYMBOLS && ok; k++)
        ok = !failed(LLVMOrcLLJITLookup(j->lljit, &addr[k], names[k]), err);
    if (!ok) {
        LLVMErrorRef e = LLVMOrcResourceTrackerRemove(rt);
        if (e)
            LLVMConsumeError(e);
        LLVMOrcReleaseResourceTracker(rt);
        return false;
    }
    out->tracker = rt;
    out->train_step = (StrataStepFn)(uintptr_t)addr[0];
    out->forward = (StrataStepFn)(uintptr_t)addr[1];
    out->decode = (StrataStepFn)(uintptr_t)addr[2];
    out->desc = (const StrataModelDesc *)(uintptr_t)addr[3];
    return true;
}

/* Gives the module's ABI symbols names unique in this JIT. */
static void rename_symbols(Jit *j, LLVMModuleRef mod, char names[NSYMBOLS][64])
{
    ++j->serial;
    for (int k = 0; k < NSYMBOLS; k++) {
        snprintf(names[k], 64, "%s.%lu", abi_symbols[k], j->serial);
        LLVMValueRef v = k < NSYMBOLS - 1 ? LLVMGetNamedFunction(mod, abi_symbols[k]) : LLVMGetNamedGlobal(mod, abi_symbols[k]);
        if (!v)
            die("jit: the module has no %s", abi_symbols[k]);
        LLVMSetValueName2(v, names[k], strlen(names[k]));
    }
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
    char names[NSYMBOLS][64];
    rename_symbols(j, m->mod, names);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m->mod, tsc);
    m->mod = NULL; /* the thread-safe module owns it now, and keeps tsc alive */
    LLVMOrcDisposeThreadSafeContext(tsc);
    lower_module_free(m);
    double t1 = lower_now();
    bool ok = add_and_lookup(j, tsm, names, out, err);
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

/* One mapping of /proc/self/smaps: dropped when it is of lib, not
 * writable, and holds no page of this process's own (Anonymous: 0 kB: no
 * relocated or otherwise written page, which the file could not give
 * back). */
typedef struct Mapping {
    unsigned long lo, hi;
    bool ours, clean;
} Mapping;

static size_t drop(const Mapping *m)
{
    if (!m->ours || !m->clean || madvise((void *)m->lo, m->hi - m->lo, MADV_DONTNEED) != 0)
        return 0;
    return m->hi - m->lo;
}

size_t jit_drop_code_pages(void)
{
    Dl_info info;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!dladdr((void *)LLVMOrcCreateLLJIT, &info) || !info.dli_fname || n <= 0)
        return 0;
    exe[n] = 0;
    char lib[PATH_MAX];
    if (!realpath(info.dli_fname, lib) || !strcmp(lib, exe))
        return 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return 0;
    size_t dropped = 0;
    Mapping m = {0};
    char line[PATH_MAX + 128];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, kb;
        char perms[8];
        int path = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &path) == 3) {
            dropped += drop(&m);
            line[strcspn(line, "\n")] = 0;
            m = (Mapping){lo, hi, path && perms[1] != 'w' && !strcmp(line + path, lib), false};
        } else if (sscanf(line, "Anonymous: %lu kB", &kb) == 1)
            m.clean = kb == 0;
    }
    dropped += drop(&m);
    fclose(f);
    return dropped;
}
