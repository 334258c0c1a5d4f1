/* fake_cuda.c - a stand-in CUDA driver for tests, built as tests/fake/
 * libcuda.so.1 and found through LD_LIBRARY_PATH (or $STRATA_CUDA_DRIVER).
 * It implements the driver calls runtime/gpu/cuda.c makes on host memory:
 * cuMemAlloc is malloc-backed (copies and memsets are checked against the
 * live allocations, as the real driver faults on a bad range), a loaded
 * module records its PTX and the .entry names in it, cuLaunchKernel records
 * the launch (kernel, grid, block, shared bytes) and runs nothing.  It
 * cannot execute PTX.  $FAKE_CUDA_MODE: "nodevice" (cuInit fails with
 * CUDA_ERROR_NO_DEVICE), "oom" (every cuMemAlloc fails); $FAKE_CUDA_LOG:
 * a file that gets one line per launch.  fake_cuda_* let a test read the
 * records. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
    OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, NO_DEVICE = 100, INVALID_DEVICE = 101,
    INVALID_PTX = 218, INVALID_HANDLE = 400, NOT_FOUND = 500,
};

typedef struct Alloc { char *p; size_t n; } Alloc;
typedef struct Func { char name[128]; int max_shared; } Func;
typedef struct Launch { char name[128]; unsigned grid[3], block[3], shared; } Launch;

static int inited, ctx_refs, nstreams, nevents;
static Alloc allocs[4096];
static int nallocs;
static char *ptx;           /* the loaded module's text */
static Func funcs[256];     /* the module's .entry kernels */
static int nfuncs, module_loaded;
static Launch launches[4096];
static int nlaunches;
static int ctx_token, stream_token, event_token;

static const char *mode(void)
{
    const char *m = getenv("FAKE_CUDA_MODE");
    return m ? m : "";
}

CUresult cuGetErrorName(CUresult r, const char **name)
{
    switch (r) {
    case OK: *name = "CUDA_SUCCESS"; break;
    case INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
    case OUT_OF_MEMORY: *name = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case NOT_INITIALIZED: *name = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case NO_DEVICE: *name = "CUDA_ERROR_NO_DEVICE"; break;
    case INVALID_DEVICE: *name = "CUDA_ERROR_INVALID_DEVICE"; break;
    case INVALID_PTX: *name = "CUDA_ERROR_INVALID_PTX"; break;
    case INVALID_HANDLE: *name = "CUDA_ERROR_INVALID_HANDLE"; break;
    case NOT_FOUND: *name = "CUDA_ERROR_NOT_FOUND"; break;
    default: *name = NULL; return INVALID_VALUE;
    }
    return OK;
}

CUresult cuInit(unsigned flags)
{
    if (flags)
        return INVALID_VALUE;
    if (!strcmp(mode(), "nodevice"))
        return NO_DEVICE;
    inited = 1;
    return OK;
}

CUresult cuDriverGetVersion(int *v)
{
    *v = 12040;
    return OK;
}

CUresult cuDeviceGetCount(int *n)
{
    if (!inited)
        return NOT_INITIALIZED;
    *n = 1;
    return OK;
}

CUresult cuDeviceGet(int *d, int ordinal)
{
    if (!inited)
        return NOT_INITIALIZED;
    if (ordinal != 0)
        return INVALID_DEVICE;
    *d = 0;
    return OK;
}

CUresult cuDeviceGetName(char *name, int len, int d)
{
    if (!inited)
        return NOT_INITIALIZED;
    if (d != 0 || len < 1)
        return d ? INVALID_DEVICE : INVALID_VALUE;
    snprintf(name, (size_t)len, "Fake CUDA device (tests/fake_cuda.c)");
    return OK;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int d)
{
    if (!inited)
        return NOT_INITIALIZED;
    if (d != 0)
        return INVALID_DEVICE;
    switch (attr) {
    case 16: *v = 132; return OK; /* multiprocessors */
    case 75: *v = 9; return OK;   /* compute capability 9.0 */
    case 76: *v = 0; return OK;
    default: return INVALID_VALUE;
    }
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int d)
{
    if (!inited)
        return NOT_INITIALIZED;
    *bytes = (size_t)1 << 30;
    return d ? INVALID_DEVICE : OK;
}

