/* evaltask.c - task files, multiple-choice picks and answer extraction
 * (evaltask.h). */
#define _GNU_SOURCE /* asprintf */
#include "train/evaltask.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rt_mc_pick(const double *loglik, const char *const *choices, int n, int *raw, int *norm)
{
    *raw = *norm = 0;
    double best = loglik[0], best_norm = loglik[0] / (double)(strlen(choices[0]) ? strlen(choices[0]) : 1);
    for (int i = 1; i < n; i++) {
        double len = (double)(strlen(choices[i]) ? strlen(choices[i]) : 1);
        if (loglik[i] > best)
            best = loglik[i], *raw = i;
        if (loglik[i] / len > best_norm)
            best_norm = loglik[i] / len, *norm = i;
    }
}

static char *dup_or_die(const char *s)
{
    char *d = strdup(s);
    if (!d) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    return d;
}

static int item_from(json_t *o, RtMcItem *it, char **why)
{
    json_t *c = json_object_get(o, "context"), *ch = json_object_get(o, "choices"), *l = json_object_get(o, "label");
    if (!json_is_string(c) || !json_is_array(ch) || json_array_size(ch) < 2 || !json_is_integer(l)) {
        *why = dup_or_die("expected {\"context\": string, \"choices\": [at least 2 strings], \"label\": integer}");
        return -1;
    }
    int n = (int)json_array_size(ch);
    json_int_t label = json_integer_value(l);
    if (label < 0 || label >= n) {
        if (asprintf(why, "label %lld is not an index of the %d choices", (long long)label, n) < 0)
            *why = NULL;
        return -1;
    }
    it->context = dup_or_die(json_string_value(c));
    it->choices = calloc((size_t)n, sizeof *it->choices);
    it->nchoices = n;
    it->label = (int)label;
    for (int i = 0; i < n; i++) {
        json_t *s = json_array_get(ch, (size_t)i);
        if (!json_is_string(s)) {
            if (asprintf(why, "choice %d is not a string", i) < 0)
                *why = NULL;
            return -1;
        }
        it->choices[i] = dup_or_die(json_string_value(s));
    }
    return 0;
}

int rt_mc_load(RtMcTask *t, const char *path, char **err)
{
    memset(t, 0, sizeof *t);
    *err = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (asprintf(err, "%s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int64_t cap_items = 0;
    ssize_t len;
    for (int64_t lineno = 1; (len = getline(&line, &cap, f)) >= 0; lineno++) {
        size_t k = strspn(line, " \t\r\n");
        if (line[k] == 0)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        char *why = NULL;
        if (!o)
            (void)!asprintf(&why, "bad JSON at column %d: %s", je.column, je.text);
        else if (!json_is_object(o))
            why = dup_or_die("a record must be a JSON object");
        if (!why) {
            if (t->n == cap_items) {
                cap_items = cap_items ? 2 * cap_items : 64;
                t->items = realloc(t->items, (size_t)cap_items * sizeof *t->items);
                if (!t->items) {
                    fprintf(stderr, "strata: out of memory\n");
                    exit(3);
                }
            }
            memset(&t->items[t->n], 0, sizeof t->items[t->n]);
            item_from(o, &t->items[t->n], &why);
            t->n++; /* counted even when incomplete, so rt_mc_free releases it */
        }
        json_decref(o);
        if (why) {
            if (asprintf(err, "%s:%lld: %s", path, (long long)lineno, why) < 0)
                *err = NULL;
            free(why);
            free(line);
            fclose(f);
            rt_mc_free(t);
            return -1;
        }
    }
    free(line);
    fclose(f);
    return 0;
}

void rt_mc_free(RtMcTask *t)
{
    for (int64_t i = 0; i < t->n; i++) {
        free(t->items[i].context);
        for (int j = 0; j < t->items[i].nchoices && t->items[i].choices; j++)
            free(t->items[i].choices[j]);
        free(t->items[i].choices);
    }
    free(t->items);
    memset(t, 0, sizeof *t);
}

/* Writes s[0..len) trimmed into out; numbers normalized (see the header). */
static bool normalize(const char *s, size_t len, char *out, size_t n)
{
    while (len && isspace((unsigned char)*s))
        s++, len--;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (!len || n == 0)
        return false;
    /* Is it a number once '$' and ',' are removed? */
    char buf[128];
    size_t b = 0;
    bool numeric = true;
    for (size_t i = 0; i < len && numeric; i++) {
        char c = s[i];
        if (c == '$' || c == ',')
            continue;
        if (!(isdigit((unsigned char)c) || c == '.' || (c == '-' && b == 0)) || b + 1 >= sizeof buf)
            numeric = false;
        else
            buf[b++] = c;
    }
    if (numeric && b > 0) {
        buf[b] = 0;
        if (b && buf[b - 1] == '.')
            buf[--b] = 0;
        if (strchr(buf, '.')) { /* 18.00 -> 18, 2.50 -> 2.5 */
            while (b && buf[b - 1] == '0')
                buf[--b] = 0;
            if (b && buf[b - 1] == '.')
                buf[--b] = 0;
        }
        if (b == 0 || (b == 1 && buf[0] == '-'))
            return false;
        snprintf(out, n, "%s", buf);
        return true;
    }
    snprintf(out, n, "%.*s", (int)len, s);
    return true;
}

bool rt_extract_answer(const char *text, const char *rule, char *out, size_t n, bool *bad_rule)
{
    *bad_rule = false;
    if (!strcmp(rule, "gsm8k")) {
        const char *p = NULL;
        for (const char *q = strstr(text, "####"); q; q = strstr(q + 4, "####"))
            p = q + 4;
        if (!p)
            return false;
        size_t len = strcspn(p, "\n");
        return normalize(p, len, out, n);
    }
    if (!strcmp(rule, "last-number")) {
        const char *best = NULL;
        size_t best_len = 0;
        for (const char *p = text; *p;) {
            if (isdigit((unsigned char)*p) || (*p == '-' && isdigit((unsigned char)p[1]))) {
                const char *start = p++;
                while (isdigit((unsigned char)*p) || ((*p == ',' || *p == '.') && isdigit((unsigned char)p[1])))
                    p++;
                best = start;
                best_len = (size_t)(p - start);
            } else {
                p++;
            }
        }
        return best && normalize(best, best_len, out, n);
    }
    if (!strcmp(rule, "first-line")) {
        for (const char *p = text; *p;) {
            size_t len = strcspn(p, "\n");
            if (normalize(p, len, out, n))
                return true;
            p += len + (p[len] ? 1 : 0);
        }
        return false;
    }
    *bad_rule = true;
    return false;
}

size_t rt_cut_at_stop(char *text, const char *stop)
{
    char *p = stop && *stop ? strstr(text, stop) : NULL;
    if (p)
        *p = 0;
    return strlen(text);
}
