/* tokenizer.c - the tokenizer model of tokenizer.h: GPT-2's pre-tokenizer
 * (UTF-8 decoding, Unicode classes, the regex as a hand-written scanner),
 * building a tokenizer from bytes + merges + special tokens, encoding (BPE
 * per pre-token with a min-heap, a per-tokenizer cache of pre-tokens) and
 * decoding.  Files are tokenizer_io.c's, training is bpe_train.c's.  The
 * tokenizer owns all its arrays; rt_tok_free releases them. */
#define _GNU_SOURCE /* vasprintf, memmem */
#include "data/tokenizer.h"
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

#define PAIR_EMPTY UINT64_MAX
/* The cache is emptied when it holds this many pre-tokens or bytes (it
 * stays a few tens of MB); longer pre-tokens are never cached. */
#define CACHE_MAX_ENTRIES (1 << 20)
#define CACHE_MAX_BYTES (16 << 20)
#define CACHE_MAX_WORD 128

/* One cached pre-token: its bytes and ids live in the cache's arenas. */
typedef struct CacheEntry {
    uint64_t hash;     /* rt_tok_hash of the bytes; 0 marks an empty slot */
    uint32_t key_off;  /* into cache_bytes */
    uint32_t key_len;  /* bytes */
    uint32_t ids_off;  /* into cache_ids */
    uint32_t n_ids;    /* ids */
} CacheEntry;

struct RtTokenizer {
    int32_t n_vocab;        /* 256 + n_merges + n_special */
    int32_t n_merges;       /* M */
    int32_t n_special;      /* S */
    int32_t byte_ids[256];  /* byte value -> id (a permutation of 0..255) */
    int32_t *merges;        /* (M, 2) left, right of merge i (makes id 256 + i) */
    int64_t *off;           /* (n_vocab + 1) token id's bytes are bytes[off[id]..off[id+1]) */
    char *bytes;            /* every token's bytes, in id order */
    char **special;         /* (S) NUL-terminated texts of ids 256 + M + k */
    size_t *special_len;    /* (S) their lengths */
    /* merge table: (left << 32 | right) -> merge index, open addressing */
    uint64_t *pair_key;     /* (pair_mask + 1) keys, PAIR_EMPTY when free */
    int32_t *pair_rank;     /* (pair_mask + 1) merge index of each key */
    uint64_t pair_mask;
    /* encode cache: pre-token bytes -> ids (mutable: see tokenizer.h) */
    CacheEntry *cache;      /* (cache_mask + 1) slots */
    uint64_t cache_mask;
    int64_t cache_used;     /* occupied slots */
    char *cache_bytes;      /* (cache_nbytes) keys */
    int64_t cache_nbytes, cache_capbytes;
    int32_t *cache_ids;     /* (cache_nids) values */
    int64_t cache_nids, cache_capids;
    /* scratch of bpe_word, grown to the longest pre-token */
    int32_t *w_id, *w_next, *w_prev; /* (w_cap) symbols: id (-1 once merged away), links */
    uint64_t *w_heap;                /* (3 w_cap) candidate merges: rank << 32 | position */
    size_t w_cap;
};

/* --- Unicode classes and the pre-tokenizer -------------------------------- */

