/* analyze.c - `TRAINER analyze`: depth diagnostics of a checkpoint
 * (variance, angular distance, layer-removal drop on loss and on a
 * multiple-choice task; the definitions are in train/depth.h), and
 * `analyze --diag` to draw a training run's diagnostics (train/diag.h).
 *
 * analyze --ckpt CKPT --data GLOB [--batches N] [--task FILE.jsonl] [--out DIR]
 *   over the first N held-out batches (sequential windows of --data):
 *   per-layer variance of the residual stream and its growth, angular
 *   distances between layer inputs, and the layer-removal drop: the
 *   validation loss (and the multiple-choice accuracy of --task,
 *   train/evaltask.h) with block l alone skipped (StrataStep.skip) minus the
 *   loss with every block.  Layers are 1-based as in depth.h: layer l is
 *   block l-1 of the model, it reads capture[l-1] and writes capture[l].
 *   Writes DIR/variance.csv, angular.csv, removal.csv, analyze.json and
 *   gnuplot pictures (variance.png, angular_last.png, angular_all.png,
 *   removal.png); prints a table.
 * analyze --diag RUN/diagnostics.jsonl [--out DIR] only draws the plots of
 *   a training run's diagnostics.
 * Entry point: rt_analyze_main (commands.h).  Every buffer is made and
 * freed here. */
#define _GNU_SOURCE /* asprintf, open_memstream */
#include "train/diag.h"
#include "cmd/commands.h"
#include "core/util.h"

#include "store/checkpoint.h"
#include "data/data.h"
#include "train/depth.h"
#include "train/evaltask.h"
#include "train/sample.h"
#include "data/tokenizer.h"
#include "train/train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --- helpers -------------------------------------------------------------- */

