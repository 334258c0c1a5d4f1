/* faults_shim.c - the fault injector of tests/faults.test, preloaded
 * (LD_PRELOAD) into strata and trainers.  Set by the environment:
 *   STRATA_FAULT_ENOSPC=PATTERN:BYTES  writes to files whose path contains
 *       PATTERN (write(2) and fwrite(3) through a file opened by open(2))
 *       fail with ENOSPC ("No space left on device") once BYTES bytes went
 *       to such files; the write that crosses the limit writes what fits;
 *   STRATA_FAULT_KILL=CALL:N  the process kills itself (SIGKILL) at its
 *       N-th call of CALL: rename, unlink, fsync or write (N >= 1), as a
 *       power cut or kill -9 at that exact point would stop it.
 * Anything else passes through to libc.  Not part of Strata: a test tool. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static char tracked[MAX_FD];   /* fds of files matching the ENOSPC pattern */
static long long budget = -1;  /* bytes left before ENOSPC; -1: no limit set */
static char pattern[512];
static char kill_call[32];
static long kill_at, calls;

static void setup(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *e = getenv("STRATA_FAULT_ENOSPC"), *colon;
    if (e && (colon = strrchr(e, ':')) && (size_t)(colon - e) < sizeof pattern) {
        memcpy(pattern, e, (size_t)(colon - e));
        budget = atoll(colon + 1);
    }
    const char *k = getenv("STRATA_FAULT_KILL");
    if (k && (colon = strchr(k, ':')) && (size_t)(colon - k) < sizeof kill_call) {
        memcpy(kill_call, k, (size_t)(colon - k));
        kill_at = atol(colon + 1);
    }
}

/* Counts a call of `name` and dies at the chosen one. */
static void maybe_die(const char *name)
{
    setup();
    if (kill_at > 0 && !strcmp(kill_call, name) && ++calls == kill_at)
        kill(getpid(), SIGKILL);
}

static void track(int fd, const char *path)
{
    setup();
    if (fd >= 0 && fd < MAX_FD)
        tracked[fd] = budget >= 0 && *pattern && path && strstr(path, pattern) != NULL;
}

/* How many of n bytes to fd may be written; 0 with errno ENOSPC when none. */
static size_t allowed(int fd, size_t n)
{
    if (fd < 0 || fd >= MAX_FD || !tracked[fd] || n == 0)
        return n;
    if (budget <= 0) {
        errno = ENOSPC;
        return 0;
    }
    size_t k = (long long)n > budget ? (size_t)budget : n;
    budget -= (long long)k;
    return k;
}

#define REAL(ret, name, args) static ret(*real_##name) args; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static int open_any(const char *name, int dirfd, const char *path, int flags, mode_t mode)
{
    int fd;
    if (!strcmp(name, "open")) {
        REAL(int, open, (const char *, int, ...));
        fd = real_open(path, flags, mode);
    } else if (!strcmp(name, "open64")) {
        REAL(int, open64, (const char *, int, ...));
        fd = real_open64(path, flags, mode);
    } else if (!strcmp(name, "openat")) {
        REAL(int, openat, (int, const char *, int, ...));
        fd = real_openat(dirfd, path, flags, mode);
    } else {
        REAL(int, openat64, (int, const char *, int, ...));
        fd = real_openat64(dirfd, path, flags, mode);
    }
    if (fd >= 0 && (flags & (O_WRONLY | O_RDWR)))
        track(fd, path);
    else if (fd >= 0 && fd < MAX_FD)
        tracked[fd] = 0;
    return fd;
}

/* mode is there when O_CREAT or O_TMPFILE is. */
#define MODE_ARG(flags, mode)                        \
    mode_t mode = 0;                                 \
    if ((flags) & (O_CREAT | O_TMPFILE)) {           \
        va_list ap;                                  \
        va_start(ap, flags);                         \
        mode = (mode_t)va_arg(ap, int);              \
        va_end(ap);                                  \
    }

int open(const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    return open_any("open", AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    return open_any("open64", AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    return open_any("openat", dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    return open_any("openat64", dirfd, path, flags, mode);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(ssize_t, write, (int, const void *, size_t));
    maybe_die("write");
    size_t k = allowed(fd, n);
    if (n && !k)
        return -1;
    return real_write(fd, buf, k);
}

size_t fwrite(const void *p, size_t size, size_t nmemb, FILE *f)
{
    REAL(size_t, fwrite, (const void *, size_t, size_t, FILE *));
    if (size == 0 || nmemb == 0)
        return real_fwrite(p, size, nmemb, f);
    size_t k = allowed(fileno(f), size * nmemb);
    size_t whole = k / size, done = whole ? real_fwrite(p, size, whole, f) : 0;
    if (done < nmemb)
        errno = ENOSPC;
    return done;
}

int rename(const char *from, const char *to)
{
    REAL(int, rename, (const char *, const char *));
    maybe_die("rename");
    return real_rename(from, to);
}

int unlink(const char *path)
{
    REAL(int, unlink, (const char *));
    maybe_die("unlink");
    return real_unlink(path);
}

int fsync(int fd)
{
    REAL(int, fsync, (int));
    maybe_die("fsync");
    return real_fsync(fd);
}

int close(int fd)
{
    REAL(int, close, (int));
    if (fd >= 0 && fd < MAX_FD)
        tracked[fd] = 0;
    return real_close(fd);
}
