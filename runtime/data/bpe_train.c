/* bpe_train.c - byte-level BPE training (tokenizer.h documents the rules)
 * and `strata tokenizer train`.  Two phases: rt_bpe_trainer_add counts
 * the corpus's unique pre-tokens ("words"); rt_bpe_trainer_train counts
 * their adjacent pairs once, then repeats: take the best pair off a lazy
 * max-heap, rewrite only the words that hold it, adjust the counts of the
 * pairs those rewrites destroy and create.  The trainer owns everything;
 * the tokenizer it returns is the caller's. */
#define _GNU_SOURCE /* vasprintf */
#include "data/tokenizer.h"
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/tokenizer_impl.h"

#define EMPTY_KEY UINT64_MAX

/* Per pair of ids: its count and the words that may hold it. */
typedef struct Pair {
    int32_t a, b;       /* left, right id */
    int64_t count;      /* occurrences in the corpus (words times their counts) */
    int32_t *words;     /* (n_words) words that held it when added; some may not any more */
    int32_t n_words, cap_words;
    int32_t last_word;  /* the word appended last (skips repeats) */
    int32_t touched;    /* the merge that last changed count (+1) */
} Pair;

/* One heap entry: a pair's count when pushed (stale if it changed since). */
typedef struct HeapEntry {
    int64_t count;
    int32_t a, b; /* the tie-break: smaller (a, b) first */
    int32_t pair;
} HeapEntry;

struct RtBpeTrainer {
    /* unique words: open addressing over their bytes */
    uint64_t *slot_hash;  /* (mask + 1) hash | 1, 0 when free */
    int32_t *slot_word;   /* (mask + 1) word index */
    uint64_t mask;
    char *keys;           /* (n_keys) bytes of every word, in word order */
    int64_t n_keys, cap_keys;
    int64_t *key_off;     /* (n_words + 1 used) start of word w's bytes */
    int64_t *count;       /* (n_words) occurrences of word w */
    int32_t n_words, cap_words;
    int64_t n_bytes;      /* corpus bytes seen */
};

/* --- counting words ------------------------------------------------------- */

RtBpeTrainer *rt_bpe_trainer_new(void)
{
    RtBpeTrainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        return NULL;
    tr->mask = (1 << 16) - 1;
    tr->slot_hash = calloc(tr->mask + 1, sizeof *tr->slot_hash);
    tr->slot_word = malloc(sizeof *tr->slot_word * (tr->mask + 1));
    tr->key_off = malloc(sizeof *tr->key_off);
    if (!tr->slot_hash || !tr->slot_word || !tr->key_off) {
        rt_bpe_trainer_free(tr);
        return NULL;
    }
    tr->key_off[0] = 0;
    return tr;
}

void rt_bpe_trainer_free(RtBpeTrainer *tr)
{
    if (!tr)
        return;
    free(tr->slot_hash);
    free(tr->slot_word);
    free(tr->keys);
    free(tr->key_off);
    free(tr->count);
    free(tr);
}

int64_t rt_bpe_trainer_bytes(const RtBpeTrainer *tr)
{
    return tr->n_bytes;
}

int64_t rt_bpe_trainer_words(const RtBpeTrainer *tr)
{
    return tr->n_words;
}

static int grow_slots(RtBpeTrainer *tr)
{
    uint64_t cap = 2 * (tr->mask + 1);
    uint64_t *h = calloc(cap, sizeof *h);
    int32_t *w = malloc(sizeof *w * cap);
    if (!h || !w) {
        free(h);
        free(w);
        return -1;
    }
    for (uint64_t i = 0; i <= tr->mask; i++) {
        if (!tr->slot_hash[i])
            continue;
        uint64_t j = tr->slot_hash[i] & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = tr->slot_hash[i];
        w[j] = tr->slot_word[i];
    }
    free(tr->slot_hash);
    free(tr->slot_word);
    tr->slot_hash = h;
    tr->slot_word = w;
    tr->mask = cap - 1;
    return 0;
}

