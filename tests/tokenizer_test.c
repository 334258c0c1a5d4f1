/* tokenizer_test.c - tokenizers (runtime/data/tokenizer.h).  With no argument,
 * the unit tests: GPT-2 pre-token splits pinned from Python's `regex`
 * module, the raw-bytes tokenizer, heap BPE against a naive GPT-2 loop,
 * training against a naive trainer (same merges, ties included),
 * decode(encode(x)) == x on random bytes and invalid UTF-8, special
 * tokens, save/load and the exact error of each bad file, GPT-2's loader
 * on small made-up files (and on the real ones when STRATA_GPT2_DIR names
 * a directory holding encoder.json + vocab.bpe), Hugging Face
 * tokenizer.json and tokenizer_config.json written and read back (and the
 * error of each kind of file Strata does not read), and the train command.
 * Modes used by tests/tokenizer.test and for measurements:
 *   --pretokens FILE.jsonl         compare with {"text", "pieces"} lines
 *   --gpt2 DIR REF.ids FILE...     compare GPT-2 ids with a reference
 *   --bench [--gpt2 DIR] FILE...   print training and encoding speed
 * Exit 0 pass, 1 fail. */
#define _GNU_SOURCE
#include "test_util.h"
#include "cmd/commands.h"
#include "data/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 0x243F6A8885A308D3ULL;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* decode(encode(text)) must give text back, with and without specials. */
static void check_round_trip(RtTokenizer *t, const char *what, const char *text, size_t len)
{
    for (int special = 0; special < 2; special++) {
        int32_t *ids;
        int64_t n = special ? rt_tok_encode(t, text, len, &ids) : rt_tok_encode_ordinary(t, text, len, &ids);
        char *out;
        int64_t m = n >= 0 ? rt_tok_decode(t, ids, n, &out) : -1;
        CHECK(m == (int64_t)len && memcmp(out, text, len) == 0, "%s: round trip of %zu bytes gave %lld bytes%s",
              what, len, (long long)m, m == (int64_t)len ? " that differ" : "");
        if (m >= 0)
            free(out);
        free(ids);
    }
}

/* --- pre-tokens ----------------------------------------------------------- */

/* Expected splits, from Python's `regex` (the module GPT-2 used):
 * regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", text). */
static const struct {
    const char *text;
    const char *pieces[16];
} pretoken_cases[] = {
    {"Hello world", {"Hello", " world", NULL}},
    {"I'm you're they've he'll she'd it's don't",
     {"I", "'m", " you", "'re", " they", "'ve", " he", "'ll", " she", "'d", " it", "'s", " don", "'t", NULL}},
    {"DON'T 'S 'sheep ''s !'s", {"DON", "'", "T", " '", "S", " '", "sheep", " ''", "s", " !'", "s", NULL}},
    {"a  b   c    ", {"a", " ", " b", "  ", " c", "    ", NULL}},
    {"\012\012  Hello\012 \011x", {"\012\012 ", " Hello", "\012 ", "\011", "x", NULL}},
    {"x\0115 \011\012", {"x", "\011", "5", " \011\012", NULL}},
    {"  ", {"  ", NULL}},
    {" ", {" ", NULL}},
    {"12345 3.14 1,000,000 x2y", {"12345", " 3", ".", "14", " 1", ",", "000", ",", "000", " x", "2", "y", NULL}},
    {"!!! ... ?! --> (a)", {"!!!", " ...", " ?!", " -->", " (", "a", ")", NULL}},
    {"caf\303\251 na\303\257ve \303\206sir \303\230resund \305\201\303\263d\305\272",
     {"caf\303\251", " na\303\257ve", " \303\206sir", " \303\230resund", " \305\201\303\263d\305\272", NULL}},
    {"\316\232\316\261\316\273\316\267\316\274\316\255\317\201\316\261 \316\272\317\214\317\203\316\274\316\265",
     {"\316\232\316\261\316\273\316\267\316\274\316\255\317\201\316\261", " \316\272\317\214\317\203\316\274\316\265",
      NULL}},
    {"\320\237\321\200\320\270\320\262\320\265\321\202, \320\274\320\270\321\200!",
     {"\320\237\321\200\320\270\320\262\320\265\321\202", ",", " \320\274\320\270\321\200", "!", NULL}},
    {"\344\275\240\345\245\275\357\274\214\344\270\226\347\225\214\343\200\202\346\227\245\346\234\254\350\252\236",
     {"\344\275\240\345\245\275", "\357\274\214", "\344\270\226\347\225\214", "\343\200\202",
      "\346\227\245\346\234\254\350\252\236", NULL}},
    {"e\314\201t\303\251 \340\244\250\340\244\256\340\244\270\340\245\215\340\244\244\340\245\207",
     {"e", "\314\201", "t\303\251", " \340\244\250\340\244\256\340\244\270", "\340\245\215", "\340\244\244",
      "\340\245\207", NULL}},
    {"x\302\262 \342\205\253 \357\274\221\357\274\222\357\274\223",
     {"x", "\302\262", " \342\205\253", " \357\274\221\357\274\222\357\274\223", NULL}},
    {"a\302\240b\342\200\211c\343\200\200d \342\200\215",
     {"a", "\302\240", "b", "\342\200\211", "c", "\343\200\200", "d", " \342\200\215", NULL}},
    {"\360\237\244\226 robots \360\237\230\200!", {"\360\237\244\226", " robots", " \360\237\230\200!", NULL}},
    {"end.\015\012\015\012next", {"end", ".", "\015\012\015", "\012", "next", NULL}},
    {"tab\011\011end\011", {"tab", "\011", "\011", "end", "\011", NULL}},
    {"' 'x '", {"'", " '", "x", " '", NULL}},
    /* not from Python: invalid UTF-8 bytes are [^\s\p{L}\p{N}] characters */
    {"ab\377\376 cd \355\240\200x \300\257", {"ab", "\377\376", " cd", " \355\240\200", "x", " \300\257", NULL}},
    {"\302\205x \302", {"\302\205", "x", " \302", NULL}}, /* U+0085 is \s; a cut sequence */
};

/* Splits text into pre-tokens; their number (at most max). */
static int split(const char *text, size_t len, size_t *ends, int max)
{
    int n = 0;
    for (size_t pos = 0; pos < len && n < max;) {
        size_t e = rt_tok_pretoken(text, len, pos);
        if (e <= pos || e > len)
            return -1;
        ends[n++] = pos = e;
    }
    return n;
}

static int same_split(const char *text, size_t len, const char *const *pieces, int n_pieces)
{
    size_t ends[4096];
    int n = split(text, len, ends, 4096);
    if (n != n_pieces)
        return 0;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(pieces[i]);
        if (ends[i] - pos != l || memcmp(text + pos, pieces[i], l) != 0)
            return 0;
        pos = ends[i];
    }
    return 1;
}

static void test_pretokens(void)
{
    for (size_t c = 0; c < sizeof pretoken_cases / sizeof pretoken_cases[0]; c++) {
        const char *text = pretoken_cases[c].text;
        int n = 0;
        while (pretoken_cases[c].pieces[n])
            n++;
        CHECK(same_split(text, strlen(text), pretoken_cases[c].pieces, n), "pre-tokens of case %zu (\"%s\")", c,
              text);
    }
}

