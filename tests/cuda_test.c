/* cuda_test.c - runtime/gpu/cuda.c against the fake driver
 * tests/fake_cuda.c (built as tests/fake/libcuda.so.1): the parent runs
 * itself once per case with the environment of that case (LD_LIBRARY_PATH
 * pointing at the fake, its FAKE_CUDA_MODE, $STRATA_CUDA_DRIVER), since
 * the dynamic loader reads LD_LIBRARY_PATH only at process start.  Cases:
 * ok (device info, memory round trip, range faults, PTX load errors with
 * the JIT log, kernel lookup, launch records and the shared-memory
 * attribute, timing, every handle released), nodevice (cuInit fails),
 * oom, nodriver (a missing library) and the default name without any
 * driver (skipped, with a note, on a machine that has one).  The expected
 * values are the fake's definitions, written in tests/fake_cuda.c. */
#include "gpu/cuda.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails;

#define CHECK(c, ...)                                                                                   \
    do {                                                                                                \
        if (!(c)) {                                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);                                \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fputc('\n', stderr);                                                                        \
            fails++;                                                                                    \
        }                                                                                               \
    } while (0)

static const char good_ptx[] =
    "//\n.version 8.0\n.target sm_90\n.address_size 64\n\n"
    ".visible .entry k_add(\n\t.param .u64 a\n)\n{\n\tret;\n}\n"
    ".visible .entry k_big(\n\t.param .u64 a\n)\n{\n\tret;\n}\n";

static void *fake_sym(const char *name)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    return h ? dlsym(h, name) : NULL;
}

