/* util.h - small helpers the runtime's files share.
 * rt_fmt: printf into a new malloc'd string (the caller frees it); the
 * runtime's error messages are made with it.  Out of memory prints a line
 * and exits 3, as everywhere in the runtime. */
#ifndef STRATA_UTIL_H
#define STRATA_UTIL_H

char *rt_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