/* FILE.jsonl of {"text": ..., "pieces": [...]} (tests/gpt2_reference.py). */
static int compare_pretokens(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long n = 0, bad = 0, pieces = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)got, 0, &je);
        json_t *jt = json_object_get(j, "text"), *jp = json_object_get(j, "pieces");
        if (!json_is_string(jt) || !json_is_array(jp)) {
            printf("FAIL: %s:%ld: not a test line\n", path, n + 1);
            json_decref(j);
            bad++;
            break;
        }
        size_t np = json_array_size(jp);
        const char **p = malloc(sizeof *p * (np + 1));
        for (size_t i = 0; i < np; i++)
            p[i] = json_string_value(json_array_get(jp, i));
        n++;
        pieces += (long)np;
        if (!same_split(json_string_value(jt), json_string_length(jt), p, (int)np)) {
            if (bad < 5)
                printf("FAIL: %s:%ld: pre-tokens differ from Python's regex for %s", path, n, line);
            bad++;
        }
        free(p);
        json_decref(j);
    }
    free(line);
    fclose(f);
    printf("pre-tokens: %ld texts (%ld pieces) compared with Python's regex, %ld differ\n", n, pieces, bad);
    return bad || n == 0 ? 1 : 0;
}

/* --- the raw-bytes tokenizer ---------------------------------------------- */

static void test_bytes(void)
{
    RtTokenizer *t = rt_tok_bytes();
    CHECK(rt_tok_vocab_size(t) == 256 && rt_tok_eot(t) == -1 && rt_tok_n_merges(t) == 0, "bytes: vocabulary");
    const char text[] = "h\303\251llo <|endoftext|>\377";
    int32_t *ids;
    int64_t n = rt_tok_encode(t, text, sizeof text - 1, &ids);
    CHECK(n == (int64_t)sizeof text - 1, "bytes: %lld ids for %zu bytes", (long long)n, sizeof text - 1);
    for (int64_t i = 0; i < n; i++)
        CHECK(ids[i] == (unsigned char)text[i], "bytes: id %lld", (long long)i);
    free(ids);
    int32_t bad[2] = {65, 256};
    char *out;
    CHECK(rt_tok_decode(t, bad, 2, &out) == -1 && out == NULL, "bytes: id 256 decodes");
    size_t l;
    CHECK(rt_tok_token(t, 256, &l) == NULL && rt_tok_token(t, 65, &l)[0] == 'A' && l == 1, "bytes: rt_tok_token");
    char buf[3000];
    for (int k = 0; k < 20; k++) {
        size_t len = rnd() % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)rnd();
        check_round_trip(t, "bytes", buf, len);
    }
    rt_tok_free(t);
}

/* --- BPE: naive references ------------------------------------------------ */

typedef struct MergeRec {
    int32_t a, b, r;
} MergeRec;

static int cmp_merge(const void *x, const void *y)
{
    const MergeRec *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    if (p->b != q->b)
        return p->b < q->b ? -1 : 1;
    return p->r < q->r ? -1 : p->r > q->r;
}

static MergeRec *merge_table(const RtTokenizer *t)
{
    int32_t m = rt_tok_n_merges(t);
    MergeRec *r = malloc(sizeof *r * (size_t)(m + 1));
    for (int32_t i = 0; i < m; i++) {
        rt_tok_merge(t, i, &r[i].a, &r[i].b);
        r[i].r = i;
    }
    qsort(r, (size_t)m, sizeof *r, cmp_merge);
    return r;
}

