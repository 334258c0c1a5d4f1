/* rundir.c - make and lock a run directory (rundir.h). */
#include "store/rundir.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The pid written in a lock file, or 0. */
static long holder_pid(int fd)
{
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
    return pid > 0 ? pid : 0;
}

/* Opens and locks DIR/run.lock; 0, 1 when another process holds it (its
 * pid in *pid), -1 on an error (errno). */
static int take_lock(RtRunDir *r, long *pid)
{
    for (int tries = 0; tries < 8; tries++) {
        int fd = open(r->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0)
            return -1;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            *pid = e == EWOULDBLOCK ? holder_pid(fd) : 0;
            close(fd);
            errno = e;
            return e == EWOULDBLOCK ? 1 : -1;
        }
        /* A run that removed the file between our open and flock locked a
         * file no longer under that name: try again with the new one. */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(r->lock_path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            char text[32];
            int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
            bool wrote = ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)n, 0) == n;
            (void)wrote; /* the pid only serves the message of a second run */
            r->lock_fd = fd;
            return 0;
        }
        close(fd);
    }
    errno = EAGAIN;
    return -1;
}

int rt_rundir_open(RtRunDir *r, const char *dir, char **err)
{
    *r = (RtRunDir){.lock_fd = -1};
    if (mkdir(dir, 0777) == 0)
        r->created = true;
    else if (errno != EEXIST) {
        *err = rt_fmt("cannot create the run directory %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        *err = rt_fmt("%s: not a directory (--out needs a directory for the run)", dir);
        return -1;
    }
    r->dir = rt_fmt("%s", dir);
    r->lock_path = rt_fmt("%s/%s", dir, RT_RUNDIR_LOCK);
    long pid = 0;
    int rc = take_lock(r, &pid);
    if (rc == 0)
        return 0;
    if (rc > 0 && pid > 0)
        *err = rt_fmt("%s is in use by another run (pid %ld, which holds %s); wait for it to end or give "
                      "another --out", dir, pid, r->lock_path);
    else if (rc > 0)
        *err = rt_fmt("%s is in use by another run (it holds %s); wait for it to end or give another --out", dir,
                      r->lock_path);
    else
        *err = rt_fmt("%s: cannot lock the run directory: %s", r->lock_path, strerror(errno));
    rt_rundir_close(r, true);
    return -1;
}

void rt_rundir_close(RtRunDir *r, bool discard)
{
    if (discard && r->created && r->lock_path) {
        if (r->lock_fd >= 0)
            unlink(r->lock_path);
        rmdir(r->dir); /* fails, harmlessly, unless empty */
    }
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    free(r->dir), free(r->lock_path);
    *r = (RtRunDir){.lock_fd = -1};
}
