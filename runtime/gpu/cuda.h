/* cuda.h - the CUDA driver API, opened at run time: libcuda.so.1 through
 * dlopen (no CUDA toolkit at build time; $STRATA_CUDA_DRIVER names another
 * file), one device, its primary context and one stream per RtCuda, the
 * device memory, one PTX module and its kernels, launches and timing.
 * Every call returns 0, or -1 with a message in err ("no CUDA driver: ...",
 * "CUDA device 0: cuInit failed: CUDA_ERROR_NO_DEVICE").  Implemented in
 * cuda.c; the interface is issue #18's contract between the GPU files. */
#ifndef STRATA_CUDA_H
#define STRATA_CUDA_H
#include <stddef.h>
#include <stdint.h>

typedef struct RtCuda RtCuda;             /* one device, its primary context, one stream */
typedef struct RtCudaKernel RtCudaKernel; /* a kernel of the loaded module (owned by the RtCuda) */

/* The device of this ordinal (0 first) with its primary context current on
 * the calling thread and a stream of its own. */
int rt_cuda_open(RtCuda **out, int ordinal, char *err, size_t errlen);
void rt_cuda_close(RtCuda *cu); /* frees the module, the stream, the timing events; NULL is fine */
const char *rt_cuda_name(const RtCuda *cu); /* "NVIDIA H200" */
int rt_cuda_cc(const RtCuda *cu);           /* compute capability, 90 for sm_90 */
int rt_cuda_sm_count(const RtCuda *cu);
int rt_cuda_driver_version(const RtCuda *cu); /* cuDriverGetVersion: 12040 for 12.4 */
size_t rt_cuda_total_mem(const RtCuda *cu);   /* bytes of device memory */

/* Device memory: alloc/free, host -> device, device -> host, zeros.  The
 * copies are ordered with the launches on the RtCuda's stream. */
int rt_cuda_alloc(RtCuda *cu, uint64_t *dptr, size_t bytes, char *err, size_t errlen);
void rt_cuda_free(RtCuda *cu, uint64_t dptr);
int rt_cuda_upload(RtCuda *cu, uint64_t dst, const void *src, size_t bytes, char *err, size_t errlen);
int rt_cuda_download(RtCuda *cu, void *dst, uint64_t src, size_t bytes, char *err, size_t errlen);
int rt_cuda_memset0(RtCuda *cu, uint64_t dst, size_t bytes, char *err, size_t errlen);

/* The PTX module (cuModuleLoadDataEx; on failure the JIT's error log is in
 * err).  One module per RtCuda: a second load is an error. */
int rt_cuda_load_ptx(RtCuda *cu, const char *ptx, char *err, size_t errlen);
/* The kernel `name` of the module (looked up once, then cached). */
int rt_cuda_kernel(RtCuda *cu, const char *name, RtCudaKernel **out, char *err, size_t errlen);
/* cuLaunchKernel on the stream; above 48 KiB of dynamic shared memory the
 * kernel's CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES is raised first.
 * args: one pointer per kernel parameter, as cuLaunchKernel takes them. */
int rt_cuda_launch(RtCuda *cu, RtCudaKernel *k, const unsigned grid[3], const unsigned block[3],
                   unsigned shared_bytes, void **args, char *err, size_t errlen);
/* Waits for everything queued on the stream; a kernel's fault shows here. */
int rt_cuda_sync(RtCuda *cu, char *err, size_t errlen);

/* Timing on the stream: rt_cuda_timer_start records a start event,
 * rt_cuda_timer_ms records an end event, waits for it and gives the
 * milliseconds between the two (GPU time, not host time). */
int rt_cuda_timer_start(RtCuda *cu, char *err, size_t errlen);
int rt_cuda_timer_ms(RtCuda *cu, double *ms, char *err, size_t errlen);
#endif
