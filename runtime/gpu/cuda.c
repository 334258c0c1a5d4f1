/* cuda.c - the CUDA driver API through dlopen (cuda.h).  The driver's types
 * and the few calls used are declared here, as the driver's cuda.h defines
 * them (CUdeviceptr is 64 bits; the _v2 entry points are preferred where the
 * driver has them, as cuda.h's macros pick them).  The library is opened
 * once per process and stays open; each RtCuda retains the device's primary
 * context, which it makes current, and owns a stream, the module and the
 * kernels it looked up.  Messages come from cuGetErrorName. */
#include "gpu/cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult; /* CUDA_SUCCESS 0 */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;

enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    CU_JIT_INFO_LOG_BUFFER = 3,
    CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
    CU_JIT_ERROR_LOG_BUFFER = 5,
    CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
    CU_STREAM_NON_BLOCKING = 1,
};

/* The driver's entry points: X(name, symbol tried first, then the plain name, parameters). */
#define CU_CALLS(X)                                                                                     \
    X(cuInit, "cuInit", (unsigned flags))                                                               \
    X(cuDriverGetVersion, "cuDriverGetVersion", (int *v))                                               \
    X(cuDeviceGetCount, "cuDeviceGetCount", (int *n))                                                   \
    X(cuDeviceGet, "cuDeviceGet", (CUdevice *d, int ordinal))                                           \
    X(cuDeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice d))                            \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *v, int attr, CUdevice d))                     \
    X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *bytes, CUdevice d))                             \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *c, CUdevice d))                 \
    X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice d))                          \
    X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext c))                                                \
    X(cuStreamCreate, "cuStreamCreate", (CUstream *s, unsigned flags))                                  \
    X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream s))                                              \
    X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream s))                                         \
    X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *p, size_t bytes))                                      \
    X(cuMemFree, "cuMemFree_v2", (CUdeviceptr p))                                                       \
    X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr dst, const void *src, size_t n, CUstream s)) \
    X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *dst, CUdeviceptr src, size_t n, CUstream s))     \
    X(cuMemsetD8Async, "cuMemsetD8Async", (CUdeviceptr dst, unsigned char v, size_t n, CUstream s))     \
    X(cuModuleLoadDataEx, "cuModuleLoadDataEx",                                                         \
      (CUmodule *m, const void *image, unsigned nopt, int *opts, void **vals))                          \
    X(cuModuleUnload, "cuModuleUnload", (CUmodule m))                                                   \
    X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *f, CUmodule m, const char *name))        \
    X(cuFuncSetAttribute, "cuFuncSetAttribute", (CUfunction f, int attr, int v))                        \
    X(cuLaunchKernel, "cuLaunchKernel",                                                                 \
      (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,     \
       unsigned shared, CUstream s, void **args, void **extra))                                         \
    X(cuEventCreate, "cuEventCreate", (CUevent *e, unsigned flags))                                     \
    X(cuEventDestroy, "cuEventDestroy_v2", (CUevent e))                                                 \
    X(cuEventRecord, "cuEventRecord", (CUevent e, CUstream s))                                          \
    X(cuEventSynchronize, "cuEventSynchronize", (CUevent e))                                            \
    X(cuEventElapsedTime, "cuEventElapsedTime", (float *ms, CUevent a, CUevent b))                      \
    X(cuGetErrorName, "cuGetErrorName", (CUresult r, const char **name))

static struct {
#define X(name, sym, params) CUresult (*name) params;
    CU_CALLS(X)
#undef X
} drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;
static char drv_err[512]; /* why the driver could not be opened, "" when it was */

/* Opens the driver and resolves every entry point (the symbol, else its
 * name without the _v2 suffix); run once per process. */
static void drv_load(void)
{
    const char *lib = getenv("STRATA_CUDA_DRIVER");
    if (!lib || !*lib)
        lib = "libcuda.so.1";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(drv_err, sizeof drv_err, "no CUDA driver: %s", e ? e : lib);
        return;
    }
