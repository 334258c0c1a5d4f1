/* evaltask.c - `evaltask` (commands.h): the model side of task evaluation
 * (evaltask.h has the task files, picks and answer rules).
 *
 *   --kind mc   for every item and choice, loglik = the sum of log p(token)
 *               over the choice's tokens after the context, the choices of
 *               an item batched as rows of one strata_forward call; acc and
 *               acc_norm as lm-evaluation-harness (evaltask.h).  Encoding
 *               as the harness: trailing spaces of the context move to the
 *               choice, the choice's tokens are those of context + choice
 *               after the context's, an empty context is EOT; a row longer
 *               than --seq + 1 tokens keeps its last --seq + 1.
 *   --kind gen  greedy decoding of --batch items at a time (rows of one
 *               forward call, each row its own length, the last --seq
 *               tokens as the window), stopped by EOT, --max-tokens or the
 *               stop text; answer extraction by --rule, exact match.
 * Every buffer is made and freed in the command. */
#define _GNU_SOURCE /* asprintf, getline */
#include "cmd/commands.h"
#include "core/pool.h"
#include "core/util.h"
#include "train/evaltask.h"
#include "train/sample.h"
#include "data/tokenizer.h"

#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct EvalTaskOptions {
    const char *ckpt, *task, *kind, *tokenizer, *rule, *stop, *out, *template;
    int64_t max_tokens, limit, fewshot, batch, seq, threads;
    int quiet;
    bool given[15];
} EvalTaskOptions;

static const RtOptSpec specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(EvalTaskOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"task", "--task", RT_OPT_STR, 0, offsetof(EvalTaskOptions, task), "FILE.jsonl", "task items (required)"},
    {"kind", "--kind", RT_OPT_STR, 0, offsetof(EvalTaskOptions, kind), "mc|gen",
     "mc: {context,choices,label}; gen: {question|prompt|context, answer|response|target} (required)"},
    {"tokenizer", "--tokenizer", RT_OPT_STR, 0, offsetof(EvalTaskOptions, tokenizer), "FILE",
     "tokenizer (the checkpoint's, else raw bytes)"},
    {"rule", "--rule", RT_OPT_STR, 0, offsetof(EvalTaskOptions, rule), "R",
     "gen: answer extraction, gsm8k|last-number|first-line (first-line)"},
    {"stop", "--stop", RT_OPT_STR, 0, offsetof(EvalTaskOptions, stop), "TEXT",
     "gen: stop text (template sft: \"\\n###\", plain: \"\\n\\n\"; \"\" = none)"},
    {"max_tokens", "--max-tokens", RT_OPT_INT, 0, offsetof(EvalTaskOptions, max_tokens), "N",
     "gen: tokens generated at most (256)"},
    {"template", "--template", RT_OPT_STR, 0, offsetof(EvalTaskOptions, template), "sft|plain",
     "gen: sft's prompt template, or the text as it is (sft)"},
    {"fewshot", "--fewshot", RT_OPT_INT, 0, offsetof(EvalTaskOptions, fewshot), "K",
     "gen: the first K items become worked examples before each prompt, not scored (0)"},
    {"limit", "--limit", RT_OPT_INT, 0, offsetof(EvalTaskOptions, limit), "N", "score the first N items, 0 = all (0)"},
    {"out", "--out", RT_OPT_STR, 0, offsetof(EvalTaskOptions, out), "FILE", "per-item results, JSONL"},
    {"batch", "--batch", RT_OPT_INT, 0, offsetof(EvalTaskOptions, batch), "B", "rows per forward call (8)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(EvalTaskOptions, seq), "T", "window (the checkpoint's --seq)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(EvalTaskOptions, threads), "N", "pool threads (all CPUs)"},
    {"quiet", "--quiet", RT_OPT_FLAG, 0, offsetof(EvalTaskOptions, quiet), NULL, "only the accuracy line"},
};
#define NSPECS ((int)(sizeof specs / sizeof *specs))

/* What both kinds share. */
typedef struct Ctx {
    const RtModel *m;
    const char *prog;
    EvalTaskOptions *o;
    RtTokenizer *tok;
    char *tok_name;
    int32_t eot;
    float *params;
    RtPool *pool;
    void *arena;
    int64_t arena_bytes;
    float *logits;           /* (batch, seq, V) */
    int32_t *rows;           /* (batch, seq) */
    FILE *out;
} Ctx;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "strata: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    return p;
}

