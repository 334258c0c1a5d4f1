/* tokenizer_hf.c - Hugging Face tokenizer files: tokenizer.json (the
 * `tokenizers` library's format) read and written, and tokenizer_config.json
 * written, for the byte-level BPE of tokenizer.h; and GPT-2's byte alphabet
 * that spells a token's bytes as a string in both GPT-2's and HF's files.
 * Entry points: rt_tok_from_hf (rt_tok_load calls it for a file with a
 * "model" member), rt_tok_save_hf, rt_tok_save_hf_config,
 * rt_tok_save_hf_dir, rt_tok_alphabet_bytes, rt_tok_alphabet_char.  Errors are malloc'd "PATH: what" messages.
 *
 * What is read: model BPE with vocab (token -> id) and merges ("a b" or
 * ["a", "b"]), pre_tokenizer ByteLevel with use_regex and without
 * add_prefix_space, decoder ByteLevel (or none), no normalizer, no dropout,
 * byte fallback or word affixes; added_tokens past the merges become
 * special tokens.  Strata's layout must fit: the 256 byte tokens are ids
 * 0..255, merge i makes id 256 + i, the rest are added tokens.  GPT-2's own
 * tokenizer.json and every file written here fit; anything else is refused
 * with the member and the id that do not. */
#define _GNU_SOURCE /* open_memstream */
#include "data/tokenizer.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/atomic_file.h"
#include "data/tokenizer_impl.h"

/* --- GPT-2's byte alphabet -------------------------------------------------- */

/* bytes_to_unicode of GPT-2: bytes that are printable Latin-1 (and not
 * U+00AD) stand for themselves; the other 68, in byte order, are U+0100
 * on.  The code point of byte b. */
uint32_t rt_tok_alphabet_char(int b)
{
    static uint32_t cp[256];
    static bool made;
    if (!made) { /* idempotent, so a race only writes the same values twice */
        uint32_t next = 256;
        for (int c = 0; c < 256; c++) {
            bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
            cp[c] = printable ? (uint32_t)c : next++;
        }
        made = true;
    }
    return cp[b];
}

long rt_tok_alphabet_bytes(const char *s, unsigned char *out)
{
    static int byte_of[324]; /* code point < 324 -> byte, -1 if none */
    static bool made;
    if (!made) {
        for (int c = 0; c < 324; c++)
            byte_of[c] = -1;
        for (int b = 0; b < 256; b++)
            byte_of[rt_tok_alphabet_char(b)] = b;
        made = true;
    }
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    while (*p) {
        uint32_t c;
        if (p[0] < 0x80) {
            c = p[0];
            p++;
        } else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            c = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
            p += 2;
        } else {
            return -1;
        }
        if (c >= 324 || byte_of[c] < 0)
            return -1;
        out[n++] = (unsigned char)byte_of[c];
    }
    return n;
}

/* Appends the alphabet spelling of bytes s[0..n) to f (UTF-8, 1-2 bytes each). */
static void put_alphabet(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = rt_tok_alphabet_char((unsigned char)s[i]);
        if (c < 0x80)
            putc((int)c, f);
        else {
            putc((int)(0xC0 | c >> 6), f);
            putc((int)(0x80 | (c & 0x3F)), f);
        }
    }
}

/* --- reading tokenizer.json ------------------------------------------------- */

/* Whether member `key` of object o is absent, null, false or "" (a feature
 * Strata does not have, left off). */
static bool off(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return !v || json_is_null(v) || json_is_false(v) || (json_is_string(v) && !*json_string_value(v));
}

/* NULL when v is {"type": "ByteLevel", ...}, with use_regex (default
 * true) and without add_prefix_space when it is the pre-tokenizer (the
 * decoder ignores both); else what differs (malloc'd). */