#define X(name, sym, params)                                                                            \
    if (!drv_err[0]) {                                                                                  \
        void *p = dlsym(h, sym);                                                                        \
        if (!p && strstr(sym, "_v2")) {                                                                 \
            char plain[64];                                                                             \
            snprintf(plain, sizeof plain, "%.*s", (int)(strstr(sym, "_v2") - sym), sym);              \
            p = dlsym(h, plain);                                                                        \
        }                                                                                               \
        if (!p)                                                                                         \
            snprintf(drv_err, sizeof drv_err, "the CUDA driver %s has no %s (a driver older than CUDA 11?)", lib, \
                     sym);                                                                              \
        memcpy(&drv.name, &p, sizeof p);                                                                \
    }
    CU_CALLS(X)
#undef X
    if (drv_err[0])
        dlclose(h);
}

struct RtCudaKernel {
    char *name;
    CUfunction fn;
    int max_shared; /* the dynamic shared bytes allowed so far (48 KiB without asking) */
    RtCudaKernel *next;
};

struct RtCuda {
    int ordinal;
    CUdevice dev;
    CUcontext ctx;
    CUstream stream;
    CUmodule module;      /* NULL until rt_cuda_load_ptx */
    RtCudaKernel *kernels;
    CUevent t0, t1;       /* the timer's, made on first use */
    char name[256];
    int cc, sms, version;
    size_t mem;
};

/* err = "CUDA device N: CALL failed: CUDA_ERROR_NAME"; returns -1. */
static int fail(const RtCuda *cu, int ordinal, const char *call, CUresult r, char *err, size_t errlen)
{
    const char *name = NULL;
    if (!drv.cuGetErrorName || drv.cuGetErrorName(r, &name) != 0 || !name)
        name = NULL;
    if (name)
        snprintf(err, errlen, "CUDA device %d: %s failed: %s", cu ? cu->ordinal : ordinal, call, name);
    else
        snprintf(err, errlen, "CUDA device %d: %s failed: CUresult %d", cu ? cu->ordinal : ordinal, call, r);
    return -1;
}