static void *xalloc64(size_t n)
{
    size_t bytes = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "strata: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static int64_t encode(Ctx *c, const char *text, size_t len, int32_t **ids)
{
    int64_t n = rt_tok_encode_ordinary(c->tok, text, len, ids);
    if (n < 0) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    return n;
}

static void out_line(Ctx *c, json_t *j)
{
    if (c->out) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10));
        if (s)
            fprintf(c->out, "%s\n", s);
        free(s);
    }
    json_decref(j);
}

/* --- multiple choice ------------------------------------------------------- */

/* A choice's row: the context's and the choice's tokens, cut to seq + 1. */
typedef struct McRow {
    int32_t *ids;            /* (n) */
    int64_t n, ncont;        /* tokens; of them, the choice's (at the end) */
} McRow;

static void mc_row(Ctx *c, const char *context, const char *choice, McRow *r)
{
    size_t cl = strlen(context), sp = cl;
    while (sp > 0 && (context[sp - 1] == ' ' || context[sp - 1] == '\t'))
        sp--; /* trailing spaces go with the choice */
    char *whole = NULL;
    if (asprintf(&whole, "%s%s", context, choice) < 0) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    int32_t *ctx_ids = NULL, *all = NULL;
    int64_t nc = encode(c, context, sp, &ctx_ids), na = encode(c, whole, strlen(whole), &all);
    int64_t ncont = na - nc;
    if (ncont < 0)
        ncont = 0;
    r->ids = xmalloc((size_t)(na + 1) * sizeof *r->ids);
    r->n = 0;
    if (nc == 0)
        r->ids[r->n++] = c->eot; /* an empty context: the choice follows EOT */
    memcpy(r->ids + r->n, all, (size_t)na * sizeof *all);
    r->n += na;
    r->ncont = ncont;
    int64_t keep = c->o->seq + 1;
    if (r->n > keep) { /* the harness keeps the end */
        memmove(r->ids, r->ids + (r->n - keep), (size_t)keep * sizeof *r->ids);
        r->n = keep;
        if (r->ncont > keep - 1)
            r->ncont = keep - 1;
    }
    free(whole), free(ctx_ids), free(all);
}

/* The log-likelihoods of rows[0..k) in one forward call.  0 or -1. */
static int mc_forward(Ctx *c, McRow *rows, int k, double *loglik)
{
    const int64_t V = c->m->desc->vocab;
    int64_t T = 1;
    for (int i = 0; i < k; i++)
        if (rows[i].n - 1 > T)
            T = rows[i].n - 1;
    for (int i = 0; i < k; i++)
        for (int64_t t = 0; t < T; t++)
            c->rows[i * T + t] = t < rows[i].n - 1 ? rows[i].ids[t] : c->eot; /* (k,T), padded at the end */
    StrataStep s = {.params = c->params, .arena = c->arena, .arena_bytes = c->arena_bytes, .tokens = c->rows,
                    .B = k, .T = T, .logits = c->logits, .pool = c->pool, .precision = c->m->precision};
    if (c->m->forward(&s) != STRATA_OK)
        return -1;
    for (int i = 0; i < k; i++) {
        double sum = 0;
        for (int64_t t = rows[i].n - 1 - rows[i].ncont; t < rows[i].n - 1; t++) /* predicts ids[t + 1] */
            sum -= rt_xent_row(c->logits + (i * T + t) * V, V, rows[i].ids[t + 1]);
        loglik[i] = sum;
    }
    return 0;
}

