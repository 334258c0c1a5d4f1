/* test_util.h - the preamble the C unit tests share: the CHECK macro and
 * its failure count, a fresh temporary directory with paths in it, whole-
 * file read and write, and the closing summary (tu_finish).  Used by
 * data_test.c, safetensors_test.c, tokenizer_test.c and, through
 * train_case.h, by the trainer tests.  Memory: tu_path returns one of 16
 * rotating static buffers; tu_slurp's result is the caller's to free. */
#ifndef STRATA_TEST_UTIL_H
#define STRATA_TEST_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

extern int tu_fails;     /* failed checks so far */
extern char tu_dir[256]; /* the temporary directory, after tu_mkdtemp */

/* Counts a failure and prints "FAIL file:line: message" unless c holds. */
#define CHECK(c, ...)                                                                                  \
    do {                                                                                               \
        if (!(c)) {                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                \
            printf(__VA_ARGS__);                                                                       \
            printf("\n");                                                                              \
            tu_fails++;                                                                                \
        }                                                                                              \
    } while (0)

/* Makes tu_dir = $TMPDIR (else /tmp) / tmpl, tmpl ending in XXXXXX;
 * false (after perror) when it cannot. */
bool tu_mkdtemp(const char *tmpl);

/* "tu_dir/name", valid until 16 more calls. */
char *tu_path(const char *name);

/* The whole file, NUL-terminated, its length in *len (len may be NULL);
 * NULL when it cannot be opened or read whole. */
char *tu_slurp(const char *path, size_t *len);

/* Writes n bytes to path; on failure prints FAIL, counts it, false. */
bool tu_write(const char *path, const void *p, size_t n);

/* The end of a test: on success removes tu_dir and prints "NAME: all
 * passed", else keeps it and says so; the exit status (0 or 1). */
int tu_finish(const char *name);
#endif
