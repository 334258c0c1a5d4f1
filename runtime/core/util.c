/* util.c - see util.h. */
#define _GNU_SOURCE
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

char *rt_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fputs("strata: out of memory\n", stderr);
        exit(3);
    }
    return s;
}

void *rt_alloc64(size_t n)
{
    size_t bytes = n ? (n + 63) / 64 * 64 : 64, align = 64;
    if (bytes >= RT_HUGE_MIN) {
        align = (size_t)2 << 20;
        bytes = (bytes + align - 1) / align * align;
    }
    void *p = aligned_alloc(align, bytes);
    if (!p) {
        fprintf(stderr, "strata: out of memory (%zu bytes)\n", n);
        exit(3);
    }
#ifdef MADV_HUGEPAGE
    /* A hint (where THP is off, nothing changes), on the 2 MiB pages that n
     * fills: a huge page over the last few bytes would make all of it
     * resident; the tail stays on 4 KiB pages. */
    if (align > 64 && n / align > 0)
        (void)madvise(p, n / align * align, MADV_HUGEPAGE);
#endif
    return p;
}

void *rt_zalloc64(size_t n)
{
    void *p = rt_alloc64(n);
    memset(p, 0, n ? (n + 63) / 64 * 64 : 64);
    return p;
}

uint64_t rt_fnv64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull; /* FNV 64 prime */
    }
    return h;
}
