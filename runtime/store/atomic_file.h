/* atomic_file.h - replace a file atomically: a crash (or kill, or full
 * disk) at any moment leaves either the old file or the new one at PATH,
 * never a partial one.
 *
 * Steps: rt_atomic_open creates PATH.tmp.<pid> in PATH's directory (same
 * file system, so rename is atomic); the caller writes through a->f;
 * rt_atomic_commit flushes, fsyncs and closes the file, renames it over
 * PATH and fsyncs the directory so the rename itself survives a power cut.
 * Any failure removes the temporary file and leaves PATH untouched.  A
 * process killed between open and commit leaves its PATH.tmp.<pid> behind
 * (PATH is intact); rt_atomic_clean_stale deletes those of dead processes.
 * A set of files replaced together (data.c's shard sets) closes each with
 * rt_atomic_close first and renames them all with rt_atomic_commit after.
 * Errors are malloc'd messages naming the file and the cause. */
#ifndef STRATA_ATOMIC_FILE_H
#define STRATA_ATOMIC_FILE_H
#include <stddef.h>
#include <stdio.h>

typedef struct RtAtomicFile {
    FILE *f;     /* write the new contents here */
    char *path;  /* the final name */
    char *tmp;   /* PATH.tmp.<pid> */
    int failed;  /* a write through rt_atomic_write failed */
} RtAtomicFile;

/* Creates the temporary file; 0, or -1 with *err. */
int rt_atomic_open(RtAtomicFile *a, const char *path, char **err);
/* fwrite that remembers failure (commit then reports it); 0 or -1. */
int rt_atomic_write(RtAtomicFile *a, const void *p, size_t n);
/* Flush, fsync and close the temporary file without renaming it; 0, or -1
 * with *err (the temporary file is removed and *a freed).  Commit or abort
 * it later. */
int rt_atomic_close(RtAtomicFile *a, char **err);
/* Flush, fsync, close (unless rt_atomic_close did), rename over PATH, fsync
 * the directory.  0, or -1 with *err (the temporary file is removed; PATH
 * keeps its old contents).  Frees *a either way. */
int rt_atomic_commit(RtAtomicFile *a, char **err);
/* Gives up: closes and removes the temporary file, frees *a. */
void rt_atomic_abort(RtAtomicFile *a);
/* The whole buffer as PATH's new contents, atomically. */
int rt_atomic_write_file(const char *path, const void *p, size_t n, char **err);
/* Deletes PATH.tmp.<pid> files whose process no longer runs (kill(pid, 0)
 * says ESRCH): what killed writers left.  Those of live processes are kept.
 * Returns the number deleted; *bytes (if not NULL) gets their total size. */
int rt_atomic_clean_stale(const char *path, long long *bytes);
#endif
