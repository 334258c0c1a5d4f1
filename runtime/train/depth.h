/* depth.h - depth diagnostics over a captured residual stream.
 * A capture holds the residual stream entering block 1 and after each of
 * the L blocks: (L+1, B, T, d) floats, row-major (strata_train_step /
 * strata_forward fill it; see the model ABI).  Layer l (1-based) reads
 * capture[l-1] and writes capture[l].  These functions only compute; the
 * writers put the results in CSV and draw them with gnuplot.
 *
 * Definitions (the layer-pruning literature, Gromov et al. 2024; Sun et al.
 * 2025 for the variance):
 *   variance(l)      variance of all B*T*d values of capture[l], l = 0..L
 *   angular(l, n)    (1/pi) arccos(cos(x_l, x_{l+n})) where x_l = capture[l-1]
 *                    is the input of layer l, for l = 1..L, n = 1..L+1-l;
 *                    "last": over the last token of each sequence, averaged
 *                    over the B sequences; "all": averaged over all B*T tokens.
 * Sums are in double.  A zero vector has cosine 1 with itself, 0 otherwise. */
#ifndef STRATA_DEPTH_H
#define STRATA_DEPTH_H
#include <stdint.h>
#include <stdio.h>

typedef struct RtDepthStats {
    int L;                 /* blocks */
    double *variance;      /* (L+1): capture index 0..L */
    double *angular_last;  /* (L+1, L+1): [l][n], l, n in 1..L, NAN where l+n > L+1 */
    double *angular_all;   /* (L+1, L+1) */
} RtDepthStats;

/* Computes all statistics of a capture; x is (L+1, B, T, d). */
void rt_depth_stats(RtDepthStats *s, const float *x, int L, int64_t B, int64_t T, int64_t d);
void rt_depth_stats_free(RtDepthStats *s);
/* (1/pi) arccos(cos(a, b)) of two d-vectors, in [0, 1]. */
double rt_angular_distance(const float *a, const float *b, int64_t d);

/* CSV: "layer,variance,growth" (growth = variance / variance at layer 0). */
int rt_depth_write_variance_csv(const RtDepthStats *s, FILE *out);
/* CSV: "l,n,last_token,all_tokens" for every defined (l, n). */
int rt_depth_write_angular_csv(const RtDepthStats *s, FILE *out);
/* Writes a gnuplot script that draws `csv` (from the writers above) to
 * `image` (.png or .svg by extension): a line plot of variance by layer,
 * or a heatmap of angular distance (x = l, y = n, "last" or "all"). */
int rt_depth_plot_script(FILE *out, const char *csv, const char *image, const char *kind, const char *title);
/* Runs a gnuplot script (popen); -1 with a malloc'd *err naming the image
 * when gnuplot is missing or fails. */
int rt_gnuplot(const char *script, const char *image, char **err);
#endif
