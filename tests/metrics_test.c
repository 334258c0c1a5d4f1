/* metrics_test.c - the metrics file round trip (a non-finite loss is
 * written as null and left out of the curve), readers' errors name the
 * file and line, a partial last line is skipped, rt_metrics_trim cuts a
 * log back to a step (rows after it, a partial and a garbled line go),
 * a failed write is reported at once, and two runs are drawn to PNG and
 * SVG with gnuplot.  Exit 0 pass, 1 fail. */
#define _GNU_SOURCE /* mkdtemp */
#include "train/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; } } while (0)

static void write_run(const char *path, double scale)
{
    RtMetrics m;
    char *err = NULL;
    if (rt_metrics_open(&m, path, &err)) {
        printf("FAIL: %s\n", err);
        exit(1);
    }
    for (int s = 1; s <= 50; s++) {
        CHECK(rt_metrics_train(&m, s, s == 7 ? NAN : scale * (5.0 / sqrt(s)), 1e-3, 0.5, 1024LL * s, 1e4, 0.1 * s,
                               &err) == 0, "row %d: %s", s, err);
        if (s % 10 == 0)
            CHECK(rt_metrics_val(&m, s, scale * (5.5 / sqrt(s)), &err) == 0, "val row %d: %s", s, err);
    }
    CHECK(rt_metrics_close(&m, &err) == 0, "close: %s", err);
}

int main(void)
{
    char dir[] = "/tmp/strata-metrics-XXXXXX";
    if (!mkdtemp(dir))
        return 99;
    char a[256], b[256], png[256], svg[256], bad[256];
    snprintf(a, sizeof a, "%s/pre_ln", dir);
    snprintf(b, sizeof b, "%s/lns", dir);
    mkdir(a, 0755);
    mkdir(b, 0755);
    strcat(a, "/metrics.jsonl");
    strcat(b, "/metrics.jsonl");
    write_run(a, 1.0);
    write_run(b, 0.9);
    RtCurve c[2];
    char *err = NULL;
    CHECK(rt_curve_load(&c[0], a, &err) == 0, "load: %s", err);
    CHECK(rt_curve_load(&c[1], b, &err) == 0, "load: %s", err);
    CHECK(c[0].n == 49 && c[0].nval == 5, "rows: %lld train, %lld val; want 49 and 5", (long long)c[0].n,
          (long long)c[0].nval);
    CHECK(!strcmp(c[0].name, "pre_ln") && !strcmp(c[1].name, "lns"), "run names '%s', '%s'", c[0].name,
          c[1].name);
    CHECK(c[0].step[6] == 8 && fabs(c[0].loss[0] - 5.0) < 1e-9, "values read back");
    snprintf(png, sizeof png, "%s/loss.png", dir);
    snprintf(svg, sizeof svg, "%s/loss.svg", dir);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        struct stat st;
        CHECK(rt_plot_curves(c, 2, png, "test", &err) == 0 && stat(png, &st) == 0 && st.st_size > 2000,
              "png: %s", err ? err : "too small");
        CHECK(rt_plot_curves(c, 2, svg, "test", &err) == 0 && stat(svg, &st) == 0 && st.st_size > 2000,
              "svg: %s", err ? err : "too small");
    } else {
        printf("note: no gnuplot; plots not checked\n");
    }
    rt_curve_free(&c[0]);
    rt_curve_free(&c[1]);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    FILE *f = fopen(bad, "w");
    fprintf(f, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"loss\": \n");
    fclose(f);
    char want[512];
    snprintf(want, sizeof want, "%s:2: bad JSON", bad);
    CHECK(rt_curve_load(&c[0], bad, &err) == -1 && err && !strncmp(err, want, strlen(want)), "bad JSON: '%s'",
          err ? err : "(none)");
    free(err);
    err = NULL;

    /* A partial last line (a kill while writing it) is skipped. */
    f = fopen(bad, "w");
    fprintf(f, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"loss\": 1.5}\n{\"step\": 3, \"lo");
    fclose(f);
    CHECK(rt_curve_load(&c[0], bad, &err) == 0 && c[0].n == 2 && c[0].step[1] == 2, "partial last line: %s",
          err ? err : "wrong rows");
    rt_curve_free(&c[0]);

    /* Trim to step 2: step 3 and 4 rows, the garbled line and the partial
     * last line go; a row without a step and blank lines stay. */
    f = fopen(bad, "w");
    const char *keep = "{\"step\": 1, \"loss\": 2}\n{\"note\": \"x\"}\n\n{\"step\": 2, \"val_loss\": 1.5}\n";
    fprintf(f, "%s{\"step\": 3, \"loss\": 1}\n{\"step\": 3, \"lo{\"step\": 4, \"loss\": 1}\n{\"step\": 4, \"l", keep);
    fclose(f);
    int64_t dropped = -1;
    CHECK(rt_metrics_trim(bad, 2, &dropped, &err) == 0 && dropped == 3, "trim: %s, dropped %lld", err ? err : "",
          (long long)dropped);
    char text[512] = {0};
    f = fopen(bad, "r");
    size_t got = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    CHECK(got == strlen(keep) && !strcmp(text, keep), "trimmed file: '%s'", text);
    CHECK(rt_metrics_trim(bad, 2, &dropped, &err) == 0 && dropped == 0, "trim again: dropped %lld",
          (long long)dropped);
    snprintf(text, sizeof text, "%s/none.jsonl", dir);
    CHECK(rt_metrics_trim(text, 5, &dropped, &err) == 0 && dropped == 0, "trim of a missing file");

    /* A write that fails (here: /dev/full, "disk full") is reported by the
     * row's call, naming the file. */
    RtMetrics m;
    if (rt_metrics_open(&m, "/dev/full", &err) == 0) {
        CHECK(rt_metrics_train(&m, 1, 2.0, 1e-3, 0.5, 10, 1e4, 0.1, &err) == -1 && err &&
                  strstr(err, "/dev/full: cannot write: No space left on device"),
              "disk full: %s", err ? err : "no error");
        free(err);
        err = NULL;
        CHECK(rt_metrics_close(&m, &err) == -1 && err, "close after a failed write must fail");
        free(err);
    } else {
        printf("note: no /dev/full: %s\n", err);
        free(err);
    }

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", dir);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("metrics: all checks pass\n");
    return 0;
}
