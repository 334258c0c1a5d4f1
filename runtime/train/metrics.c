/* metrics.c - metrics JSONL writer, reader and gnuplot loss curves
 * (metrics.h). */
#define _GNU_SOURCE /* asprintf, getline */
#include "train/metrics.h"
#include "core/util.h"
#include "store/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int rt_metrics_open(RtMetrics *m, const char *path, char **err)
{
    *m = (RtMetrics){.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666)};
    if (m->fd < 0) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    m->path = rt_fmt("%s", path);
    return 0;
}

/* JSON has no NaN or Infinity: a non-finite value is written as null. */
static void num(FILE *f, const char *key, double x, bool last)
{
    if (isfinite(x))
        fprintf(f, "\"%s\": %.9g%s", key, x, last ? "}\n" : ", ");
    else
        fprintf(f, "\"%s\": null%s", key, last ? "}\n" : ", ");
}

/* Writes the row in buf (len bytes) with one write(2) where it can. */
static int put_row(RtMetrics *m, const char *buf, size_t len, char **err)
{
    for (size_t done = 0; !m->error && done < len;) {
        ssize_t w = write(m->fd, buf + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            m->error = w < 0 ? errno : ENOSPC;
        else
            done += (size_t)w;
    }
    if (m->error) {
        *err = rt_fmt("%s: cannot write: %s", m->path, strerror(m->error));
        return -1;
    }
    return 0;
}

int rt_metrics_train(RtMetrics *m, int64_t step, double loss, double lr, double grad_norm, int64_t tokens,
                     double tokens_per_s, double elapsed_s, char **err)
{
    char row[512];
    FILE *f = fmemopen(row, sizeof row, "w");
    if (!f) {
        *err = rt_fmt("%s: out of memory", m->path);
        return -1;
    }
    fprintf(f, "{\"step\": %lld, ", (long long)step);
    if (m->device) /* a run on a GPU says so (a CPU run's rows are as before) */
        fprintf(f, "\"device\": \"%.64s\", ", m->device);
    num(f, "loss", loss, false);
    num(f, "lr", lr, false);
    num(f, "grad_norm", grad_norm, false);
    fprintf(f, "\"tokens\": %lld, ", (long long)tokens);
    num(f, "tokens_per_s", tokens_per_s, false);
    num(f, "elapsed_s", elapsed_s, true);
    long len = ftell(f);
    fclose(f);
    return put_row(m, row, (size_t)len, err);
}

int rt_metrics_val(RtMetrics *m, int64_t step, double val_loss, char **err)
{
    char row[256];
    FILE *f = fmemopen(row, sizeof row, "w");
    if (!f) {
        *err = rt_fmt("%s: out of memory", m->path);
        return -1;
    }
    fprintf(f, "{\"step\": %lld, ", (long long)step);
    num(f, "val_loss", val_loss, false);
    num(f, "val_ppl", exp(val_loss), true);
    long len = ftell(f);
    fclose(f);
    return put_row(m, row, (size_t)len, err);
}

int rt_metrics_close(RtMetrics *m, char **err)
{
    int bad = m->error;
    if (m->fd >= 0 && close(m->fd) != 0 && !bad)
        bad = errno ? errno : EIO;
    if (bad)
        *err = rt_fmt("%s: write error: %s", m->path ? m->path : "metrics", strerror(bad));
    free(m->path);
    *m = (RtMetrics){.fd = -1};
    return bad ? -1 : 0;
}

/* Whether a line of a log stays when it is cut back to `step`: JSON whose
 * "step" (if any) is at most step.  Lines that are not JSON (a row cut
 * short, or one glued to the next by an older resume) go; blank lines
 * stay. */
static bool keep_row(const char *line, size_t len, int64_t step)
{
    json_t *o = json_loadb(line, len, 0, NULL);
    json_t *s = json_object_get(o, "step");
    bool keep = (o || line[strspn(line, " \t\r\n")] == 0) && !(json_is_integer(s) && json_integer_value(s) > step);
    json_decref(o);
    return keep;
}

int rt_metrics_trim(const char *path, int64_t step, int64_t *dropped, char **err)
{
    if (dropped)
        *dropped = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    char *keep = NULL, *line = NULL;
    size_t keep_len = 0, cap = 0;
    FILE *k = open_memstream(&keep, &keep_len);
    int64_t gone = 0;
    ssize_t len;
    while (k && (len = getline(&line, &cap, f)) >= 0) {
        bool whole = len > 0 && line[len - 1] == '\n';
        if (!whole || !keep_row(line, (size_t)len, step))
            gone++;
        else
            fwrite(line, 1, (size_t)len, k);
    }
    int rc = 0;
    if (!k || ferror(f)) {
        *err = rt_fmt("%s: %s", path, k ? "read error" : "out of memory");
        rc = -1;
    }
    fclose(f);
    free(line);
    if (k)
        fclose(k);
    if (!rc && gone > 0)
        rc = rt_atomic_write_file(path, keep, keep_len, err);
    free(keep);
    if (!rc && dropped)
        *dropped = gone;
    return rc;
}

static void push(int64_t **s, double **v, int64_t *n, int64_t step, double x)
{
    if ((*n & (*n - 1)) == 0) { /* grow at powers of two */
        size_t cap = *n ? (size_t)*n * 2 : 1;
        *s = realloc(*s, cap * sizeof **s);
        *v = realloc(*v, cap * sizeof **v);
        if (!*s || !*v) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
    }
    (*s)[*n] = step;
    (*v)[(*n)++] = x;
}

/* The run's name: the directory holding the file, else the file name. */
static char *run_name(const char *path)
{
    char *copy = strdup(path), *slash = strrchr(copy, '/');
    char *name;
    if (slash) {
        *slash = 0;
        char *prev = strrchr(copy, '/');
        name = strdup(prev ? prev + 1 : copy);
    } else {
        name = strdup(copy);
    }
    free(copy);
    return name;
}

int rt_curve_load(RtCurve *c, const char *path, char **err)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    c->name = run_name(path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    for (long lineno = 1; rc == 0 && (len = getline(&line, &cap, f)) >= 0; lineno++) {
        if (line[strspn(line, " \t\r\n")] == 0)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        json_t *step = o ? json_object_get(o, "step") : NULL;
        if (!o && line[len - 1] != '\n') { /* the last line, cut short by a kill */
            fprintf(stderr, "strata: note: %s:%ld: skipped a partial last line (a run killed while writing it)\n",
                    path, lineno);
            break;
        }
        if (!o || !json_is_object(o) || !json_is_integer(step)) {
            *err = o ? rt_fmt("%s:%ld: a metrics row needs an integer \"step\"", path, lineno)
                     : rt_fmt("%s:%ld: bad JSON: %s", path, lineno, je.text);
            rc = -1;
        } else {
            json_t *l = json_object_get(o, "loss"), *v = json_object_get(o, "val_loss");
            if (json_is_number(l))
                push(&c->step, &c->loss, &c->n, json_integer_value(step), json_number_value(l));
            if (json_is_number(v))
                push(&c->val_step, &c->val_loss, &c->nval, json_integer_value(step), json_number_value(v));
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (rc)
        rt_curve_free(c);
    return rc;
}

void rt_curve_free(RtCurve *c)
{
    free(c->name);
    free(c->step);
    free(c->loss);
    free(c->val_step);
    free(c->val_loss);
    memset(c, 0, sizeof *c);
}

int rt_plot_curves(const RtCurve *c, int n, const char *image, const char *title, char **err)
{
    /* Data goes through temporary files: gnuplot reads them by name. */
    char dir[] = "/tmp/strata-plot-XXXXXX";
    if (!mkdtemp(dir)) {
        *err = rt_fmt("cannot make a temporary directory: %s", strerror(errno));
        return -1;
    }
    size_t len = strlen(image);
    bool svg = len > 4 && !strcmp(image + len - 4, ".svg");
    char *script = NULL;
    size_t slen = 0;
    FILE *s = open_memstream(&script, &slen);
    fprintf(s, "set terminal %s noenhanced size 1000,600\nset output '%s'\n", svg ? "svg dynamic" : "pngcairo", image);
    fprintf(s, "set title '%s'\nset xlabel 'step'\nset ylabel 'loss'\nset grid\nset key top right\nplot ", title);
    int plotted = 0;
    for (int i = 0; i < n; i++) {
        char path[64];
        for (int kind = 0; kind < 2; kind++) {
            int64_t m = kind ? c[i].nval : c[i].n;
            if (!m)
                continue;
            snprintf(path, sizeof path, "%s/%d_%d.dat", dir, i, kind);
            FILE *d = fopen(path, "w");
            if (!d) {
                *err = rt_fmt("%s: %s", path, strerror(errno));
                fclose(s);
                free(script);
                return -1;
            }
            for (int64_t k = 0; k < m; k++)
                fprintf(d, "%lld %.9g\n", (long long)(kind ? c[i].val_step[k] : c[i].step[k]),
                        kind ? c[i].val_loss[k] : c[i].loss[k]);
            fclose(d);
            fprintf(s, "%s'%s' using 1:2 with %s lw 2 lc %d title '%s %s'", plotted++ ? ", " : "", path,
                    kind ? "linespoints pt 7" : "lines", i + 1, c[i].name, kind ? "validation" : "train");
        }
    }
    fprintf(s, "\n");
    fclose(s);
    int rc = 0;
    if (!plotted) {
        *err = rt_fmt("nothing to plot: the metrics files have no loss rows");
        rc = -1;
    } else {
        FILE *g = popen("gnuplot 2>&1", "w");
        if (!g || fwrite(script, 1, slen, g) != slen) {
            *err = rt_fmt("cannot run gnuplot (Debian: apt-get install gnuplot-nox)");
            rc = -1;
        }
        if (g && pclose(g) != 0 && rc == 0) {
            *err = rt_fmt("gnuplot failed drawing %s", image);
            rc = -1;
        }
    }
    free(script);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "strata: note: could not remove %s\n", dir);
    return rc;
}