static int32_t naive_rank(const MergeRec *mr, int32_t m, int32_t a, int32_t b)
{
    int32_t lo = 0, hi = m - 1;
    while (lo <= hi) {
        int32_t mid = (lo + hi) / 2;
        if (mr[mid].a < a || (mr[mid].a == a && mr[mid].b < b))
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return lo < m && mr[lo].a == a && mr[lo].b == b ? mr[lo].r : -1;
}

/* GPT-2's loop: merge every occurrence of the lowest-ranked pair, left to
 * right, until no pair is a merge.  Ids into out; their number. */
static int32_t naive_word(const RtTokenizer *t, const MergeRec *mr, const unsigned char *s, int32_t n, int32_t *out)
{
    const int32_t *bytes = rt_tok_byte_ids(t);
    int32_t m = rt_tok_n_merges(t);
    for (int32_t i = 0; i < n; i++)
        out[i] = bytes[s[i]];
    for (;;) {
        int32_t best = -1;
        for (int32_t i = 0; i + 1 < n; i++) {
            int32_t r = naive_rank(mr, m, out[i], out[i + 1]);
            if (r >= 0 && (best < 0 || r < best))
                best = r;
        }
        if (best < 0)
            return n;
        int32_t a, b, j = 0;
        rt_tok_merge(t, best, &a, &b);
        for (int32_t i = 0; i < n;) {
            if (i + 1 < n && out[i] == a && out[i + 1] == b) {
                out[j++] = 256 + best;
                i += 2;
            } else {
                out[j++] = out[i++];
            }
        }
        n = j;
    }
}

/* rt_tok_encode_ordinary against naive_word over the pre-tokens of text;
 * the number of ids compared, -1 on a difference. */
static int64_t check_against_naive(RtTokenizer *t, const char *what, const char *text, size_t len)
{
    MergeRec *mr = merge_table(t);
    int32_t *ids;
    int64_t n = rt_tok_encode_ordinary(t, text, len, &ids), k = 0;
    int32_t *word = malloc(sizeof(int32_t) * (len + 1));
    int64_t result = 0;
    for (size_t pos = 0; pos < len;) {
        size_t e = rt_tok_pretoken(text, len, pos);
        int32_t w = naive_word(t, mr, (const unsigned char *)text + pos, (int32_t)(e - pos), word);
        if (k + w > n || memcmp(ids + k, word, sizeof(int32_t) * (size_t)w) != 0) {
            CHECK(0, "%s: heap BPE differs from GPT-2's loop on the pre-token at byte %zu (\"%.*s\")", what, pos,
                  (int)(e - pos), text + pos);
            result = -1;
            break;
        }
        k += w;
        pos = e;
    }
    if (result == 0) {
        CHECK(k == n, "%s: %lld ids, naive %lld", what, (long long)n, (long long)k);
        result = k;
    }
    free(word);
    free(ids);
    free(mr);
    return result;
}

/* A naive trainer: recount every pair of every word at each step. */
typedef struct NaiveWord {
    int32_t *s;
    int32_t n;
    int64_t count;
} NaiveWord;

typedef struct PairCount {
    int32_t a, b;
    int64_t count;
} PairCount;

static int cmp_pc(const void *x, const void *y)
{
    const PairCount *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* Merges into out (2 per merge); their number. */
static int32_t naive_train(const char *text, size_t len, int32_t want, int32_t *out)
{
    NaiveWord *w = malloc(sizeof *w * (len + 1));
    int32_t nw = 0;
    static const char eot[] = RT_TOK_EOT_TEXT;
    for (size_t pos = 0; pos < len;) {
        const char *hit = memmem(text + pos, len - pos, eot, sizeof eot - 1);
        size_t stop = hit ? (size_t)(hit - text) : len;
        while (pos < stop) {
            size_t e = rt_tok_pretoken(text, stop, pos);
            int32_t found = -1;
            for (int32_t i = 0; i < nw && found < 0; i++)
                if ((size_t)w[i].n == e - pos) {
                    int same = 1;
                    for (int32_t k = 0; k < w[i].n && same; k++)
                        same = w[i].s[k] == (unsigned char)text[pos + (size_t)k];
                    if (same)
                        found = i;
                }
            if (found >= 0) {
                w[found].count++;
            } else {
                w[nw].n = (int32_t)(e - pos);
                w[nw].s = malloc(sizeof(int32_t) * (e - pos));
                for (size_t k = 0; k < e - pos; k++)
                    w[nw].s[k] = (unsigned char)text[pos + k];
                w[nw++].count = 1;
            }
            pos = e;
        }
        if (hit)
            pos = stop + sizeof eot - 1;
    }
    PairCount *pc = malloc(sizeof *pc * (len + 1));
    int32_t m = 0;
    for (; m < want; m++) {
        int64_t np = 0;
        for (int32_t i = 0; i < nw; i++)
            for (int32_t k = 0; k + 1 < w[i].n; k++)
                pc[np++] = (PairCount){w[i].s[k], w[i].s[k + 1], w[i].count};
        if (np == 0)
            break;
        qsort(pc, (size_t)np, sizeof *pc, cmp_pc);
        PairCount best = {0, 0, 0};
        for (int64_t i = 0; i < np;) {
            PairCount sum = pc[i];
            int64_t j = i + 1;
            for (; j < np && pc[j].a == sum.a && pc[j].b == sum.b; j++)
                sum.count += pc[j].count;
            if (sum.count > best.count) /* sorted by (a, b): the first of equal counts wins */
                best = sum;
            i = j;
        }
        out[2 * m] = best.a;
        out[2 * m + 1] = best.b;
        for (int32_t i = 0; i < nw; i++) {
            int32_t j = 0;
            for (int32_t k = 0; k < w[i].n;) {
                if (k + 1 < w[i].n && w[i].s[k] == best.a && w[i].s[k + 1] == best.b) {
                    w[i].s[j++] = 256 + m;
                    k += 2;
                } else {
                    w[i].s[j++] = w[i].s[k++];
                }
            }
            w[i].n = j;
        }
    }
    for (int32_t i = 0; i < nw; i++)
        free(w[i].s);
    free(w);
    free(pc);
    return m;
}

/* Deterministic text with words, numbers, punctuation, whitespace runs,
 * other scripts, contractions and an <|endoftext|> now and then. */
static char *make_corpus(size_t want, size_t *len)
{
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "are", "with", "as", "I",
        "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but",
        "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your",
        "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about",
        "The", "Then", "tokenizer", "tokenization", "merge", "merges", "merged", "aaaa", "abab", "lowest",
        "newer", "wider", "caf\303\251", "na\303\257ve", "\316\272\317\214\317\203\316\274\316\265",
        "\320\274\320\270\321\200", "\344\270\226\347\225\214", "\346\227\245\346\234\254\350\252\236",
    };
    static const char *const seps[] = {" ", " ", " ", " ", " ", " ", ", ", ". ", "\n", "\n\n", "  ", "'s ",
                                       "'t ", "! ", " (", ") ", "\t", " -- ", "...", " <|endoftext|>"};
    char *p = malloc(want + 64);
    size_t n = 0;
    while (n < want) {
        uint64_t r = rnd();
        const char *piece;
        char num[32];
        if (r % 17 == 0) {
            snprintf(num, sizeof num, "%llu", (unsigned long long)(r >> 40) % 100000);
            piece = num;
        } else {
            piece = words[(r >> 8) % (sizeof words / sizeof words[0])];
        }
        size_t l = strlen(piece);
        const char *sep = seps[(r >> 20) % (sizeof seps / sizeof seps[0])];
        size_t ls = strlen(sep);
        if (n + l + ls > want)
            break;
        memcpy(p + n, piece, l);
        n += l;
        memcpy(p + n, sep, ls);
        n += ls;
    }
    p[n] = 0;
    *len = n;
    return p;
}

/* --- BPE ------------------------------------------------------------------- */

static void test_bpe_small(void)
{
    /* merges: (a,b)=256 "ab", (256,c)=257 "abc", (b,c)=258 "bc", (a,a)=259 "aa" */
    int32_t merges[] = {'a', 'b', 256, 'c', 'b', 'c', 'a', 'a'};
    const char *special[] = {"<|endoftext|>", "<|pad|>", "<|end"};
    char *err = NULL;
    RtTokenizer *t = rt_tok_new(NULL, merges, 4, special, 3, &err);
    CHECK(t && rt_tok_vocab_size(t) == 263 && rt_tok_eot(t) == 260 && rt_tok_special_id(t, "<|pad|>") == 261,
          "small: made (%s)", err ? err : "");
    if (!t)
        return;
    static const struct {
        const char *text;
        int32_t ids[12];
        int n;
    } cases[] = {
        {"abc", {257}, 1},
        {"abcbc", {257, 258}, 2},
        {"aaa", {259, 'a'}, 2},   /* left to right */
        {"aaaa", {259, 259}, 2},
        {"aab", {'a', 256}, 2},   /* (a,b) is merge 0, before (a,a) */
        {"abab abc", {256, 256, ' ', 257}, 4},
        {"x<|endoftext|>y", {'x', 260, 'y'}, 3},
        {"<|end<|endoftext|>", {262, 260}, 2}, /* leftmost first */
        {"<|endoftext|><|pad|>", {260, 261}, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids;
        int64_t n = rt_tok_encode(t, cases[c].text, strlen(cases[c].text), &ids);
        int same = n == cases[c].n;
        for (int64_t i = 0; same && i < n; i++)
            same = ids[i] == cases[c].ids[i];
        CHECK(same, "small: encode \"%s\" (%lld ids)", cases[c].text, (long long)n);
        free(ids);
    }
    int32_t *ids;
    int64_t n = rt_tok_encode_ordinary(t, "x<|endoftext|>", 14, &ids);
    CHECK(n == 14 && ids[0] == 'x', "small: ordinary encoding does not see special tokens (%lld ids)", (long long)n);
    free(ids);
    char *out;
    int32_t back[] = {257, 260, 'z'};
    CHECK(rt_tok_decode(t, back, 3, &out) == 17 && strcmp(out, "abc<|endoftext|>z") == 0, "small: decode");
    free(out);
    rt_tok_free(t);

    static const struct {
        int32_t merges[4];
        int n;
        const char *special[2];
        int ns;
        const char *err;
    } bad[] = {
        {{'a', 256}, 1, {NULL}, 0, "merges[0]: id 256 is not defined before merge 0 (ids 0..255 are)"},
        {{'a', 'b', -1, 'c'}, 2, {NULL}, 0, "merges[1]: id -1 is not defined before merge 1 (ids 0..256 are)"},
        {{0}, 0, {""}, 1, "special token 0 (id 256): empty text"},
        {{0}, 0, {"<a>", "<a>"}, 2, "special token \"<a>\" appears twice (ids 256 and 257)"},
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        err = NULL;
        t = rt_tok_new(NULL, bad[c].merges, bad[c].n, bad[c].special, bad[c].ns, &err);
        CHECK(!t && err && strcmp(err, bad[c].err) == 0, "rt_tok_new: got '%s', want '%s'", err, bad[c].err);
        rt_tok_free(t);
        free(err);
    }
    int32_t byte_ids[256];
    for (int b = 0; b < 256; b++)
        byte_ids[b] = b;
    byte_ids[7] = 9;
    err = NULL;
    t = rt_tok_new(byte_ids, NULL, 0, NULL, 0, &err);
    CHECK(!t && err && strcmp(err, "bytes[9]: id 9 is already the id of another byte") == 0, "rt_tok_new bytes: %s",
          err);
    free(err);
}

static void test_train(void)
{
    size_t len;
    char *text = make_corpus(40000, &len);
    char *err = NULL;
    enum { WANT = 400 };
    RtTokenizer *t = rt_tok_train(text, len, 257 + WANT, &err);
    CHECK(t && rt_tok_vocab_size(t) == 257 + WANT && rt_tok_eot(t) == 256 + WANT, "train: vocabulary (%s)",
          err ? err : "");
    if (!t)
        return;
    int32_t *ref = malloc(sizeof(int32_t) * 2 * WANT);
    int32_t m = naive_train(text, len, WANT, ref);
    CHECK(m == WANT, "train: the naive trainer made %d merges", m);
    int32_t first_diff = -1;
    for (int32_t i = 0; i < m && first_diff < 0; i++) {
        int32_t a, b;
        rt_tok_merge(t, i, &a, &b);
        if (a != ref[2 * i] || b != ref[2 * i + 1])
            first_diff = i;
    }
    CHECK(first_diff < 0, "train: merge %d differs from the naive trainer's", first_diff);

    /* deterministic: the same merges again, and from two adds */
    RtBpeTrainer *tr = rt_bpe_trainer_new();
    size_t cut = rt_tok_pretoken(text, len, len / 2); /* at a pre-token boundary */
    while (cut < len && text[cut] != '\n')
        cut++;
    rt_bpe_trainer_add(tr, text, cut);
    rt_bpe_trainer_add(tr, text + cut, len - cut);
    RtTokenizer *t2 = rt_bpe_trainer_train(tr, 257 + WANT, &err);
    rt_bpe_trainer_free(tr);
    int same = t2 && rt_tok_vocab_size(t2) == rt_tok_vocab_size(t);
    for (int32_t i = 0; same && i < WANT; i++) {
        int32_t a, b, c, d;
        rt_tok_merge(t, i, &a, &b);
        rt_tok_merge(t2, i, &c, &d);
        same = a == c && b == d;
    }
    CHECK(same, "train: two adds give other merges (the cut is at a newline, which splits nothing)");
    rt_tok_free(t2);

    /* encoding: heap BPE = GPT-2's loop; decode inverts it */
    int64_t n = check_against_naive(t, "trained", text, len);
    CHECK(n > 0 && n < (int64_t)len / 2, "trained: %lld ids for %zu bytes", (long long)n, len);
    check_round_trip(t, "trained corpus", text, len);
    char buf[4000];
    for (int k = 0; k < 40; k++) {
        size_t l = rnd() % sizeof buf;
        for (size_t i = 0; i < l; i++) {
            uint64_t r = rnd();
            /* half random bytes, half pieces of the corpus (some cut mid-character) */
            buf[i] = k % 2 ? (char)r : text[r % len];
        }
        check_round_trip(t, "trained random", buf, l);
        check_against_naive(t, "trained random", buf, l);
    }
    const char invalid[] = "\300\200 \355\240\200 \364\220\200\200 \377\376 ab\303 <|endoftext|\342\202";
    check_round_trip(t, "trained invalid UTF-8", invalid, sizeof invalid - 1);

    /* save, load: the same tokenizer */
    const char *path = tu_path("tok.json");
    CHECK(rt_tok_save(t, path, &err) == 0, "save: %s", err);
    RtTokenizer *t3 = rt_tok_load(path, &err);
    CHECK(t3 != NULL, "load: %s", err);
    if (t3) {
        int32_t *x, *y;
        int64_t nx = rt_tok_encode(t, text, len, &x), ny = rt_tok_encode(t3, text, len, &y);
        CHECK(nx == ny && memcmp(x, y, sizeof(int32_t) * (size_t)nx) == 0 && rt_tok_eot(t3) == rt_tok_eot(t),
              "load: encodes differently");
        free(x);
        free(y);
        rt_tok_free(t3);
    }

    /* small vocabularies; a corpus that runs out of pairs */
    RtTokenizer *t4 = rt_tok_train(text, len, 256, &err);
    CHECK(!t4 && err && !strcmp(err, "vocabulary size 256 is too small: byte-level BPE needs 256 bytes + "
                                     "<|endoftext|> = 257 at least"), "train 256: %s", err);
    free(err);
    err = NULL;
    t4 = rt_tok_train("", 0, 300, &err);
    CHECK(t4 && rt_tok_vocab_size(t4) == 257, "train on nothing: 257 ids");
    rt_tok_free(t4);
    t4 = rt_tok_train("abab abab", 9, 1000, &err);
    /* words "abab", " abab": (a,b), (ab,ab), ( ,abab), then no pair is left */
    CHECK(t4 && rt_tok_n_merges(t4) == 3, "train on abab: %d merges", t4 ? rt_tok_n_merges(t4) : -1);
    rt_tok_free(t4);
    free(ref);
    free(text);
    rt_tok_free(t);
}

/* --- files ----------------------------------------------------------------- */

static void expect_load_error(const char *name, const char *contents, const char *want)
{
    const char *path = tu_path(name);
    tu_write(path, contents, strlen(contents));
    char *err = NULL, full[1024];
    snprintf(full, sizeof full, "%s: %s", path, want);
    RtTokenizer *t = rt_tok_load(path, &err);
    CHECK(!t && err && strcmp(err, full) == 0, "load %s: got '%s', want '%s'", name, err, full);
    rt_tok_free(t);
    free(err);
}

#define HEAD "{\"format\": \"strata-tokenizer\", \"version\": 1, \"pretokenizer\": \"gpt2\""

static void test_files(void)
{
    char *err = NULL, want[600];
    RtTokenizer *t = rt_tok_load(tu_path("absent.json"), &err);
    snprintf(want, sizeof want, "%s: No such file or directory", tu_path("absent.json"));
    CHECK(!t && err && !strcmp(err, want), "load absent: %s", err);
    free(err);
    err = NULL;
    tu_write(tu_path("broken.json"), "{\"format\": ", 11);
    t = rt_tok_load(tu_path("broken.json"), &err);
    snprintf(want, sizeof want, "%s:1:", tu_path("broken.json"));
    CHECK(!t && err && !strncmp(err, want, strlen(want)), "load broken JSON: %s", err);
    free(err);

    expect_load_error("list.json", "[]", "not a tokenizer file (expected a JSON object)");
    expect_load_error("format.json", "{\"format\": \"hf\"}",
                      "not a Strata tokenizer file (\"format\" is not \"strata-tokenizer\") nor a Hugging Face "
                      "tokenizer.json (no \"model\")");
    expect_load_error("version.json", "{\"format\": \"strata-tokenizer\", \"version\": 2}",
                      "tokenizer file version 2 is not supported (this Strata reads version 1)");
    expect_load_error("pre.json", "{\"format\": \"strata-tokenizer\", \"version\": 1, \"pretokenizer\": \"ws\"}",
                      "\"pretokenizer\" must be \"gpt2\" (the only one Strata has)");
    expect_load_error("nomerges.json", HEAD "}", "\"merges\" must be an array of [left, right] id pairs");
    expect_load_error("pair.json", HEAD ", \"merges\": [[97, 98], [1]]}", "merges[1]: expected [left, right]");
    expect_load_error("id.json", HEAD ", \"merges\": [[97, 98], [256, 300]]}",
                      "merges[1]: id 300 is not defined before merge 1 (ids 0..256 are)");
    expect_load_error("str.json", HEAD ", \"merges\": [[97, \"b\"]]}", "merges[0][1]: expected an integer");
    expect_load_error("special.json", HEAD ", \"merges\": [], \"special\": {\"<|endoftext|>\": 5}}",
                      "special \"<|endoftext|>\": 5 is out of range 256..256");
    expect_load_error("special2.json", HEAD ", \"merges\": [], \"special\": {\"<a>\": 256, \"<b>\": 256}}",
                      "special \"<a>\" and \"<b>\" both have id 256");
    expect_load_error("size.json", HEAD ", \"vocab_size\": 300, \"merges\": [], \"special\": {\"<a>\": 256}}",
                      "\"vocab_size\" must be 256 + merges + special = 257");
    expect_load_error("bytes.json", HEAD ", \"bytes\": [1, 2], \"merges\": []}",
                      "\"bytes\" must be an array of 256 ids");

    /* a permuted byte map and a special token survive save + load */
    int32_t byte_ids[256];
    for (int b = 0; b < 256; b++)
        byte_ids[b] = 255 - b;
    int32_t merges[] = {255 - 'h', 255 - 'i'};
    const char *special[] = {"<|endoftext|>", "\"quoted\\\""};
    t = rt_tok_new(byte_ids, merges, 1, special, 2, &err);
    CHECK(t && rt_tok_save(t, tu_path("perm.json"), &err) == 0, "save permuted: %s", err);
    RtTokenizer *u = rt_tok_load(tu_path("perm.json"), &err);
    CHECK(u && rt_tok_byte_ids(u)[0] == 255 && rt_tok_special_id(u, "\"quoted\\\"") == 258,
          "load permuted: %s", u ? "wrong contents" : err);
    if (u) {
        int32_t *ids;
        int64_t n = rt_tok_encode(u, "hi<|endoftext|>", 15, &ids);
        CHECK(n == 2 && ids[0] == 256 && ids[1] == 257, "permuted: encode");
        free(ids);
    }
    rt_tok_free(t);
    rt_tok_free(u);
}

/* GPT-2's byte alphabet (bytes_to_unicode) as UTF-8. */
static void gpt2_char(int b, char *out)
{
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = b;
    if (!printable) {
        cp = 256;
        for (int c = 0; c < b; c++)
            if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)))
                cp++;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* GPT-2's loader on small files of the same shape. */
static void test_gpt2_small(void)
{
    json_t *enc = json_object();
    char key[8];
    int id = 0;
    for (int pass = 0; pass < 2; pass++) /* GPT-2's order: printable bytes, then the others */
        for (int b = 0; b < 256; b++) {
            int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            if (printable == !pass) {
                gpt2_char(b, key);
                json_object_set_new(enc, key, json_integer(id++));
            }
        }
    char sp[8];
    gpt2_char(' ', sp);
    char k2[16];
    snprintf(k2, sizeof k2, "%sh", sp); /* "Ġh" */
    json_object_set_new(enc, k2, json_integer(256));
    snprintf(k2, sizeof k2, "%shi", sp);
    json_object_set_new(enc, k2, json_integer(257));
    json_object_set_new(enc, "<|endoftext|>", json_integer(258));
    json_dump_file(enc, tu_path("encoder.json"), 0);
    char bpe[64];
    snprintf(bpe, sizeof bpe, "#version: 0.2\n%s h\n%sh i\n", sp, sp);
    tu_write(tu_path("vocab.bpe"), bpe, strlen(bpe));
    char *err = NULL;
    RtTokenizer *t = rt_tok_load_gpt2(tu_path("encoder.json"), tu_path("vocab.bpe"), &err);
    CHECK(t && rt_tok_vocab_size(t) == 259 && rt_tok_eot(t) == 258, "gpt2 small: %s", t ? "vocabulary" : err);
    if (t) {
        int32_t *ids;
        int64_t n = rt_tok_encode(t, "a hi<|endoftext|>\n", 18, &ids);
        /* 'a' is the 65th printable byte (from '!'): id 64; '\n' is unprintable byte 10: id 188 + 10 */
        CHECK(n == 4 && ids[0] == 'a' - '!' && ids[1] == 257 && ids[2] == 258 && ids[3] == 188 + 10,
              "gpt2 small: encode (%lld ids)", (long long)n);
        free(ids);
        check_round_trip(t, "gpt2 small", "\x01\xff hi there", 11);
        /* saving keeps the byte permutation */
        CHECK(rt_tok_save(t, tu_path("gpt2.json"), &err) == 0, "gpt2 small: save: %s", err);
        RtTokenizer *u = rt_tok_load(tu_path("gpt2.json"), &err);
        CHECK(u && rt_tok_byte_ids(u)['\n'] == 198, "gpt2 small: reload");
        rt_tok_free(u);
        rt_tok_free(t);
    }
    snprintf(bpe, sizeof bpe, "#version: 0.2\n%s  h\n", sp);
    tu_write(tu_path("bad1.bpe"), bpe, strlen(bpe));
    char want[700];
    err = NULL;
    t = rt_tok_load_gpt2(tu_path("encoder.json"), tu_path("bad1.bpe"), &err);
    snprintf(want, sizeof want, "%s:2: expected two tokens separated by one space", tu_path("bad1.bpe"));
    CHECK(!t && err && !strcmp(err, want), "gpt2 bad1: got '%s', want '%s'", err, want);
    free(err);
    snprintf(bpe, sizeof bpe, "#version: 0.2\n%s h\nh i\n", sp);
    tu_write(tu_path("bad2.bpe"), bpe, strlen(bpe));
    err = NULL;
    t = rt_tok_load_gpt2(tu_path("encoder.json"), tu_path("bad2.bpe"), &err);
    snprintf(want, sizeof want, "%s:3: the merge of \"h\" and \"i\" makes \"hi\", which is not in %s",
             tu_path("bad2.bpe"), tu_path("encoder.json"));
    CHECK(!t && err && !strcmp(err, want), "gpt2 bad2: got '%s', want '%s'", err, want);
    free(err);
    snprintf(bpe, sizeof bpe, "#version: 0.2\n%sh i\n", sp);
    tu_write(tu_path("bad3.bpe"), bpe, strlen(bpe));
    err = NULL;
    t = rt_tok_load_gpt2(tu_path("encoder.json"), tu_path("bad3.bpe"), &err);
    snprintf(want, sizeof want,
             "%s:2: merge 0 makes \"%shi\", id 257 in %s; Strata needs merge i to make id 256 + i "
             "(256)",
             tu_path("bad3.bpe"), sp, tu_path("encoder.json"));
    CHECK(!t && err && !strcmp(err, want), "gpt2 bad3: got '%s', want '%s'", err, want);
    free(err);
    json_object_del(enc, "a");
    json_object_set_new(enc, "zz", json_integer('a' - '!'));
    json_dump_file(enc, tu_path("enc2.json"), 0);
    err = NULL;
    t = rt_tok_load_gpt2(tu_path("enc2.json"), tu_path("vocab.bpe"), &err);
    snprintf(want, sizeof want, "%s: no token for byte 97 (GPT-2's alphabet spells it U+0061)", tu_path("enc2.json"));
    CHECK(!t && err && !strcmp(err, want), "gpt2 missing byte: got '%s', want '%s'", err, want);
    free(err);
    json_decref(enc);
}

/* --- Hugging Face tokenizer.json ---------------------------------------------- */

/* A tokenizer.json with the 256 bytes as ids 0..255 (identity), the given
 * merges (a JSON array), extra vocab entries (",\"x\": 300" or ""), added
 * tokens (a JSON array) and extra top-level members, in *out (malloc'd). */
static char *hf_text(const char *merges, const char *vocab_extra, const char *added, const char *extra)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f, "{\"version\": \"1.0\", \"added_tokens\": %s, %s"
               "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}, "
               "\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true}, "
               "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"vocab\": {",
            added, extra);
    for (int b = 0; b < 256; b++) {
        char c[4];
        gpt2_char(b, c);
        json_t *js = json_string(c);
        char *q = json_dumps(js, JSON_ENCODE_ANY);
        fprintf(f, "%s%s: %d", b ? ", " : "", q, b);
        free(q);
        json_decref(js);
    }
    fprintf(f, "%s}, \"merges\": %s}}", vocab_extra, merges);
    fclose(f);
    return s;
}

