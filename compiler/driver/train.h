/* train.h - the two ways `strata` turns a model into a trainer:
 *   drv_run_trainer    `strata train|eval|sample MODEL [...]`: compile the
 *                      fp32 model in process (jit.h) and hand the rest of
 *                      the command line to rt_trainer_main (runtime/trainer.h);
 *   drv_build_trainer  `strata build MODEL -o TRAINER`: an object file of the
 *                      model, a generated main() and the runtime library,
 *                      linked by the C compiler into an executable that needs
 *                      no LLVM.
 * Both are called from main.c; neither keeps memory after it returns. */
#ifndef STRATA_DRIVER_TRAIN_H
#define STRATA_DRIVER_TRAIN_H
#include "driver/ident.h"
#include "ir/ir.h"

/* argv: the arguments after the command.  Returns the exit status (the
 * trainer's, or 1 bad model, 2 usage, 3 cannot compile). */
int drv_run_trainer(const char *cmd, int argc, char **argv);

typedef struct DrvBuild {
    const char *model;    /* the model file as given (messages, RtModel.path) */
    const char *source;   /* its text, embedded in the trainer */
    const DrvIdent *ident; /* the model's identity, sources and -D values, embedded too */
    const char *cpu;      /* target CPU, NULL = this host */
    const char *output;   /* the executable to write */
    bool cuda;            /* --device cuda: the GPU program (PTX and launch plan) embedded too */
    int cuda_sm;          /* its target: 80 or 90 */
    bool gpu_bf16;        /* its matrix products in bf16 (else fp32) */
} DrvBuild;

/* g went through ad_build and fuse_graph.  False after printing an error. */
bool drv_build_trainer(const IrGraph *g, const DrvBuild *b);

/* A config constant ctx (the default window) must be a whole number >= 1;
 * false after saying so (-D ctx=0 would otherwise fall back to 256). */
bool drv_check_ctx(const IrGraph *g);
#endif
