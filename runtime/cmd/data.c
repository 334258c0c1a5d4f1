/* data.c - `strata data`: text files, or the string fields of JSONL
 * records, tokenized into llm.c token shards with a train/validation split
 * (rt_data_split, data.h).
 *
 * Documents: each text file is one document; in JSONL mode each record
 * (one line, a JSON object) is one, its named fields joined by "\n" in the
 * order the --jsonl-field options give.  Every document is preceded by the
 * tokenizer's <|endoftext|> when it has one (llm.c's convention: the
 * delimiter starts each document), none for --bytes.  Text is encoded as
 * ordinary text: a literal "<|endoftext|>" inside a document does not
 * become the special id.  The whole corpus is held in memory as int32 ids.
 *
 * Entry points: rt_data_main, rt_cli_tokenizer (shared with
 * cmd/tokenizer.c).  Everything allocated here is freed before return. */
#define _GNU_SOURCE /* vasprintf */
#include "cmd/commands.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data/data.h"
#include "data/tokenizer_impl.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

RtTokenizer *rt_cli_tokenizer(const char *file, int bytes, const char *gpt2_dir, char **err)
{
    int given = (file != NULL) + (bytes != 0) + (gpt2_dir != NULL);
    if (given != 1) {
        *err = rt_fmt("%s", given ? "give only one of --tokenizer FILE, --bytes and --gpt2 DIR"
                               : "no tokenizer: give --tokenizer FILE, --bytes or --gpt2 DIR");
        return NULL;
    }
    if (file)
        return rt_tok_load(file, err);
    if (bytes) {
        RtTokenizer *t = rt_tok_bytes();
        if (!t)
            *err = rt_fmt("out of memory");
        return t;
    }
    char *enc = rt_fmt("%s/encoder.json", gpt2_dir), *bpe = rt_fmt("%s/vocab.bpe", gpt2_dir);
    RtTokenizer *t = NULL;
    if (!enc || !bpe)
        *err = rt_fmt("out of memory");
    else
        t = rt_tok_load_gpt2(enc, bpe, err);
    free(enc);
    free(bpe);
    return t;
}

/* --- checks of the input text ---------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n) (shortest form, no
 * surrogates, up to U+10FFFF), or 0 if the bytes there are not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t k;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

/* Line and column (1-based, in bytes) of text[at]. */
static void line_col(const char *text, size_t at, long *line, long *col)
{
    long l = 1;
    size_t start = 0;
    for (size_t i = 0; i < at; i++)
        if (text[i] == '\n')
            l++, start = i + 1;
    *line = l;
    *col = (long)(at - start) + 1;
}

/* A text file must not hold NUL bytes (a binary file, or UTF-16, given by
 * mistake); invalid UTF-8 only earns a warning, since byte-level
 * tokenizers encode any bytes.  0, or -1 with *err. */
static int check_text(const char *path, const char *text, size_t len, int quiet, char **err)
{
    const char *nul = memchr(text, 0, len);
    long line, col;
    if (nul) {
        line_col(text, (size_t)(nul - text), &line, &col);
        *err = rt_fmt("%s:%ld:%ld: a NUL byte: not a text file (UTF-16 or binary?)", path, line, col);
        return -1;
    }
    size_t first = len, bad = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_len(s + i, len - i);
        if (k == 0) {
            if (first == len)
                first = i;
            bad++;
            k = 1;
        }
        i += k;
    }
    if (bad && !quiet) {
        line_col(text, first, &line, &col);
        fprintf(stderr,
                "strata: warning: %s:%ld:%ld: invalid UTF-8 (%zu byte%s in the file); encoded byte by byte\n",
                path, line, col, bad, bad == 1 ? "" : "s");
    }
    return 0;
}

/* --- the corpus ------------------------------------------------------------ */

typedef struct Corpus {
    RtTokenizer *tok;
    int32_t eot;       /* <|endoftext|> before each document, or -1 */
    RtTokIds ids;      /* (n) the whole corpus */
    int64_t docs;      /* documents added */
    int64_t bytes;     /* text bytes encoded (without the EOT tokens) */
} Corpus;

