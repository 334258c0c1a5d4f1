/* tokenizer_io.c - tokenizer files: Strata's JSON format (rt_tok_save,
 * rt_tok_load, which hands a Hugging Face tokenizer.json to
 * tokenizer_hf.c; tokenizer.h documents both) and GPT-2's encoder.json +
 * vocab.bpe (rt_tok_load_gpt2).  Both loaders check everything and name
 * the file and the place in it that is wrong; the model itself is built by
 * rt_tok_new, whose complaints get the file name in front. */
#define _GNU_SOURCE /* vasprintf, open_memstream */
#include "data/tokenizer.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/atomic_file.h"
#include "data/tokenizer_impl.h"

/* Replaces *err ("merges[3]: ...") by "PATH: merges[3]: ...". */
static void prefix_err(const char *path, char **err)
{
    char *e = rt_fmt("%s: %s", path, *err ? *err : "invalid tokenizer");
    free(*err);
    *err = e;
}

int rt_tok_read_file(const char *path, char **data, size_t *len, char **err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = rt_fmt("%s: not a regular file", path);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    char *p = malloc(n + 1);
    if (!p) {
        *err = rt_fmt("%s: out of memory reading %zu bytes", path, n);
        fclose(f);
        return -1;
    }
    size_t got = fread(p, 1, n, f);
    if (got != n || ferror(f)) {
        *err = rt_fmt("%s: read %zu of %zu bytes: %s", path, got, n, ferror(f) ? strerror(errno) : "file shrank");
        free(p);
        fclose(f);
        return -1;
    }
    fclose(f);
    p[n] = 0;
    *data = p;
    *len = n;
    return 0;
}

/* Parses a JSON file; NULL with *err "PATH:LINE:COL: what". */
static json_t *load_json(const char *path, char **err)
{
    char *data;
    size_t len;
    if (rt_tok_read_file(path, &data, &len, err) != 0)
        return NULL;
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    free(data);
    if (!root)
        *err = rt_fmt("%s:%d:%d: %s", path, je.line, je.column, je.text);
    return root;
}

/* --- Strata's format ------------------------------------------------------ */

int rt_tok_save(const RtTokenizer *t, const char *path, char **err)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int32_t m = rt_tok_n_merges(t), s = rt_tok_n_special(t);
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"pretokenizer\": \"gpt2\",\n", RT_TOK_FORMAT,
            RT_TOK_VERSION);
    fprintf(f, "  \"vocab_size\": %d,\n", rt_tok_vocab_size(t));
    const int32_t *bytes = rt_tok_byte_ids(t);
    int identity = 1;
    for (int b = 0; b < 256; b++)
        identity &= bytes[b] == b;
    if (!identity) {
        fprintf(f, "  \"bytes\": [");
        for (int b = 0; b < 256; b++)
            fprintf(f, "%s%d", b == 0 ? "" : b % 16 ? ", " : ",\n    ", bytes[b]);
        fprintf(f, "],\n");
    }
    fprintf(f, "  \"special\": {");
    for (int32_t k = 0; k < s; k++) {
        const char *text = rt_tok_special_text(t, k);
        json_t *js = json_stringn(text, strlen(text));
        char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        json_decref(js);
        if (!q) {
            fclose(f);
            free(buf);
            *err = rt_fmt("%s: special token %d is not valid UTF-8 (or memory ran out)", path, k);
            return -1;
        }
        fprintf(f, "%s%s: %d", k ? ", " : "", q, 256 + m + k);
        free(q);
    }
    fprintf(f, "},\n  \"merges\": [");
    for (int32_t i = 0; i < m; i++) {
        int32_t a, b;
        rt_tok_merge(t, i, &a, &b);
        fprintf(f, "%s\n    [%d, %d]", i ? "," : "", a, b);
    }
    fprintf(f, "%s]\n}\n", m ? "\n  " : "");
    if (fclose(f) != 0 || !buf) {
        free(buf);
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int rc = rt_atomic_write_file(path, buf, n, err);
    free(buf);
    return rc;
}

/* An int32 member of a JSON value; 0, or -1 with *err "PATH: WHERE ...". */
static int get_int(const char *path, const char *where, json_t *v, int32_t lo, int32_t hi, int32_t *out,
                   char **err)
{
    if (!json_is_integer(v)) {
        *err = rt_fmt("%s: %s: expected an integer", path, where);
        return -1;
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        *err = rt_fmt("%s: %s: %lld is out of range %d..%d", path, where, (long long)x, lo, hi);
        return -1;
    }
    *out = (int32_t)x;
    return 0;
}