/* Counts one occurrence of the word s[0..n); 0 or -1. */
static int add_word(RtBpeTrainer *tr, const char *s, size_t n)
{
    uint64_t h = rt_tok_hash(s, n) | 1;
    uint64_t i = h & tr->mask;
    for (; tr->slot_hash[i]; i = (i + 1) & tr->mask) {
        if (tr->slot_hash[i] != h)
            continue;
        int32_t w = tr->slot_word[i];
        if ((size_t)(tr->key_off[w + 1] - tr->key_off[w]) == n && memcmp(tr->keys + tr->key_off[w], s, n) == 0) {
            tr->count[w]++;
            return 0;
        }
    }
    if (tr->n_words == INT32_MAX - 1)
        return -1;
    if (tr->n_words == tr->cap_words) {
        int32_t cap = tr->cap_words ? (tr->cap_words > INT32_MAX / 2 ? INT32_MAX - 1 : 2 * tr->cap_words) : 4096;
        int64_t *off = realloc(tr->key_off, sizeof *off * ((size_t)cap + 1));
        if (!off)
            return -1;
        tr->key_off = off;
        int64_t *c = realloc(tr->count, sizeof *c * (size_t)cap);
        if (!c)
            return -1;
        tr->count = c;
        tr->cap_words = cap;
    }
    if (tr->n_keys + (int64_t)n > tr->cap_keys) {
        int64_t cap = tr->cap_keys ? 2 * tr->cap_keys : 1 << 16;
        while (cap < tr->n_keys + (int64_t)n)
            cap *= 2;
        char *k = realloc(tr->keys, (size_t)cap);
        if (!k)
            return -1;
        tr->keys = k;
        tr->cap_keys = cap;
    }
    int32_t w = tr->n_words++;
    memcpy(tr->keys + tr->n_keys, s, n);
    tr->n_keys += (int64_t)n;
    tr->key_off[w + 1] = tr->n_keys;
    tr->count[w] = 1;
    tr->slot_hash[i] = h;
    tr->slot_word[i] = w;
    if (2 * (uint64_t)tr->n_words > tr->mask + 1)
        return grow_slots(tr);
    return 0;
}

int rt_bpe_trainer_add(RtBpeTrainer *tr, const char *text, size_t len)
{
    static const char eot[] = RT_TOK_EOT_TEXT;
    tr->n_bytes += (int64_t)len;
    size_t pos = 0;
    while (pos < len) {
        /* the text up to the next <|endoftext|>, which is not trained on */
        const char *hit = memmem(text + pos, len - pos, eot, sizeof eot - 1);
        size_t stop = hit ? (size_t)(hit - text) : len;
        while (pos < stop) {
            size_t end = rt_tok_pretoken(text, stop, pos);
            /* a one-byte word has no pair: nothing to learn from it */
            if (end - pos > 1 && add_word(tr, text + pos, end - pos) != 0)
                return -1;
            pos = end;
        }
        if (hit)
            pos = stop + sizeof eot - 1;
    }
    return 0;
}

/* --- training ------------------------------------------------------------- */

/* The state of one training run. */
typedef struct Train {
    int32_t *sym;       /* word w's ids are sym[off[w] .. off[w] + len[w]) */
    const int64_t *off; /* (n_words + 1) the trainer's key_off */
    int32_t *len;       /* (n_words) current number of ids */
    const int64_t *count;
    int32_t *seen;      /* (n_words) the merge (+1) that last rewrote word w */
    Pair *pairs;
    int32_t n_pairs, cap_pairs;
    uint64_t *pkey;     /* (pmask + 1) a << 32 | b, EMPTY_KEY when free */
    int32_t *pidx;      /* (pmask + 1) index into pairs */
    uint64_t pmask;
    HeapEntry *heap;
    int64_t n_heap, cap_heap;
    int32_t *touched;   /* pairs whose count changed in this merge */
    int32_t n_touched, cap_touched;
} Train;

static int grow_pairs_table(Train *T)
{
    uint64_t cap = T->pkey ? 2 * (T->pmask + 1) : 1 << 16;
    uint64_t *k = malloc(sizeof *k * cap);
    int32_t *x = malloc(sizeof *x * cap);
    if (!k || !x) {
        free(k);
        free(x);
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++)
        k[i] = EMPTY_KEY;
    for (int32_t p = 0; p < T->n_pairs; p++) {
        uint64_t key = (uint64_t)(uint32_t)T->pairs[p].a << 32 | (uint32_t)T->pairs[p].b;
        uint64_t j = rt_tok_mix(key) & (cap - 1);
        while (k[j] != EMPTY_KEY)
            j = (j + 1) & (cap - 1);
        k[j] = key;
        x[j] = p;
    }
    free(T->pkey);
    free(T->pidx);
    T->pkey = k;
    T->pidx = x;
    T->pmask = cap - 1;
    return 0;
}

