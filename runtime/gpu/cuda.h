/* cuda.h - the CUDA driver API opened at run time (dlopen("libcuda.so.1")),
 * one device, its primary context and one stream.  INTERFACE OWNED BY
 * GPU-RUNTIME (branch gpu-runtime, issue #18): these declarations are the
 * contract's (/work/briefs/gpu-contract.md), written here so that exec.c
 * compiles on this branch; on a merge take gpu-runtime's file.  Every
 * function returns 0 on success, else -1 with a message in err. */
#ifndef STRATA_GPU_CUDA_H
#define STRATA_GPU_CUDA_H
#include <stddef.h>
#include <stdint.h>

typedef struct RtCuda RtCuda;             /* one device, its primary context, one stream */
typedef struct RtCudaKernel RtCudaKernel;

int rt_cuda_open(RtCuda **out, int ordinal, char *err, size_t errlen);
void rt_cuda_close(RtCuda *cu);
const char *rt_cuda_name(const RtCuda *cu);
int rt_cuda_cc(const RtCuda *cu);         /* compute capability, 90 for sm_90 */
int rt_cuda_sm_count(const RtCuda *cu);
int rt_cuda_alloc(RtCuda *cu, uint64_t *dptr, size_t bytes, char *err, size_t errlen);
void rt_cuda_free(RtCuda *cu, uint64_t dptr);
int rt_cuda_upload(RtCuda *cu, uint64_t dst, const void *src, size_t bytes, char *err, size_t errlen);
int rt_cuda_download(RtCuda *cu, void *dst, uint64_t src, size_t bytes, char *err, size_t errlen);
int rt_cuda_memset0(RtCuda *cu, uint64_t dst, size_t bytes, char *err, size_t errlen);
/* cuModuleLoadDataEx with the JIT error log in err on failure; one module per RtCuda */
int rt_cuda_load_ptx(RtCuda *cu, const char *ptx, char *err, size_t errlen);
int rt_cuda_kernel(RtCuda *cu, const char *name, RtCudaKernel **out, char *err, size_t errlen);
/* cuLaunchKernel on the stream; args[i] points at argument i */
int rt_cuda_launch(RtCuda *cu, RtCudaKernel *k, const unsigned grid[3], const unsigned block[3],
                   unsigned shared_bytes, void **args, char *err, size_t errlen);
int rt_cuda_sync(RtCuda *cu, char *err, size_t errlen);
#endif
