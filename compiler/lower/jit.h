/* jit.h - in-process compilation of a lowered model (ORC LLJIT).
 * jit_create makes one JIT per process (or per trainer); jit_compile lowers
 * an IrGraph with lower.h, compiles it for this host and returns the
 * model's entry points and descriptor (model ABI v4, runtime/model_abi.h)
 * with how long each step took.
 * Compiled code stays valid until jit_release or jit_free.  jit_compile
 * may be called from several threads; one JIT's additions and lookups are
 * serialised by a mutex. */
#ifndef STRATA_JIT_H
#define STRATA_JIT_H
#include "lower/lower.h"

typedef struct Jit Jit;

typedef struct JitStats {
    double lower_s;    /* IrGraph -> LLVM IR, verified */
    double opt_s;      /* default<O2> */
    double codegen_s;  /* machine code, linking, symbol resolution */
    double total_s;
} JitStats;

typedef struct JitModel {
    LowerPrecision precision;
    StrataStepFn train_step;       /* strata_train_step */
    StrataStepFn forward;          /* strata_forward */
    StrataStepFn decode;           /* strata_decode */
    const StrataModelDesc *desc;   /* strata_model */
    JitStats stats;
    void *tracker;         /* the code's owner inside the JIT (opaque) */
} JitModel;

/* NULL with a malloc'd message in *err if LLVM cannot target this host. */
Jit *jit_create(char **err);
/* Compiles g for this host (o->cpu is ignored: the JIT's code runs here).
 * False with a malloc'd message in *err, e.g. an unresolved symbol. */
bool jit_compile(Jit *j, const IrGraph *g, const LowerOptions *o, JitModel *out, char **err);
/* Frees a model's code; its entry point is invalid afterwards. */
void jit_release(Jit *j, JitModel *m);
void jit_free(Jit *j);
/* Once a program has compiled what it needs: drops from this process the
 * resident pages of LLVM's shared library code (its executable mappings,
 * which compiling touched, about 55 MB for LLaMA-71M; never written, so
 * the kernel reads them back from the file if LLVM runs again).  Does
 * nothing where LLVM is linked into the program itself.  Returns the bytes
 * of the mappings it dropped (0 for none). */
size_t jit_drop_code_pages(void);
#endif
