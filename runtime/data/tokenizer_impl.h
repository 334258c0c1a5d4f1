/* tokenizer_impl.h - what tokenizer.c, bpe_train.c and the generated
 * tokenizer_unicode.c share and no other file needs: the Unicode classes
 * of the GPT-2 pre-tokenizer and the byte-string hash of their tables. */
#ifndef STRATA_TOKENIZER_IMPL_H
#define STRATA_TOKENIZER_IMPL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "data/tokenizer.h"

/* Classes of the pre-tokenizer's regex. */
enum {
    RT_UC_O = 0, /* anything else: [^\s\p{L}\p{N}], and every byte of invalid UTF-8 */
    RT_UC_L = 1, /* \p{L}: Lu Ll Lt Lm Lo */
    RT_UC_N = 2, /* \p{N}: Nd Nl No */
    RT_UC_S = 3  /* \s: Unicode White_Space */
};

typedef struct RtUcRange {
    uint32_t lo, hi; /* code points, inclusive */
    uint32_t cls;    /* RT_UC_L or RT_UC_N */
} RtUcRange;

/* tokenizer_unicode.c: sorted, disjoint; code points in none are RT_UC_O
 * (or RT_UC_S, which rt_uc_class checks first). */
extern const RtUcRange rt_uc_ranges[];
extern const int rt_uc_nranges;

/* The class of one code point (tokenizer.c). */
int rt_uc_class(uint32_t cp);

/* tokenizer_hf.c: the bytes of a token spelt in GPT-2's byte alphabet
 * (each byte one code point, UTF-8) into out (room for strlen(s) bytes);
 * their number, or -1 if a character is not in the alphabet. */
long rt_tok_alphabet_bytes(const char *s, unsigned char *out);
/* tokenizer_hf.c: the code point that spells byte b in that alphabet. */
uint32_t rt_tok_alphabet_char(int b);
/* tokenizer_hf.c: the tokenizer of a parsed tokenizer.json (its root
 * object); NULL with *err "PATH: what does not fit". */
struct json_t;
RtTokenizer *rt_tok_from_hf(struct json_t *root, const char *path, char **err);

/* Reads a whole file into *data (malloc'd, NUL-terminated; *len without
 * the NUL).  0, or -1 with *err "PATH: why" (tokenizer_io.c). */
int rt_tok_read_file(const char *path, char **data, size_t *len, char **err);

/* 64-bit hash of a byte string (hash tables of pre-tokens). */
static inline uint64_t rt_tok_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xFF51AFD7ED558CCDULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    return h;
}

/* 64-bit mix of an integer key (pair tables). */
static inline uint64_t rt_tok_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}
#endif
