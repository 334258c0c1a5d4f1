/* depth_test.c - depth diagnostics against their definitions (depth.h):
 * angular distance of identical vectors 0, opposite 1, orthogonal 1/2, at
 * 60 degrees 1/3; a stream that only grows in scale has distance 0 and
 * variance growing with the square of the scale; a stream that rotates by
 * a fixed angle per layer has angular(l, n) = n * angle / pi; and the
 * gnuplot scripts draw non-empty pictures.  Exit 0 pass, 1 fail. */
#include "train/depth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int failures;

static void near(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        printf("FAIL: %s = %.12g, want %.12g\n", what, got, want);
        failures++;
    }
}

static void test_distance(void)
{
    float a[3] = {1, 2, 3}, neg[3] = {-1, -2, -3}, orth[3] = {2, -1, 0}, zero[3] = {0, 0, 0};
    float u[2] = {1, 0}, v[2] = {0.5f, (float)(sqrt(3) / 2)};
    near("identical", rt_angular_distance(a, a, 3), 0, 1e-7);
    near("opposite", rt_angular_distance(a, neg, 3), 1, 1e-7);
    near("orthogonal", rt_angular_distance(a, orth, 3), 0.5, 1e-12);
    near("60 degrees", rt_angular_distance(u, v, 2), 1.0 / 3, 1e-7);
    near("zero with zero", rt_angular_distance(zero, zero, 3), 0, 0);
    near("zero with a", rt_angular_distance(zero, a, 3), 0.5, 0);
}

/* (L+1, B, T, d) stream whose layer l is scale(l) * rot(l * angle) x0. */
static float *stream(int L, int B, int T, int d, double angle, double (*scale)(int))
{
    float *x = malloc(sizeof(float) * (size_t)((L + 1) * B * T * d));
    for (int l = 0; l <= L; l++)
        for (int r = 0; r < B * T; r++) {
            float *row = x + ((size_t)l * B * T + r) * d;
            double base = 0.3 + 0.1 * r; /* a different direction per token */
            for (int i = 0; i < d; i++)
                row[i] = 0;
            row[0] = (float)(scale(l) * cos(base + l * angle));
            row[1] = (float)(scale(l) * sin(base + l * angle));
        }
    return x;
}

static double one(int l) { (void)l; return 1; }
static double grow(int l) { return 1 + l; }

static void test_stats(void)
{
    int L = 4, B = 2, T = 3, d = 8;
    RtDepthStats s;
    float *x = stream(L, B, T, d, 0, grow);
    rt_depth_stats(&s, x, L, B, T, d);
    for (int l = 1; l <= L; l++)
        for (int n = 1; l + n <= L + 1; n++) {
            near("scaled stream, last", s.angular_last[l * (L + 1) + n], 0, 1e-6);
            near("scaled stream, all", s.angular_all[l * (L + 1) + n], 0, 1e-6);
        }
    for (int l = 0; l <= L; l++)
        near("variance growth = scale^2", s.variance[l] / s.variance[0], (1.0 + l) * (1.0 + l), 1e-5);
    rt_depth_stats_free(&s);
    free(x);

    double angle = 0.25;
    x = stream(L, B, T, d, angle, one);
    rt_depth_stats(&s, x, L, B, T, d);
    for (int l = 1; l <= L; l++)
        for (int n = 1; l + n <= L + 1; n++) {
            near("rotating stream, last", s.angular_last[l * (L + 1) + n], n * angle / M_PI, 1e-6);
            near("rotating stream, all", s.angular_all[l * (L + 1) + n], n * angle / M_PI, 1e-6);
        }
    if (!isnan(s.angular_all[1 * (L + 1) + L + 1])) {
        printf("FAIL: (l, n) past the last layer is defined\n");
        failures++;
    }
    /* Plots: write CSVs and scripts, run gnuplot when present. */
    char dir[] = "/tmp/strata-depth-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(99);
    }
    char csv[256], img[256], gp[256], cmd[600];
    snprintf(csv, sizeof csv, "%s/angular.csv", dir);
    snprintf(img, sizeof img, "%s/angular.png", dir);
    snprintf(gp, sizeof gp, "%s/angular.gp", dir);
    FILE *f = fopen(csv, "w"), *g = fopen(gp, "w");
    if (!f || !g || rt_depth_write_angular_csv(&s, f) || rt_depth_plot_script(g, csv, img, "last", "test")) {
        printf("FAIL: writing %s or %s\n", csv, gp);
        failures++;
    }
    fclose(f);
    fclose(g);
    snprintf(cmd, sizeof cmd, "command -v gnuplot >/dev/null 2>&1 && gnuplot %s", gp);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        struct stat st;
        if (system(cmd) != 0 || stat(img, &st) != 0 || st.st_size < 1000) {
            printf("FAIL: gnuplot did not draw %s\n", img);
            failures++;
        }
    } else {
        printf("note: no gnuplot; pictures not checked\n");
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", dir);
    rt_depth_stats_free(&s);
    free(x);
}

int main(void)
{
    test_distance();
    test_stats();
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("depth diagnostics: all checks pass\n");
    return 0;
}
