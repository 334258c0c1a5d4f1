/* diag.c - error messages with source line and caret; source file loading. */
#include "front/diag.h"

#include "front/arena.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void diag_init(Diag *d, FILE *out)
{
    d->nerrors = 0;
    d->suppressed = 0;
    d->out = out ? out : stderr;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *p, const unsigned char *end)
{
    int n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (n == 0 || end - p < n)
        return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

#define LINE_WINDOW 160 /* longest source excerpt shown; longer lines are cut */

/* Prints line `loc.first_line` of the file and a caret/underline.  Control
 * bytes and invalid UTF-8 are shown as '?', a multi-byte character takes
 * one column of the caret line, and a long line is cut around the caret. */
static void show_line(FILE *out, Loc loc)
{
    const SrcFile *f = loc.file;
    if (!f || loc.first_line < 1)
        return;
    const unsigned char *p = (const unsigned char *)f->text, *end = p + f->len;
    for (int line = 1; line < loc.first_line && p < end; p++)
        if (*p == '\n')
            line++;
    const unsigned char *e = p;
    while (e < end && *e != '\n')
        e++;
    if (e > p && e[-1] == '\r')
        e--;
    const unsigned char *caret = p + loc.first_column - 1;
    if (caret > e)
        caret = e;
    const unsigned char *from = p, *to = e;
    if (e - p > LINE_WINDOW) {
        from = caret - p > LINE_WINDOW / 2 ? caret - LINE_WINDOW / 2 : p;
        while (from > p && (*from & 0xc0) == 0x80)
            from--;
        to = e - from > LINE_WINDOW ? from + LINE_WINDOW : e;
    }
    fputc(' ', out);
    if (from > p)
        fputs("...", out);
    for (const unsigned char *q = from; q < to;) {
        int n = *q >= 0x80 ? utf8_len(q, to) : 1;
        if (n > 1) {
            fwrite(q, 1, (size_t)n, out);
            q += n;
            continue;
        }
        fputc(*q == '\t' || (*q >= 0x20 && *q < 0x7f) ? *q : '?', out);
        q++;
    }
    if (to < e)
        fputs("...", out);
    fputc('\n', out);
    fputc(' ', out);
    if (from > p)
        fputs("   ", out);
    for (const unsigned char *q = from; q < caret;) {
        int n = *q >= 0x80 ? utf8_len(q, caret) : 1;
        fputc(*q == '\t' ? '\t' : ' ', out);
        q += n > 1 ? n : 1;
    }
    fputc('^', out);
    int last = loc.last_line == loc.first_line ? loc.last_column : (int)(e - p);
    const unsigned char *stop = p + last;
    if (stop > to)
        stop = to;
    for (const unsigned char *q = caret + 1; q < stop; q++)
        if ((*q & 0xc0) != 0x80)
            fputc('~', out);
    fputc('\n', out);
}

static void vreport(Diag *d, Loc loc, const char *kind, const char *fmt, va_list ap)
{
    if (loc.file)
        fprintf(d->out, "%s:%d:%d: %s: ", loc.file->name, loc.first_line, loc.first_column, kind);
    else
        fprintf(d->out, "strata: %s: ", kind);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    show_line(d->out, loc);
}

void diag_error(Diag *d, Loc loc, const char *fmt, ...)
{
    if (++d->nerrors > DIAG_MAX_ERRORS) {
        d->suppressed++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vreport(d, loc, "error", fmt, ap);
    va_end(ap);
}

void diag_note(Diag *d, Loc loc, const char *fmt, ...)
{
    if (d->nerrors > DIAG_MAX_ERRORS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vreport(d, loc, "note", fmt, ap);
    va_end(ap);
}

void diag_plain(Diag *d, const char *fmt, ...)
{
    d->nerrors++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(d->out, "strata: error: ");
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    va_end(ap);
}

void diag_finish(Diag *d)
{
    if (d->suppressed)
        fprintf(d->out, "strata: too many errors; %d more not shown\n", d->suppressed);
    if (d->nerrors)
        fprintf(d->out, "%d error%s generated.\n", d->nerrors, d->nerrors == 1 ? "" : "s");
}

static char *dirname_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == path)
        return xstrdup("/");
    size_t n = (size_t)(slash - path);
    char *d = xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

SrcFile *src_from_memory(const char *name, const char *text, size_t len)
{
    SrcFile *f = xcalloc(1, sizeof *f);
    f->name = xstrdup(name);
    f->text = xmalloc(len + 1);
    memcpy(f->text, text, len);
    f->text[len] = 0;
    f->len = len;
    f->dir = dirname_of(name);
    return f;
}

SrcFile *src_read(const char *path, const char **why)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *why = strerror(errno);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, fp)) > 0) {
        len += n;
        if (len == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        *why = "read error (is it a directory?)";
        return NULL;
    }
    SrcFile *f = src_from_memory(path, buf, len);
    free(buf);
    return f;
}

void src_free(SrcFile *f)
{
    if (!f)
        return;
    free(f->name);
    free(f->text);
    free(f->dir);
    free(f);
}