CUresult cuDevicePrimaryCtxRetain(void **c, int d)
{
    if (!inited)
        return NOT_INITIALIZED;
    if (d != 0)
        return INVALID_DEVICE;
    ctx_refs++;
    *c = &ctx_token;
    return OK;
}

CUresult cuDevicePrimaryCtxRelease_v2(int d)
{
    if (d != 0 || ctx_refs <= 0)
        return INVALID_DEVICE;
    ctx_refs--;
    return OK;
}

CUresult cuCtxSetCurrent(void *c)
{
    return c == &ctx_token && ctx_refs > 0 ? OK : INVALID_HANDLE;
}

CUresult cuStreamCreate(void **s, unsigned flags)
{
    (void)flags;
    nstreams++;
    *s = &stream_token;
    return OK;
}

CUresult cuStreamDestroy_v2(void *s)
{
    if (s != &stream_token || nstreams <= 0)
        return INVALID_HANDLE;
    nstreams--;
    return OK;
}

CUresult cuStreamSynchronize(void *s)
{
    return s == &stream_token ? OK : INVALID_HANDLE;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
    if (!inited)
        return NOT_INITIALIZED;
    if (!n)
        return INVALID_VALUE;
    if (!strcmp(mode(), "oom") || nallocs == (int)(sizeof allocs / sizeof *allocs))
        return OUT_OF_MEMORY;
    char *m = calloc(1, n);
    if (!m)
        return OUT_OF_MEMORY;
    allocs[nallocs++] = (Alloc){m, n};
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}

CUresult cuMemFree_v2(CUdeviceptr p)
{
    for (int i = 0; i < nallocs; i++)
        if ((uintptr_t)allocs[i].p == p) {
            free(allocs[i].p);
            allocs[i] = allocs[--nallocs];
            return OK;
        }
    return INVALID_VALUE;
}

/* The device range [p, p+n) inside one live allocation. */
static char *range(CUdeviceptr p, size_t n)
{
    for (int i = 0; i < nallocs; i++) {
        uintptr_t a = (uintptr_t)allocs[i].p;
        if (p >= a && p - a <= allocs[i].n && n <= allocs[i].n - (p - a))
            return (char *)(uintptr_t)p;
    }
    return NULL;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s)
{
    char *d = range(dst, n);
    if (!d || s != &stream_token)
        return INVALID_VALUE;
    memcpy(d, src, n);
    return OK;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s)
{
    char *p = range(src, n);
    if (!p || s != &stream_token)
        return INVALID_VALUE;
    memcpy(dst, p, n);
    return OK;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void *s)
{
    char *d = range(dst, n);
    if (!d || s != &stream_token)
        return INVALID_VALUE;
    memset(d, v, n);
    return OK;
}

/* Loads a module: the text must look like PTX (.version, .target), and its
 * .entry names become the module's kernels.  The error log gets ptxas's
 * kind of message. */
CUresult cuModuleLoadDataEx(void **m, const void *image, unsigned nopt, int *opts, void **vals)
{
    char *log = NULL;
    size_t logn = 0;
    for (unsigned i = 0; i < nopt; i++) {
        if (opts[i] == 5)
            log = vals[i];
        else if (opts[i] == 6)
            logn = (size_t)(uintptr_t)vals[i];
    }
    const char *text = image;
    if (!strstr(text, ".version") || !strstr(text, ".target")) {
        if (log && logn)
            snprintf(log, logn, "ptxas application ptx input, line 1; fatal   : Missing .version directive at "
                                "start of file (fake driver)");
        return INVALID_PTX;
    }
    free(ptx);
    ptx = strdup(text);
    nfuncs = 0;
    for (const char *p = strstr(text, ".entry"); p && nfuncs < 256; p = strstr(p + 6, ".entry")) {
        const char *q = p + 6;
        while (*q == ' ' || *q == '\t')
            q++;
        size_t len = strcspn(q, " \t\n(");
        if (len == 0 || len >= sizeof funcs[0].name)
            continue;
        memcpy(funcs[nfuncs].name, q, len);
        funcs[nfuncs].name[len] = 0;
        funcs[nfuncs].max_shared = 48 << 10;
        nfuncs++;
    }
    module_loaded = 1;
    *m = &module_loaded;
    return OK;
}

