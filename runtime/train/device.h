/* device.h - where train, sft, eval and sample run: --device cpu (the
 * default: the compiled model's entry points, as always) or cuda / cuda:N
 * (the model's device program through runtime/gpu/exec.h on CUDA device
 * N, 0 by default).  rt_device_open checks the flag and opens the driver
 * before a command reads any data, so a machine without a GPU fails at
 * once; rt_device_model opens the model's program on it; rt_gpu_eval_loss
 * is rt_eval_loss (train.h) with the device's forward pass.  Implemented
 * in device.c; the commands own the RtDevice (open/close). */
#ifndef STRATA_DEVICE_H
#define STRATA_DEVICE_H
#include <stdint.h>

#include "data/data.h"
#include "gpu/cuda.h"
#include "gpu/exec.h"
#include "model.h"

typedef struct RtDevice {
    int cuda;        /* 0: the CPU; 1: a CUDA device */
    int ordinal;     /* cuda:N */
    char name[16];   /* "cpu", "cuda:0": what metrics rows record */
    RtCuda *cu;      /* the open device (cuda only) */
} RtDevice;

/* Parses spec ("cpu", "cuda", "cuda:N"; NULL = cpu) and opens the driver
 * and device for cuda, printing "PROG CMD: --device cuda: no CUDA driver:
 * ..." on failure.  Returns 0, 1 (no driver or device: printed) or 2 (a
 * bad value: printed).  talk: print the device's name and properties. */
int rt_device_open(RtDevice *d, const char *spec, const char *prog, const char *cmd, int talk);
void rt_device_close(RtDevice *d);
/* m's device program opened on d at (B,T) batches, for the run's
 * precision (STRATA_PRECISION_*).  0, or 1 (printed: no program in this
 * trainer, another precision, or the executor's error). */
int rt_device_model(RtDevice *d, const RtModel *m, int precision, int64_t B, int64_t T, const char *prog,
                    RtGpuModel **out);
/* Token-weighted mean cross-entropy of the device's logits over up to
 * `batches` batches (0 = all) of the sequential loader l from its start,
 * as rt_eval_loss; logits (B,T,vocab) host floats.  0, or -1 (the
 * forward call failed: rt_gpu_error). */
int rt_gpu_eval_loss(RtGpuModel *g, int64_t vocab, RtLoader *l, int64_t batches, float *logits, double *loss,
                     int64_t *ntok);
#endif
