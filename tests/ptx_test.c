/* ptx_test.c - every model of models/ (at gradcheck's tiny sizes and at
 * its own defaults) lowers to PTX for sm_80 and sm_90 (issue #18): the
 * module passes LLVMVerifyModule and the NVPTX backend (inside
 * lower_gpu_program), the PTX declares every kernel the plan launches,
 * and, when `ptxas` is on PATH, ptxas assembles it for that architecture
 * (otherwise the test says that part was skipped); at the tiny size also
 * the bf16 program, whose products are mma.sync on tensor cores.  Usage:
 * ptx_test [MODEL...] (default: $srcdir/models/ *.strata). */
#include "gpu/plan.h"
#include "lower/lower.h"
#include "lower_case.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *ptxas_path(void)
{
    static char buf[4096];
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    const char *p = path;
    while (*p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof buf, "%.*s/ptxas", (int)n, p);
        if (n && access(buf, X_OK) == 0)
            return buf;
        p += n + (e ? 1 : 0);
    }
    return NULL;
}

/* Every kernel the plan names is an .entry of the PTX. */
static bool entries_present(const StrataGpuProgram *p)
{
    for (int i = 0; i < p->nkernels; i++) {
        char want[128];
        snprintf(want, sizeof want, ".entry %s(", p->kernels[i].name);
        if (!strstr(p->ptx, want)) {
            fprintf(stderr, "  the PTX has no %s\n", want);
            return false;
        }
    }
    for (int i = 0; i < p->nlaunches; i++)
        if (p->launches[i].kernel < 0 || p->launches[i].kernel >= p->nkernels)
            return false;
    return true;
}

static bool assemble(const char *ptxas, const StrataGpuProgram *p, const char *sm)
{
    char path[] = "/tmp/strata-ptx-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    FILE *f = fdopen(fd, "w");
    fwrite(p->ptx, 1, (size_t)p->ptx_len, f);
    fclose(f);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' -arch=%s '%s' -o /dev/null", ptxas, sm, path);
    int rc = system(cmd);
    unlink(path);
    return rc == 0;
}

static int check(const char *path, bool tiny, const char *ptxas, int *assembled)
{
    static const char *const none[] = {""}; /* no -D: the model's defaults */
    Case c;
    if (!case_load(&c, path, NULL, tiny ? NULL : none, 0)) {
        fprintf(stderr, "FAIL %s: does not load\n", path);
        return 1;
    }
    int failures = 0;
    for (int v = 0; v < (tiny ? 4 : 2); v++) { /* sm_80, sm_90; bf16 too at the tiny size */
        int s = v & 1, bf16 = v >> 1;
        const char *sm = s ? "sm_90" : "sm_80";
        StrataGpuProgram *p = NULL;
        char err[1024];
        LowerGpuOptions go = {.sm = s ? 90 : 80, .precision = bf16 ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32};
        if (lower_gpu_program(&c.g, &go, &p, err, sizeof err) != 0) {
            fprintf(stderr, "FAIL %s (%s, %s): %s\n", path, tiny ? "tiny" : "default", sm, err);
            failures++;
            continue;
        }
        bool ok = p->magic == STRATA_GPU_MAGIC && p->ptx_len > 0 && entries_present(p) &&
                  (!bf16 || strstr(p->ptx, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
        if (ok && ptxas) {
            ok = assemble(ptxas, p, sm);
            *assembled += ok;
        }
        printf("%s %s (%s, %s, %s): %d kernels, %d launches, %lld bytes of PTX\n", ok ? "ok" : "FAIL", path,
               tiny ? "tiny" : "default", sm, bf16 ? "bf16" : "fp32", p->nkernels, p->nlaunches, (long long)p->ptx_len);
        failures += !ok;
        lower_gpu_program_free(p);
    }
    case_free(&c);
    return failures;
}

int main(int argc, char **argv)
{
    glob_t gl = {0};
    char pattern[4096];
    if (argc < 2) {
        const char *srcdir = getenv("srcdir");
        snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
        if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
            fprintf(stderr, "no models at %s\n", pattern);
            return 1;
        }
    }
    int n = argc < 2 ? (int)gl.gl_pathc : argc - 1, failures = 0, assembled = 0;
    const char *ptxas = ptxas_path();
    for (int i = 0; i < n; i++) {
        const char *path = argc < 2 ? gl.gl_pathv[i] : argv[i + 1];
        failures += check(path, true, ptxas, &assembled);
        failures += check(path, false, ptxas, &assembled);
    }
    if (ptxas)
        printf("ptxas (%s) assembled %d PTX modules\n", ptxas, assembled);
    else
        printf("SKIPPED: ptxas is not on PATH, so the PTX was checked by LLVM's verifier and NVPTX backend only\n");
    globfree(&gl);
    printf("%d models, %d failures\n", n, failures);
    return failures ? 1 : 0;
}