static void expect_hf_error(const char *name, const char *merges, const char *vocab_extra, const char *added,
                            const char *extra, const char *want)
{
    char *text = hf_text(merges, vocab_extra, added, extra);
    expect_load_error(name, text, want);
    free(text);
}

static void test_hf_files(void)
{
    /* a permuted byte map, merges, two special tokens: written, then the
     * file's members checked against GPT-2's alphabet spelt here, then
     * read back */
    int32_t byte_ids[256];
    for (int b = 0; b < 256; b++)
        byte_ids[b] = 255 - b;
    int32_t merges[] = {255 - ' ', 255 - 'h', 256, 255 - 'i', 255 - 0xC3, 255 - 0xA9};
    const char *special[] = {"<|endoftext|>", "<pad \"x\">"};
    char *err = NULL;
    RtTokenizer *t = rt_tok_new(byte_ids, merges, 3, special, 2, &err);
    const char *path = tu_path("hf/tokenizer.json");
    CHECK(t && rt_tok_save_hf_dir(t, tu_path("hf"), 64, &err) == 0, "save_hf_dir: %s", err);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je), *vocab = json_object_get(json_object_get(j, "model"), "vocab");
    json_t *jm = json_object_get(json_object_get(j, "model"), "merges");
    char sp[4], e1[4], e2[4], key[32];
    gpt2_char(' ', sp), gpt2_char(0xC3, e1), gpt2_char(0xA9, e2);
    snprintf(key, sizeof key, "%shi", sp);
    bool ok = json_integer_value(json_object_get(vocab, "h")) == 255 - 'h' &&
              json_integer_value(json_object_get(vocab, sp)) == 255 - ' ' &&
              json_integer_value(json_object_get(vocab, key)) == 257 && json_object_size(vocab) == 261 &&
              json_integer_value(json_object_get(vocab, "<pad \"x\">")) == 260 && json_array_size(jm) == 3;
    snprintf(key, sizeof key, "%s h", sp);
    ok = ok && !strcmp(json_string_value(json_array_get(jm, 0)), key);
    snprintf(key, sizeof key, "%s%s %s", e1, "", e2); /* "Ã ©": the two bytes of é */
    ok = ok && !strcmp(json_string_value(json_array_get(jm, 2)), key);
    json_t *a1 = json_array_get(json_object_get(j, "added_tokens"), 1);
    ok = ok && json_integer_value(json_object_get(a1, "id")) == 260 &&
         !strcmp(json_string_value(json_object_get(a1, "content")), "<pad \"x\">") &&
         json_is_true(json_object_get(a1, "special"));
    CHECK(ok, "save_hf: vocab, merges or added_tokens are not GPT-2's spelling of the tokenizer");
    json_decref(j);
    j = json_load_file(tu_path("hf/tokenizer_config.json"), 0, &je);
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "eos_token")), "<|endoftext|>") &&
              json_integer_value(json_object_get(j, "model_max_length")) == 64 &&
              json_is_false(json_object_get(j, "clean_up_tokenization_spaces")),
          "tokenizer_config.json: eos, model_max_length or clean-up");
    json_decref(j);
    RtTokenizer *u = rt_tok_load(path, &err);
    CHECK(u && rt_tok_vocab_size(u) == 261 && rt_tok_byte_ids(u)[0] == 255 && rt_tok_eot(u) == 259 &&
              rt_tok_special_id(u, "<pad \"x\">") == 260,
          "load tokenizer.json: %s", u ? "other vocabulary" : err);
    if (u) {
        static const char text[] = " hi café<|endoftext|> h\xff\xfe<pad \"x\">";
        int32_t *x, *y;
        int64_t nx = rt_tok_encode(t, text, sizeof text - 1, &x), ny = rt_tok_encode(u, text, sizeof text - 1, &y);
        CHECK(nx == ny && nx > 0 && !memcmp(x, y, sizeof *x * (size_t)nx) && x[0] == 257,
              "tokenizer.json read back encodes differently");
        free(x), free(y);
    }
    rt_tok_free(u);
    rt_tok_free(t);

    /* merges as pairs (tokenizers >= 0.20 writes them so) read the same */
    char *text = hf_text("[[\"a\", \"b\"], [\"ab\", \"c\"]]", ", \"ab\": 256, \"abc\": 257, \"<|endoftext|>\": 258",
                         "[{\"id\": 258, \"content\": \"<|endoftext|>\", \"special\": true}]", "");
    tu_write(tu_path("pairs.json"), text, strlen(text));
    free(text);
    t = rt_tok_load(tu_path("pairs.json"), &err);
    CHECK(t && rt_tok_vocab_size(t) == 259 && rt_tok_eot(t) == 258, "merges as pairs: %s", t ? "vocabulary" : err);
    if (t) {
        int32_t *ids;
        int64_t n = rt_tok_encode(t, "abc<|endoftext|>", 16, &ids);
        CHECK(n == 2 && ids[0] == 257 && ids[1] == 258, "merges as pairs: encode");
        free(ids);
    }
    rt_tok_free(t);

    /* two ids of the same bytes: abc = (ab, c) = (a, bc) */
    int32_t dup[] = {'a', 'b', 256, 'c', 'b', 'c', 'a', 258};
    t = rt_tok_new(NULL, dup, 4, NULL, 0, &err);
    CHECK(t && rt_tok_save_hf(t, tu_path("dup.json"), &err) != 0 && err && strstr(err, "ids 257 and 259 are the same"),
          "save_hf of a tokenizer with two ids of the same bytes: %s", err ? err : "accepted");
    free(err);
    err = NULL;
    rt_tok_free(t);

    /* what does not fit is named */
    const char *none = "[]", *eot = ", \"<|endoftext|>\": 256";
    expect_hf_error("hf1.json", none, "", none, "\"normalizer\": {\"type\": \"NFC\"}, ",
                    "a normalizer is set; Strata encodes the text as it is");
    char *t2 = hf_text(none, "", none, "");
    char *p = strstr(t2, "\"BPE\"");
    memcpy(p, "\"WPC\"", 5);
    expect_load_error("hf2.json", t2, "model type WPC is not supported (Strata reads byte-level BPE)");
    free(t2);
    t2 = hf_text(none, "", none, "");
    p = strstr(t2, "\"add_prefix_space\": false");
    memcpy(p + 20, "true ", 5);
    expect_load_error("hf3.json", t2,
                      "\"pre_tokenizer\": add_prefix_space is true; Strata does not add a space in front of the text");
    free(t2);
    t2 = hf_text(none, "", none, "");
    p = strstr(t2, "\"ByteLevel\"");
    memcpy(p, "\"Metaspace\"", 11);
    expect_load_error("hf4.json", t2,
                      "\"pre_tokenizer\" is Metaspace, not ByteLevel (Strata reads byte-level BPE with GPT-2's "
                      "pre-tokenizer)");
    free(t2);
    expect_hf_error("hf5.json", "[\"a b\", \"c d\"]", ", \"ab\": 256, \"cd\": 300", none, "",
                    "model.merges[1] makes \"cd\", id 300; Strata needs merge i to make id 256 + i (257)");
    expect_hf_error("hf6.json", "[\"a b\"]", "", none, "", "model.merges[0] makes \"ab\", which is not in model.vocab");
    expect_hf_error("hf7.json", "[\"a  b\"]", ", \"ab\": 256", none, "",
                    "model.merges[0]: expected \"left right\" or [\"left\", \"right\"]");
    expect_hf_error("hf8.json", "[\"a x1\"]", ", \"ax1\": 256", none, "",
                    "model.merges[0]: token \"x1\" is not in model.vocab");
    expect_hf_error("hf9.json", none, eot, "[{\"id\": 97, \"content\": \"<|endoftext|>\"}]", "",
                    "added_tokens[0]: \"<|endoftext|>\" has id 97, among the bytes and merges; Strata needs added "
                    "tokens after the merges (ids 256 on)");
    expect_hf_error("hf10.json", none, eot, "[{\"id\": 258, \"content\": \"<x>\"}]", "",
                    "id 257 is not defined (neither in model.vocab nor in added_tokens), but id 258 is");
    expect_hf_error("hf11.json", none, eot, "[{\"id\": 256, \"content\": \"<|endoftext|>\", \"lstrip\": true}]", "",
                    "added_tokens[0]: \"<|endoftext|>\" sets lstrip, rstrip or single_word, which Strata does not "
                    "have");
    t2 = hf_text(none, "", none, "");
    p = strstr(t2, ": 97,");
    memcpy(p, ": 99,", 5); /* "a" takes c's id: 99 twice */
    expect_load_error("hf12.json", t2, "model.vocab: tokens \"a\" and \"c\" both have id 99");
    free(t2);
    /* byte 0 is spelt U+0100 */
    expect_hf_error("hf13.json", none, ", \"zz\": 0", none, "",
                    "model.vocab: tokens \"\xc4\x80\" and \"zz\" both have id 0");
}

