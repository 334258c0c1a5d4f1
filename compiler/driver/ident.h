/* ident.h - what a compiled model is, for the checkpoints of its runs:
 * an identity hash of the resolved model, every source file it was read
 * from (imports and the standard library included) and the -D values and
 * preset it was resolved with.  `strata train|eval|...` (driver/train.c)
 * and `strata build` (the trainer embeds them) fill RtModel's model_id,
 * sources_json and defines_json (runtime/model.h) from it; the runtime
 * records them in checkpoints and --resume compares them.
 * Entry points: drv_ident_make (after sema_resolve, before autodiff) and
 * drv_ident_free; DrvIdent owns its strings. */
#ifndef STRATA_DRIVER_IDENT_H
#define STRATA_DRIVER_IDENT_H
#include "front/ast.h"
#include "ir/ir.h"
#include "resolve/sema.h"

typedef struct DrvIdent {
    char *model_id;     /* 16 hex digits: FNV-1a 64 of the config, the parameter table and the IR */
    char *sources_json; /* {"models/x.strata": "its text", "<std>": "...", ...} in load order */
    char *defines_json; /* {"defines": ["d=32", ...], "preset": "NAME" or null} */
} DrvIdent;

/* g: the graph sema_resolve made of prog with opt (the forward graph: the
 * identity must not depend on autodiff or fusion). */
void drv_ident_make(DrvIdent *id, const Program *prog, const SemaOptions *opt, const IrGraph *g);
void drv_ident_free(DrvIdent *id);
#endif