#define CALL(cu, ord, fn, args)                                                                         \
    do {                                                                                                \
        CUresult r_ = drv.fn args;                                                                      \
        if (r_ != 0)                                                                                    \
            return fail(cu, ord, #fn, r_, err, errlen);                                                 \
    } while (0)

/* Makes the RtCuda's context current on the calling thread. */
static int current(RtCuda *cu, char *err, size_t errlen)
{
    CALL(cu, 0, cuCtxSetCurrent, (cu->ctx));
    return 0;
}

static int open_device(RtCuda *cu, int ordinal, char *err, size_t errlen)
{
    int n = 0;
    CALL(NULL, ordinal, cuInit, (0));
    CALL(NULL, ordinal, cuDeviceGetCount, (&n));
    if (ordinal < 0 || ordinal >= n) {
        snprintf(err, errlen, "CUDA device %d: the driver sees %d device%s", ordinal, n, n == 1 ? "" : "s");
        return -1;
    }
    CALL(NULL, ordinal, cuDeviceGet, (&cu->dev, ordinal));
    CALL(cu, 0, cuDeviceGetName, (cu->name, (int)sizeof cu->name - 1, cu->dev));
    int major = 0, minor = 0;
    CALL(cu, 0, cuDeviceGetAttribute, (&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, cu->dev));
    CALL(cu, 0, cuDeviceGetAttribute, (&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, cu->dev));
    CALL(cu, 0, cuDeviceGetAttribute, (&cu->sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, cu->dev));
    CALL(cu, 0, cuDeviceTotalMem, (&cu->mem, cu->dev));
    CALL(cu, 0, cuDriverGetVersion, (&cu->version));
    cu->cc = 10 * major + minor;
    CALL(cu, 0, cuDevicePrimaryCtxRetain, (&cu->ctx, cu->dev));
    if (current(cu, err, errlen))
        return -1;
    CALL(cu, 0, cuStreamCreate, (&cu->stream, CU_STREAM_NON_BLOCKING));
    return 0;
}

int rt_cuda_open(RtCuda **out, int ordinal, char *err, size_t errlen)
{
    *out = NULL;
    pthread_once(&drv_once, drv_load);
    if (drv_err[0]) {
        snprintf(err, errlen, "%s", drv_err);
        return -1;
    }
    RtCuda *cu = calloc(1, sizeof *cu);
    if (!cu) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cu->ordinal = ordinal;
    if (open_device(cu, ordinal, err, errlen)) {
        rt_cuda_close(cu);
        return -1;
    }
    *out = cu;
    return 0;
}

void rt_cuda_close(RtCuda *cu)
{
    if (!cu)
        return;
    if (cu->ctx)
        drv.cuCtxSetCurrent(cu->ctx);
    if (cu->stream)
        drv.cuStreamSynchronize(cu->stream);
    for (RtCudaKernel *k = cu->kernels, *next; k; k = next) {
        next = k->next;
        free(k->name);
        free(k);
    }
    if (cu->module)
        drv.cuModuleUnload(cu->module);
    if (cu->t0)
        drv.cuEventDestroy(cu->t0);
    if (cu->t1)
        drv.cuEventDestroy(cu->t1);
    if (cu->stream)
        drv.cuStreamDestroy(cu->stream);
    if (cu->ctx)
        drv.cuDevicePrimaryCtxRelease(cu->dev);
    free(cu);
}

const char *rt_cuda_name(const RtCuda *cu) { return cu->name; }
int rt_cuda_cc(const RtCuda *cu) { return cu->cc; }
int rt_cuda_sm_count(const RtCuda *cu) { return cu->sms; }
int rt_cuda_driver_version(const RtCuda *cu) { return cu->version; }
size_t rt_cuda_total_mem(const RtCuda *cu) { return cu->mem; }

int rt_cuda_alloc(RtCuda *cu, uint64_t *dptr, size_t bytes, char *err, size_t errlen)
{
    CUdeviceptr p = 0;
    *dptr = 0;
    if (current(cu, err, errlen))
        return -1;
    CUresult r = drv.cuMemAlloc(&p, bytes ? bytes : 1);
    if (r != 0) {
        fail(cu, 0, "cuMemAlloc", r, err, errlen);
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (%zu bytes of %.1f GiB)", bytes, (double)cu->mem / (1 << 30));
        return -1;
    }
    *dptr = p;
    return 0;
}

void rt_cuda_free(RtCuda *cu, uint64_t dptr)
{
    if (cu && dptr) {
        drv.cuCtxSetCurrent(cu->ctx);
        drv.cuMemFree((CUdeviceptr)dptr);
    }
}

int rt_cuda_upload(RtCuda *cu, uint64_t dst, const void *src, size_t bytes, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    /* The host buffer may change as soon as this returns: wait for the copy. */
    CALL(cu, 0, cuMemcpyHtoDAsync, ((CUdeviceptr)dst, src, bytes, cu->stream));
    CALL(cu, 0, cuStreamSynchronize, (cu->stream));
    return 0;
}

int rt_cuda_download(RtCuda *cu, void *dst, uint64_t src, size_t bytes, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    CALL(cu, 0, cuMemcpyDtoHAsync, (dst, (CUdeviceptr)src, bytes, cu->stream));
    CALL(cu, 0, cuStreamSynchronize, (cu->stream));
    return 0;
}

int rt_cuda_memset0(RtCuda *cu, uint64_t dst, size_t bytes, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    CALL(cu, 0, cuMemsetD8Async, ((CUdeviceptr)dst, 0, bytes, cu->stream));
    return 0;
}

int rt_cuda_load_ptx(RtCuda *cu, const char *ptx, char *err, size_t errlen)
{
    if (cu->module) {
        snprintf(err, errlen, "CUDA device %d: a PTX module is loaded already (one per device handle)", cu->ordinal);
        return -1;
    }
    if (current(cu, err, errlen))
        return -1;
    static char log[8192];
    static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&log_lock);
    log[0] = 0;
    int opts[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[2] = {log, (void *)(uintptr_t)(sizeof log - 1)};
    CUresult r = drv.cuModuleLoadDataEx(&cu->module, ptx, 2, opts, vals);
    if (r != 0) {
        cu->module = NULL;
        fail(cu, 0, "cuModuleLoadDataEx", r, err, errlen);
        log[sizeof log - 1] = 0;
        size_t n = strlen(err);
        if (log[0])
            snprintf(err + n, errlen - n, "; the PTX JIT says: %s", log);
        pthread_mutex_unlock(&log_lock);
        return -1;
    }
    pthread_mutex_unlock(&log_lock);
    return 0;
}

int rt_cuda_kernel(RtCuda *cu, const char *name, RtCudaKernel **out, char *err, size_t errlen)
{
    *out = NULL;
    for (RtCudaKernel *k = cu->kernels; k; k = k->next)
        if (!strcmp(k->name, name)) {
            *out = k;
            return 0;
        }
    if (!cu->module) {
        snprintf(err, errlen, "CUDA device %d: kernel %s: no PTX module loaded", cu->ordinal, name);
        return -1;
    }
    if (current(cu, err, errlen))
        return -1;
    CUfunction fn = NULL;
    CUresult r = drv.cuModuleGetFunction(&fn, cu->module, name);
    if (r != 0) {
        fail(cu, 0, "cuModuleGetFunction", r, err, errlen);
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (kernel %s)", name);
        return -1;
    }
    RtCudaKernel *k = calloc(1, sizeof *k);
    if (!k || !(k->name = strdup(name))) {
        free(k);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    k->fn = fn;
    k->max_shared = 48 << 10;
    k->next = cu->kernels;
    cu->kernels = k;
    *out = k;
    return 0;
}

int rt_cuda_launch(RtCuda *cu, RtCudaKernel *k, const unsigned grid[3], const unsigned block[3],
                   unsigned shared_bytes, void **args, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    if ((int)shared_bytes > k->max_shared) {
        CUresult r = drv.cuFuncSetAttribute(k->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            (int)shared_bytes);
        if (r != 0) {
            fail(cu, 0, "cuFuncSetAttribute", r, err, errlen);
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (kernel %s, %u bytes of dynamic shared memory)", k->name, shared_bytes);
            return -1;
        }
        k->max_shared = (int)shared_bytes;
    }
    CUresult r = drv.cuLaunchKernel(k->fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], shared_bytes,
                                    cu->stream, args, NULL);
    if (r != 0) {
        fail(cu, 0, "cuLaunchKernel", r, err, errlen);
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (kernel %s, grid %ux%ux%u, block %ux%ux%u, %u shared bytes)", k->name,
                 grid[0], grid[1], grid[2], block[0], block[1], block[2], shared_bytes);
        return -1;
    }
    return 0;
}