/* Classes of the ASCII range: \t\n\v\f\r and space are \s. */
static const unsigned char ascii_class[128] = {
    ['\t'] = RT_UC_S, ['\n'] = RT_UC_S, ['\v'] = RT_UC_S, ['\f'] = RT_UC_S, ['\r'] = RT_UC_S, [' '] = RT_UC_S,
    ['0'] = RT_UC_N, ['1'] = RT_UC_N, ['2'] = RT_UC_N, ['3'] = RT_UC_N, ['4'] = RT_UC_N,
    ['5'] = RT_UC_N, ['6'] = RT_UC_N, ['7'] = RT_UC_N, ['8'] = RT_UC_N, ['9'] = RT_UC_N,
    ['A'] = RT_UC_L, ['B'] = RT_UC_L, ['C'] = RT_UC_L, ['D'] = RT_UC_L, ['E'] = RT_UC_L, ['F'] = RT_UC_L,
    ['G'] = RT_UC_L, ['H'] = RT_UC_L, ['I'] = RT_UC_L, ['J'] = RT_UC_L, ['K'] = RT_UC_L, ['L'] = RT_UC_L,
    ['M'] = RT_UC_L, ['N'] = RT_UC_L, ['O'] = RT_UC_L, ['P'] = RT_UC_L, ['Q'] = RT_UC_L, ['R'] = RT_UC_L,
    ['S'] = RT_UC_L, ['T'] = RT_UC_L, ['U'] = RT_UC_L, ['V'] = RT_UC_L, ['W'] = RT_UC_L, ['X'] = RT_UC_L,
    ['Y'] = RT_UC_L, ['Z'] = RT_UC_L,
    ['a'] = RT_UC_L, ['b'] = RT_UC_L, ['c'] = RT_UC_L, ['d'] = RT_UC_L, ['e'] = RT_UC_L, ['f'] = RT_UC_L,
    ['g'] = RT_UC_L, ['h'] = RT_UC_L, ['i'] = RT_UC_L, ['j'] = RT_UC_L, ['k'] = RT_UC_L, ['l'] = RT_UC_L,
    ['m'] = RT_UC_L, ['n'] = RT_UC_L, ['o'] = RT_UC_L, ['p'] = RT_UC_L, ['q'] = RT_UC_L, ['r'] = RT_UC_L,
    ['s'] = RT_UC_L, ['t'] = RT_UC_L, ['u'] = RT_UC_L, ['v'] = RT_UC_L, ['w'] = RT_UC_L, ['x'] = RT_UC_L,
    ['y'] = RT_UC_L, ['z'] = RT_UC_L,
};

int rt_uc_class(uint32_t cp)
{
    if (cp < 128)
        return ascii_class[cp];
    /* Unicode White_Space beyond ASCII */
    if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
        cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return RT_UC_S;
    int lo = 0, hi = rt_uc_nranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < rt_uc_ranges[mid].lo)
            hi = mid - 1;
        else if (cp > rt_uc_ranges[mid].hi)
            lo = mid + 1;
        else
            return (int)rt_uc_ranges[mid].cls;
    }
    return RT_UC_O;
}