/* The index of pair (a, b), made (count 0) if new; -1 if out of memory. */
static int32_t pair_of(Train *T, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t i = rt_tok_mix(key) & T->pmask;
    for (; T->pkey[i] != EMPTY_KEY; i = (i + 1) & T->pmask)
        if (T->pkey[i] == key)
            return T->pidx[i];
    if (T->n_pairs == T->cap_pairs) {
        int32_t cap = T->cap_pairs ? 2 * T->cap_pairs : 1 << 15;
        Pair *p = realloc(T->pairs, sizeof *p * (size_t)cap);
        if (!p)
            return -1;
        T->pairs = p;
        T->cap_pairs = cap;
    }
    int32_t p = T->n_pairs++;
    memset(&T->pairs[p], 0, sizeof T->pairs[p]);
    T->pairs[p].a = a;
    T->pairs[p].b = b;
    T->pairs[p].last_word = -1;
    T->pkey[i] = key;
    T->pidx[i] = p;
    if (2 * (uint64_t)T->n_pairs > T->pmask + 1 && grow_pairs_table(T) != 0)
        return -1;
    return p;
}

/* heap order: higher count first, then smaller a, then smaller b */
static int heap_before(const HeapEntry *x, const HeapEntry *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(Train *T, int32_t p)
{
    if (T->n_heap == T->cap_heap) {
        int64_t cap = T->cap_heap ? 2 * T->cap_heap : 1 << 16;
        HeapEntry *h = realloc(T->heap, sizeof *h * (size_t)cap);
        if (!h)
            return -1;
        T->heap = h;
        T->cap_heap = cap;
    }
    HeapEntry x = {T->pairs[p].count, T->pairs[p].a, T->pairs[p].b, p};
    int64_t i = T->n_heap++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!heap_before(&x, &T->heap[up]))
            break;
        T->heap[i] = T->heap[up];
        i = up;
    }
    T->heap[i] = x;
    return 0;
}

static HeapEntry heap_pop(Train *T)
{
    HeapEntry top = T->heap[0], x = T->heap[--T->n_heap];
    int64_t i = 0, n = T->n_heap;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_before(&T->heap[c + 1], &T->heap[c]))
            c++;
        if (!heap_before(&T->heap[c], &x))
            break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (n)
        T->heap[i] = x;
    return top;
}

/* count(a, b) += delta; word w now holds the pair if delta > 0.  merge is
 * the current merge + 1 (marks the pair touched).  0 or -1. */
static int pair_add(Train *T, int32_t a, int32_t b, int64_t delta, int32_t w, int32_t merge)
{
    int32_t p = pair_of(T, a, b);
    if (p < 0)
        return -1;
    Pair *P = &T->pairs[p];
    P->count += delta;
    if (delta > 0 && P->last_word != w) {
        if (P->n_words == P->cap_words) {
            int32_t cap = P->cap_words ? 2 * P->cap_words : 4;
            int32_t *v = realloc(P->words, sizeof *v * (size_t)cap);
            if (!v)
                return -1;
            P->words = v;
            P->cap_words = cap;
        }
        P->words[P->n_words++] = w;
        P->last_word = w;
    }
    if (P->touched != merge) {
        P->touched = merge;
        if (T->n_touched == T->cap_touched) {
            int32_t cap = T->cap_touched ? 2 * T->cap_touched : 1024;
            int32_t *v = realloc(T->touched, sizeof *v * (size_t)cap);
            if (!v)
                return -1;
            T->touched = v;
            T->cap_touched = cap;
        }
        T->touched[T->n_touched++] = p;
    }
    return 0;
}

/* Rewrites word w with (a, b) -> c, left to right, updating pair counts:
 * each occurrence loses (prev, a), (a, b), (b, next) and gains (prev, c),
 * (c, next), where prev is the already rewritten symbol (perhaps a c) and
 * next the not yet rewritten one, so runs like "a b a b" come out exact. */
static int merge_word(Train *T, int32_t w, int32_t a, int32_t b, int32_t c, int32_t merge)
{
    int32_t *s = T->sym + T->off[w];
    int32_t n = T->len[w], j = 0;
    int64_t k = T->count[w];
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            int rc = pair_add(T, a, b, -k, w, merge);
            if (j > 0)
                rc |= pair_add(T, s[j - 1], a, -k, w, merge) | pair_add(T, s[j - 1], c, k, w, merge);
            if (i + 2 < n)
                rc |= pair_add(T, b, s[i + 2], -k, w, merge) | pair_add(T, c, s[i + 2], k, w, merge);
            if (rc != 0)
                return -1;
            s[j++] = c;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    T->len[w] = j;
    return 0;
}

