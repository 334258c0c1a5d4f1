/* util.h - small helpers the runtime's files share.
 * rt_fmt: printf into a new malloc'd string (the caller frees it); the
 * runtime's error messages are made with it.  rt_alloc64: memory 64-byte
 * aligned, size rounded up to 64 (free it); from RT_HUGE_MIN bytes on it is
 * aligned to 2 MiB and the 2 MiB pages it fills are marked MADV_HUGEPAGE
 * (not the tail: a huge page there would be resident whole for the few
 * bytes used, 4 MB of LLaMA-71M's peak RSS), so that where transparent huge
 * pages are "madvise" (as on some hosts) the big buffers (parameters,
 * gradients, moments, the arena, packed operands) sit on 2 MiB pages: a
 * page fault and a TLB entry per 2 MiB instead of per 4 KiB (measured on
 * LLaMA-71M's step: docs/performance.md).  rt_zalloc64: the same, zeroed.
 * Out of memory prints a line and exits 3, as everywhere in the runtime.
 * rt_splitmix64 and rt_xoshiro256ss: the generators behind the data order
 * (data.c), parameter init (init.c) and the SFT record order (cmd/sft.c);
 * their outputs are part of those files' documented, resumable behaviour.
 * rt_fnv64: FNV-1a (64-bit) of bytes, for the identities a checkpoint
 * records (of the data, of a shard set); not for security. */
#ifndef STRATA_UTIL_H
#define STRATA_UTIL_H

#include <stddef.h>
#include <stdint.h>

char *rt_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define RT_HUGE_MIN ((size_t)4 << 20)
void *rt_alloc64(size_t n);
void *rt_zalloc64(size_t n);

#define RT_FNV64_INIT 0xcbf29ce484222325ull /* FNV-1a 64 offset basis */
/* FNV-1a 64 of p[0..n), continuing from h (RT_FNV64_INIT to start). */
uint64_t rt_fnv64(uint64_t h, const void *p, size_t n);

/* splitmix64: advances *x and returns the next output. */
static inline uint64_t rt_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rt_rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: advances the state s and returns the next output. */
static inline uint64_t rt_xoshiro256ss(uint64_t s[4])
{
    uint64_t r = rt_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rt_rotl64(s[3], 45);
    return r;
}
#endif
