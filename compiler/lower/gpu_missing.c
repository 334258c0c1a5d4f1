/* gpu_missing.c - DELETE AT THE MERGE with branch gpu-lower, which owns the
 * NVPTX lowering (compiler/lower/nvptx*.c) and defines these functions.  On
 * the gpu-runtime branch alone there is no GPU lowering: lower_gpu_program
 * says so, so `--device cuda` stops with that message after the driver
 * check.  It lets this branch link; it is not an implementation. */
#include "lower/lower.h"

int lower_gpu_program(const IrGraph *g, const LowerGpuOptions *o, StrataGpuProgram **out, char *err,
                      size_t errlen)
{
    (void)g, (void)o;
    *out = NULL;
    snprintf(err, errlen, "this build has no GPU lowering (compiler/lower/nvptx*.c comes with the gpu-lower branch "
                          "of issue #18)");
    return -1;
}

void lower_gpu_program_free(StrataGpuProgram *p) { (void)p; }

int lower_gpu_program_c(const StrataGpuProgram *p, const char *name, FILE *f, char *err, size_t errlen)
{
    (void)p, (void)name, (void)f;
    snprintf(err, errlen, "this build has no GPU lowering");
    return -1;
}