/* The real GPT-2 files, when STRATA_GPT2_DIR names them. */
static RtTokenizer *load_gpt2_dir(const char *d, char **err)
{
    char e[1024], v[1024];
    snprintf(e, sizeof e, "%s/encoder.json", d);
    snprintf(v, sizeof v, "%s/vocab.bpe", d);
    return rt_tok_load_gpt2(e, v, err);
}

static void test_gpt2_real(const char *d)
{
    char *err = NULL;
    RtTokenizer *t = load_gpt2_dir(d, &err);
    CHECK(t && rt_tok_vocab_size(t) == 50257 && rt_tok_eot(t) == 50256 && rt_tok_n_merges(t) == 50000,
          "gpt2: %s", t ? "vocabulary" : err);
    if (!t) {
        free(err);
        return;
    }
    static const struct {
        const char *text;
        int32_t ids[8];
        int n;
    } cases[] = {
        {"Hello world", {15496, 995}, 2},
        {"<|endoftext|>", {50256}, 1},
        {" the", {262}, 1},
        {"\n\n", {628}, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids;
        int64_t n = rt_tok_encode(t, cases[c].text, strlen(cases[c].text), &ids);
        int same = n == cases[c].n;
        for (int64_t i = 0; same && i < n; i++)
            same = ids[i] == cases[c].ids[i];
        CHECK(same, "gpt2: encode \"%s\" (%lld ids, first %d)", cases[c].text, (long long)n, n > 0 ? ids[0] : -1);
        free(ids);
    }
    size_t len;
    char *text = make_corpus(20000, &len);
    check_against_naive(t, "gpt2", text, len);
    check_round_trip(t, "gpt2 corpus", text, len);
    char buf[3000];
    for (int k = 0; k < 20; k++) {
        size_t l = rnd() % sizeof buf;
        for (size_t i = 0; i < l; i++)
            buf[i] = (char)rnd();
        check_round_trip(t, "gpt2 random bytes", buf, l);
        check_against_naive(t, "gpt2 random bytes", buf, l);
    }
    /* as tokenizer.json and back: the same ids */
    CHECK(rt_tok_save_hf(t, tu_path("gpt2_hf.json"), &err) == 0, "gpt2: save_hf: %s", err);
    RtTokenizer *u = rt_tok_load(tu_path("gpt2_hf.json"), &err);
    CHECK(u && rt_tok_vocab_size(u) == 50257 && rt_tok_eot(u) == 50256, "gpt2: tokenizer.json: %s",
          u ? "vocabulary" : err);
    if (u) {
        int32_t *x, *y;
        int64_t nx = rt_tok_encode(t, text, len, &x), ny = rt_tok_encode(u, text, len, &y);
        CHECK(nx == ny && !memcmp(x, y, sizeof *x * (size_t)nx), "gpt2: tokenizer.json encodes differently");
        free(x), free(y);
    }
    rt_tok_free(u);
    free(text);
    rt_tok_free(t);
}

/* --- the train command ----------------------------------------------------- */

static void test_train_main(void)
{
    size_t len;
    char *text = make_corpus(20000, &len);
    tu_write(tu_path("corpus.txt"), text, len);
    char *out = tu_path("cli.json");
    char *argv1[] = {"train", "--vocab", "300", "-q", "-o", out, tu_path("corpus.txt"), NULL};
    CHECK(rt_tokenizer_main(7, argv1) == 0, "train command");
    char *err = NULL;
    RtTokenizer *t = rt_tok_load(out, &err);
    CHECK(t && rt_tok_vocab_size(t) == 300, "train command: %s", t ? "vocabulary" : err);
    RtTokenizer *u = rt_tok_train(text, len, 300, &err);
    int same = t && u;
    for (int32_t i = 0; same && i < 43; i++) {
        int32_t a, b, c, d;
        rt_tok_merge(t, i, &a, &b);
        rt_tok_merge(u, i, &c, &d);
        same = a == c && b == d;
    }
    CHECK(same, "train command: other merges than rt_tok_train");
    rt_tok_free(t);
    rt_tok_free(u);
    char *argv2[] = {"train", "--vocab", "12", tu_path("corpus.txt"), NULL};
    CHECK(rt_tokenizer_main(4, argv2) == 2, "train --vocab 12: usage error");
    char *argv3[] = {"train", tu_path("corpus.txt"), NULL};
    CHECK(rt_tokenizer_main(2, argv3) == 2, "train without --vocab: usage error");
    char *argv4[] = {"train", "--vocab=300", "-q", "-o", out, tu_path("nothing.txt"), NULL};
    CHECK(rt_tokenizer_main(6, argv4) == 1, "train on a missing file: error 1");
    free(text);
}

/* --- modes ----------------------------------------------------------------- */

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t l = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        if (!l || i + l > n)
            return 0;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) || (c == 0xF0 && s[i + 1] < 0x90) ||
            (c == 0xF4 && s[i + 1] > 0x8F))
            return 0;
        i += l;
    }
    return 1;
}

