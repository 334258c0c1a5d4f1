/* test_util.c - the unit tests' shared preamble (see test_util.h). */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

int tu_fails;
char tu_dir[256];

bool tu_mkdtemp(const char *tmpl)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/%s", tmp && *tmp ? tmp : "/tmp", tmpl);
    if (!mkdtemp(tu_dir)) {
        perror(tu_dir);
        return false;
    }
    return true;
}

char *tu_path(const char *name)
{
    static char buf[16][512];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, sizeof buf[0], "%s/%s", tu_dir, name);
    return p;
}

char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *p = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (!p)
        return NULL;
    p[n] = 0;
    if (len)
        *len = (size_t)n;
    return p;
}

bool tu_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok) {
        printf("FAIL: cannot write %s\n", path);
        tu_fails++;
    }
    return ok;
}

int tu_finish(const char *name)
{
    if (tu_fails) {
        printf("%s: %d failure(s); files kept in %s\n", name, tu_fails, tu_dir);
        return 1;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tu_dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", tu_dir);
    printf("%s: all passed\n", name);
    return 0;
}
