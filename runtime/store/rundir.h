/* rundir.h - a training run's directory (--out DIR): made when missing,
 * locked while a run uses it, and removed again when a run that made it
 * fails before writing anything into it.
 *
 * The lock is flock(2) on DIR/run.lock, which holds the holder's pid (for
 * the message of a second run).  flock locks die with their process, so a
 * killed run leaves no stale lock; the file itself stays.  Errors are
 * malloc'd messages naming the directory. */
#ifndef STRATA_RUNDIR_H
#define STRATA_RUNDIR_H
#include <stdbool.h>

#define RT_RUNDIR_LOCK "run.lock"

typedef struct RtRunDir {
    char *dir;       /* the directory as given */
    char *lock_path; /* DIR/run.lock */
    int lock_fd;     /* open and flock'ed; -1 when not held */
    bool created;    /* this process made DIR */
} RtRunDir;

/* Makes DIR (its parent must exist) unless it exists, and locks it
 * without waiting.  0, or -1 with *err: another process holds it ("DIR is
 * in use by another run (pid N)"), or DIR cannot be made or locked.  On
 * failure nothing is held and a DIR made here is removed again. */
int rt_rundir_open(RtRunDir *r, const char *dir, char **err);
/* Unlocks.  With `discard` and when rt_rundir_open made DIR, also removes
 * the lock file and DIR itself if nothing else is in it. */
void rt_rundir_close(RtRunDir *r, bool discard);
#endif