/* REF: one line per FILE, "N id id ...", from tests/gpt2_reference.js. */
static int compare_gpt2(const char *d, const char *ref, char **files, int n_files)
{
    char *err = NULL;
    RtTokenizer *t = load_gpt2_dir(d, &err);
    if (!t) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    FILE *f = fopen(ref, "r");
    if (!f) {
        perror(ref);
        return 1;
    }
    int status = 0;
    long long total = 0, equal = 0, bytes = 0;
    double secs = 0;
    for (int k = 0; k < n_files; k++) {
        long long n_ref;
        if (fscanf(f, "%lld", &n_ref) != 1) {
            printf("FAIL: %s: no line for %s\n", ref, files[k]);
            status = 1;
            break;
        }
        int32_t *want = malloc(sizeof(int32_t) * (size_t)(n_ref + 1));
        for (long long i = 0; i < n_ref; i++)
            if (fscanf(f, "%d", &want[i]) != 1) {
                printf("FAIL: %s: short line for %s\n", ref, files[k]);
                status = 1;
                n_ref = i;
            }
        size_t len;
        char *text = tu_slurp(files[k], &len);
        if (!text || !valid_utf8((const unsigned char *)text, len)) {
            printf("note: %s: %s, not compared\n", files[k], text ? "not valid UTF-8" : "unreadable");
            free(text);
            free(want);
            continue;
        }
        int32_t *ids;
        double t0 = now_s();
        int64_t n = rt_tok_encode(t, text, len, &ids);
        secs += now_s() - t0;
        int64_t first = -1, same = 0;
        for (int64_t i = 0; i < n && i < n_ref; i++) {
            if (ids[i] == want[i])
                same++;
            else if (first < 0)
                first = i;
        }
        if (first < 0 && n != n_ref)
            first = n < n_ref ? n : n_ref;
        printf("%s: %lld bytes, %lld GPT-2 ids, %lld reference ids, %s", files[k], (long long)len, (long long)n,
               n_ref, first < 0 ? "all equal\n" : "");
        if (first >= 0) {
            printf("first difference at id %lld: %d, reference %d\n", (long long)first,
                   first < n ? ids[first] : -1, first < n_ref ? want[first] : -1);
            status = 1;
        }
        char *back;
        int64_t m = rt_tok_decode(t, ids, n, &back);
        CHECK(m == (int64_t)len && memcmp(back, text, len) == 0, "%s: decode does not give the file back", files[k]);
        free(back);
        total += n_ref;
        equal += first < 0 ? n : same;
        bytes += (long long)len;
        free(ids);
        free(want);
        free(text);
    }
    fclose(f);
    rt_tok_free(t);
    printf("gpt2: %lld of %lld reference ids equal; %.1f MB encoded at %.1f MB/s\n", equal, total, bytes / 1e6,
           secs > 0 ? bytes / 1e6 / secs : 0.0);
    return status || tu_fails || total == 0 ? 1 : 0;
}

