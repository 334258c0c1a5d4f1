/* sweep.c - `strata sweep` (sweep.h): the variants times the seeds, one
 * training and one analysis per run through drv_run_trainer
 * (driver/train.c), then DIR/report.md, DIR/summary.csv, the per-variant
 * statistics over seeds (DIR/variants.csv) and the pictures of all runs
 * together.  Entry point: sweep_main.  Everything allocated here is freed
 * before returning. */
#define _GNU_SOURCE /* asprintf */
#include "driver/sweep.h"
#include "core/util.h"

#include "driver/train.h"
#include "train/metrics.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Splits "a,b,c" into a NULL-terminated array of malloc'd strings. */
static char **split(const char *s, int *n)
{
    char **v = calloc(strlen(s) + 2, sizeof *v);
    *n = 0;
    for (const char *p = s;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len)
            v[(*n)++] = strndup(p, len);
        if (!c)
            break;
        p = c + 1;
    }
    return v;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A --vary: NAME and its values. */
typedef struct Vary {
    char *name;
    char **vals;
    int n;
} Vary;

/* One run (a variant with one seed) and what came of it. */
typedef struct SweepRun {
    char *name, *model, *dir;
    char **defs;           /* its --vary assignments "NAME=VALUE" */
    int ndefs;
    int variant;           /* index of its variant (model x --vary combination) */
    const char *seed;      /* its --seed, NULL without --seeds */
    int train_rc, analyze_rc;
    double train_s;
    int64_t params;
    double val_loss, train_loss; /* NAN when absent */
    double growth_last;    /* variance at the last layer / at layer 0 */
    int worst_layer;       /* the layer whose removal raises the loss most, 0 none */
    double worst_drop;
    bool have_curve;
    RtCurve curve;
} SweepRun;