/* Decodes one UTF-8 character at s[0..n) (n >= 1): its length, or 0 if the
 * bytes are not a well-formed sequence (overlong, surrogate, > U+10FFFF,
 * truncated, stray continuation byte). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        if (n < 2 || (s[1] & 0xC0) != 0x80)
            return 0;
        *cp = (c & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
            return 0; /* overlong; surrogate */
        *cp = (c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
            return 0; /* overlong; > U+10FFFF */
        *cp = (c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* The class of the character at s[pos] (pos < len); *end = its end. */
static inline int char_at(const unsigned char *s, size_t len, size_t pos, size_t *end)
{
    unsigned c = s[pos];
    if (c < 0x80) {
        *end = pos + 1;
        return ascii_class[c];
    }
    uint32_t cp;
    size_t n = utf8_decode(s + pos, len - pos, &cp);
    if (n == 0) {
        *end = pos + 1;
        return RT_UC_O;
    }
    *end = pos + n;
    return rt_uc_class(cp);
}

/* The regex's alternatives in order; the first that matches at pos wins:
 *   's|'t|'re|'ve|'m|'ll|'d    a contraction (ASCII, lower case)
 *   ' ?\p{L}+' ' ?\p{N}+' ' ?[^\s\p{L}\p{N}]+'
 *                              an optional U+0020 and a run of one class:
 *                              the class of the character after the space
 *                              if that is not \s, else of the first one
 *   \s+(?!\S)                  a whitespace run up to the end of the text,
 *                              or all of it but its last character when
 *                              non-space follows (that last one then leads
 *                              the next pre-token)
 *   \s+                        a single whitespace character before
 *                              non-space */
size_t rt_tok_pretoken(const char *text, size_t len, size_t pos)
{
    const unsigned char *s = (const unsigned char *)text;
    if (s[pos] == '\'' && pos + 1 < len) {
        unsigned c = s[pos + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd')
            return pos + 2;
        if (pos + 2 < len) {
            unsigned d = s[pos + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                return pos + 3;
        }
    }
    size_t e, e2;
    int cls = char_at(s, len, pos, &e);
    if (s[pos] == ' ' && e < len) {
        int next = char_at(s, len, e, &e2);
        if (next != RT_UC_S) {
            cls = next;
            e = e2;
        }
    }
    if (cls != RT_UC_S) {
        while (e < len && char_at(s, len, e, &e2) == cls)
            e = e2;
        return e;
    }
    size_t last = pos; /* start of the run's last character */
    while (e < len && char_at(s, len, e, &e2) == RT_UC_S) {
        last = e;
        e = e2;
    }
    if (e == len || last == pos)
        return e;
    return last;
}

/* --- making a tokenizer ------------------------------------------------- */

static int32_t pair_rank(const RtTokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t i = rt_tok_mix(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        if (t->pair_key[i] == key)
            return t->pair_rank[i];
        if (t->pair_key[i] == PAIR_EMPTY)
            return -1;
    }
}

void rt_tok_free(RtTokenizer *t)
{
    if (!t)
        return;
    free(t->merges);
    free(t->off);
    free(t->bytes);
    for (int32_t k = 0; k < t->n_special; k++)
        free(t->special[k]);
    free(t->special);
    free(t->special_len);
    free(t->pair_key);
    free(t->pair_rank);
    free(t->cache);
    free(t->cache_bytes);
    free(t->cache_ids);
    free(t->w_id);
    free(t->w_next);
    free(t->w_prev);
    free(t->w_heap);
    free(t);
}

RtTokenizer *rt_tok_new(const int32_t *byte_ids, const int32_t *merges, int32_t n_merges,
                        const char *const *special, int n_special, char **err)
{
    if (n_merges < 0 || n_special < 0 || (int64_t)n_merges + n_special > INT32_MAX - 256) {
        *err = rt_fmt("%d merges and %d special tokens: not a valid vocabulary size", n_merges, n_special);
        return NULL;
    }
    RtTokenizer *t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->n_merges = n_merges;
    t->n_vocab = 256 + n_merges + n_special;

    /* bytes: a permutation of 0..255 */
    unsigned char seen[256] = {0};
    for (int b = 0; b < 256; b++) {
        int32_t id = byte_ids ? byte_ids[b] : b;
        if (id < 0 || id > 255) {
            *err = rt_fmt("bytes[%d]: id %d is not in 0..255", b, id);
            goto fail;
        }
        if (seen[id]) {
            *err = rt_fmt("bytes[%d]: id %d is already the id of another byte", b, id);
            goto fail;
        }
        seen[id] = 1;
        t->byte_ids[b] = id;
    }

    /* merges: ids defined before each merge; bytes of every token */
    t->merges = malloc(sizeof(int32_t) * 2 * (size_t)(n_merges ? n_merges : 1));
    t->off = malloc(sizeof(int64_t) * ((size_t)t->n_vocab + 1));
    if (!t->merges || !t->off)
        goto oom;
    int64_t total = 256;
    for (int32_t i = 0; i < n_merges; i++) {
        for (int k = 0; k < 2; k++) {
            int32_t id = merges[2 * i + k];
            if (id < 0 || id >= 256 + i) {
                *err = rt_fmt("merges[%d]: id %d is not defined before merge %d (ids 0..%d are)", i, id, i, 255 + i);
                goto fail;
            }
            t->merges[2 * i + k] = id;
        }
    }
    /* token lengths (ids < 256: one byte), then bytes */
    int64_t *len = t->off; /* lengths first, in off[1..] */
    for (int32_t id = 0; id < 256; id++)
        len[id + 1] = 1;
    for (int32_t i = 0; i < n_merges; i++) {
        int64_t l = len[t->merges[2 * i] + 1] + len[t->merges[2 * i + 1] + 1];
        len[256 + i + 1] = l;
        total += l;
        if (total > ((int64_t)1 << 40)) {
            *err = rt_fmt("merges[%d]: tokens grow too long (over 2^40 bytes in all)", i);
            goto fail;
        }
    }
    t->special = calloc((size_t)(n_special ? n_special : 1), sizeof *t->special);
    t->special_len = calloc((size_t)(n_special ? n_special : 1), sizeof *t->special_len);
    if (!t->special || !t->special_len)
        goto oom;
    for (int k = 0; k < n_special; k++) {
        size_t l = strlen(special[k]);
        if (l == 0) {
            *err = rt_fmt("special token %d (id %d): empty text", k, 256 + n_merges + k);
            goto fail;
        }
        for (int j = 0; j < k; j++)
            if (strcmp(special[j], special[k]) == 0) {
                *err = rt_fmt("special token \"%s\" appears twice (ids %d and %d)", special[k], 256 + n_merges + j,
                           256 + n_merges + k);
                goto fail;
            }
        t->special[k] = strdup(special[k]);
        if (!t->special[k])
            goto oom;
        t->n_special = k + 1;
        t->special_len[k] = l;
        len[256 + n_merges + k + 1] = (int64_t)l;
        total += (int64_t)l;
    }
    t->off[0] = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        t->off[id + 1] += t->off[id];
    t->bytes = malloc((size_t)total);
    if (!t->bytes)
        goto oom;
    for (int b = 0; b < 256; b++)
        t->bytes[t->off[t->byte_ids[b]]] = (char)b;
    for (int32_t i = 0; i < n_merges; i++) {
        int32_t a = t->merges[2 * i], b = t->merges[2 * i + 1];
        char *dst = t->bytes + t->off[256 + i];
        size_t la = (size_t)(t->off[a + 1] - t->off[a]);
        memcpy(dst, t->bytes + t->off[a], la);
        memcpy(dst + la, t->bytes + t->off[b], (size_t)(t->off[b + 1] - t->off[b]));
    }
    for (int k = 0; k < n_special; k++)
        memcpy(t->bytes + t->off[256 + n_merges + k], t->special[k], t->special_len[k]);

    /* merge table; a pair listed twice keeps its first (lowest) merge */
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n_merges)
        cap *= 2;
    t->pair_mask = cap - 1;
    t->pair_key = malloc(sizeof(uint64_t) * cap);
    t->pair_rank = malloc(sizeof(int32_t) * cap);
    if (!t->pair_key || !t->pair_rank)
        goto oom;
    for (uint64_t i = 0; i < cap; i++)
        t->pair_key[i] = PAIR_EMPTY;
    for (int32_t r = 0; r < n_merges; r++) {
        uint64_t key = (uint64_t)(uint32_t)t->merges[2 * r] << 32 | (uint32_t)t->merges[2 * r + 1];
        uint64_t i = rt_tok_mix(key) & t->pair_mask;
        while (t->pair_key[i] != PAIR_EMPTY && t->pair_key[i] != key)
            i = (i + 1) & t->pair_mask;
        if (t->pair_key[i] == PAIR_EMPTY) {
            t->pair_key[i] = key;
            t->pair_rank[i] = r;
        }
    }
    return t;
oom:
    *err = rt_fmt("out of memory making a tokenizer of %d merges", n_merges);
fail:
    rt_tok_free(t);
    return NULL;
}

RtTokenizer *rt_tok_bytes(void)
{
    char *err = NULL;
    RtTokenizer *t = rt_tok_new(NULL, NULL, 0, NULL, 0, &err);
    free(err);
    return t;
}

/* --- the vocabulary ------------------------------------------------------- */

int32_t rt_tok_vocab_size(const RtTokenizer *t)
{
    return t->n_vocab;
}

int32_t rt_tok_n_merges(const RtTokenizer *t)
{
    return t->n_merges;
}

int32_t rt_tok_special_id(const RtTokenizer *t, const char *text)
{
    for (int32_t k = 0; k < t->n_special; k++)
        if (strcmp(t->special[k], text) == 0)
            return 256 + t->n_merges + k;
    return -1;
}

int32_t rt_tok_eot(const RtTokenizer *t)
{
    return rt_tok_special_id(t, RT_TOK_EOT_TEXT);
}

int rt_tok_merge(const RtTokenizer *t, int32_t i, int32_t *left, int32_t *right)
{
    if (i < 0 || i >= t->n_merges)
        return -1;
    *left = t->merges[2 * i];
    *right = t->merges[2 * i + 1];
    return 0;
}

const int32_t *rt_tok_byte_ids(const RtTokenizer *t)
{
    return t->byte_ids;
}

const char *rt_tok_special_text(const RtTokenizer *t, int32_t k)
{
    return k >= 0 && k < t->n_special ? t->special[k] : NULL;
}

int32_t rt_tok_n_special(const RtTokenizer *t)
{
    return t->n_special;
}

const char *rt_tok_token(const RtTokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    *len = (size_t)(t->off[id + 1] - t->off[id]);
    return t->bytes + t->off[id];
}

/* --- decoding ------------------------------------------------------------- */

int64_t rt_tok_decode(const RtTokenizer *t, const int32_t *ids, int64_t n, char **out)
{
    *out = NULL;
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return -1;
        total += t->off[ids[i] + 1] - t->off[ids[i]];
    }
    char *p = malloc((size_t)total + 1);
    if (!p)
        return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t l = t->off[ids[i] + 1] - t->off[ids[i]];
        memcpy(p + k, t->bytes + t->off[ids[i]], (size_t)l);
        k += l;
    }
    p[k] = 0;
    *out = p;
    return total;
}

/* --- encoding ------------------------------------------------------------- */

void rt_tok_ids_init(RtTokIds *ids)
{
    memset(ids, 0, sizeof *ids);
}

void rt_tok_ids_free(RtTokIds *ids)
{
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

/* Room for k more ids; 0 or -1. */
static int ids_reserve(RtTokIds *ids, int64_t k)
{
    if (ids->n + k <= ids->cap)
        return 0;
    int64_t cap = ids->cap ? ids->cap : 1024;
    while (cap < ids->n + k)
        cap *= 2;
    int32_t *v = realloc(ids->v, sizeof(int32_t) * (size_t)cap);
    if (!v)
        return -1;
    ids->v = v;
    ids->cap = cap;
    return 0;
}

/* Min-heap of rank << 32 | position. */
static void heap_push(uint64_t *h, size_t *n, uint64_t x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && h[c + 1] < h[c])
            c++;
        if (x <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    if (m)
        h[i] = x;
    return top;
}

/* Appends the BPE ids of one pre-token s[0..n), n >= 2.  Symbols are a
 * linked list; the heap holds every adjacent pair that is a merge, keyed
 * by (merge index, position of its left symbol), so the lowest merge is
 * applied first and its occurrences left to right.  A merge's own pair
 * never comes back and every pair it creates contains its new id, whose
 * merges all come later (rt_tok_new checks merges use earlier ids only),
 * so this is the order of GPT-2's "merge all occurrences of the best
 * pair" loop.  An entry is stale once either symbol changed. */
static int bpe_word(RtTokenizer *t, const unsigned char *s, size_t n, RtTokIds *out)
{
    if (n > INT32_MAX)
        return -1; /* positions are int32 (a 2 GiB pre-token) */
    if (n > t->w_cap) {
        size_t cap = t->w_cap ? t->w_cap : 64;
        while (cap < n)
            cap *= 2;
        free(t->w_id);
        free(t->w_next);
        free(t->w_prev);
        free(t->w_heap);
        t->w_id = malloc(sizeof(int32_t) * cap);
        t->w_next = malloc(sizeof(int32_t) * cap);
        t->w_prev = malloc(sizeof(int32_t) * cap);
        t->w_heap = malloc(sizeof(uint64_t) * 3 * cap);
        if (!t->w_id || !t->w_next || !t->w_prev || !t->w_heap) {
            t->w_cap = 0;
            return -1;
        }
        t->w_cap = cap;
    }
    int32_t *id = t->w_id, *next = t->w_next, *prev = t->w_prev;
    uint64_t *heap = t->w_heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_ids[s[i]];
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = pair_rank(t, id[i], id[i + 1]);
        if (r >= 0)
            heap_push(heap, &nh, (uint64_t)r << 32 | i);
    }
    /* n - 1 pushes, then at most two per merge, at most n - 1 merges: the
     * heap never exceeds 3 n entries */
    while (nh) {
        uint64_t top = heap_pop(heap, &nh);
        int32_t r = (int32_t)(top >> 32), i = (int32_t)(top & 0xFFFFFFFFu);
        int32_t j = next[i];
        if (id[i] != t->merges[2 * r] || j < 0 || id[j] != t->merges[2 * r + 1])
            continue;
        id[i] = 256 + r;
        id[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0)
            prev[next[j]] = i;
        if (prev[i] >= 0) {
            int32_t r2 = pair_rank(t, id[prev[i]], id[i]);
            if (r2 >= 0)
                heap_push(heap, &nh, (uint64_t)r2 << 32 | (uint32_t)prev[i]);
        }
        if (next[i] >= 0) {
            int32_t r2 = pair_rank(t, id[i], id[next[i]]);
            if (r2 >= 0)
                heap_push(heap, &nh, (uint64_t)r2 << 32 | (uint32_t)i);
        }
    }
    int64_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        k++;
    if (ids_reserve(out, k) != 0)
        return -1;
    for (int32_t i = 0; i >= 0; i = next[i])
        out->v[out->n++] = id[i];
    return 0;
}

static void cache_clear(RtTokenizer *t)
{
    if (t->cache)
        memset(t->cache, 0, sizeof(CacheEntry) * (t->cache_mask + 1));
    t->cache_used = 0;
    t->cache_nbytes = 0;
    t->cache_nids = 0;
}

/* Doubles the slots (or makes the first 4096); 0 or -1. */
static int cache_grow(RtTokenizer *t)
{
    uint64_t cap = t->cache ? 2 * (t->cache_mask + 1) : 4096;
    CacheEntry *c = calloc(cap, sizeof *c);
    if (!c)
        return -1;
    if (t->cache)
        for (uint64_t i = 0; i <= t->cache_mask; i++) {
            if (!t->cache[i].hash)
                continue;
            uint64_t j = t->cache[i].hash & (cap - 1);
            while (c[j].hash)
                j = (j + 1) & (cap - 1);
            c[j] = t->cache[i];
        }
    free(t->cache);
    t->cache = c;
    t->cache_mask = cap - 1;
    return 0;
}

/* Appends the ids of one pre-token, through the cache. */
static int encode_word(RtTokenizer *t, const unsigned char *s, size_t n, RtTokIds *out)
{
    if (n == 1) {
        if (ids_reserve(out, 1) != 0)
            return -1;
        out->v[out->n++] = t->byte_ids[s[0]];
        return 0;
    }
    if (n > CACHE_MAX_WORD)
        return bpe_word(t, s, n, out);
    uint64_t h = rt_tok_hash(s, n) | 1; /* 0 marks empty slots */
    if (t->cache) {
        for (uint64_t i = h & t->cache_mask; t->cache[i].hash; i = (i + 1) & t->cache_mask) {
            const CacheEntry *e = &t->cache[i];
            if (e->hash == h && e->key_len == n && memcmp(t->cache_bytes + e->key_off, s, n) == 0) {
                if (ids_reserve(out, e->n_ids) != 0)
                    return -1;
                memcpy(out->v + out->n, t->cache_ids + e->ids_off, sizeof(int32_t) * e->n_ids);
                out->n += e->n_ids;
                return 0;
            }
        }
    }
    int64_t start = out->n;
    if (bpe_word(t, s, n, out) != 0)
        return -1;
    int64_t k = out->n - start;
    /* remember it (a failure to grow the cache only skips caching) */
    if (t->cache_used >= CACHE_MAX_ENTRIES || t->cache_nbytes + (int64_t)n > CACHE_MAX_BYTES)
        cache_clear(t);
    if (!t->cache || 2 * (t->cache_used + 1) > (int64_t)(t->cache_mask + 1))
        if (cache_grow(t) != 0)
            return 0;
    if (t->cache_nbytes + (int64_t)n > t->cache_capbytes) {
        int64_t cap = t->cache_capbytes ? 2 * t->cache_capbytes : 1 << 16;
        char *p = realloc(t->cache_bytes, (size_t)cap);
        if (!p)
            return 0;
        t->cache_bytes = p;
        t->cache_capbytes = cap;
    }
    if (t->cache_nids + k > t->cache_capids) {
        int64_t cap = t->cache_capids ? 2 * t->cache_capids : 1 << 14;
        while (cap < t->cache_nids + k)
            cap *= 2;
        int32_t *p = realloc(t->cache_ids, sizeof(int32_t) * (size_t)cap);
        if (!p)
            return 0;
        t->cache_ids = p;
        t->cache_capids = cap;
    }
    uint64_t i = h & t->cache_mask;
    while (t->cache[i].hash)
        i = (i + 1) & t->cache_mask;
    CacheEntry *e = &t->cache[i];
    e->hash = h;
    e->key_off = (uint32_t)t->cache_nbytes;
    e->key_len = (uint32_t)n;
    e->ids_off = (uint32_t)t->cache_nids;
    e->n_ids = (uint32_t)k;
    memcpy(t->cache_bytes + t->cache_nbytes, s, n);
    t->cache_nbytes += (int64_t)n;
    memcpy(t->cache_ids + t->cache_nids, out->v + start, sizeof(int32_t) * (size_t)k);
    t->cache_nids += k;
    t->cache_used++;
    return 0;
}

/* Text without special tokens. */
static int encode_ordinary(RtTokenizer *t, const char *text, size_t len, RtTokIds *out)
{
    const unsigned char *s = (const unsigned char *)text;
    if (t->n_merges == 0) {
        if (ids_reserve(out, (int64_t)len) != 0)
            return -1;
        for (size_t i = 0; i < len; i++)
            out->v[out->n++] = t->byte_ids[s[i]];
        return 0;
    }
    for (size_t pos = 0; pos < len;) {
        size_t end = rt_tok_pretoken(text, len, pos);
        if (encode_word(t, s + pos, end - pos, out) != 0)
            return -1;
        pos = end;
    }
    return 0;
}

int rt_tok_encode_append(RtTokenizer *t, const char *text, size_t len, int flags, RtTokIds *out)
{
    if (!(flags & RT_TOK_SPECIAL) || t->n_special == 0)
        return encode_ordinary(t, text, len, out);
    /* nxt[k]: the first occurrence of special k at or after pos (len if
     * none; SIZE_MAX until searched) */
    size_t stack_next[8];
    size_t *nxt = t->n_special <= 8 ? stack_next : malloc(sizeof(size_t) * (size_t)t->n_special);
    if (!nxt)
        return -1;
    for (int32_t k = 0; k < t->n_special; k++)
        nxt[k] = SIZE_MAX;
    int rc = 0;
    size_t pos = 0;
    for (;;) {
        size_t best = len;
        int32_t best_k = -1;
        for (int32_t k = 0; k < t->n_special; k++) {
            if (nxt[k] == SIZE_MAX) {
                const char *p = memmem(text + pos, len - pos, t->special[k], t->special_len[k]);
                nxt[k] = p ? (size_t)(p - text) : len;
            }
            if (nxt[k] == len)
                continue;
            /* leftmost; at one position, the longest */
            if (best_k < 0 || nxt[k] < best || (nxt[k] == best && t->special_len[k] > t->special_len[best_k])) {
                best = nxt[k];
                best_k = k;
            }
        }
        if (encode_ordinary(t, text + pos, best - pos, out) != 0) {
            rc = -1;
            break;
        }
        if (best_k < 0)
            break;
        if (ids_reserve(out, 1) != 0) {
            rc = -1;
            break;
        }
        out->v[out->n++] = 256 + t->n_merges + best_k;
        pos = best + t->special_len[best_k];
        for (int32_t k = 0; k < t->n_special; k++)
            if (nxt[k] < pos)
                nxt[k] = SIZE_MAX; /* overlapped the one taken: search again */
    }
    if (nxt != stack_next)
        free(nxt);
    return rc;
}

static int64_t encode_all(RtTokenizer *t, const char *text, size_t len, int flags, int32_t **ids)
{
    RtTokIds out;
    rt_tok_ids_init(&out);
    *ids = NULL;
    if (rt_tok_encode_append(t, text, len, flags, &out) != 0 || ids_reserve(&out, 1) != 0) {
        rt_tok_ids_free(&out);
        return -1;
    }
    *ids = out.v;
    return out.n;
}

int64_t rt_tok_encode(RtTokenizer *t, const char *text, size_t len, int32_t **ids)
{
    return encode_all(t, text, len, RT_TOK_SPECIAL, ids);
}

int64_t rt_tok_encode_ordinary(RtTokenizer *t, const char *text, size_t len, int32_t **ids)
{
    return encode_all(t, text, len, 0, ids);
}