RtTokenizer *rt_tok_load(const char *path, char **err)
{
    json_t *root = load_json(path, err);
    if (!root)
        return NULL;
    RtTokenizer *t = NULL;
    int32_t *merges = NULL, byte_ids[256];
    const char **special = NULL;
    int have_bytes = 0;
    if (!json_is_object(root)) {
        *err = rt_fmt("%s: not a tokenizer file (expected a JSON object)", path);
        goto done;
    }
    json_t *fmt = json_object_get(root, "format");
    if (!fmt && json_is_object(json_object_get(root, "model"))) { /* Hugging Face's tokenizer.json */
        t = rt_tok_from_hf(root, path, err);
        goto done;
    }
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), RT_TOK_FORMAT) != 0) {
        *err = rt_fmt("%s: not a Strata tokenizer file (\"format\" is not \"%s\") nor a Hugging Face "
                      "tokenizer.json (no \"model\")", path, RT_TOK_FORMAT);
        goto done;
    }
    json_t *ver = json_object_get(root, "version");
    if (!json_is_integer(ver)) {
        *err = rt_fmt("%s: \"version\" must be an integer (this Strata reads version %d)", path, RT_TOK_VERSION);
        goto done;
    }
    if (json_integer_value(ver) != RT_TOK_VERSION) {
        *err = rt_fmt("%s: tokenizer file version %lld is not supported (this Strata reads version %d)", path,
                   (long long)json_integer_value(ver), RT_TOK_VERSION);
        goto done;
    }
    json_t *pre = json_object_get(root, "pretokenizer");
    if (!json_is_string(pre) || strcmp(json_string_value(pre), "gpt2") != 0) {
        *err = rt_fmt("%s: \"pretokenizer\" must be \"gpt2\" (the only one Strata has)", path);
        goto done;
    }
    json_t *jb = json_object_get(root, "bytes");
    if (jb) {
        if (!json_is_array(jb) || json_array_size(jb) != 256) {
            *err = rt_fmt("%s: \"bytes\" must be an array of 256 ids", path);
            goto done;
        }
        for (int b = 0; b < 256; b++) {
            char where[32];
            snprintf(where, sizeof where, "bytes[%d]", b);
            if (get_int(path, where, json_array_get(jb, (size_t)b), 0, 255, &byte_ids[b], err) != 0)
                goto done;
        }
        have_bytes = 1;
    }
    json_t *jm = json_object_get(root, "merges");
    if (!json_is_array(jm)) {
        *err = rt_fmt("%s: \"merges\" must be an array of [left, right] id pairs", path);
        goto done;
    }
    size_t nm = json_array_size(jm);
    if (nm > (size_t)INT32_MAX / 2 - 256) {
        *err = rt_fmt("%s: %zu merges are too many", path, nm);
        goto done;
    }
    merges = malloc(sizeof(int32_t) * 2 * (nm ? nm : 1));
    if (!merges) {
        *err = rt_fmt("%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < nm; i++) {
        json_t *p = json_array_get(jm, i);
        if (!json_is_array(p) || json_array_size(p) != 2) {
            *err = rt_fmt("%s: merges[%zu]: expected [left, right]", path, i);
            goto done;
        }
        for (int k = 0; k < 2; k++) {
            char where[48];
            snprintf(where, sizeof where, "merges[%zu][%d]", i, k);
            if (get_int(path, where, json_array_get(p, (size_t)k), 0, INT32_MAX, &merges[2 * i + k], err) != 0)
                goto done;
        }
    }
    int32_t m = (int32_t)nm;
    json_t *js = json_object_get(root, "special");
    size_t ns = js ? json_object_size(js) : 0;
    if (js && !json_is_object(js)) {
        *err = rt_fmt("%s: \"special\" must be an object of text: id", path);
        goto done;
    }
    if (ns > 4096) {
        *err = rt_fmt("%s: %zu special tokens are too many (4096 at most)", path, ns);
        goto done;
    }
    special = calloc(ns ? ns : 1, sizeof *special);
    if (!special) {
        *err = rt_fmt("%s: out of memory", path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(js, key, val) {
        char where[80];
        snprintf(where, sizeof where, "special \"%.40s\"", key);
        int32_t id;
        if (get_int(path, where, val, 256 + m, 256 + m + (int32_t)ns - 1, &id, err) != 0)
            goto done;
        if (special[id - 256 - m]) {
            *err = rt_fmt("%s: special \"%s\" and \"%s\" both have id %d", path, special[id - 256 - m], key, id);
            goto done;
        }
        special[id - 256 - m] = key;
    }
    json_t *jv = json_object_get(root, "vocab_size");
    if (jv && (!json_is_integer(jv) || json_integer_value(jv) != 256 + m + (json_int_t)ns)) {
        *err = rt_fmt("%s: \"vocab_size\" must be 256 + merges + special = %lld", path,
                   (long long)(256 + m + (json_int_t)ns));
        goto done;
    }
    t = rt_tok_new(have_bytes ? byte_ids : NULL, merges, m, special, (int)ns, err);
    if (!t)
        prefix_err(path, err);
done:
    free(merges);
    free(special);
    json_decref(root);
    return t;
}

/* --- GPT-2's files -------------------------------------------------------- */

RtTokenizer *rt_tok_load_gpt2(const char *encoder_json, const char *vocab_bpe, char **err)
{
    json_t *enc = load_json(encoder_json, err);
    if (!enc)
        return NULL;
    RtTokenizer *t = NULL;
    char *bpe = NULL, *pair = NULL;
    int32_t *merges = NULL, byte_ids[256];
    const char **by_id = NULL;
    size_t bpe_len, pair_cap = 0;
    if (!json_is_object(enc)) {
        *err = rt_fmt("%s: expected a JSON object of token: id", encoder_json);
        goto done;
    }
    size_t nv = json_object_size(enc);
    if (nv < 256 || nv > (size_t)INT32_MAX / 2) {
        *err = rt_fmt("%s: %zu tokens; a byte-level vocabulary has at least 256", encoder_json, nv);
        goto done;
    }
    by_id = calloc(nv, sizeof *by_id);
    if (!by_id) {
        *err = rt_fmt("%s: out of memory", encoder_json);
        goto done;
    }
    for (int b = 0; b < 256; b++)
        byte_ids[b] = -1;
    const char *key;
    json_t *val;
    json_object_foreach(enc, key, val) {
        int32_t id;
        char where[80];
        snprintf(where, sizeof where, "token \"%.40s\"", key);
        if (get_int(encoder_json, where, val, 0, (int32_t)nv - 1, &id, err) != 0)
            goto done;
        if (by_id[id]) {
            *err = rt_fmt("%s: tokens \"%s\" and \"%s\" both have id %d", encoder_json, by_id[id], key, id);
            goto done;
        }
        by_id[id] = key;
        unsigned char one[8];
        if (strlen(key) <= 2 && rt_tok_alphabet_bytes(key, one) == 1)
            byte_ids[one[0]] = id;
    }
    for (int b = 0; b < 256; b++) {
        if (byte_ids[b] < 0) {
            *err = rt_fmt("%s: no token for byte %d (GPT-2's alphabet spells it U+%04X)", encoder_json, b,
                       (unsigned)rt_tok_alphabet_char(b));
            goto done;
        }
        if (byte_ids[b] > 255) {
            *err = rt_fmt("%s: byte %d has id %d; Strata needs the bytes to be ids 0..255", encoder_json, b,
                       byte_ids[b]);
            goto done;
        }
    }

    /* vocab.bpe: "#version: 0.2", then "LEFT RIGHT" per merge */
    if (rt_tok_read_file(vocab_bpe, &bpe, &bpe_len, err) != 0)
        goto done;
    merges = malloc(sizeof(int32_t) * 2 * nv);
    if (!merges) {
        *err = rt_fmt("%s: out of memory", vocab_bpe);
        goto done;
    }
    int32_t m = 0;
    long line = 0;
    for (char *p = bpe, *end = bpe + bpe_len; p < end;) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        char *q = eol;
        if (q > p && q[-1] == '\r')
            q--;
        *q = 0;
        line++;
        char *l = p;
        p = eol + 1;
        if ((line == 1 && strncmp(l, "#version", 8) == 0) || *l == 0)
            continue;
        char *sp = strchr(l, ' ');
        if (!sp || sp == l || sp[1] == 0 || strchr(sp + 1, ' ')) {
            *err = rt_fmt("%s:%ld: expected two tokens separated by one space", vocab_bpe, line);
            goto done;
        }
        *sp = 0;
        const char *parts[2] = {l, sp + 1};
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(enc, parts[k]);
            if (!v) {
                *err = rt_fmt("%s:%ld: token \"%s\" is not in %s", vocab_bpe, line, parts[k], encoder_json);
                goto done;
            }
            merges[2 * m + k] = (int32_t)json_integer_value(v);
        }
        size_t need = strlen(l) + strlen(sp + 1) + 1;
        if (need > pair_cap) {
            free(pair);
            pair_cap = 2 * need;
            pair = malloc(pair_cap);
            if (!pair) {
                *err = rt_fmt("%s: out of memory", vocab_bpe);
                goto done;
            }
        }
        snprintf(pair, pair_cap, "%s%s", l, sp + 1);
        json_t *v = json_object_get(enc, pair);
        if (!v) {
            *err = rt_fmt("%s:%ld: the merge of \"%s\" and \"%s\" makes \"%s\", which is not in %s", vocab_bpe, line, l,
                       sp + 1, pair, encoder_json);
            goto done;
        }
        if (json_integer_value(v) != 256 + m) {
            *err = rt_fmt("%s:%ld: merge %d makes \"%s\", id %lld in %s; Strata needs merge i to make id 256 + i "
                       "(%d)", vocab_bpe, line, m, pair, (long long)json_integer_value(v), encoder_json, 256 + m);
            goto done;
        }
        if ((size_t)++m + 256 > nv) {
            *err = rt_fmt("%s:%ld: more merges than %s has tokens", vocab_bpe, line, encoder_json);
            goto done;
        }
    }
    /* ids past the merges: special tokens, their keys as they are */
    const char **special = by_id + 256 + m;
    int ns = (int)(nv - 256 - (size_t)m);
    t = rt_tok_new(byte_ids, merges, m, special, ns, err);
    if (!t)
        prefix_err(vocab_bpe, err);
done:
    free(pair);
    free(merges);
    free(bpe);
    free(by_id);
    json_decref(enc);
    return t;
}