static int bench(const char *gpt2_dir, char **files, int n_files)
{
    size_t len = 0, cap = 1 << 20;
    char *text = malloc(cap);
    for (int k = 0; k < n_files; k++) {
        size_t l;
        char *p = tu_slurp(files[k], &l);
        if (!p) {
            perror(files[k]);
            return 1;
        }
        while (len + l + 1 > cap)
            text = realloc(text, cap *= 2);
        memcpy(text + len, p, l);
        len += l;
        free(p);
    }
    double mb = len / 1e6;
    printf("corpus: %.2f MB from %d files\n", mb, n_files);
    RtTokenizer *tok = NULL;
    char *err = NULL;
    static const int32_t sizes[] = {4096, 8192};
    for (int s = 0; s < 2; s++) {
        double t0 = now_s();
        RtBpeTrainer *tr = rt_bpe_trainer_new();
        rt_bpe_trainer_add(tr, text, len);
        double t1 = now_s();
        RtTokenizer *t = rt_bpe_trainer_train(tr, sizes[s], &err);
        double t2 = now_s();
        printf("train vocab %d: %d ids, %.2f s (pre-tokens %.2f s, %lld unique; merges %.2f s), %.1f MB/s\n",
               sizes[s], t ? rt_tok_vocab_size(t) : -1, t2 - t0, t1 - t0, (long long)rt_bpe_trainer_words(tr),
               t2 - t1, mb / (t2 - t0));
        rt_bpe_trainer_free(tr);
        rt_tok_free(tok);
        tok = t;
    }
    RtTokenizer *g = gpt2_dir ? load_gpt2_dir(gpt2_dir, &err) : NULL;
    if (gpt2_dir && !g)
        printf("gpt2: %s\n", err);
    RtTokenizer *b = rt_tok_bytes();
    RtTokenizer *which[3] = {b, tok, g};
    const char *names[3] = {"bytes", "trained 8192", "gpt2"};
    for (int w = 0; w < 3; w++) {
        if (!which[w])
            continue;
        for (int pass = 0; pass < 2; pass++) {
            int32_t *ids;
            double t0 = now_s();
            int64_t n = rt_tok_encode(which[w], text, len, &ids);
            double t1 = now_s();
            char *out;
            rt_tok_decode(which[w], ids, n, &out);
            double t2 = now_s();
            printf("encode %-12s %s: %lld ids (%.2f bytes/id), %.1f MB/s; decode %.0f MB/s\n", names[w],
                   pass ? "warm cache" : "cold cache", (long long)n, (double)len / (double)n, mb / (t1 - t0),
                   mb / (t2 - t1));
            free(ids);
            free(out);
        }
    }
    rt_tok_free(b);
    rt_tok_free(tok);
    rt_tok_free(g);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--pretokens") == 0)
        return compare_pretokens(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "--gpt2") == 0)
        return compare_gpt2(argv[2], argv[3], argv + 4, argc - 4);
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
        if (argc >= 4 && strcmp(argv[2], "--gpt2") == 0)
            return bench(argv[3], argv + 4, argc - 4);
        return bench(NULL, argv + 2, argc - 2);
    }
    if (argc > 1) {
        fprintf(stderr, "usage: tokenizer_test [--pretokens F | --gpt2 DIR REF FILE... | --bench [--gpt2 DIR] "
                        "FILE...]\n");
        return 2;
    }
    if (!tu_mkdtemp("strata-tok-XXXXXX"))
        return 1;
    test_pretokens();
    test_bytes();
    test_bpe_small();
    test_train();
    test_files();
    test_gpt2_small();
    test_hf_files();
    const char *g = getenv("STRATA_GPT2_DIR");
    if (g && *g)
        test_gpt2_real(g);
    else
        printf("note: STRATA_GPT2_DIR unset: GPT-2's own files not tested here (tests/tokenizer.test does)\n");
    test_train_main();
    return tu_finish("tokenizer_test");
}