static void train_free(Train *T)
{
    free(T->sym);
    free(T->len);
    free(T->seen);
    for (int32_t p = 0; p < T->n_pairs; p++)
        free(T->pairs[p].words);
    free(T->pairs);
    free(T->pkey);
    free(T->pidx);
    free(T->heap);
    free(T->touched);
}

RtTokenizer *rt_bpe_trainer_train(RtBpeTrainer *tr, int32_t vocab_size, char **err)
{
    if (vocab_size < 257) {
        *err = rt_fmt("vocabulary size %d is too small: byte-level BPE needs 256 bytes + <|endoftext|> = 257 at least",
                   vocab_size);
        return NULL;
    }
    int32_t want = vocab_size - 257;
    Train T;
    memset(&T, 0, sizeof T);
    RtTokenizer *tok = NULL;
    int32_t *merges = malloc(sizeof(int32_t) * 2 * (size_t)(want ? want : 1));
    int32_t nw = tr->n_words;
    T.off = tr->key_off;
    T.count = tr->count;
    T.sym = malloc(sizeof(int32_t) * (size_t)(tr->n_keys ? tr->n_keys : 1));
    T.len = malloc(sizeof(int32_t) * (size_t)(nw ? nw : 1));
    T.seen = calloc((size_t)(nw ? nw : 1), sizeof(int32_t));
    if (!merges || !T.sym || !T.len || !T.seen || grow_pairs_table(&T) != 0)
        goto oom;
    for (int64_t i = 0; i < tr->n_keys; i++)
        T.sym[i] = (unsigned char)tr->keys[i];
    for (int32_t w = 0; w < nw; w++) {
        T.len[w] = (int32_t)(T.off[w + 1] - T.off[w]);
        const int32_t *s = T.sym + T.off[w];
        for (int32_t i = 0; i + 1 < T.len[w]; i++)
            if (pair_add(&T, s[i], s[i + 1], T.count[w], w, 0) != 0)
                goto oom;
    }
    for (int32_t p = 0; p < T.n_pairs; p++)
        if (heap_push(&T, p) != 0)
            goto oom;
    T.n_touched = 0;

    int32_t m = 0;
    while (m < want && T.n_heap > 0) {
        HeapEntry e = heap_pop(&T);
        Pair *P = &T.pairs[e.pair];
        if (e.count != P->count || P->count <= 0)
            continue; /* stale: a fresher entry exists, or the pair is gone */
        int32_t a = P->a, b = P->b, c = 256 + m;
        merges[2 * m] = a;
        merges[2 * m + 1] = b;
        /* rewrite the words that may hold (a, b); P moves as pairs grow */
        int32_t *words = P->words, n_words = P->n_words;
        P->words = NULL;
        P->n_words = P->cap_words = 0;
        P->last_word = -1;
        T.n_touched = 0;
        for (int32_t k = 0; k < n_words; k++) {
            int32_t w = words[k];
            if (T.seen[w] == m + 1)
                continue;
            T.seen[w] = m + 1;
            if (merge_word(&T, w, a, b, c, m + 1) != 0) {
                free(words);
                goto oom;
            }
        }
        free(words);
        for (int32_t k = 0; k < T.n_touched; k++)
            if (T.pairs[T.touched[k]].count > 0 && heap_push(&T, T.touched[k]) != 0)
                goto oom;
        m++;
    }
    static const char *const special[1] = {RT_TOK_EOT_TEXT};
    tok = rt_tok_new(NULL, merges, m, special, 1, err);
    goto done;
oom:
    *err = rt_fmt("out of memory training BPE (%d unique pre-tokens, %d pairs)", nw, T.n_pairs);
done:
    free(merges);
    train_free(&T);
    return tok;
}

RtTokenizer *rt_tok_train(const char *text, size_t len, int32_t vocab_size, char **err)
{
    RtBpeTrainer *tr = rt_bpe_trainer_new();
    if (!tr || rt_bpe_trainer_add(tr, text, len) != 0) {
        rt_bpe_trainer_free(tr);
        *err = rt_fmt("out of memory counting the pre-tokens of %zu bytes", len);
        return NULL;
    }
    RtTokenizer *t = rt_bpe_trainer_train(tr, vocab_size, err);
    rt_bpe_trainer_free(tr);
    return t;
}