static int make_dir(const char *dir, const char *prog)
{
    if (mkdir(dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", prog, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Token-weighted sum of the cross-entropy of `rows` sequences of (B,T,V)
 * logits against targets. */
static double xent_sum(const float *logits, const int32_t *tgt, int64_t rows, int64_t T, int64_t V)
{
    double s = 0;
    for (int64_t r = 0; r < rows * T; r++)
        s += rt_xent_row(logits + r * V, V, tgt[r]);
    return s;
}

/* --- options of analyze --------------------------------------------------- */

typedef struct AnalyzeOptions {
    const char *ckpt, *data, *task, *out, *tokenizer, *diag;
    int64_t batch, seq, batches, threads;
    int quiet;
    bool given[11];
} AnalyzeOptions;

static const RtOptSpec analyze_specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(AnalyzeOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"data", "--data", RT_OPT_STR, 0, offsetof(AnalyzeOptions, data), "GLOB", "held-out token shards (required)"},
    {"batches", "--batches", RT_OPT_INT, 0, offsetof(AnalyzeOptions, batches), "N", "batches of --data (4)"},
    {"batch", "--batch", RT_OPT_INT, 0, offsetof(AnalyzeOptions, batch), "B", "windows per batch (the checkpoint's)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(AnalyzeOptions, seq), "T", "tokens per window (the checkpoint's)"},
    {"task", "--task", RT_OPT_STR, 0, offsetof(AnalyzeOptions, task), "FILE", "multiple-choice task (.jsonl)"},
    {"tokenizer", "--tokenizer", RT_OPT_STR, 0, offsetof(AnalyzeOptions, tokenizer), "FILE",
     "tokenizer of --task (the checkpoint's, else raw bytes)"},
    {"out", "--out", RT_OPT_STR, 0, offsetof(AnalyzeOptions, out), "DIR", "where the files go (analyze)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(AnalyzeOptions, threads), "N", "pool threads (all CPUs)"},
    {"diag", "--diag", RT_OPT_STR, 0, offsetof(AnalyzeOptions, diag), "FILE",
     "only plot a run's diagnostics.jsonl into --out"},
    {"quiet", "--quiet", RT_OPT_FLAG, 0, offsetof(AnalyzeOptions, quiet), NULL, "no table on stdout"},
};
#define NSPECS ((int)(sizeof analyze_specs / sizeof *analyze_specs))

/* 0 ok, 1 --help shown, 2 usage error. */
static int parse(const char *prog, AnalyzeOptions *o, int argc, char **argv)
{
    for (int a = 2; a < argc; a++) {
        const char *arg = argv[a], *eq = strchr(arg, '=');
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            printf("usage: %s analyze [options]\n", prog);
            for (int i = 0; i < NSPECS; i++) {
                char left[48];
                const RtOptSpec *s = &analyze_specs[i];
                snprintf(left, sizeof left, "%s%s%s", s->flag, s->arg ? " " : "", s->arg ? s->arg : "");
                printf("  %-24s %s\n", left, s->help);
            }
            return 1;
        }
        size_t len = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);
        int k = 0;
        while (k < NSPECS && !(strlen(analyze_specs[k].flag) == len && !strncmp(analyze_specs[k].flag, arg, len)))
            k++;
        if (k == NSPECS) {
            fprintf(stderr, "%s analyze: unknown option '%.*s' (%s analyze --help lists them)\n", prog, (int)len,
                    arg, prog);
            return 2;
        }
        const RtOptSpec *sp = &analyze_specs[k];
        char *at = (char *)o + sp->offset;
        o->given[k] = true;
        if (sp->kind == RT_OPT_FLAG) {
            *(int *)at = 1;
            continue;
        }
        const char *v = arg[len] == '=' ? arg + len + 1 : a + 1 < argc ? argv[++a] : NULL;
        if (!v) {
            fprintf(stderr, "%s analyze: %s needs a value (%s)\n", prog, sp->flag, sp->arg);
            return 2;
        }
        if (sp->kind == RT_OPT_STR) {
            *(const char **)at = v;
            continue;
        }
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno) {
            fprintf(stderr, "%s analyze: %s: '%s' is not an integer\n", prog, sp->flag, v);
            return 2;
        }
        *(int64_t *)at = x;
    }
    return 0;
}

/* --- analyze -------------------------------------------------------------- */

typedef struct Analysis {
    const RtModel *m;
    const char *prog;
    AnalyzeOptions *o;
    float *params;
    json_t *state;
    int64_t B, T, V, L, W;      /* W: residual width (0: no capture) */
    int64_t nb;                 /* batches read */
    int32_t **tok, **tgt;       /* (nb) x (B, T) */
    int *rows;                  /* (nb) sequences of each batch that are real */
    int64_t nrows;              /* sum of rows */
    RtPool *pool;
    void *arena;
    int64_t arena_bytes;
    float *logits;              /* (B, T, V) */
    double base_loss;
    double *drop_loss;          /* (L) loss with block l-1 skipped, NAN when it cannot be */
    RtDepthStats ds;
    bool have_ds;
    /* --task */
    int64_t task_items;
    double base_acc, base_acc_norm;
    double *acc, *acc_norm;     /* (L) with block l-1 skipped */
} Analysis;

/* The mean loss over the stored batches with `skip` (NULL: none);
 * capture (L+1, nrows, T, W) filled when not NULL.  0 or -1. */
static int loss_pass(Analysis *a, const uint8_t *skip, float *capture, double *loss)
{
    const int64_t B = a->B, T = a->T, W = a->W;
    /* (L+1,B,T,W) */
    float *cap_b = capture ? rt_zalloc64((size_t)((a->L + 1) * B * T * W) * sizeof(float)) : NULL;
    double sum = 0;
    int64_t r0 = 0;
    int rc = 0;
    for (int64_t k = 0; k < a->nb; k++) {
        StrataStep s = {.params = a->params, .arena = a->arena, .arena_bytes = a->arena_bytes, .tokens = a->tok[k],
                        .B = B, .T = T, .logits = a->logits, .capture = cap_b, .skip = skip, .pool = a->pool,
                        .precision = a->m->precision};
        int st = a->m->forward(&s);
        if (st != STRATA_OK) {
            fprintf(stderr, "%s: the model's forward pass failed (status %d)\n", a->prog, st);
            rc = -1;
            break;
        }
        sum += xent_sum(a->logits, a->tgt[k], a->rows[k], T, a->V);
        if (capture) /* the real rows of each layer, into (L+1, nrows, T, W) */
            for (int64_t l = 0; l <= a->L; l++)
                memcpy(capture + (l * a->nrows + r0) * T * W, cap_b + l * B * T * W,
                       (size_t)(a->rows[k] * T * W) * sizeof(float));
        r0 += a->rows[k];
    }
    free(cap_b);
    *loss = sum / (double)(a->nrows * T);
    return rc;
}

/* Multiple choice: accuracy (raw and length-normalized) of the task with
 * `skip`.  Each choice is scored as the sum of the log-probabilities of its
 * tokens after the context's (encoded separately, then joined; the window
 * keeps the last T+1 tokens).  0 or -1. */
static int task_pass(Analysis *a, const RtMcTask *t, RtTokenizer *tok, const uint8_t *skip, double *acc,
                     double *acc_norm)
{
    const int64_t T = a->T, V = a->V;
    int64_t right = 0, right_norm = 0;
    for (int64_t i = 0; i < t->n; i++) {
        const RtMcItem *it = &t->items[i];
        double *ll = calloc((size_t)it->nchoices, sizeof *ll);
        int32_t *ctx = NULL;
        int64_t nc = rt_tok_encode(tok, it->context, strlen(it->context), &ctx);
        if (nc == 0) { /* nothing to predict the first token from: start at <|endoftext|> */
            free(ctx);
            ctx = malloc(sizeof *ctx);
            int32_t eot = rt_tok_eot(tok);
            ctx[0] = eot >= 0 && eot < V ? eot : 0;
            nc = 1;
        }
        for (int c = 0; c < it->nchoices; c++) {
            int32_t *ch = NULL;
            int64_t nch = rt_tok_encode(tok, it->choices[c], strlen(it->choices[c]), &ch);
            int64_t n = nc + nch;
            int32_t *seq = malloc((size_t)n * sizeof *seq);
            memcpy(seq, ctx, (size_t)nc * sizeof *seq);
            memcpy(seq + nc, ch, (size_t)nch * sizeof *seq);
            free(ch);
            for (int64_t j = 0; j < n; j++)
                if (seq[j] < 0 || seq[j] >= V) {
                    fprintf(stderr, "%s: %s: item %lld encodes to token id %d, outside the model's vocabulary "
                                    "of %lld (wrong --tokenizer?)\n",
                            a->prog, a->o->task, (long long)i + 1, seq[j], (long long)V);
                    free(seq), free(ll), free(ctx);
                    return -1;
                }
            int64_t w = n - 1 < T ? n - 1 : T, start = n - 1 - w; /* inputs seq[start .. n-2] */
            double s = 0;
            if (nch > 0 && w > 0) {
                StrataStep st = {.params = a->params, .arena = a->arena, .arena_bytes = a->arena_bytes,
                                 .tokens = seq + start, .B = 1, .T = w, .logits = a->logits, .skip = skip,
                                 .pool = a->pool, .precision = a->m->precision};
                if (a->m->forward(&st) != STRATA_OK) {
                    fprintf(stderr, "%s: the model's forward pass failed\n", a->prog);
                    free(seq), free(ll), free(ctx);
                    return -1;
                }
                for (int64_t p = nc > start + 1 ? nc : start + 1; p < n; p++) /* seq[p] from row p-1-start */
                    s -= rt_xent_row(a->logits + (p - 1 - start) * V, V, seq[p]);
            }
            ll[c] = s;
            free(seq);
        }
        int raw, norm;
        rt_mc_pick(ll, (const char *const *)it->choices, it->nchoices, &raw, &norm);
        right += raw == it->label;
        right_norm += norm == it->label;
        free(ll), free(ctx);
    }
    *acc = t->n ? (double)right / (double)t->n : NAN;
    *acc_norm = t->n ? (double)right_norm / (double)t->n : NAN;
    return 0;
}

static int run_task(Analysis *a)
{
    RtMcTask t = {0};
    char *err = NULL;
    if (rt_mc_load(&t, a->o->task, &err)) {
        fprintf(stderr, "%s: %s\n", a->prog, err);
        free(err);
        return 1;
    }
    json_t *tj = json_object_get(a->state, "tokenizer");
    const char *tp = a->o->tokenizer ? a->o->tokenizer
                     : json_is_string(tj) && *json_string_value(tj) ? json_string_value(tj)
                                                                    : NULL;
    RtTokenizer *tok = tp ? rt_tok_load(tp, &err) : rt_tok_bytes();
    if (!tok) {
        fprintf(stderr, "%s: %s\n", a->prog, err ? err : "out of memory");
        free(err);
        rt_mc_free(&t);
        return 1;
    }
    a->task_items = t.n;
    a->acc = malloc((size_t)(a->L + 1) * sizeof *a->acc);
    a->acc_norm = malloc((size_t)(a->L + 1) * sizeof *a->acc_norm);
    uint8_t *skip = calloc((size_t)a->L + 1, 1);
    int rc = task_pass(a, &t, tok, NULL, &a->base_acc, &a->base_acc_norm) ? 1 : 0;
    for (int64_t l = 0; !rc && l < a->L; l++) {
        a->acc[l] = a->acc_norm[l] = NAN;
        if (!(a->m->desc->block_skip[l] & STRATA_SKIP_FORWARD))
            continue;
        skip[l] = 1;
        rc = task_pass(a, &t, tok, skip, &a->acc[l], &a->acc_norm[l]) ? 1 : 0;
        skip[l] = 0;
    }
    free(skip);
    rt_tok_free(tok);
    rt_mc_free(&t);
    return rc;
}

/* removal.csv: layer,skippable,val_loss,drop[,acc,acc_drop,acc_norm,acc_norm_drop] */
static int write_removal(const Analysis *a, FILE *f)
{
    fprintf(f, "layer,skippable,val_loss,drop%s\n", a->acc ? ",acc,acc_drop,acc_norm,acc_norm_drop" : "");
    for (int64_t l = 0; l < a->L; l++) {
        fprintf(f, "%lld,%d,%.9g,%.9g", (long long)l + 1, !isnan(a->drop_loss[l]), a->drop_loss[l],
                a->drop_loss[l] - a->base_loss);
        if (a->acc)
            fprintf(f, ",%.9g,%.9g,%.9g,%.9g", a->acc[l], a->acc[l] - a->base_acc, a->acc_norm[l],
                    a->acc_norm[l] - a->base_acc_norm);
        fprintf(f, "\n");
    }
    return ferror(f) ? -1 : 0;
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static char *analysis_json(const Analysis *a)
{
    const StrataModelDesc *d = a->m->desc;
    int64_t nparams = 0;
    for (int64_t i = 0; i < d->nparams; i++)
        nparams += d->params[i].numel;
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(a->m->path ? a->m->path : ""));
    json_object_set_new(j, "ckpt", json_string(a->o->ckpt));
    json_object_set_new(j, "params", json_integer(nparams));
    json_object_set_new(j, "blocks", json_integer(a->L));
    json_object_set_new(j, "width", json_integer(a->W));
    json_object_set_new(j, "windows", json_integer(a->nrows));
    json_object_set_new(j, "seq", json_integer(a->T));
    json_object_set_new(j, "tokens", json_integer(a->nrows * a->T));
    json_object_set_new(j, "val_loss", jnum(a->base_loss));
    json_object_set_new(j, "val_ppl", jnum(exp(a->base_loss)));
    if (a->have_ds) {
        json_t *v = json_array(), *g = json_array(), *al = json_array(), *aa = json_array();
        int side = (int)a->L + 1;
        for (int l = 0; l <= a->L; l++) {
            json_array_append_new(v, jnum(a->ds.variance[l]));
            json_array_append_new(g, jnum(a->ds.variance[l] / a->ds.variance[0]));
        }
        for (int l = 1; l <= a->L; l++) { /* [l-1][n-1], n = 1 .. L+1-l */
            json_t *rl = json_array(), *ra = json_array();
            for (int n = 1; l + n <= a->L + 1; n++) {
                json_array_append_new(rl, jnum(a->ds.angular_last[l * side + n]));
                json_array_append_new(ra, jnum(a->ds.angular_all[l * side + n]));
            }
            json_array_append_new(al, rl);
            json_array_append_new(aa, ra);
        }
        json_object_set_new(j, "variance", v);
        json_object_set_new(j, "growth", g);
        json_object_set_new(j, "angular_last", al);
        json_object_set_new(j, "angular_all", aa);
    }
    json_t *rm = json_array();
    for (int64_t l = 0; l < a->L; l++) {
        json_t *r = json_object();
        json_object_set_new(r, "layer", json_integer(l + 1));
        json_object_set_new(r, "val_loss", jnum(a->drop_loss[l]));
        json_object_set_new(r, "drop", jnum(a->drop_loss[l] - a->base_loss));
        if (a->acc) {
            json_object_set_new(r, "acc", jnum(a->acc[l]));
            json_object_set_new(r, "acc_norm", jnum(a->acc_norm[l]));
        }
        json_array_append_new(rm, r);
    }
    json_object_set_new(j, "removal", rm);
    if (a->acc) {
        json_t *t = json_object();
        json_object_set_new(t, "file", json_string(a->o->task));
        json_object_set_new(t, "items", json_integer(a->task_items));
        json_object_set_new(t, "acc", jnum(a->base_acc));
        json_object_set_new(t, "acc_norm", jnum(a->base_acc_norm));
        json_object_set_new(j, "task", t);
    }
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(j);
    return s;
}

/* Writes `text` (a CSV writer's output or a string) to DIR/name. */
static int write_file(const Analysis *a, const char *name, int (*writer)(const Analysis *, FILE *),
                      const char *text)
{
    char *path = rt_fmt("%s/%s", a->o->out, name);
    FILE *f = fopen(path, "w");
    int rc = f ? 0 : -1;
    if (f && writer)
        rc = writer(a, f);
    else if (f && text)
        fputs(text, f);
    else if (f) /* json_dumps ran out of memory */
        rc = -1;
    if (f && fclose(f))
        rc = -1;
    if (rc)
        fprintf(stderr, "%s: cannot write %s: %s\n", a->prog, path, strerror(errno));
    free(path);
    return rc;
}

static int write_variance(const Analysis *a, FILE *f) { return rt_depth_write_variance_csv(&a->ds, f); }
static int write_angular(const Analysis *a, FILE *f) { return rt_depth_write_angular_csv(&a->ds, f); }

/* The pictures; a warning (not an error) when gnuplot cannot draw them. */
static void plots(const Analysis *a)
{
    const char *dir = a->o->out, *name = a->m->path ? a->m->path : "model";
    struct {
        const char *csv, *image, *kind, *title;
    } pics[] = {
        {"variance.csv", "variance.png", "variance", "residual-stream variance by layer"},
        {"angular.csv", "angular_last.png", "last", "angular distance, last token (x = layer l, y = n)"},
        {"angular.csv", "angular_all.png", "all", "angular distance, all tokens (x = layer l, y = n)"},
    };
    for (int i = 0; a->have_ds && i < 3; i++) {
        char *csv = rt_fmt("%s/%s", dir, pics[i].csv), *img = rt_fmt("%s/%s", dir, pics[i].image), *script = NULL,
             *title = rt_fmt("%s: %s", name, pics[i].title), *err = NULL;
        size_t n = 0;
        FILE *s = open_memstream(&script, &n);
        rt_depth_plot_script(s, csv, img, pics[i].kind, title);
        fclose(s);
        if (rt_gnuplot(script, img, &err)) {
            fprintf(stderr, "%s: warning: %s\n", a->prog, err);
            free(err);
        }
        free(csv), free(img), free(script), free(title);
    }
    char *csv = rt_fmt("%s/removal.csv", dir), *img = rt_fmt("%s/removal.png", dir), *err = NULL;
    char *script = rt_fmt("set terminal pngcairo noenhanced size 900,600\nset output '%s'\n"
                       "set datafile separator ','\nset title '%s: change when block l alone is skipped'\n"
                       "set xlabel 'layer l'\nset ylabel 'validation loss drop (nats)'\nset grid\n"
                       "set style fill solid 0.6\nset boxwidth 0.7\n%s"
                       "plot '%s' using 1:4 with boxes title 'loss drop'%s\n",
                       img, name, a->acc ? "set y2label 'accuracy change'\nset y2tics\n" : "", csv,
                       a->acc ? ", '' using 1:6 axes x1y2 with linespoints lw 2 title 'task accuracy change'" : "");
    if (rt_gnuplot(script, img, &err)) {
        fprintf(stderr, "%s: warning: %s\n", a->prog, err);
        free(err);
    }
    free(csv), free(img), free(script);
}

static void print_table(const Analysis *a)
{
    int side = (int)a->L + 1;
    printf("%s: %s, %lld windows x %lld tokens, val loss %.4f (ppl %.2f)", a->m->path ? a->m->path : "model",
           a->o->ckpt, (long long)a->nrows, (long long)a->T, a->base_loss, exp(a->base_loss));
    if (a->acc)
        printf(", task acc %.4f (norm %.4f, %lld items)", a->base_acc, a->base_acc_norm, (long long)a->task_items);
    printf("\n%5s %12s %9s %10s %10s %12s %10s%s\n", "layer", "variance", "growth", "ang_next", "ang_next",
           "loss_skip", "drop", a->acc ? "   acc_skip" : "");
    printf("%5s %12s %9s %10s %10s %12s %10s\n", "", "(output)", "", "(last)", "(all)", "", "");
    for (int l = 0; l <= a->L; l++) {
        printf("%5d", l);
        if (a->have_ds)
            printf(" %12.5g %9.3f", a->ds.variance[l], a->ds.variance[l] / a->ds.variance[0]);
        else
            printf(" %12s %9s", "-", "-");
        /* ang_next: between the input of layer l and layer l+1 (l >= 1) */
        if (a->have_ds && l >= 1)
            printf(" %10.4f %10.4f", a->ds.angular_last[l * side + 1], a->ds.angular_all[l * side + 1]);
        else
            printf(" %10s %10s", "-", "-");
        if (l >= 1 && !isnan(a->drop_loss[l - 1]))
            printf(" %12.5f %+10.5f", a->drop_loss[l - 1], a->drop_loss[l - 1] - a->base_loss);
        else
            printf(" %12s %10s", "-", l >= 1 ? "no skip" : "-");
        if (a->acc && l >= 1)
            printf(" %10.4f", a->acc[l - 1]);
        printf("\n");
    }
    printf("(layer 0: the embedding output; layer l >= 1: block l's output variance, its input's angular distance "
           "to the next layer's input, and the loss with block l skipped)\n");
}

/* Reads the batches; 0 or an exit status. */
static int read_batches(Analysis *a)
{
    char **paths = NULL, *err = NULL;
    int npaths = 0;
    RtLoader l;
    if (rt_glob(a->o->data, &paths, &npaths, &err) ||
        rt_loader_init(&l, (const char *const *)paths, npaths, (int)a->B, (int)a->T, RT_LOADER_SEQUENTIAL, 0,
                       &err)) {
        fprintf(stderr, "%s: %s\n", a->prog, err);
        free(err);
        if (paths)
            rt_glob_free(paths, npaths);
        return 1;
    }
    int rc = 0;
    if (rt_loader_check_vocab(&l, a->V, &err)) {
        fprintf(stderr, "%s: %s\n", a->prog, err);
        free(err);
        rc = 1;
    }
    int64_t want = a->o->batches > 0 ? a->o->batches : rt_loader_batches(&l);
    a->tok = calloc((size_t)want, sizeof *a->tok);
    a->tgt = calloc((size_t)want, sizeof *a->tgt);
    a->rows = calloc((size_t)want, sizeof *a->rows);
    while (!rc && a->nb < want) {
        int32_t *tok = rt_zalloc64((size_t)(a->B * a->T) * sizeof *tok),
                *tgt = rt_zalloc64((size_t)(a->B * a->T) * sizeof *tgt);
        int rows = rt_loader_next(&l, tok, tgt);
        if (rows <= 0) {
            free(tok), free(tgt);
            break;
        }
        a->tok[a->nb] = tok, a->tgt[a->nb] = tgt, a->rows[a->nb] = rows;
        a->nb++, a->nrows += rows;
    }
    rt_loader_free(&l);
    rt_glob_free(paths, npaths);
    return rc;
}

static int64_t state_int(json_t *state, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(state, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : dflt;
}

/* The analysis proper, once the batches are in; 0 or an exit status. */
static int analyze(Analysis *a)
{
    const StrataModelDesc *d = a->m->desc;
    const char *name = a->m->path ? a->m->path : "the model";
    a->pool = rt_pool_create((int)a->o->threads);
    a->arena_bytes = strata_arena_bytes(d, a->B, a->T, rt_pool_size(a->pool));
    a->arena = rt_zalloc64((size_t)a->arena_bytes);
    a->logits = rt_zalloc64((size_t)(a->B * a->T * a->V) * sizeof(float)); /* (B,T,V) */
    a->drop_loss = malloc((size_t)(a->L + 1) * sizeof *a->drop_loss);
    float *capture = NULL;
    size_t cap_bytes = (size_t)((a->L + 1) * a->nrows * a->T * a->W) * sizeof(float);
    if (a->W == 0 || a->L == 0)
        fprintf(stderr, "%s: note: %s %s, so there is no residual stream to capture: no variance or angular "
                        "distance\n", a->prog, name, a->L == 0 ? "has no blocks" : "has blocks of different widths");
    else if (cap_bytes > ((size_t)4 << 30))
        fprintf(stderr, "%s: note: the capture of %lld windows would take %.1f GiB; no variance or angular "
                        "distance (use fewer --batches)\n",
                a->prog, (long long)a->nrows, (double)cap_bytes / (1 << 30));
    else
        capture = rt_zalloc64(cap_bytes); /* (L+1, nrows, T, W) */
    if (loss_pass(a, NULL, capture, &a->base_loss)) {
        free(capture);
        return 3;
    }
    if (capture) {
        rt_depth_stats(&a->ds, capture, (int)a->L, a->nrows, a->T, a->W);
        a->have_ds = true;
        free(capture);
    }
    uint8_t *skip = calloc((size_t)a->L + 1, 1);
    int64_t unskippable = 0;
    for (int64_t l = 0; l < a->L; l++) {
        a->drop_loss[l] = NAN;
        if (!(d->block_skip[l] & STRATA_SKIP_FORWARD)) {
            unskippable++;
            continue;
        }
        skip[l] = 1;
        int rc = loss_pass(a, skip, NULL, &a->drop_loss[l]);
        skip[l] = 0;
        if (rc) {
            free(skip);
            return 3;
        }
    }
    free(skip);
    if (unskippable)
        fprintf(stderr, "%s: note: %lld of the %lld blocks of %s cannot be skipped (a value of the block feeds "
                        "more than its output): no layer-removal drop for them\n",
                a->prog, (long long)unskippable, (long long)a->L, name);
    if (a->o->task) {
        int rc = run_task(a);
        if (rc)
            return rc;
    }
    /* Files. */
    char *js = analysis_json(a);
    int bad = write_file(a, "removal.csv", write_removal, NULL) || write_file(a, "analyze.json", NULL, js);
    free(js);
    if (a->have_ds)
        bad = bad || write_file(a, "variance.csv", write_variance, NULL) ||
              write_file(a, "angular.csv", write_angular, NULL);
    if (bad)
        return 1;
    plots(a);
    if (!a->o->quiet)
        print_table(a);
    return 0;
}

int rt_analyze_main(const RtModel *m, const char *prog, int argc, char **argv)
{
    AnalyzeOptions o = {.out = "analyze", .batches = 4, .batch = -1, .seq = -1};
    int rc = parse(prog, &o, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (o.diag && !o.ckpt) {
        char *err = NULL;
        if (make_dir(o.out, prog))
            return 1;
        if (rt_diag_plot(o.diag, o.out, &err)) {
            fprintf(stderr, "%s: %s\n", prog, err);
            free(err);
            return 1;
        }
        return 0;
    }
    if (!o.ckpt || !o.data) {
        fprintf(stderr, "%s analyze: --ckpt CKPT and --data GLOB are required (or --diag FILE alone)\n", prog);
        return 2;
    }
    if (m->desc->real_bytes != 4) {
        fprintf(stderr, "%s: analyze needs a float (fp32) build of the model\n", prog);
        return 1;
    }
    Analysis a = {.m = m, .prog = prog, .o = &o, .V = m->desc->vocab, .L = m->desc->nblocks,
                  .W = m->desc->width};
    a.params = rt_load_weights(m, prog, o.ckpt, &a.state);
    if (!a.params)
        return 1;
    a.B = o.batch > 0 ? o.batch : state_int(a.state, "batch", 16);
    if (o.seq > 0)
        a.T = o.seq;
    else {
        json_t *cfg = m->config_json ? json_loads(m->config_json, 0, NULL) : NULL;
        a.T = state_int(a.state, "seq", state_int(cfg, "ctx", 256));
        json_decref(cfg);
    }
    if (a.B > INT32_MAX || a.T > INT32_MAX || o.batch == 0 || o.seq == 0 || o.batches < 0) {
        fprintf(stderr, "%s analyze: --batch and --seq must be at least 1, --batches at least 0\n", prog);
        rc = 2;
    }
    if (!rc)
        rc = read_batches(&a);
    if (!rc && a.nb == 0) {
        fprintf(stderr, "%s: %s: no window of %lld tokens to analyze\n", prog, o.data, (long long)a.T + 1);
        rc = 1;
    }
    if (!rc && make_dir(o.out, prog))
        rc = 1;
    if (!rc)
        rc = analyze(&a);
    for (int64_t k = 0; k < a.nb; k++)
        free(a.tok[k]), free(a.tgt[k]);
    free(a.tok), free(a.tgt), free(a.rows);
    if (a.have_ds)
        rt_depth_stats_free(&a.ds);
    rt_pool_free(a.pool);
    free(a.arena), free(a.logits), free(a.drop_loss), free(a.acc), free(a.acc_norm), free(a.params);
    json_decref(a.state);
    return rc;
}
