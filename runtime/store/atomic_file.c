/* atomic_file.c - write to PATH.tmp.<pid>, fsync, rename, fsync the
 * directory (atomic_file.h). */
#define _GNU_SOURCE /* vasprintf */
#include "store/atomic_file.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void atomic_clear(RtAtomicFile *a)
{
    free(a->path);
    free(a->tmp);
    memset(a, 0, sizeof *a);
}

int rt_atomic_open(RtAtomicFile *a, const char *path, char **err)
{
    memset(a, 0, sizeof *a);
    if (!path || !*path) {
        *err = rt_fmt("an empty file name");
        return -1;
    }
    a->path = strdup(path);
    if (!a->path || asprintf(&a->tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
        a->tmp = NULL;
        atomic_clear(a);
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        *err = rt_fmt("%s: cannot create %s: %s", path, a->tmp, strerror(errno));
        atomic_clear(a);
        return -1;
    }
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        *err = rt_fmt("%s: %s", a->tmp, strerror(errno));
        close(fd);
        unlink(a->tmp);
        atomic_clear(a);
        return -1;
    }
    return 0;
}

int rt_atomic_write(RtAtomicFile *a, const void *p, size_t n)
{
    if (a->failed)
        return -1;
    if (n && fwrite(p, 1, n, a->f) != n) {
        a->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

void rt_atomic_abort(RtAtomicFile *a)
{
    if (a->f)
        fclose(a->f);
    if (a->tmp)
        unlink(a->tmp);
    atomic_clear(a);
}

/* fsync of PATH's directory, so the rename is on disk.  File systems that
 * cannot fsync a directory (EINVAL) are let through. */
static int sync_dir(const char *path, char **err)
{
    char *dir = strdup(path);
    if (!dir) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *err = rt_fmt("%s: cannot open its directory %s to sync it: %s", path, dir, strerror(errno));
        free(dir);
        return -1;
    }
    int rc = 0;
    if (fsync(fd) != 0 && errno != EINVAL) {
        *err = rt_fmt("%s: cannot sync its directory %s: %s", path, dir, strerror(errno));
        rc = -1;
    }
    close(fd);
    free(dir);
    return rc;
}

int rt_atomic_close(RtAtomicFile *a, char **err)
{
    if (!a->f)
        return 0;
    int e = a->failed;
    if (!e && fflush(a->f) != 0)
        e = errno ? errno : EIO;
    if (!e && fsync(fileno(a->f)) != 0)
        e = errno;
    if (fclose(a->f) != 0 && !e)
        e = errno ? errno : EIO;
    a->f = NULL;
    if (e) {
        *err = rt_fmt("%s: writing %s failed: %s", a->path, a->tmp, strerror(e));
        rt_atomic_abort(a);
        return -1;
    }
    return 0;
}

int rt_atomic_commit(RtAtomicFile *a, char **err)
{
    if (rt_atomic_close(a, err) != 0)
        return -1;
    if (rename(a->tmp, a->path) != 0) {
        *err = rt_fmt("%s: cannot rename %s over it: %s", a->path, a->tmp, strerror(errno));
        rt_atomic_abort(a);
        return -1;
    }
    int rc = sync_dir(a->path, err);
    atomic_clear(a);
    return rc;
}

int rt_atomic_write_file(const char *path, const void *p, size_t n, char **err)
{
    RtAtomicFile a;
    if (rt_atomic_open(&a, path, err) != 0)
        return -1;
    rt_atomic_write(&a, p, n);
    return rt_atomic_commit(&a, err);
}

int rt_atomic_clean_stale(const char *path, long long *bytes)
{
    if (bytes)
        *bytes = 0;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? rt_fmt("%.*s", (int)(slash == path ? 1 : slash - path), path) : rt_fmt(".");
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        /* BASE.tmp.<pid>, pid all digits, not this process */
        if (strncmp(e->d_name, base, blen) || strncmp(e->d_name + blen, ".tmp.", 5))
            continue;
        const char *digits = e->d_name + blen + 5;
        char *end;
        errno = 0;
        long pid = strtol(digits, &end, 10);
        if (!*digits || *end || errno || pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (or another user's): it may still be writing */
        char *f = rt_fmt("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(f, &st) == 0 && S_ISREG(st.st_mode) && unlink(f) == 0) {
            n++;
            if (bytes)
                *bytes += (long long)st.st_size;
        }
        free(f);
    }
    if (d)
        closedir(d);
    free(dir);
    return n;
}
