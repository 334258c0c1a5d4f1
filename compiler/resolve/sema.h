/* sema.h - semantic checks and per-layer resolution.
 * sema_resolve interprets the model block at compile time: config constants
 * (file < --preset < -D), loops over l, user functions (inlined), parameter
 * declarations; every compile-time expression becomes a number and every
 * tensor expression an IR node.  Errors go to the Diag; the IrGraph is only
 * meaningful when it returns true. */
#ifndef STRATA_SEMA_H
#define STRATA_SEMA_H
#include "front/ast.h"
#include "ir/ir.h"

typedef struct SemaOptions {
    const char *preset;        /* --preset NAME, or NULL */
    const char **defines;      /* -D arguments, "name=value" */
    int ndefines;
    const char **soft;         /* like defines, applied before them, but names */
    int nsoft;                 /* the config lacks are ignored (gradcheck's tiny sizes) */
} SemaOptions;

bool sema_resolve(const Program *prog, const SemaOptions *opt, Diag *d, IrGraph *g);
/* NULL-terminated list of preset names, for --help and error messages. */
const char *const *sema_preset_names(void);
#endif