CUresult cuModuleUnload(void *m)
{
    if (m != &module_loaded || !module_loaded)
        return INVALID_HANDLE;
    module_loaded = 0;
    return OK;
}

CUresult cuModuleGetFunction(void **f, void *m, const char *name)
{
    if (m != &module_loaded || !module_loaded)
        return INVALID_HANDLE;
    for (int i = 0; i < nfuncs; i++)
        if (!strcmp(funcs[i].name, name)) {
            *f = &funcs[i];
            return OK;
        }
    return NOT_FOUND;
}

CUresult cuFuncSetAttribute(void *f, int attr, int v)
{
    Func *fn = f;
    if (attr != 8 || v < 0 || v > 227 << 10) /* sm_90's opt-in maximum */
        return INVALID_VALUE;
    fn->max_shared = v;
    return OK;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *s, void **args, void **extra)
{
    Func *fn = f;
    (void)args, (void)extra;
    if (s != &stream_token || !gx || !gy || !gz || !bx || !by || !bz || bx * by * bz > 1024)
        return INVALID_VALUE;
    if ((int)shared > fn->max_shared)
        return INVALID_VALUE; /* as the driver: more than 48 KiB needs the attribute */
    if (nlaunches < (int)(sizeof launches / sizeof *launches)) {
        Launch *l = &launches[nlaunches];
        snprintf(l->name, sizeof l->name, "%s", fn->name);
        l->grid[0] = gx, l->grid[1] = gy, l->grid[2] = gz;
        l->block[0] = bx, l->block[1] = by, l->block[2] = bz;
        l->shared = shared;
    }
    nlaunches++;
    const char *path = getenv("FAKE_CUDA_LOG");
    FILE *lf = path && *path ? fopen(path, "a") : NULL;
    if (lf) {
        fprintf(lf, "launch %s grid %u %u %u block %u %u %u shared %u\n", fn->name, gx, gy, gz, bx, by, bz, shared);
        fclose(lf);
    }
    return OK;
}

CUresult cuEventCreate(void **e, unsigned flags)
{
    (void)flags;
    nevents++;
    *e = &event_token;
    return OK;
}

CUresult cuEventDestroy_v2(void *e)
{
    if (e != &event_token || nevents <= 0)
        return INVALID_HANDLE;
    nevents--;
    return OK;
}

CUresult cuEventRecord(void *e, void *s)
{
    return e == &event_token && s == &stream_token ? OK : INVALID_HANDLE;
}

CUresult cuEventSynchronize(void *e)
{
    return e == &event_token ? OK : INVALID_HANDLE;
}

CUresult cuEventElapsedTime(float *ms, void *a, void *b)
{
    if (a != &event_token || b != &event_token)
        return INVALID_HANDLE;
    *ms = 0.25f;
    return OK;
}

/* --- what tests read back ------------------------------------------------- */

int fake_cuda_launch_count(void) { return nlaunches; }
const char *fake_cuda_launch(int i, unsigned grid[3], unsigned block[3], unsigned *shared)
{
    if (i < 0 || i >= nlaunches || i >= (int)(sizeof launches / sizeof *launches))
        return NULL;
    memcpy(grid, launches[i].grid, sizeof launches[i].grid);
    memcpy(block, launches[i].block, sizeof launches[i].block);
    *shared = launches[i].shared;
    return launches[i].name;
}
const char *fake_cuda_ptx(void) { return ptx; }
int fake_cuda_live_allocs(void) { return nallocs; }
int fake_cuda_live_handles(void) { return ctx_refs + nstreams + nevents + module_loaded; }
