/* diag.h - source files, locations and error reporting.
 * Every message is `file:line:col: error: text`, then the source line and a
 * caret under the offending span.  Errors are counted, not fatal; after
 * DIAG_MAX_ERRORS the rest are suppressed.  Exit codes: see docs/cli.md
 * (0 ok, 1 bad input, 2 usage, 3 out of memory/internal). */
#ifndef STRATA_DIAG_H
#define STRATA_DIAG_H
#include <stdio.h>

#define DIAG_MAX_ERRORS 20

typedef struct SrcFile {
    char *name;   /* as given by the user, or "<std>" etc. */
    char *text;   /* NUL-terminated contents (may contain NUL bytes before len) */
    size_t len;
    char *dir;    /* directory, for relative imports */
} SrcFile;

/* A source span.  Field names follow bison's YYLTYPE so the parser can use it. */
typedef struct Loc {
    int first_line, first_column; /* 1-based */
    int last_line, last_column;   /* inclusive end column */
    const SrcFile *file;          /* last, so bison's {1,1,1,1} default fits */
} Loc;

typedef struct Diag {
    int nerrors;
    FILE *out;          /* where messages go (stderr by default) */
    int suppressed;     /* errors past the cap */
} Diag;

void diag_init(Diag *d, FILE *out);
void diag_error(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Error with no source position: `strata: error: text`. */
void diag_plain(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "N errors generated." (if any were suppressed too). */
void diag_finish(Diag *d);

SrcFile *src_from_memory(const char *name, const char *text, size_t len);
/* Reads a file; returns NULL and sets *why to strerror text on failure. */
SrcFile *src_read(const char *path, const char **why);
void src_free(SrcFile *f);
#endif
