/* depth.c - depth diagnostics (depth.h): variance of the residual stream
 * per layer and angular distances between the inputs of layers. */
#include "train/depth.h"

#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

double rt_angular_distance(const float *a, const float *b, int64_t d)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < d; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    double c;
    if (aa == 0 || bb == 0)
        c = aa == bb ? 1 : 0;
    else
        c = ab / sqrt(aa * bb);
    c = c > 1 ? 1 : c < -1 ? -1 : c; /* rounding can step just outside */
    return acos(c) / M_PI;
}

static double variance(const float *x, int64_t n)
{
    double mean = 0, m2 = 0;
    for (int64_t i = 0; i < n; i++) { /* Welford: stable for large means */
        double delta = x[i] - mean;
        mean += delta / (double)(i + 1);
        m2 += delta * (x[i] - mean);
    }
    return n > 0 ? m2 / (double)n : 0;
}

void rt_depth_stats(RtDepthStats *s, const float *x, int L, int64_t B, int64_t T, int64_t d)
{
    int64_t layer = B * T * d;
    int side = L + 1;
    s->L = L;
    s->variance = malloc((size_t)side * sizeof *s->variance);
    s->angular_last = malloc((size_t)side * side * sizeof *s->angular_last);
    s->angular_all = malloc((size_t)side * side * sizeof *s->angular_all);
    if (!s->variance || !s->angular_last || !s->angular_all) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    for (int l = 0; l <= L; l++)
        s->variance[l] = variance(x + (int64_t)l * layer, layer);
    for (int i = 0; i < side * side; i++)
        s->angular_last[i] = s->angular_all[i] = NAN;
    for (int l = 1; l <= L; l++)
        for (int n = 1; l + n <= L + 1; n++) {
            const float *a = x + (int64_t)(l - 1) * layer, *b = x + (int64_t)(l - 1 + n) * layer;
            double last = 0, all = 0;
            for (int64_t bi = 0; bi < B; bi++)
                for (int64_t t = 0; t < T; t++) {
                    int64_t r = (bi * T + t) * d;
                    double ang = rt_angular_distance(a + r, b + r, d);
                    all += ang;
                    if (t == T - 1)
                        last += ang;
                }
            s->angular_last[l * side + n] = last / (double)B;
            s->angular_all[l * side + n] = all / (double)(B * T);
        }
}

void rt_depth_stats_free(RtDepthStats *s)
{
    free(s->variance);
    free(s->angular_last);
    free(s->angular_all);
    memset(s, 0, sizeof *s);
}

int rt_depth_write_variance_csv(const RtDepthStats *s, FILE *out)
{
    fprintf(out, "layer,variance,growth\n");
    for (int l = 0; l <= s->L; l++)
        fprintf(out, "%d,%.9g,%.9g\n", l, s->variance[l],
                s->variance[0] > 0 ? s->variance[l] / s->variance[0] : NAN);
    return ferror(out) ? -1 : 0;
}

int rt_depth_write_angular_csv(const RtDepthStats *s, FILE *out)
{
    int side = s->L + 1;
    fprintf(out, "l,n,last_token,all_tokens\n");
    for (int l = 1; l <= s->L; l++)
        for (int n = 1; l + n <= s->L + 1; n++)
            fprintf(out, "%d,%d,%.9g,%.9g\n", l, n, s->angular_last[l * side + n], s->angular_all[l * side + n]);
    return ferror(out) ? -1 : 0;
}

int rt_depth_plot_script(FILE *out, const char *csv, const char *image, const char *kind, const char *title)
{
    size_t len = strlen(image);
    bool svg = len > 4 && !strcmp(image + len - 4, ".svg");
    fprintf(out, "set terminal %s noenhanced size 900,600\n", svg ? "svg dynamic" : "pngcairo");
    fprintf(out, "set output '%s'\nset datafile separator ','\nset key autotitle columnhead\n", image);
    fprintf(out, "set title '%s'\n", title);
    if (!strcmp(kind, "variance")) {
        fprintf(out, "set xlabel 'layer (0 = embedding output)'\nset ylabel 'variance of the residual stream'\n"
                     "set logscale y\nset grid\n"
                     "plot '%s' using 1:2 with linespoints lw 2 title 'variance'\n", csv);
    } else {
        int col = !strcmp(kind, "last") ? 3 : 4;
        /* A triangle of unit cells (n <= L + 1 - l): boxes, since "with image"
         * wants a full grid and skews a triangle. */
        fprintf(out, "set xlabel 'layer l'\nset ylabel 'distance n'\nset cblabel 'angular distance'\n"
                     "set cbrange [0:*]\nset palette rgbformulae 33,13,10\nunset key\n"
                     "plot '%s' using 1:2:(0.5):(0.5):%d with boxxyerror fs solid noborder lc palette\n",
                csv, col);
    }
    return ferror(out) ? -1 : 0;
}

/* Runs a gnuplot script; -1 with *err naming the image. */
int rt_gnuplot(const char *script, const char *image, char **err)
{
    FILE *g = popen("gnuplot 2>&1", "w");
    size_t n = strlen(script);
    int rc = 0;
    if (!g || fwrite(script, 1, n, g) != n) {
        *err = rt_fmt("cannot run gnuplot for %s (Debian: apt-get install gnuplot-nox)", image);
        rc = -1;
    }
    if (g && pclose(g) != 0 && rc == 0) {
        *err = rt_fmt("gnuplot failed drawing %s", image);
        rc = -1;
    }
    return rc;
}