int rt_cuda_sync(RtCuda *cu, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    CALL(cu, 0, cuStreamSynchronize, (cu->stream));
    return 0;
}

int rt_cuda_timer_start(RtCuda *cu, char *err, size_t errlen)
{
    if (current(cu, err, errlen))
        return -1;
    if (!cu->t0)
        CALL(cu, 0, cuEventCreate, (&cu->t0, 0));
    if (!cu->t1)
        CALL(cu, 0, cuEventCreate, (&cu->t1, 0));
    CALL(cu, 0, cuEventRecord, (cu->t0, cu->stream));
    return 0;
}

int rt_cuda_timer_ms(RtCuda *cu, double *ms, char *err, size_t errlen)
{
    *ms = 0;
    if (!cu->t0) {
        snprintf(err, errlen, "CUDA device %d: rt_cuda_timer_ms without rt_cuda_timer_start", cu->ordinal);
        return -1;
    }
    if (current(cu, err, errlen))
        return -1;
    float f = 0;
    CALL(cu, 0, cuEventRecord, (cu->t1, cu->stream));
    CALL(cu, 0, cuEventSynchronize, (cu->t1));
    CALL(cu, 0, cuEventElapsedTime, (&f, cu->t0, cu->t1));
    *ms = f;
    return 0;
}