static int case_ok(void)
{
    char err[1024] = "";
    RtCuda *cu = NULL;
    CHECK(rt_cuda_open(&cu, 1, err, sizeof err) == -1 && !cu, "ordinal 1 opened");
    CHECK(!strcmp(err, "CUDA device 1: the driver sees 1 device"), "'%s'", err);
    if (rt_cuda_open(&cu, 0, err, sizeof err)) {
        fprintf(stderr, "FAIL: rt_cuda_open: %s\n", err);
        return 1;
    }
    CHECK(!strcmp(rt_cuda_name(cu), "Fake CUDA device (tests/fake_cuda.c)"), "name '%s'", rt_cuda_name(cu));
    CHECK(rt_cuda_cc(cu) == 90, "cc %d", rt_cuda_cc(cu));
    CHECK(rt_cuda_sm_count(cu) == 132, "sms %d", rt_cuda_sm_count(cu));
    CHECK(rt_cuda_driver_version(cu) == 12040, "version %d", rt_cuda_driver_version(cu));
    CHECK(rt_cuda_total_mem(cu) == (size_t)1 << 30, "mem %zu", rt_cuda_total_mem(cu));

    /* Memory: upload, zero a middle range, download. */
    enum { N = 1000 };
    unsigned char host[N], back[N];
    for (int i = 0; i < N; i++)
        host[i] = (unsigned char)(i * 7 + 3);
    uint64_t d = 0;
    CHECK(rt_cuda_alloc(cu, &d, N, err, sizeof err) == 0 && d, "%s", err);
    CHECK(rt_cuda_upload(cu, d, host, N, err, sizeof err) == 0, "%s", err);
    CHECK(rt_cuda_memset0(cu, d + 100, 200, err, sizeof err) == 0, "%s", err);
    memset(back, 0xee, N);
    CHECK(rt_cuda_download(cu, back, d, N, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += back[i] != (i >= 100 && i < 300 ? 0 : host[i]);
    CHECK(bad == 0, "%d bytes differ after the round trip", bad);
    /* A range past the allocation is the driver's error, named. */
    CHECK(rt_cuda_download(cu, back, d + 1, N, err, sizeof err) == -1, "read past the end");
    CHECK(!strcmp(err, "CUDA device 0: cuMemcpyDtoHAsync failed: CUDA_ERROR_INVALID_VALUE"), "'%s'", err);

    /* Kernels before a module; bad PTX with the JIT's log; a good module. */
    RtCudaKernel *k = NULL, *big = NULL, *again = NULL;
    CHECK(rt_cuda_kernel(cu, "k_add", &k, err, sizeof err) == -1, "kernel without a module");
    CHECK(!strcmp(err, "CUDA device 0: kernel k_add: no PTX module loaded"), "'%s'", err);
    CHECK(rt_cuda_load_ptx(cu, "not ptx", err, sizeof err) == -1, "bad PTX loaded");
    CHECK(strstr(err, "cuModuleLoadDataEx failed: CUDA_ERROR_INVALID_PTX; the PTX JIT says: ptxas application ptx "
                      "input, line 1; fatal   : Missing .version directive") != NULL, "'%s'", err);
    CHECK(rt_cuda_load_ptx(cu, good_ptx, err, sizeof err) == 0, "%s", err);
    const char *(*ptx)(void) = (const char *(*)(void))fake_sym("fake_cuda_ptx");
    CHECK(ptx && ptx() && !strcmp(ptx(), good_ptx), "the driver got other PTX");
    CHECK(rt_cuda_load_ptx(cu, good_ptx, err, sizeof err) == -1, "second module");
    CHECK(strstr(err, "a PTX module is loaded already") != NULL, "'%s'", err);
    CHECK(rt_cuda_kernel(cu, "nope", &k, err, sizeof err) == -1 && !k, "unknown kernel");
    CHECK(!strcmp(err, "CUDA device 0: cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND (kernel nope)"), "'%s'", err);
    CHECK(rt_cuda_kernel(cu, "k_add", &k, err, sizeof err) == 0 && k, "%s", err);
    CHECK(rt_cuda_kernel(cu, "k_big", &big, err, sizeof err) == 0 && big, "%s", err);
    CHECK(rt_cuda_kernel(cu, "k_add", &again, err, sizeof err) == 0 && again == k, "not cached");

    /* Launches: recorded as given; 64 KiB of shared memory needs the
     * attribute (the fake refuses the launch without it, as a driver does). */
    uint64_t arg = d;
    void *args[] = {&arg};
    CHECK(rt_cuda_launch(cu, k, (unsigned[3]){4, 2, 1}, (unsigned[3]){128, 1, 1}, 0, args, err, sizeof err) == 0,
          "%s", err);
    CHECK(rt_cuda_launch(cu, big, (unsigned[3]){7, 1, 1}, (unsigned[3]){256, 1, 1}, 64 << 10, args, err, sizeof err)
          == 0, "%s", err);
    CHECK(rt_cuda_launch(cu, k, (unsigned[3]){1, 1, 1}, (unsigned[3]){2048, 1, 1}, 0, args, err, sizeof err) == -1,
          "2048 threads launched");
    CHECK(!strcmp(err, "CUDA device 0: cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE (kernel k_add, grid 1x1x1, "
                       "block 2048x1x1, 0 shared bytes)"), "'%s'", err);
    int (*count)(void) = (int (*)(void))fake_sym("fake_cuda_launch_count");
    const char *(*launch)(int, unsigned *, unsigned *, unsigned *) =
        (const char *(*)(int, unsigned *, unsigned *, unsigned *))fake_sym("fake_cuda_launch");
    CHECK(count && launch, "the fake's record functions");
    if (count && launch) {
        unsigned g[3], b[3], sh;
        CHECK(count() == 2, "%d launches recorded", count());
        const char *n0 = launch(0, g, b, &sh);
        CHECK(n0 && !strcmp(n0, "k_add") && g[0] == 4 && g[1] == 2 && g[2] == 1 && b[0] == 128 && b[1] == 1 &&
              sh == 0, "launch 0: %s", n0 ? n0 : "none");
        const char *n1 = launch(1, g, b, &sh);
        CHECK(n1 && !strcmp(n1, "k_big") && g[0] == 7 && b[0] == 256 && sh == 64u << 10, "launch 1: %s %u",
              n1 ? n1 : "none", sh);
    }
    double ms = -1;
    CHECK(rt_cuda_timer_ms(cu, &ms, err, sizeof err) == -1, "timer without a start");
    CHECK(rt_cuda_timer_start(cu, err, sizeof err) == 0, "%s", err);
    CHECK(rt_cuda_timer_ms(cu, &ms, err, sizeof err) == 0 && ms == 0.25, "%s, %g ms", err, ms);
    CHECK(rt_cuda_sync(cu, err, sizeof err) == 0, "%s", err);
    rt_cuda_free(cu, d);
    rt_cuda_close(cu);
    int (*allocs)(void) = (int (*)(void))fake_sym("fake_cuda_live_allocs");
    int (*handles)(void) = (int (*)(void))fake_sym("fake_cuda_live_handles");
    CHECK(allocs && allocs() == 0, "%d allocations left", allocs ? allocs() : -1);
    CHECK(handles && handles() == 0, "%d driver handles left (context, stream, events, module)",
          handles ? handles() : -1);
    return fails ? 1 : 0;
}

static int case_fails_open(const char *want_prefix)
{
    char err[1024] = "";
    RtCuda *cu = (RtCuda *)1;
    int rc = rt_cuda_open(&cu, 0, err, sizeof err);
    CHECK(rc == -1 && cu == NULL, "opened");
    CHECK(!strncmp(err, want_prefix, strlen(want_prefix)), "'%s' does not start with '%s'", err, want_prefix);
    return fails ? 1 : 0;
}

static int case_oom(void)
{
    char err[1024] = "";
    RtCuda *cu = NULL;
    if (rt_cuda_open(&cu, 0, err, sizeof err)) {
        fprintf(stderr, "FAIL: rt_cuda_open: %s\n", err);
        return 1;
    }
    uint64_t d = 7;
    CHECK(rt_cuda_alloc(cu, &d, 1000, err, sizeof err) == -1 && d == 0, "allocated");
    CHECK(!strcmp(err, "CUDA device 0: cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (1000 bytes of 1.0 GiB)"),
          "'%s'", err);
    rt_cuda_close(cu);
    return fails ? 1 : 0;
}

/* Runs `self CASE` with the environment set as given (NULL: unset). */
static int run_case(const char *self, const char *name, const char *ldpath, const char *fmode, const char *driver)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (ldpath)
            setenv("LD_LIBRARY_PATH", ldpath, 1);
        else
            unsetenv("LD_LIBRARY_PATH");
        if (fmode)
            setenv("FAKE_CUDA_MODE", fmode, 1);
        else
            unsetenv("FAKE_CUDA_MODE");
        if (driver)
            setenv("STRATA_CUDA_DRIVER", driver, 1);
        else
            unsetenv("STRATA_CUDA_DRIVER");
        execl(self, self, name, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "FAIL: case %s (status %d)\n", name, st);
        return 1;
    }
    printf("ok: %s\n", name);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2) {
        if (!strcmp(argv[1], "ok"))
            return case_ok();
        if (!strcmp(argv[1], "nodevice"))
            return case_fails_open("CUDA device 0: cuInit failed: CUDA_ERROR_NO_DEVICE");
        if (!strcmp(argv[1], "oom"))
            return case_oom();
        if (!strcmp(argv[1], "nodriver"))
            return case_fails_open("no CUDA driver: /nonexistent/libcuda.so.1: cannot open shared object file");
        if (!strcmp(argv[1], "default"))
            return case_fails_open("no CUDA driver: libcuda.so.1: cannot open shared object file");
        return 2;
    }
    char self[4096], fake[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "FAIL: cannot find this program's path\n");
        return 1;
    }
    self[n] = 0;
    snprintf(fake, sizeof fake, "%.*s/fake", (int)(strrchr(self, '/') - self), self);
    char lib[4300];
    snprintf(lib, sizeof lib, "%s/libcuda.so.1", fake);
    if (access(lib, R_OK)) {
        fprintf(stderr, "FAIL: no fake driver %s (make check builds it)\n", lib);
        return 1;
    }
    int bad = 0;
    bad += run_case(self, "ok", fake, NULL, NULL);
    bad += run_case(self, "nodevice", fake, "nodevice", NULL);
    bad += run_case(self, "oom", fake, "oom", NULL);
    bad += run_case(self, "nodriver", NULL, NULL, "/nonexistent/libcuda.so.1");
    void *real = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (real) {
        printf("note: this machine has a CUDA driver: the message without one is checked through "
               "$STRATA_CUDA_DRIVER only\n");
        dlclose(real);
    } else
        bad += run_case(self, "default", NULL, NULL, NULL);
    return bad ? 1 : 0;
}