static int run_mc(Ctx *c)
{
    RtMcTask task;
    char *err = NULL;
    if (rt_mc_load(&task, c->o->task, &err)) {
        fprintf(stderr, "%s: %s\n", c->prog, err ? err : "out of memory");
        free(err);
        return 1;
    }
    int64_t n = c->o->limit > 0 && c->o->limit < task.n ? c->o->limit : task.n, acc = 0, acc_norm = 0;
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        const RtMcItem *it = &task.items[i];
        McRow *rows = xmalloc((size_t)it->nchoices * sizeof *rows);
        double *ll = xmalloc((size_t)it->nchoices * sizeof *ll);
        for (int j = 0; j < it->nchoices; j++)
            mc_row(c, it->context, it->choices[j], &rows[j]);
        for (int j = 0; j < it->nchoices && !rc; j++)
            if (rows[j].ncont == 0) {
                fprintf(stderr, "%s: %s: item %lld: choice %d has no tokens after the context\n", c->prog,
                        c->o->task, (long long)i + 1, j);
                rc = 1;
            }
        for (int j = 0; j < it->nchoices && !rc; j += (int)c->o->batch) {
            int k = it->nchoices - j < c->o->batch ? it->nchoices - j : (int)c->o->batch;
            if (mc_forward(c, rows + j, k, ll + j)) {
                fprintf(stderr, "%s: the model's forward pass failed\n", c->prog);
                rc = 3;
            }
        }
        if (!rc) {
            int raw, norm;
            rt_mc_pick(ll, (const char *const *)it->choices, it->nchoices, &raw, &norm);
            acc += raw == it->label, acc_norm += norm == it->label;
            json_t *j = json_object(), *lj = json_array();
            for (int k = 0; k < it->nchoices; k++)
                json_array_append_new(lj, json_real(ll[k]));
            json_object_set_new(j, "index", json_integer(i));
            json_object_set_new(j, "label", json_integer(it->label));
            json_object_set_new(j, "pred", json_integer(raw));
            json_object_set_new(j, "pred_norm", json_integer(norm));
            json_object_set_new(j, "correct", json_boolean(raw == it->label));
            json_object_set_new(j, "correct_norm", json_boolean(norm == it->label));
            json_object_set_new(j, "loglik", lj);
            out_line(c, j);
        }
        for (int j = 0; j < it->nchoices; j++)
            free(rows[j].ids);
        free(rows), free(ll);
    }
    if (!rc)
        printf("mc: %lld items | acc %.4f (%lld/%lld) | acc_norm %.4f (%lld/%lld)\n", (long long)n,
               n ? (double)acc / (double)n : 0.0, (long long)acc, (long long)n,
               n ? (double)acc_norm / (double)n : 0.0, (long long)acc_norm, (long long)n);
    rt_mc_free(&task);
    return rc;
}

/* --- generation ------------------------------------------------------------ */

typedef struct GenItem {
    char *input, *reference;
} GenItem;

static const char *first_str(json_t *o, const char *const *keys, json_t **found)
{
    for (int i = 0; keys[i]; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (json_is_string(v) || json_is_number(v)) {
            *found = v;
            return keys[i];
        }
    }
    return NULL;
}

static char *value_text(json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    char *s = NULL;
    if (json_is_integer(v) ? asprintf(&s, "%lld", (long long)json_integer_value(v)) < 0
                           : asprintf(&s, "%.17g", json_number_value(v)) < 0)
        s = NULL;
    return s;
}