/* One document: EOT (if any), then its text.  0, or -1 with *err. */
static int add_doc(Corpus *c, const char *path, const char *text, size_t len, char **err)
{
    if (c->eot >= 0) {
        if (c->ids.n == c->ids.cap) {
            int64_t cap = c->ids.cap ? 2 * c->ids.cap : 1 << 16;
            int32_t *v = realloc(c->ids.v, (size_t)cap * sizeof *v);
            if (!v) {
                *err = rt_fmt("%s: out of memory after %lld tokens", path, (long long)c->ids.n);
                return -1;
            }
            c->ids.v = v;
            c->ids.cap = cap;
        }
        c->ids.v[c->ids.n++] = c->eot;
    }
    if (rt_tok_encode_append(c->tok, text, len, 0, &c->ids) != 0) {
        *err = rt_fmt("%s: out of memory after %lld tokens", path, (long long)c->ids.n);
        return -1;
    }
    c->docs++;
    c->bytes += (int64_t)len;
    return 0;
}

/* The JSON type of v in words, for messages. */
static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* "a, b, c": the keys of an object (malloc'd). */
static char *json_keys(json_t *obj)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f)
        return NULL;
    const char *key;
    json_t *v;
    int first = 1;
    json_object_foreach(obj, key, v) {
        fprintf(f, "%s\"%s\"", first ? "" : ", ", key);
        first = 0;
    }
    if (first)
        fputs("none", f);
    fclose(f);
    return s;
}

/* Every line of a JSONL file is one record (blank lines are skipped);
 * fields[0..nfield) must all be strings in it.  0, or -1 with *err
 * "PATH:LINE: ...". */
static int add_jsonl(Corpus *c, const char *path, const char *text, size_t len, const char *const *fields,
                     int nfield, char **err)
{
    char *doc = NULL;
    size_t doc_cap = 0;
    long line = 0;
    int rc = -1;
    for (size_t at = 0; at < len;) {
        line++;
        const char *p = text + at, *nl = memchr(p, '\n', len - at);
        size_t n = nl ? (size_t)(nl - p) : len - at;
        at += n + (nl != NULL);
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r'))
            k++;
        if (k == n)
            continue;
        json_error_t je;
        json_t *rec = json_loadb(p, n, JSON_ALLOW_NUL, &je);
        if (!rec) {
            *err = rt_fmt("%s:%ld:%d: not valid JSON: %s", path, line, je.column, je.text);
            goto out;
        }
        if (!json_is_object(rec)) {
            *err = rt_fmt("%s:%ld: expected a JSON object, got %s", path, line, json_kind(rec));
            json_decref(rec);
            goto out;
        }
        size_t used = 0;
        for (int f = 0; f < nfield; f++) {
            json_t *v = json_object_get(rec, fields[f]);
            if (!v || !json_is_string(v)) {
                char *keys = v ? NULL : json_keys(rec);
                if (v)
                    *err = rt_fmt("%s:%ld: field \"%s\" is %s, not a string", path, line, fields[f], json_kind(v));
                else
                    *err = rt_fmt("%s:%ld: no field \"%s\" (the record has %s)", path, line, fields[f],
                               keys ? keys : "other fields");
                free(keys);
                json_decref(rec);
                goto out;
            }
            size_t sl = json_string_length(v);
            if (used + sl + 2 > doc_cap) {
                size_t cap = 2 * (used + sl + 2);
                char *d = realloc(doc, cap);
                if (!d) {
                    *err = rt_fmt("%s:%ld: out of memory", path, line);
                    json_decref(rec);
                    goto out;
                }
                doc = d;
                doc_cap = cap;
            }
            if (f > 0)
                doc[used++] = '\n';
            memcpy(doc + used, json_string_value(v), sl);
            used += sl;
        }
        json_decref(rec);
        if (add_doc(c, path, doc ? doc : "", used, err) != 0)
            goto out;
    }
    rc = 0;
out:
    free(doc);
    return rc;
}

/* mkdir -p of the directory part of prefix ("data/x" -> "data"). */
static int make_parent(const char *prefix, char **err)
{
    char *p = rt_fmt("%s", prefix);
    if (!p) {
        *err = rt_fmt("out of memory");
        return -1;
    }
    char *slash = strrchr(p, '/');
    int rc = 0;
    if (slash && slash != p) {
        *slash = 0;
        for (char *q = p + 1; rc == 0; q++) {
            if (*q != '/' && *q != 0)
                continue;
            char save = *q;
            *q = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                *err = rt_fmt("%s: cannot create the directory: %s", p, strerror(errno));
                rc = -1;
            }
            *q = save;
            if (save == 0)
                break;
        }
    }
    free(p);
    return rc;
}

/* --- the command ----------------------------------------------------------- */

