/* util.c - see util.h. */
#define _GNU_SOURCE
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void *rt_zalloc64(size_t n)
{
    size_t bytes = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "strata: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    memset(p, 0, bytes ? bytes : 64);
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