/* The value of a trainer option in opts (--flag V or --flag=V), or NULL. */
static const char *opt_value(char **opts, int n, const char *flag)
{
    const char *v = NULL;
    size_t len = strlen(flag);
    for (int i = 0; i < n; i++) {
        if (!strcmp(opts[i], flag) && i + 1 < n)
            v = opts[++i];
        else if (!strncmp(opts[i], flag, len) && opts[i][len] == '=')
            v = opts[i] + len + 1;
    }
    return v;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Reads DIR/RUN/analyze/analyze.json into the run. */
static void read_analysis(SweepRun *r)
{
    char *path = rt_fmt("%s/analyze/analyze.json", r->dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    free(path);
    if (!j)
        return;
    r->params = json_integer_value(json_object_get(j, "params"));
    if (!isfinite(r->val_loss) && json_is_number(json_object_get(j, "val_loss")))
        r->val_loss = json_number_value(json_object_get(j, "val_loss"));
    json_t *g = json_object_get(j, "growth");
    if (json_array_size(g) > 0 && json_is_number(json_array_get(g, json_array_size(g) - 1)))
        r->growth_last = json_number_value(json_array_get(g, json_array_size(g) - 1));
    json_t *rm = json_object_get(j, "removal");
    for (size_t i = 0; i < json_array_size(rm); i++) {
        json_t *d = json_object_get(json_array_get(rm, i), "drop");
        if (json_is_number(d) && (r->worst_layer == 0 || json_number_value(d) > r->worst_drop)) {
            r->worst_drop = json_number_value(d);
            r->worst_layer = (int)i + 1;
        }
    }
    json_decref(j);
}

/* A gnuplot picture with one line per run that has FILE (in DIR/RUN/analyze). */
static void plot_runs(const char *dir, SweepRun *runs, int n, const char *file, const char *image, const char *using,
                      const char *extra, const char *title, const char *xlabel, const char *ylabel)
{
    char *script = NULL;
    size_t len = 0;
    FILE *s = open_memstream(&script, &len);
    fprintf(s, "set terminal pngcairo noenhanced size 1000,600\nset output '%s/%s'\nset datafile separator ','\n"
               "set title '%s'\nset xlabel '%s'\nset ylabel '%s'\nset grid\nset key outside right\n%s\nplot ",
            dir, image, title, xlabel, ylabel, extra);
    int k = 0;
    for (int i = 0; i < n; i++) {
        char *csv = rt_fmt("%s/analyze/%s", runs[i].dir, file);
        struct stat st;
        if (!stat(csv, &st))
            fprintf(s, "%s'%s' using %s every ::1 with linespoints lw 2 lc %d title '%s'", k++ ? ", " : "", csv,
                    using, i + 1, runs[i].name);
        free(csv);
    }
    fprintf(s, "\n");
    fclose(s);
    if (k) {
        FILE *g = popen("gnuplot 2>&1", "w");
        if (!g || fwrite(script, 1, len, g) != len || pclose(g) != 0)
            fprintf(stderr, "strata: warning: gnuplot could not draw %s/%s\n", dir, image);
    }
    free(script);
}

/* --- statistics over seeds --------------------------------------------------- */

/* A figure of a run that the report gives per variant (mean and spread
 * over the seeds); NAN when the run has none. */
typedef struct Figure {
    const char *label; /* report column */
    const char *csv;   /* variants.csv column prefix */
    const char *fmt;   /* one value */
    double (*get)(const SweepRun *r);
} Figure;

static double fig_val_loss(const SweepRun *r) { return r->val_loss; }
static double fig_val_ppl(const SweepRun *r) { return exp(r->val_loss); }
static double fig_train_loss(const SweepRun *r) { return r->train_loss; }
static double fig_growth(const SweepRun *r) { return r->growth_last; }
static double fig_drop(const SweepRun *r) { return r->worst_layer ? r->worst_drop : NAN; }
static double fig_time(const SweepRun *r) { return r->train_rc ? NAN : r->train_s; }

static const Figure figures[] = {
    {"final val loss", "val_loss", "%.4f", fig_val_loss},
    {"val ppl", "val_ppl", "%.2f", fig_val_ppl},
    {"final train loss", "train_loss", "%.4f", fig_train_loss},
    {"variance growth", "variance_growth", "%.3g", fig_growth},
    {"largest removal drop", "worst_drop", "%.4f", fig_drop},
    {"train time (s)", "train_s", "%.1f", fig_time},
};
#define NFIGURES ((int)(sizeof figures / sizeof *figures))

/* Mean, sample standard deviation (n - 1 in the denominator; 0 for a
 * single value), min and max of a figure's finite values over the runs of
 * one variant. */
typedef struct Stat {
    int n;
    double mean, sd, min, max;
} Stat;

static Stat stat_of(const SweepRun *runs, int nruns, int variant, const Figure *f)
{
    Stat st = {0, NAN, NAN, NAN, NAN};
    double sum = 0, sq = 0;
    for (int i = 0; i < nruns; i++) {
        double x = runs[i].variant == variant ? f->get(&runs[i]) : NAN;
        if (!isfinite(x))
            continue;
        st.min = st.n ? fmin(st.min, x) : x;
        st.max = st.n ? fmax(st.max, x) : x;
        st.n++;
        sum += x;
    }
    if (!st.n)
        return st;
    st.mean = sum / st.n;
    for (int i = 0; i < nruns; i++) {
        double x = runs[i].variant == variant ? f->get(&runs[i]) : NAN;
        if (isfinite(x))
            sq += (x - st.mean) * (x - st.mean);
    }
    st.sd = st.n > 1 ? sqrt(sq / (st.n - 1)) : 0;
    return st;
}

/* The seed-noise criterion of the report: two variants' means differ
 * beyond the seed noise when |mean_a - mean_b| > 2 SE, with SE =
 * sqrt(sd_a^2 / n_a + sd_b^2 / n_b) the standard error of a difference of
 * two means (Welch).  *two_se gets 2 SE.  1 differs, 0 within the noise,
 * -1 undecided (fewer than 2 values on a side). */
static int beyond_noise(Stat a, Stat b, double *two_se)
{
    *two_se = NAN;
    if (a.n < 2 || b.n < 2)
        return -1;
    *two_se = 2 * sqrt(a.sd * a.sd / a.n + b.sd * b.sd / b.n);
    return fabs(a.mean - b.mean) > *two_se;
}

/* A report cell: mean ± sd [min, max] (the mean alone for one value). */
static void put_stat(FILE *f, const Figure *fig, Stat st)
{
    if (!st.n) {
        fprintf(f, " - |");
        return;
    }
    char m[32], sd[32], lo[32], hi[32];
    snprintf(m, sizeof m, fig->fmt, st.mean);
    snprintf(sd, sizeof sd, fig->fmt, st.sd);
    snprintf(lo, sizeof lo, fig->fmt, st.min);
    snprintf(hi, sizeof hi, fig->fmt, st.max);
    if (st.n > 1)
        fprintf(f, " %s ± %s [%s, %s] |", m, sd, lo, hi);
    else
        fprintf(f, " %s |", m);
}

/* The report's sections over seeds (each variant's mean ± sd [min, max]
 * per figure, then every pair of variants against the seed noise) and
 * DIR/variants.csv; the val-loss verdicts also go to stderr.  0, or 1 when
 * variants.csv cannot be written. */
static int write_variants(FILE *f, const char *dir, const SweepRun *runs, int nruns, char **vnames, int nv,
                          int nseeds)
{
    fprintf(f, "## Variants over %d seeds\n\n", nseeds);
    fprintf(f, "Each cell: mean ± sample standard deviation [min, max] over the seeds whose run has the figure; "
               "ok: runs trained and analyzed / runs.\n\n| variant | ok |");
    for (int k = 0; k < NFIGURES; k++)
        fprintf(f, " %s |", figures[k].label);
    fprintf(f, "\n|---|---:|");
    for (int k = 0; k < NFIGURES; k++)
        fprintf(f, "---:|");
    fprintf(f, "\n");
    char *csv = rt_fmt("%s/variants.csv", dir);
    FILE *c = fopen(csv, "w");
    if (!c) {
        fprintf(stderr, "strata: error: cannot write %s: %s\n", csv, strerror(errno));
        free(csv);
        return 1;
    }
    fprintf(c, "variant,runs,ok");
    for (int k = 0; k < NFIGURES; k++)
        fprintf(c, ",%s_n,%s_mean,%s_sd,%s_min,%s_max", figures[k].csv, figures[k].csv, figures[k].csv,
                figures[k].csv, figures[k].csv);
    fprintf(c, "\n");
    for (int v = 0; v < nv; v++) {
        int total = 0, ok = 0;
        for (int i = 0; i < nruns; i++)
            if (runs[i].variant == v)
                total++, ok += !runs[i].train_rc && !runs[i].analyze_rc;
        fprintf(f, "| %s | %d/%d |", vnames[v], ok, total);
        fprintf(c, "%s,%d,%d", vnames[v], total, ok);
        for (int k = 0; k < NFIGURES; k++) {
            Stat st = stat_of(runs, nruns, v, &figures[k]);
            put_stat(f, &figures[k], st);
            fprintf(c, ",%d,%.9g,%.9g,%.9g,%.9g", st.n, st.mean, st.sd, st.min, st.max);
        }
        fprintf(f, "\n");
        fprintf(c, "\n");
    }
    int rc = fclose(c) != 0;
    if (rc)
        fprintf(stderr, "strata: error: cannot write %s\n", csv);
    free(csv);
    if (nv < 2) {
        fprintf(f, "\n");
        return rc;
    }
    fprintf(f, "\n## Differences against the seed noise\n\n"
               "Each cell: mean(A) - mean(B) ± 2 SE, where SE = sqrt(sd_A^2 / n_A + sd_B^2 / n_B) is the standard "
               "error of a difference of two means (Welch). **differs**: |difference| > 2 SE; *noise*: within "
               "2 SE, so the seeds alone could make it; no verdict with fewer than 2 seeds on a side. With a "
               "handful of seeds this is a screen, not a significance test: 2 SE is about a 95%% interval for "
               "many seeds, a narrower one for 2 or 3.\n\n| A | B |");
    for (int k = 0; k < NFIGURES; k++)
        fprintf(f, " %s |", figures[k].label);
    fprintf(f, "\n|---|---|");
    for (int k = 0; k < NFIGURES; k++)
        fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int a = 0; a < nv; a++)
        for (int b = a + 1; b < nv; b++) {
            fprintf(f, "| %s | %s |", vnames[a], vnames[b]);
            for (int k = 0; k < NFIGURES; k++) {
                Stat sa = stat_of(runs, nruns, a, &figures[k]), sb = stat_of(runs, nruns, b, &figures[k]);
                if (!sa.n || !sb.n) {
                    fprintf(f, " - |");
                    continue;
                }
                double two_se;
                int verdict = beyond_noise(sa, sb, &two_se);
                char d[40], e[40] = "";
                snprintf(d, sizeof d, figures[k].fmt, sa.mean - sb.mean);
                const char *sign = sa.mean - sb.mean >= 0 ? "+" : "";
                if (verdict >= 0)
                    snprintf(e, sizeof e, figures[k].fmt, two_se);
                if (verdict >= 0)
                    fprintf(f, " %s%s ± %s %s |", sign, d, e, verdict ? "**differs**" : "*noise*");
                else
                    fprintf(f, " %s%s |", sign, d);
                if (k == 0)
                    fprintf(stderr, "== %s - %s: val loss %s%s%s%s: %s\n", vnames[a], vnames[b], sign, d,
                            verdict >= 0 ? " ± " : "", e,
                            verdict < 0 ? "fewer than 2 seeds, no verdict"
                            : verdict   ? "differs beyond the seed noise"
                                        : "within the seed noise");
            }
            fprintf(f, "\n");
        }
    fprintf(f, "\n");
    return rc;
}

static int write_report(const char *dir, const char *title, SweepRun *runs, int n, char **train_opts, int nopts,
                        char **vnames, int nv, int nseeds)
{
    /* Pictures. */
    RtCurve *curves = calloc((size_t)n + 1, sizeof *curves);
    int nc = 0;
    for (int i = 0; i < n; i++)
        if (runs[i].have_curve)
            curves[nc++] = runs[i].curve;
    char *img = rt_fmt("%s/loss.png", dir), *err = NULL;
    if (nc && rt_plot_curves(curves, nc, img, title, &err)) {
        fprintf(stderr, "strata: warning: %s\n", err);
        free(err);
    }
    free(img), free(curves);
    plot_runs(dir, runs, n, "variance.csv", "variance_growth.png", "1:3", "set logscale y",
              "residual-stream variance / variance of the embedding output", "layer (0 = embedding output)",
              "variance growth");
    plot_runs(dir, runs, n, "angular.csv", "angular_next.png", "($2 == 1 ? $1 : 1/0):4", "",
              "angular distance between the inputs of layers l and l+1 (all tokens)", "layer l",
              "angular distance");
    plot_runs(dir, runs, n, "removal.csv", "removal_drop.png", "1:4", "",
              "validation loss change when block l alone is skipped", "layer l", "loss drop (nats)");
    /* The table, as CSV and in the report. */
    char *csv = rt_fmt("%s/summary.csv", dir), *md = rt_fmt("%s/report.md", dir);
    FILE *c = fopen(csv, "w"), *f = fopen(md, "w");
    int rc = 0;
    if (!c || !f) {
        fprintf(stderr, "strata: error: cannot write %s: %s\n", !c ? csv : md, strerror(errno));
        rc = 1;
    } else {
        fprintf(c, "run,model,vary,seed,params,train_s,val_loss,val_ppl,train_loss,variance_growth,worst_layer,"
                   "worst_drop,status\n");
        fprintf(f, "# %s\n\n", title);
        fprintf(f, "Training options (the same for every run):");
        for (int i = 0; i < nopts; i++)
            fprintf(f, " `%s`", train_opts[i]);
        fprintf(f, "\n\n| run | model | seed | params | train time (s) | final val loss | val ppl | final train loss | "
                   "variance growth (last / first) | largest removal drop | status |\n"
                   "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
        for (int i = 0; i < n; i++) {
            SweepRun *r = &runs[i];
            char vary[256] = "";
            for (int k = 0, at = 0; k < r->ndefs && at < (int)sizeof vary - 1; k++)
                at += snprintf(vary + at, sizeof vary - (size_t)at, "%s%s", k ? " " : "", r->defs[k]);
            const char *status = r->train_rc ? "training failed" : r->analyze_rc ? "analyze failed" : "ok";
            fprintf(c, "%s,%s,%s,%s,%lld,%.1f,%.6f,%.4f,%.6f,%.6g,%d,%.6f,%s\n", r->name, r->model, vary,
                    r->seed ? r->seed : "", (long long)r->params, r->train_s, r->val_loss, exp(r->val_loss),
                    r->train_loss, r->growth_last,
                    r->worst_layer, r->worst_drop, status);
            fprintf(f, "| %s | %s%s%s%s | %s | %lld | %.1f | %.4f | %.2f | %.4f | %.3g | ", r->name,
                    base_name(r->model), r->ndefs ? " (" : "", vary, r->ndefs ? ")" : "", r->seed ? r->seed : "-",
                    (long long)r->params, r->train_s, r->val_loss,
                    exp(r->val_loss), r->train_loss, r->growth_last);
            if (r->worst_layer)
                fprintf(f, "%+.4f (layer %d) | %s |\n", r->worst_drop, r->worst_layer, status);
            else
                fprintf(f, "- | %s |\n", status);
        }
        fprintf(f, "\nFinal val loss: the last validation row of each run's metrics.jsonl (else the loss of "
                   "`analyze`); train time: wall time of `strata train`, JIT compile included; variance growth: "
                   "the residual stream's variance after the last block over its variance after the embedding; "
                   "largest removal drop: the validation-loss increase when the most important block alone is "
                   "skipped.\n\n");
        if (nseeds > 1)
            rc = write_variants(f, dir, runs, n, vnames, nv, nseeds);
        fprintf(f, "## Loss curves\n\n![loss curves](loss.png)\n\n");
        fprintf(f, "## Variance of the residual stream by layer\n\n![variance growth](variance_growth.png)\n\n");
        fprintf(f, "## Angular distance between consecutive layers\n\n![angular distance](angular_next.png)\n\n");
        fprintf(f, "## Layer-removal drop\n\n![removal drop](removal_drop.png)\n\n");
        fprintf(f, "## Per run\n\n");
        for (int i = 0; i < n; i++) {
            const char *rn = runs[i].name;
            fprintf(f, "- **%s**: [analyze.json](%s/analyze/analyze.json), "
                       "[angular distance, last token](%s/analyze/angular_last.png), "
                       "[all tokens](%s/analyze/angular_all.png), [removal](%s/analyze/removal.png)",
                    rn, rn, rn, rn, rn);
            char *dj = rt_fmt("%s/diagnostics.jsonl", runs[i].dir);
            struct stat st;
            if (!stat(dj, &st))
                fprintf(f, ", during training: [variance](%s/diag_variance.png), [gradient norm](%s/diag_grad_norm.png), "
                           "[update ratio](%s/diag_update_ratio.png)",
                        rn, rn, rn);
            free(dj);
            fprintf(f, "\n");
        }
    }
    if ((c && fclose(c)) || (f && fclose(f))) {
        fprintf(stderr, "strata: error: cannot write the report in %s\n", dir);
        rc = 1;
    }
    if (!rc)
        fprintf(stderr, "strata: sweep report: %s\n", md);
    free(csv), free(md);
    return rc;
}

static const char sweep_usage[] =
    "usage: strata sweep --out DIR --models A.strata[,B.strata...] [-D NAME=VALUE]... [--preset NAME]\n"
    "                    [--vary NAME=V1,V2]... [--seeds S1,S2,...] [--batches N] [--task FILE.jsonl]\n"
    "                    [--title TEXT] -- TRAIN_OPTIONS (strata train MODEL --help lists them; not --out)\n"
    "Trains every model x --vary combination (x every --seeds seed) with the same TRAIN_OPTIONS into\n"
    "DIR/RUN, runs analyze (--batches N validation batches, --task FILE) on each, and writes\n"
    "DIR/report.md (with --seeds: mean and spread per variant, differences against the seed noise).\n";

static int usage_error(const char *f, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    fputs("strata: error: ", stderr);
    vfprintf(stderr, f, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", sweep_usage);
    return 2;
}

int sweep_main(int argc, char **argv)
{
    const char *out = NULL, *models_arg = NULL, *preset = NULL, *batches = "4", *task = NULL, *title = NULL;
    const char *seeds_arg = NULL;
    const char **defs = calloc((size_t)argc + 1, sizeof *defs);
    Vary *vary = calloc((size_t)argc + 1, sizeof *vary);
    int ndefs = 0, nvary = 0, a = 0, rc = 0;
    for (; a < argc && !rc; a++) {
        const char *s = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(s, "--"))
            break;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            fputs(sweep_usage, stdout);
            rc = -1;
        } else if (!strncmp(s, "-D", 2) && s[2]) {
            defs[ndefs++] = s + 2;
        } else if (!v) {
            rc = usage_error("%s needs a value (or is unknown)", s);
        } else if (!strcmp(s, "-D")) {
            defs[ndefs++] = v, a++;
        } else if (!strcmp(s, "--out")) {
            out = v, a++;
        } else if (!strcmp(s, "--models")) {
            models_arg = v, a++;
        } else if (!strcmp(s, "--preset")) {
            preset = v, a++;
        } else if (!strcmp(s, "--batches")) {
            batches = v, a++;
        } else if (!strcmp(s, "--task")) {
            task = v, a++;
        } else if (!strcmp(s, "--title")) {
            title = v, a++;
        } else if (!strcmp(s, "--seeds")) {
            seeds_arg = v, a++;
        } else if (!strcmp(s, "--vary")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1])
                rc = usage_error("--vary '%s': expected NAME=V1,V2,...", v);
            else {
                vary[nvary].name = strndup(v, (size_t)(eq - v));
                vary[nvary].vals = split(eq + 1, &vary[nvary].n);
                nvary++;
            }
            a++;
        } else {
            rc = usage_error("unknown sweep option '%s' (trainer options go after --)", s);
        }
    }
    char **topts = argv + a + 1;
    int ntopts = a < argc ? argc - a - 1 : 0;
    if (!rc && (!out || !models_arg))
        rc = usage_error("--out DIR and --models A.strata[,B.strata...] are required");
    if (!rc && !opt_value(topts, ntopts, "--data"))
        rc = usage_error("the trainer options after -- need --data GLOB");
    if (!rc && opt_value(topts, ntopts, "--out"))
        rc = usage_error("--out after --: the sweep gives every run its own DIR/RUN");
    if (!rc && seeds_arg && opt_value(topts, ntopts, "--seed"))
        rc = usage_error("--seed after -- and --seeds both set the seed: give one");
    int nseeds = 0;
    char **seeds = rc || !seeds_arg ? NULL : split(seeds_arg, &nseeds);
    for (int i = 0; seeds && !rc && i < nseeds; i++) {
        char *end;
        errno = 0;
        long long x = strtoll(seeds[i], &end, 10);
        if (*end || errno || x < 0)
            rc = usage_error("--seeds '%s': '%s' is not a whole number >= 0", seeds_arg, seeds[i]);
        for (int j = 0; !rc && j < i; j++)
            if (strtoll(seeds[j], NULL, 10) == x)
                rc = usage_error("--seeds '%s': seed %lld is listed twice", seeds_arg, x);
    }
    if (!rc && seeds_arg && !nseeds)
        rc = usage_error("--seeds lists no seed");
    int nmodels = 0;
    char **models = rc ? NULL : split(models_arg, &nmodels);
    if (!rc && !nmodels)
        rc = usage_error("--models lists no model file");
    if (!rc && mkdir(out, 0777) && errno != EEXIST) {
        fprintf(stderr, "strata: error: cannot create %s: %s\n", out, strerror(errno));
        rc = 1;
    }
    if (rc) {
        for (int i = 0; i < nvary; i++)
            free(vary[i].name), free_list(vary[i].vals, vary[i].n);
        free(vary), free(defs);
        if (models)
            free_list(models, nmodels);
        if (seeds)
            free_list(seeds, nseeds);
        return rc < 0 ? 0 : rc;
    }
    /* The variants: models x the product of the --vary lists. */
    int ncomb = 1;
    for (int i = 0; i < nvary; i++)
        ncomb *= vary[i].n;
    int nvariants = nmodels * ncomb, per = seeds ? nseeds : 1, nruns = nvariants * per;
    SweepRun *runs = calloc((size_t)nruns, sizeof *runs);
    char **vnames = calloc((size_t)nvariants + 1, sizeof *vnames);
    const char *val = opt_value(topts, ntopts, "--val"), *data = opt_value(topts, ntopts, "--data");
    const char *threads = opt_value(topts, ntopts, "--threads");
    int failed = 0;
    for (int k = 0; k < nruns; k++) {
        SweepRun *r = &runs[k];
        int v = k / per; /* the seeds of a variant run one after the other */
        r->variant = v;
        r->seed = seeds ? seeds[k % per] : NULL;
        r->model = models[v / ncomb];
        r->val_loss = r->train_loss = r->growth_last = NAN;
        r->defs = calloc((size_t)nvary + 1, sizeof *r->defs);
        char *name = strdup(base_name(r->model));
        if (strlen(name) > 7 && !strcmp(name + strlen(name) - 7, ".strata"))
            name[strlen(name) - 7] = 0;
        for (int i = 0, c = v % ncomb; i < nvary; i++) { /* the last --vary varies fastest */
            int div = 1;
            for (int j = i + 1; j < nvary; j++)
                div *= vary[j].n;
            const char *vv = vary[i].vals[(c / div) % vary[i].n];
            r->defs[r->ndefs++] = rt_fmt("%s=%s", vary[i].name, vv);
            char *longer = rt_fmt("%s_%s%s", name, vary[i].name, vv);
            free(name);
            name = longer;
        }
        if (!vnames[v])
            vnames[v] = strdup(name);
        if (r->seed) {
            char *longer = rt_fmt("%s_seed%s", name, r->seed);
            free(name);
            name = longer;
        }
        r->name = name;
        r->dir = rt_fmt("%s/%s", out, name);
        /* strata train MODEL -D... [--preset P] TRAIN_OPTIONS --out DIR/RUN */
        int cap = 2 * (ndefs + nvary) + ntopts + 16, n = 0;
        char **args = calloc((size_t)cap, sizeof *args);
        args[n++] = r->model;
        for (int i = 0; i < ndefs; i++)
            args[n++] = "-D", args[n++] = (char *)defs[i];
        for (int i = 0; i < r->ndefs; i++)
            args[n++] = "-D", args[n++] = r->defs[i];
        if (preset)
            args[n++] = "--preset", args[n++] = (char *)preset;
        int common = n;
        for (int i = 0; i < ntopts; i++)
            args[n++] = topts[i];
        if (r->seed)
            args[n++] = "--seed", args[n++] = (char *)r->seed;
        args[n++] = "--out", args[n++] = r->dir;
        fprintf(stderr, "== sweep run %d/%d: %s\n", k + 1, nruns, r->name);
        double t0 = now();
        r->train_rc = drv_run_trainer("train", n, args);
        r->train_s = now() - t0;
        if (r->train_rc) {
            fprintf(stderr, "strata: sweep: training %s failed (exit %d); going on\n", r->name, r->train_rc);
            failed = 1;
        } else {
            /* strata analyze MODEL -D... --ckpt DIR/RUN/checkpoint.safetensors --data VAL --out DIR/RUN/analyze */
            char *ckpt = rt_fmt("%s/checkpoint.safetensors", r->dir), *adir = rt_fmt("%s/analyze", r->dir);
            n = common;
            args[n++] = "--ckpt", args[n++] = ckpt;
            args[n++] = "--data", args[n++] = (char *)(val ? val : data);
            args[n++] = "--out", args[n++] = adir;
            args[n++] = "--batches", args[n++] = (char *)batches;
            args[n++] = "--quiet";
            if (task)
                args[n++] = "--task", args[n++] = (char *)task;
            if (threads)
                args[n++] = "--threads", args[n++] = (char *)threads;
            r->analyze_rc = drv_run_trainer("analyze", n, args);
            if (r->analyze_rc) {
                fprintf(stderr, "strata: sweep: analyze of %s failed (exit %d); going on\n", r->name,
                        r->analyze_rc);
                failed = 1;
            }
            free(ckpt), free(adir);
        }
        free(args);
        char *mpath = rt_fmt("%s/metrics.jsonl", r->dir), *err = NULL;
        if (rt_curve_load(&r->curve, mpath, &err) == 0) {
            r->have_curve = true;
            if (r->curve.nval)
                r->val_loss = r->curve.val_loss[r->curve.nval - 1];
            if (r->curve.n)
                r->train_loss = r->curve.loss[r->curve.n - 1];
        } else
            free(err);
        free(mpath);
        read_analysis(r);
        fprintf(stderr, "== %s: val loss %.4f, %.1f s\n", r->name, r->val_loss, r->train_s);
    }
    char *deftitle = rt_fmt("strata sweep: %d run%s", nruns, nruns == 1 ? "" : "s");
    rc = write_report(out, title ? title : deftitle, runs, nruns, topts, ntopts, vnames, nvariants, per) || failed;
    free(deftitle);
    for (int k = 0; k < nruns; k++) {
        free(runs[k].name), free(runs[k].dir), free_list(runs[k].defs, runs[k].ndefs);
        if (runs[k].have_curve)
            rt_curve_free(&runs[k].curve);
    }
    free(runs);
    free_list(vnames, nvariants);
    if (seeds)
        free_list(seeds, nseeds);
    for (int i = 0; i < nvary; i++)
        free(vary[i].name), free_list(vary[i].vals, vary[i].n);
    free(vary), free(defs);
    free_list(models, nmodels);
    return rc;
}