static void data_usage(FILE *out)
{
    fprintf(out,
            "usage: strata data [--tokenizer FILE | --bytes | --gpt2 DIR] [--jsonl-field NAME]...\n"
            "                   [--val-fraction F | --val-tokens N] [--shard-tokens N] [-q|-v]\n"
            "                   -o PREFIX FILE...\n"
            "  Tokenizes the files and writes llm.c token shards PREFIX_train_NNNNNN.bin\n"
            "  (the first part of the corpus) and PREFIX_val.bin (the last part), then\n"
            "  PREFIX.manifest.json; train shards of an earlier set under PREFIX are\n"
            "  removed, so PREFIX_train_*.bin never mixes two corpora.\n"
            "  --tokenizer FILE   a tokenizer of `strata tokenizer train`\n"
            "  --bytes            raw bytes, vocabulary 256\n"
            "  --gpt2 DIR         GPT-2's DIR/encoder.json and DIR/vocab.bpe\n"
            "  --jsonl-field NAME the files are JSONL; take this string field of every\n"
            "                     record (repeatable: the fields are joined by a newline)\n"
            "  --val-fraction F   validation share of the tokens (default 0.1)\n"
            "  --val-tokens N     validation tokens, instead of a fraction\n"
            "  --shard-tokens N   tokens per train shard (default %lld)\n"
            "  -q                 print nothing but errors\n"
            "  -v                 a line per input file even when there are more than 8\n"
            "  Each file (text) or record (JSONL) is a document, preceded by the\n"
            "  tokenizer's <|endoftext|> when it has one.\n",
            RT_SHARD_TOKENS_DEFAULT);
}

static int parse_int64(const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == 0 || *end || v < lo)
        return -1;
    *out = v;
    return 0;
}