static char *byte_level(json_t *v, const char *what, bool pre)
{
    json_t *t = json_object_get(v, "type");
    if (!json_is_string(t) || strcmp(json_string_value(t), "ByteLevel"))
        return rt_fmt("\"%s\" is %s, not ByteLevel (Strata reads byte-level BPE with GPT-2's pre-tokenizer)", what,
                      json_is_string(t) ? json_string_value(t) : "not an object with a type");
    if (!pre)
        return NULL;
    if (!off(v, "add_prefix_space"))
        return rt_fmt("\"%s\": add_prefix_space is true; Strata does not add a space in front of the text", what);
    json_t *re = json_object_get(v, "use_regex");
    if (re && !json_is_true(re))
        return rt_fmt("\"%s\": use_regex is false; Strata always splits with GPT-2's regex", what);
    return NULL;
}

/* The id of a vocab token, or -1 (with *err) when absent or not an id. */
static int32_t vocab_id(json_t *vocab, const char *tok, const char *where, char **err)
{
    json_t *v = json_object_get(vocab, tok);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX) {
        *err = rt_fmt("%s: token \"%s\" is %s", where, tok, v ? "not an id" : "not in model.vocab");
        return -1;
    }
    return (int32_t)json_integer_value(v);
}

RtTokenizer *rt_tok_from_hf(json_t *root, const char *path, char **err)
{
    RtTokenizer *t = NULL;
    int32_t *merges = NULL;
    char **by_id = NULL, *pair = NULL, *e = NULL;
    const char **special = NULL;
    size_t nv = 0;
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    json_t *jm = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
    json_t *type = json_object_get(model, "type");
    /* the pipeline */
    if (!json_is_string(type) || strcmp(json_string_value(type), "BPE"))
        e = rt_fmt("model type %s is not supported (Strata reads byte-level BPE)",
                   json_is_string(type) ? json_string_value(type) : "(none)");
    else if (!json_is_object(vocab) || !json_is_array(jm))
        e = rt_fmt("model.vocab must be an object of token: id and model.merges an array");
    else if (!off(root, "normalizer"))
        e = rt_fmt("a normalizer is set; Strata encodes the text as it is");
    else if ((e = byte_level(json_object_get(root, "pre_tokenizer"), "pre_tokenizer", true)))
        ;
    else if (!off(root, "decoder") && (e = byte_level(json_object_get(root, "decoder"), "decoder", false)))
        ;
    else if (!off(model, "dropout") || !off(model, "byte_fallback") || !off(model, "continuing_subword_prefix") ||
             !off(model, "end_of_word_suffix") || !off(model, "ignore_merges"))
        e = rt_fmt("model sets dropout, byte_fallback, a subword prefix or suffix, or ignore_merges; Strata's BPE "
                   "has none of them");
    else if (added && !json_is_array(added))
        e = rt_fmt("added_tokens must be an array");
    if (e)
        goto done;

    /* ids: the vocab, then the added tokens */
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX / 2) {
            e = rt_fmt("model.vocab: token \"%.40s\" does not have an id from 0", key);
            goto done;
        }
        if ((size_t)json_integer_value(val) + 1 > nv)
            nv = (size_t)json_integer_value(val) + 1;
    }
    size_t ia;
    json_array_foreach(added, ia, val) {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX / 2 ||
            !json_is_string(json_object_get(val, "content"))) {
            e = rt_fmt("added_tokens[%zu]: expected an object with an id and a content", ia);
            goto done;
        }
        if ((size_t)json_integer_value(id) + 1 > nv)
            nv = (size_t)json_integer_value(id) + 1;
    }
    by_id = calloc(nv + 1, sizeof *by_id);
    merges = malloc(sizeof(int32_t) * 2 * (json_array_size(jm) + 1));
    if (!by_id || !merges) {
        e = rt_fmt("out of memory");
        goto done;
    }
    json_object_foreach(vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        if (by_id[id]) {
            e = rt_fmt("model.vocab: tokens \"%s\" and \"%s\" both have id %zu", by_id[id], key, id);
            goto done;
        }
        by_id[id] = (char *)key;
    }

    /* the bytes: ids 0..255, a permutation */
    int32_t byte_ids[256];
    for (int b = 0; b < 256; b++) {
        char spelt[4] = {0};
        uint32_t c = rt_tok_alphabet_char(b);
        if (c < 0x80)
            spelt[0] = (char)c;
        else
            spelt[0] = (char)(0xC0 | c >> 6), spelt[1] = (char)(0x80 | (c & 0x3F));
        byte_ids[b] = vocab_id(vocab, spelt, "model.vocab", &e);
        if (byte_ids[b] < 0) {
            free(e);
            e = rt_fmt("model.vocab: no token for byte %d (spelt U+%04X in the byte alphabet)", b, (unsigned)c);
            goto done;
        }
        if (byte_ids[b] > 255) {
            e = rt_fmt("model.vocab: byte %d has id %d; Strata needs the bytes to be ids 0..255", b, byte_ids[b]);
            goto done;
        }
    }

    /* merges: merge i makes id 256 + i */
    int32_t m = 0;
    size_t pair_cap = 0;
    size_t im;
    json_array_foreach(jm, im, val) {
        const char *parts[2] = {NULL, NULL};
        char *sp = NULL;
        if (json_is_string(val)) { /* "a b": the alphabet has no space, so one space splits it */
            const char *s = json_string_value(val);
            size_t need = strlen(s) + 1;
            if (need > pair_cap) {
                free(pair);
                pair_cap = 2 * need;
                if (!(pair = malloc(pair_cap))) {
                    e = rt_fmt("out of memory");
                    goto done;
                }
            }
            memcpy(pair, s, need);
            sp = strchr(pair, ' ');
            if (sp && sp != pair && sp[1] && !strchr(sp + 1, ' ')) {
                *sp = 0;
                parts[0] = pair, parts[1] = sp + 1;
            }
        } else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) {
            parts[0] = json_string_value(json_array_get(val, 0));
            parts[1] = json_string_value(json_array_get(val, 1));
        }
        if (!parts[0]) {
            e = rt_fmt("model.merges[%zu]: expected \"left right\" or [\"left\", \"right\"]", im);
            goto done;
        }
        char where[48];
        snprintf(where, sizeof where, "model.merges[%zu]", im);
        for (int k = 0; k < 2; k++)
            if ((merges[2 * m + k] = vocab_id(vocab, parts[k], where, &e)) < 0)
                goto done;
        char *joined = rt_fmt("%s%s", parts[0], parts[1]);
        json_t *r = json_object_get(vocab, joined);
        if (!json_is_integer(r) || json_integer_value(r) != 256 + m)
            e = r ? rt_fmt("%s makes \"%s\", id %lld; Strata needs merge i to make id 256 + i (%d)", where, joined,
                           (long long)json_integer_value(r), 256 + m)
                  : rt_fmt("%s makes \"%s\", which is not in model.vocab", where, joined);
        free(joined);
        if (e)
            goto done;
        m++;
    }

    /* ids past the merges: special tokens, in id order, with no gap: the
     * added tokens, and vocab tokens no merge makes (as GPT-2's files) */
    int ns = (int)(nv - 256 - (size_t)m);
    special = calloc((size_t)ns + 1, sizeof *special);
    if (!special) {
        e = rt_fmt("out of memory");
        goto done;
    }
    json_array_foreach(added, ia, val) {
        int64_t id = json_integer_value(json_object_get(val, "id"));
        const char *content = json_string_value(json_object_get(val, "content"));
        if (id < 256 + m) {
            e = rt_fmt("added_tokens[%zu]: \"%s\" has id %lld, among the bytes and merges; Strata needs added tokens "
                       "after the merges (ids %d on)",
                       ia, content, (long long)id, 256 + m);
            goto done;
        }
        if (!off(val, "lstrip") || !off(val, "rstrip") || !off(val, "single_word")) {
            e = rt_fmt("added_tokens[%zu]: \"%s\" sets lstrip, rstrip or single_word, which Strata does not have", ia,
                       content);
            goto done;
        }
        if (by_id[id] && strcmp(by_id[id], content)) {
            e = rt_fmt("added_tokens[%zu]: id %lld is \"%s\" in model.vocab but \"%s\" here", ia, (long long)id,
                       by_id[id], content);
            goto done;
        }
        special[id - 256 - m] = content;
    }
    for (int k = 0; k < ns; k++) {
        if (!special[k])
            special[k] = by_id[256 + m + k];
        if (!special[k]) {
            e = rt_fmt("id %d is not defined (neither in model.vocab nor in added_tokens), but id %zu is", 256 + m + k,
                       nv - 1);
            goto done;
        }
    }
    t = rt_tok_new(byte_ids, merges, m, special, ns, &e);