/* Reads the items; -1 with a message naming the file and line. */
static int gen_load(Ctx *c, GenItem **items, int64_t *n)
{
    static const char *const in_keys[] = {"question", "prompt", "context", NULL};
    static const char *const ref_keys[] = {"answer", "response", "target", NULL};
    FILE *f = fopen(c->o->task, "r");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", c->prog, c->o->task, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t cap_items = 0;
    int rc = 0;
    *items = NULL, *n = 0;
    for (int64_t lineno = 1; !rc && (len = getline(&line, &cap, f)) >= 0; lineno++) {
        if (line[strspn(line, " \t\r\n")] == 0)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je), *in = NULL, *ref = NULL;
        if (!o)
            fprintf(stderr, "%s: %s:%lld:%d: bad JSON: %s\n", c->prog, c->o->task, (long long)lineno, je.column,
                    je.text), rc = -1;
        else if (!json_is_object(o) || !first_str(o, in_keys, &in) || !first_str(o, ref_keys, &ref))
            fprintf(stderr,
                    "%s: %s:%lld: expected an object with \"question\", \"prompt\" or \"context\" and "
                    "\"answer\", \"response\" or \"target\"\n",
                    c->prog, c->o->task, (long long)lineno), rc = -1;
        else {
            if (*n == cap_items) {
                cap_items = cap_items ? 2 * cap_items : 64;
                *items = realloc(*items, (size_t)cap_items * sizeof **items);
                if (!*items) {
                    fprintf(stderr, "strata: out of memory\n");
                    exit(3);
                }
            }
            (*items)[(*n)++] = (GenItem){value_text(in), value_text(ref)};
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

/* The prompt text of item q after the few-shot examples. */
static char *gen_prompt(const EvalTaskOptions *o, const GenItem *items, int64_t q)
{
    bool sft = strcmp(o->template, "plain");
    size_t cap = 256, len = 0;
    char *s = xmalloc(cap);
    s[0] = 0;
    for (int64_t i = 0; i <= o->fewshot; i++) {
        const GenItem *it = i < o->fewshot ? &items[i] : &items[q];
        const char *ref = i < o->fewshot ? it->reference : "";
        char *part = NULL;
        int k = sft ? asprintf(&part, "### Prompt:\n%s\n### Response:\n%s%s", it->input, ref,
                               i < o->fewshot ? "\n\n" : "")
                    : asprintf(&part, "%s%s%s", it->input, ref, i < o->fewshot ? "\n\n" : "");
        if (k < 0) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
        if (len + (size_t)k + 1 > cap)
            s = realloc(s, cap = (len + (size_t)k + 1) * 2);
        if (!s) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
        memcpy(s + len, part, (size_t)k + 1);
        len += (size_t)k;
        free(part);
    }
    return s;
}

/* One decoding row. */
typedef struct GenRow {
    int64_t item;
    int32_t *ids;            /* (cap) prompt then generated */
    int64_t n, prompt_n;
    char *text;              /* generated bytes, NUL-terminated */
    size_t len, cap;
    bool done;
} GenRow;

static void text_add(GenRow *r, const char *b, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->text = realloc(r->text, r->cap);
        if (!r->text) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
    }
    memcpy(r->text + r->len, b, n);
    r->len += n;
    r->text[r->len] = 0;
}

/* Greedy decoding of rows[0..k) together.  0 or -1 (the forward failed). */
static int gen_decode(Ctx *c, GenRow *rows, int k, const char *stop)
{
    const int64_t V = c->m->desc->vocab, W = c->o->seq;
    const size_t stop_len = strlen(stop);
    int active[256];
    for (int64_t step = 0; step < c->o->max_tokens; step++) {
        int na = 0;
        int64_t T = 1;
        for (int i = 0; i < k; i++)
            if (!rows[i].done) {
                active[na++] = i;
                int64_t w = rows[i].n < W ? rows[i].n : W;
                T = w > T ? w : T;
            }
        if (na == 0)
            break;
        for (int a = 0; a < na; a++) { /* (na,T): each row's last w tokens, padded at the end */
            GenRow *r = &rows[active[a]];
            int64_t w = r->n < W ? r->n : W;
            for (int64_t t = 0; t < T; t++)
                c->rows[a * T + t] = t < w ? r->ids[r->n - w + t] : c->eot;
        }
        StrataStep s = {.params = c->params, .arena = c->arena, .arena_bytes = c->arena_bytes, .tokens = c->rows,
                        .B = na, .T = T, .logits = c->logits, .pool = c->pool,
                        .precision = c->m->precision};
        if (c->m->forward(&s) != STRATA_OK)
            return -1;
        for (int a = 0; a < na; a++) {
            GenRow *r = &rows[active[a]];
            int64_t w = r->n < W ? r->n : W;
            int32_t next = rt_argmax(c->logits + (a * T + w - 1) * V, V);
            size_t blen = 0;
            const char *bytes = next == c->eot ? NULL : rt_tok_token(c->tok, next, &blen);
            if (!bytes) { /* EOT, or an id the tokenizer cannot decode: the end */
                r->done = true;
                continue;
            }
            r->ids[r->n++] = next;
            text_add(r, bytes, blen);
            if (stop_len && strstr(r->text + (r->len > stop_len + blen ? r->len - stop_len - blen : 0), stop))
                r->done = true;
        }
    }
    return 0;
}

static int run_gen(Ctx *c)
{
    EvalTaskOptions *o = c->o;
    bool bad_rule = false;
    char probe[8];
    rt_extract_answer("", o->rule, probe, sizeof probe, &bad_rule);
    if (bad_rule || (strcmp(o->template, "sft") && strcmp(o->template, "plain"))) {
        fprintf(stderr, "%s evaltask: %s\n", c->prog,
                bad_rule ? "--rule must be gsm8k, last-number or first-line" : "--template must be sft or plain");
        return 2;
    }
    const char *stop = o->stop ? o->stop : strcmp(o->template, "plain") ? "\n###" : "\n\n";
    GenItem *items = NULL;
    int64_t nitems = 0;
    if (gen_load(c, &items, &nitems)) {
        for (int64_t i = 0; items && i < nitems; i++)
            free(items[i].input), free(items[i].reference);
        free(items);
        return 1;
    }
    int rc = 0;
    if (o->fewshot >= nitems) {
        fprintf(stderr, "%s: %s: --fewshot %lld leaves none of its %lld items to score\n", c->prog, o->task,
                (long long)o->fewshot, (long long)nitems);
        rc = 1;
    }
    int64_t first = o->fewshot, n = nitems - first, correct = 0, none = 0;
    if (o->limit > 0 && o->limit < n)
        n = o->limit;
    for (int64_t b = 0; !rc && b < n; b += o->batch) {
        int k = n - b < o->batch ? (int)(n - b) : (int)o->batch;
        GenRow rows[256];
        for (int i = 0; i < k; i++) {
            char *p = gen_prompt(o, items, first + b + i);
            int32_t *ids = NULL;
            int64_t np = encode(c, p, strlen(p), &ids);
            free(p);
            rows[i] = (GenRow){.item = first + b + i, .n = np, .prompt_n = np};
            rows[i].ids = xmalloc((size_t)(np + o->max_tokens + 1) * sizeof(int32_t));
            memcpy(rows[i].ids, ids, (size_t)np * sizeof *ids);
            if (np == 0)
                rows[i].ids[rows[i].n++] = c->eot;
            free(ids);
            text_add(&rows[i], "", 0);
            for (int64_t t = 0; t < rows[i].n; t++)
                if (rows[i].ids[t] >= c->m->desc->vocab) {
                    fprintf(stderr, "%s: %s: item %lld: token id %d is outside the model's vocabulary of %lld (%s)\n",
                            c->prog, o->task, (long long)rows[i].item + 1, rows[i].ids[t],
                            (long long)c->m->desc->vocab, c->tok_name);
                    rc = 1;
                    break;
                }
        }
        if (!rc && gen_decode(c, rows, k, stop)) {
            fprintf(stderr, "%s: the model's forward pass failed\n", c->prog);
            rc = 3;
        }
        for (int i = 0; i < k; i++) {
            GenRow *r = &rows[i];
            if (!rc) {
                rt_cut_at_stop(r->text, stop);
                char pred[256], ref[256];
                bool dummy, has = rt_extract_answer(r->text, o->rule, pred, sizeof pred, &dummy);
                const char *reference = items[r->item].reference;
                if (!rt_extract_answer(reference, o->rule, ref, sizeof ref, &dummy) &&
                    !rt_extract_answer(reference, "first-line", ref, sizeof ref, &dummy))
                    ref[0] = 0;
                bool ok = has && !strcmp(pred, ref);
                correct += ok, none += !has;
                json_t *j = json_object();
                json_object_set_new(j, "index", json_integer(r->item));
                json_object_set_new(j, "output", json_string(r->text));
                json_t *pj = has ? json_string(pred) : NULL; /* NULL too when not UTF-8 */
                json_object_set_new(j, "pred", pj ? pj : json_null());
                json_object_set_new(j, "reference", json_string(ref));
                json_object_set_new(j, "correct", json_boolean(ok));
                if (!json_object_get(j, "output")) /* not UTF-8: the bytes as Latin-1 would mislead; say so */
                    json_object_set_new(j, "output", json_string("(not valid UTF-8)"));
                out_line(c, j);
            }
            free(r->ids), free(r->text);
        }
    }
    if (!rc)
        printf("gen: %lld items | exact match %.4f (%lld/%lld) | no answer extracted in %lld | rule %s\n",
               (long long)n, n ? (double)correct / (double)n : 0.0, (long long)correct, (long long)n,
               (long long)none, o->rule);
    for (int64_t i = 0; i < nitems; i++)
        free(items[i].input), free(items[i].reference);
    free(items);
    return rc;
}

/* --- the command ----------------------------------------------------------- */

int rt_evaltask_main(const RtModel *m, const char *prog, int argc, char **argv)
{
    EvalTaskOptions o = {.rule = "first-line", .template = "sft", .max_tokens = 256, .batch = 8, .seq = -1};
    int rc = rt_parse_opts(prog, "evaltask", specs, NSPECS, &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    const char *bad = NULL;
    if (!o.ckpt || !o.task || !o.kind)
        bad = "--ckpt CKPT, --task FILE.jsonl and --kind mc|gen are required";
    else if (strcmp(o.kind, "mc") && strcmp(o.kind, "gen"))
        bad = "--kind must be mc or gen";
    else if (o.batch < 1 || o.batch > 256)
        bad = "--batch must be in [1, 256]";
    else if (o.max_tokens < 1 || o.limit < 0 || o.fewshot < 0)
        bad = "--max-tokens must be at least 1, --limit and --fewshot at least 0";
    if (bad) {
        fprintf(stderr, "%s evaltask: %s\n", prog, bad);
        return 2;
    }
    json_t *state;
    float *params = rt_load_weights(m, prog, o.ckpt, &state);
    if (!params)
        return 1;
    if (o.seq < 0) {
        json_t *v = json_object_get(state, "seq");
        o.seq = json_is_integer(v) ? json_integer_value(v) : rt_default_seq(m);
    }
    json_t *tj = json_object_get(state, "tokenizer");
    Ctx c = {.m = m, .prog = prog, .o = &o, .params = params};
    c.tok_name = o.tokenizer ? strdup(o.tokenizer)
                 : json_is_string(tj) && *json_string_value(tj) ? strdup(json_string_value(tj))
                                                                : NULL;
    json_decref(state);
    if (o.seq < 1 || o.seq > INT32_MAX) {
        fprintf(stderr, "%s evaltask: --seq must be at least 1\n", prog);
        free(params), free(c.tok_name);
        return 2;
    }
    char *err = NULL;
    c.tok = c.tok_name ? rt_tok_load(c.tok_name, &err) : rt_tok_bytes();
    if (!c.tok) {
        fprintf(stderr, "%s: %s\n", prog, err ? err : "out of memory");
        free(err), free(params), free(c.tok_name);
        return 1;
    }
    if (!c.tok_name)
        c.tok_name = strdup("raw bytes");
    int32_t eot = rt_tok_eot(c.tok);
    c.eot = eot >= 0 && eot < m->desc->vocab ? eot : 0;
    if (o.out && !(c.out = fopen(o.out, "w"))) {
        fprintf(stderr, "%s: cannot write %s: %s\n", prog, o.out, strerror(errno));
        rc = 1;
    }
    if (!rc) {
        c.pool = rt_pool_create((int)o.threads);
        c.arena_bytes = strata_arena_bytes(m->desc, o.batch, o.seq, rt_pool_size(c.pool));
        c.arena = xalloc64((size_t)c.arena_bytes);
        c.logits = xalloc64((size_t)(o.batch * o.seq * m->desc->vocab) * sizeof(float)); /* (B,T,V) */
        c.rows = xalloc64((size_t)(o.batch * o.seq) * sizeof(int32_t));
        rc = !strcmp(o.kind, "mc") ? run_mc(&c) : run_gen(&c);
        rt_pool_free(c.pool);
    }
    if (c.out && fclose(c.out) && !rc) {
        fprintf(stderr, "%s: error writing %s: %s\n", prog, o.out, strerror(errno));
        rc = 1;
    }
    if (!rc && o.out && !o.quiet)
        fprintf(stderr, "%s: per-item results in %s\n", prog, o.out);
    rt_tok_free(c.tok);
    free(c.tok_name), free(c.arena), free(c.logits), free(c.rows), free(params);
    return rc;
}