int rt_data_main(int argc, char **argv)
{
    const char *tok_file = NULL, *gpt2_dir = NULL, *prefix = NULL;
    int bytes = 0, quiet = 0, verbose = 0, nfile = 0, nfield = 0, status = 2;
    RtSplitOptions so = {.val_tokens = 0, .val_fraction = 0.1, .shard_tokens = 0};
    int have_fraction = 0;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    const char **fields = calloc((size_t)argc + 1, sizeof *fields);
    Corpus c = {.tok = NULL, .eot = -1};
    rt_tok_ids_init(&c.ids);
    RtSplitResult sr = {0};
    char *err = NULL;
    if (!files || !fields) {
        fprintf(stderr, "strata: error: out of memory\n");
        status = 1;
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        static const char *const with_value[] = {"--tokenizer", "--gpt2", "--jsonl-field", "--val-fraction",
                                                 "--val-tokens", "--shard-tokens", "-o", NULL};
        for (int k = 0; with_value[k]; k++) {
            size_t l = strlen(with_value[k]);
            if (strcmp(a, with_value[k]) == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "strata: error: data: %s needs a value\n", a);
                    goto usage;
                }
                v = argv[++i];
                a = with_value[k];
            } else if (strncmp(a, with_value[k], l) == 0 && a[l] == '=' && a[1] == '-') {
                v = a + l + 1;
                a = with_value[k];
            }
        }
        if (!v) {
            if (strcmp(a, "--bytes") == 0) {
                bytes = 1;
            } else if (strcmp(a, "-q") == 0) {
                quiet = 1;
            } else if (strcmp(a, "-v") == 0) {
                verbose = 1;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                data_usage(stdout);
                status = 0;
                goto done;
            } else if (a[0] == '-' && a[1]) {
                fprintf(stderr, "strata: error: data: unknown option '%s'\n", a);
                goto usage;
            } else if (a[0] == '-') {
                fprintf(stderr, "strata: error: data: cannot read stdin ('-'): give the files\n");
                goto usage;
            } else {
                files[nfile++] = a;
            }
        } else if (strcmp(a, "--tokenizer") == 0) {
            tok_file = v;
        } else if (strcmp(a, "--gpt2") == 0) {
            gpt2_dir = v;
        } else if (strcmp(a, "--jsonl-field") == 0) {
            fields[nfield++] = v;
        } else if (strcmp(a, "-o") == 0) {
            prefix = v;
        } else if (strcmp(a, "--val-fraction") == 0) {
            char *end;
            so.val_fraction = strtod(v, &end);
            if (*v == 0 || *end || !(so.val_fraction > 0 && so.val_fraction < 1)) {
                fprintf(stderr, "strata: error: data: --val-fraction %s: expected a number between 0 and 1\n", v);
                goto usage;
            }
            have_fraction = 1;
        } else {
            int64_t *dst = strcmp(a, "--val-tokens") == 0 ? &so.val_tokens : &so.shard_tokens;
            int64_t lo = dst == &so.val_tokens ? 2 : 1;
            if (parse_int64(v, lo, dst) != 0) {
                fprintf(stderr, "strata: error: data: %s %s: expected an integer of at least %lld\n", a, v,
                        (long long)lo);
                goto usage;
            }
        }
    }
    if (have_fraction && so.val_tokens > 0) {
        fprintf(stderr, "strata: error: data: give --val-fraction or --val-tokens, not both\n");
        goto usage;
    }
    if (!prefix || nfile == 0) {
        fprintf(stderr, "strata: error: data: %s\n", !prefix ? "-o PREFIX is required" : "no input file given");
        goto usage;
    }
    if (tok_file == NULL && gpt2_dir == NULL && !bytes) {
        fprintf(stderr, "strata: error: data: no tokenizer: give --tokenizer FILE, --bytes or --gpt2 DIR\n");
        goto usage;
    }
    status = 1;
    double t0 = now_s();
    c.tok = rt_cli_tokenizer(tok_file, bytes, gpt2_dir, &err);
    if (!c.tok) {
        status = bytes + (tok_file != NULL) + (gpt2_dir != NULL) > 1 ? 2 : 1;
        goto fail;
    }
    c.eot = rt_tok_eot(c.tok);
    if (!quiet) {
        printf("tokenizer: %s, %d ids", tok_file ? tok_file : gpt2_dir ? gpt2_dir : "bytes",
               rt_tok_vocab_size(c.tok));
        if (c.eot >= 0)
            printf(", %s = %d before each document", RT_TOK_EOT_TEXT, c.eot);
        printf("\n");
    }
    for (int k = 0; k < nfile; k++) {
        char *text;
        size_t len;
        if (rt_tok_read_file(files[k], &text, &len, &err) != 0)
            goto fail;
        int64_t n0 = c.ids.n, d0 = c.docs;
        int rc = nfield ? add_jsonl(&c, files[k], text, len, fields, nfield, &err)
                        : check_text(files[k], text, len, quiet, &err) || add_doc(&c, files[k], text, len, &err);
        free(text);
        if (rc != 0)
            goto fail;
        if (!quiet && (verbose || nfile <= 8))
            printf("  %s: %zu bytes, %lld document%s, %lld tokens\n", files[k], len, (long long)(c.docs - d0),
                   c.docs - d0 == 1 ? "" : "s", (long long)(c.ids.n - n0));
    }
    double t1 = now_s();
    so.tokenizer = tok_file ? tok_file : gpt2_dir ? gpt2_dir : "bytes";
    so.vocab = rt_tok_vocab_size(c.tok);
    so.inputs = files;
    so.ninputs = nfile;
    if (make_parent(prefix, &err) != 0 || rt_data_split(prefix, c.ids.v, c.ids.n, &so, &sr, &err) != 0)
        goto fail;
    double t2 = now_s();
    if (!quiet) {
        const char *w = sr.width == 2 ? "uint16" : "uint32";
        if (sr.ntrain == 1) {
            printf("wrote %s: %lld tokens (%s)\n", sr.train_paths[0], (long long)sr.train_tokens, w);
        } else {
            printf("wrote %s ... %s: %d shards, %lld tokens (%s)\n", sr.train_paths[0],
                   sr.train_paths[sr.ntrain - 1], sr.ntrain, (long long)sr.train_tokens, w);
        }
        printf("wrote %s: %lld tokens (%s)\n", sr.val_path, (long long)sr.val_tokens, w);
        printf("total: %d file%s, %lld document%s, %lld bytes -> %lld tokens (%.3f bytes/token); "
               "%.2f s (tokenize %.2f s, %.1f MB/s)\n",
               nfile, nfile == 1 ? "" : "s", (long long)c.docs, c.docs == 1 ? "" : "s", (long long)c.bytes,
               (long long)c.ids.n,
               c.ids.n ? (double)c.bytes / (double)c.ids.n : 0.0, t2 - t0, t1 - t0,
               t1 > t0 ? (double)c.bytes / 1e6 / (t1 - t0) : 0.0);
    }
    if (!quiet)
        printf("wrote %s: shard set %016llx\n", sr.manifest_path, (unsigned long long)sr.id);
    if (sr.removed > 0)
        fprintf(stderr, "strata: note: removed %d train shard%s of an earlier set (%s_train_%06d.bin and up), so a "
                "glob of %s_train_*.bin takes this set alone\n", sr.removed, sr.removed == 1 ? "" : "s", prefix,
                sr.ntrain, prefix);
    status = 0;
    goto done;
usage:
    data_usage(stderr);
    status = 2;
    goto done;
fail:
    fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
done:
    free(err);
    rt_split_result_free(&sr);
    rt_tok_ids_free(&c.ids);
    rt_tok_free(c.tok);
    free(files);
    free(fields);
    return status;
}
