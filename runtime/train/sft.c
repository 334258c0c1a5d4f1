/* sft.c - fine-tuning records to masked token rows (sft.h).  JSON through
 * jansson; the template and the mask rule are documented in sft.h. */
#define _GNU_SOURCE /* vasprintf */
#include "train/sft.h"
#include "core/util.h"

#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A growing token row with its response flags. */
typedef struct Row {
    int32_t *tok;
    uint8_t *resp;
    int64_t n, cap;
} Row;

static void *xrealloc_or_die(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    return q;
}

static void row_push(Row *r, const int32_t *ids, int64_t n, uint8_t resp)
{
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2 + 16;
        r->tok = xrealloc_or_die(r->tok, (size_t)r->cap * sizeof *r->tok);
        r->resp = xrealloc_or_die(r->resp, (size_t)r->cap);
    }
    memcpy(r->tok + r->n, ids, (size_t)n * sizeof *ids);
    memset(r->resp + r->n, resp, (size_t)n);
    r->n += n;
}

static int push_text(Row *r, const char *text, uint8_t resp, RtEncodeFn encode, void *ctx)
{
    int32_t *ids = NULL;
    int64_t n = encode(ctx, text, strlen(text), &ids);
    if (n < 0)
        return -1;
    row_push(r, ids, n, resp);
    free(ids);
    return 0;
}

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Builds the row of one record; returns NULL on success or an error text. */
static char *record_row(json_t *o, Row *r, RtEncodeFn encode, void *ctx, int32_t eot)
{
    const char *p = str_field(o, "prompt"), *resp = str_field(o, "response");
    const char *ins = str_field(o, "instruction"), *in = str_field(o, "input"), *out = str_field(o, "output");
    const char *q = str_field(o, "question"), *a = str_field(o, "answer");
    json_t *msgs = json_object_get(o, "messages");
    char *prompt = NULL;
    if (p && resp) {
        prompt = rt_fmt("### Prompt:\n%s\n### Response:\n", p);
    } else if (ins && out) {
        prompt = in && *in ? rt_fmt("### Prompt:\n%s\n\n%s\n### Response:\n", ins, in)
                           : rt_fmt("### Prompt:\n%s\n### Response:\n", ins);
        resp = out;
    } else if (q && a) {
        prompt = rt_fmt("### Prompt:\n%s\n### Response:\n", q);
        resp = a;
    } else if (json_is_array(msgs)) {
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) {
            const char *role = str_field(m, "role"), *content = str_field(m, "content");
            if (!role || !content)
                return rt_fmt("message %zu needs string \"role\" and \"content\"", i + 1);
            const char *Role = !strcmp(role, "system") ? "System" : !strcmp(role, "user") ? "User"
                             : !strcmp(role, "assistant") ? "Assistant" : NULL;
            if (!Role)
                return rt_fmt("message %zu has role \"%s\" (expected system, user or assistant)", i + 1, role);
            char *head = rt_fmt("### %s:\n", Role);
            int rc = push_text(r, head, 0, encode, ctx);
            free(head);
            bool assistant = Role[0] == 'A';
            if (rc || push_text(r, content, assistant, encode, ctx))
                return rt_fmt("the tokenizer failed");
            if (assistant)
                row_push(r, &eot, 1, 1);
            if (push_text(r, "\n", 0, encode, ctx))
                return rt_fmt("the tokenizer failed");
        }
        return NULL;
    } else {
        return rt_fmt("expected {\"prompt\",\"response\"}, {\"instruction\",\"input\",\"output\"}, "
                   "{\"question\",\"answer\"} or {\"messages\":[...]} with string values");
    }
    if (!prompt)
        return rt_fmt("out of memory");
    int rc = push_text(r, prompt, 0, encode, ctx);
    free(prompt);
    if (rc || push_text(r, resp, 1, encode, ctx))
        return rt_fmt("the tokenizer failed");
    row_push(r, &eot, 1, 1);
    return NULL;
}

static void keep(RtSftSet *set, Row *r, int64_t T)
{
    if (r->n > T + 1) {
        r->n = T + 1;
        set->truncated++;
    }
    int64_t targets = 0; /* response tokens at positions 1..n-1 are targets */
    for (int64_t i = 1; i < r->n; i++)
        targets += r->resp[i];
    if (targets == 0) {
        set->skipped++;
        free(r->tok);
        free(r->resp);
        return;
    }
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 64;
        set->ex = xrealloc_or_die(set->ex, (size_t)set->cap * sizeof *set->ex);
    }
    set->ex[set->n++] = (RtSftExample){r->tok, r->resp, r->n};
    set->response_tokens += targets;
}

int rt_sft_load_text(RtSftSet *set, const char *name, const char *text, size_t len, int64_t T,
                     RtEncodeFn encode, void *ctx, int32_t eot, char **err)
{
    memset(set, 0, sizeof *set);
    *err = NULL;
    size_t pos = 0;
    for (int64_t line = 1; pos < len; line++) {
        const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        size_t k = 0;
        while (k < n && (start[k] == ' ' || start[k] == '\t' || start[k] == '\r'))
            k++;
        if (k == n)
            continue;
        set->records++;
        json_error_t je;
        json_t *o = json_loadb(start, n, 0, &je);
        if (!o || !json_is_object(o)) {
            *err = o ? rt_fmt("%s:%lld: a record must be a JSON object", name, (long long)line)
                     : rt_fmt("%s:%lld:%d: bad JSON: %s", name, (long long)line, je.column, je.text);
            json_decref(o);
            rt_sft_free(set);
            return -1;
        }
        Row r = {0};
        char *why = record_row(o, &r, encode, ctx, eot);
        json_decref(o);
        if (why) {
            *err = rt_fmt("%s:%lld: %s", name, (long long)line, why);
            free(why);
            free(r.tok);
            free(r.resp);
            rt_sft_free(set);
            return -1;
        }
        keep(set, &r, T);
    }
    return 0;
}

int rt_sft_load(RtSftSet *set, const char *path, int64_t T, RtEncodeFn encode, void *ctx, int32_t eot,
                char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 65536 > cap)
            buf = xrealloc_or_die(buf, cap = (len + 65536) * 2);
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        *err = rt_fmt("%s: read error", path);
        return -1;
    }
    int rc = rt_sft_load_text(set, path, buf, len, T, encode, ctx, eot, err);
    free(buf);
    return rc;
}

void rt_sft_free(RtSftSet *set)
{
    for (int64_t i = 0; i < set->n; i++) {
        free(set->ex[i].tokens);
        free(set->ex[i].response);
    }
    free(set->ex);
    set->ex = NULL;
    set->n = set->cap = 0;
}

void rt_sft_batch(const RtSftSet *set, int64_t first, int64_t B, int64_t T, int32_t eot, int32_t *tokens,
                  int32_t *targets, float *mask)
{
    for (int64_t b = 0; b < B; b++) {
        const RtSftExample *e = &set->ex[(first + b) % set->n];
        for (int64_t i = 0; i < T; i++) {
            int64_t r = b * T + i;
            tokens[r] = i < e->n ? e->tokens[i] : eot;
            bool has_target = i + 1 < e->n;
            targets[r] = has_target ? e->tokens[i + 1] : eot;
            mask[r] = has_target && e->response[i + 1] ? 1.0f : 0.0f; /* the shift: target i is token i+1 */
        }
    }
}