done:
    if (!t) {
        *err = rt_fmt("%s: %s", path, e ? e : "invalid tokenizer");
        free(e);
    }
    free(pair);
    free(merges);
    free(by_id);
    free(special);
    return t;
}

/* --- writing ------------------------------------------------------------- */

/* A JSON string of text[0..n) (escaped by jansson), malloc'd; NULL if the
 * text is not valid UTF-8. */
static char *quoted(const char *text, size_t n)
{
    json_t *js = json_stringn(text, n);
    char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    json_decref(js);
    return q;
}

/* The alphabet spelling of token id, as a JSON string (malloc'd). */
static char *spelt(const RtTokenizer *t, int32_t id)
{
    size_t n;
    const char *b = rt_tok_token(t, id, &n);
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    put_alphabet(f, b, n);
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    char *q = quoted(s, len);
    free(s);
    return q;
}

/* Closes the memory stream f (whose text open_memstream puts in *buf,
 * *n), writes the text to path atomically and frees it; 0 or -1 with *err. */
static int finish(FILE *f, char **buf, size_t *n, const char *path, char **err)
{
    if (fclose(f) != 0 || !*buf) {
        free(*buf);
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int rc = rt_atomic_write_file(path, *buf, *n, err);
    free(*buf);
    return rc;
}

int rt_tok_save_hf(const RtTokenizer *t, const char *path, char **err)
{
    int32_t nv = rt_tok_vocab_size(t), m = rt_tok_n_merges(t), s = rt_tok_n_special(t);
    /* HF's vocab maps each spelling to one id: two ids with the same bytes do not fit */
    size_t cap = 16;
    while (cap < 2 * (size_t)nv)
        cap *= 2;
    int32_t *slot = malloc(cap * sizeof *slot);
    if (!slot) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        slot[i] = -1;
    for (int32_t id = 0; id < nv; id++) {
        size_t n, n2;
        const char *b = rt_tok_token(t, id, &n);
        size_t i = rt_tok_hash(b, n) & (cap - 1);
        for (; slot[i] >= 0; i = (i + 1) & (cap - 1)) {
            const char *b2 = rt_tok_token(t, slot[i], &n2);
            if (n2 == n && !memcmp(b, b2, n)) {
                *err = rt_fmt("%s: ids %d and %d are the same bytes; tokenizer.json maps each token's text to one "
                              "id, so this tokenizer cannot be written in Hugging Face's format",
                              path, slot[i], id);
                free(slot);
                return -1;
            }
        }
        slot[i] = id;
    }
    free(slot);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    fprintf(f, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int32_t k = 0; k < s; k++) {
        const char *text = rt_tok_special_text(t, k);
        char *q = quoted(text, strlen(text));
        if (!q) {
            fclose(f), free(buf);
            *err = rt_fmt("%s: special token %d is not valid UTF-8", path, 256 + m + k);
            return -1;
        }
        fprintf(f, "%s\n    {\"id\": %d, \"content\": %s, \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true}",
                k ? "," : "", 256 + m + k, q);
        free(q);
    }
    fprintf(f, "%s],\n  \"normalizer\": null,\n", s ? "\n  " : "");
    fprintf(f, "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
               "\"use_regex\": true},\n");
    fprintf(f, "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, "
               "\"use_regex\": true},\n");
    fprintf(f, "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
               "\"use_regex\": true},\n");
    fprintf(f, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
               "    \"continuing_subword_prefix\": \"\",\n    \"end_of_word_suffix\": \"\",\n"
               "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
               "    \"vocab\": {");
    int bad = 0;
    for (int32_t id = 0; id < nv && !bad; id++) {
        /* special tokens are in the vocab too, as they are (GPT-2's file does that) */
        char *q = id < 256 + m ? spelt(t, id) : quoted(rt_tok_special_text(t, id - 256 - m),
                                                        strlen(rt_tok_special_text(t, id - 256 - m)));
        bad = !q;
        if (q)
            fprintf(f, "%s\n      %s: %d", id ? "," : "", q, id);
        free(q);
    }
    fprintf(f, "\n    },\n    \"merges\": [");
    for (int32_t i = 0; i < m && !bad; i++) {
        int32_t a, b;
        rt_tok_merge(t, i, &a, &b);
        char *qa = spelt(t, a), *qb = spelt(t, b);
        bad = !qa || !qb;
        if (!bad) /* "A B": the two spellings without their closing and opening quotes */
            fprintf(f, "%s\n      %.*s %s", i ? "," : "", (int)strlen(qa) - 1, qa, qb + 1);
        free(qa), free(qb);
    }
    fprintf(f, "%s]\n  }\n}\n", m ? "\n    " : "");
    if (bad) {
        fclose(f), free(buf);
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    return finish(f, &buf, &len, path, err);
}

int rt_tok_save_hf_config(const RtTokenizer *t, int64_t max_length, const char *path, char **err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int32_t eot = rt_tok_eot(t), m = rt_tok_n_merges(t);
    char *q = eot >= 0 ? quoted(RT_TOK_EOT_TEXT, strlen(RT_TOK_EOT_TEXT)) : NULL;
    const char *tok = q ? q : "null";
    fprintf(f, "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"add_bos_token\": false,\n"
               "  \"add_eos_token\": false,\n  \"add_prefix_space\": false,\n"
               "  \"clean_up_tokenization_spaces\": false,\n");
    fprintf(f, "  \"bos_token\": %s,\n  \"eos_token\": %s,\n  \"unk_token\": %s,\n", tok, tok, tok);
    if (max_length >= 1)
        fprintf(f, "  \"model_max_length\": %lld,\n", (long long)max_length);
    fprintf(f, "  \"added_tokens_decoder\": {");
    for (int32_t k = 0; k < rt_tok_n_special(t); k++) {
        const char *text = rt_tok_special_text(t, k);
        char *qt = quoted(text, strlen(text));
        fprintf(f, "%s\n    \"%d\": {\"content\": %s, \"lstrip\": false, \"normalized\": false, \"rstrip\": false, "
                   "\"single_word\": false, \"special\": true}",
                k ? "," : "", 256 + m + k, qt ? qt : "\"\"");
        free(qt);
    }
    fprintf(f, "%s}\n}\n", rt_tok_n_special(t) ? "\n  " : "");
    free(q);
    return finish(f, &buf, &len, path, err);
}

int rt_tok_save_hf_dir(const RtTokenizer *t, const char *dir, int64_t max_length, char **err)
{
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && !(errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))) {
        *err = rt_fmt("cannot create the directory %s: %s", dir, errno == EEXIST ? "a file is in the way"
                                                                               : strerror(errno));
        return -1;
    }
    char *p1 = rt_fmt("%s/tokenizer.json", dir), *p2 = rt_fmt("%s/tokenizer_config.json", dir);
    int rc = rt_tok_save_hf(t, p1, err);
    if (!rc)
        rc = rt_tok_save_hf_config(t, max_length, p2, err);
    free(p1), free(p2);
    return rc;
}
