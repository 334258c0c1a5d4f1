/* tune.h - a model's matrix products and the backends they get (tune.c):
 * the list in `strata check`, and `strata tune`. */
#ifndef STRATA_TUNE_H
#define STRATA_TUNE_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

/* The distinct products of g's training step for B x T tokens, as rows of
 * {RT_GEMM_TA/TB flags, M, N, K} into p (at most cap); returns the count. */
int tune_products(const IrGraph *g, int64_t B, int64_t T, int64_t (*p)[4], int cap);
/* Lists them with the backend each gets, fp32 and bf16. */
void tune_report(FILE *out, const IrGraph *g, int64_t B, int64_t T);
/* Times every backend on them (fp32 and/or bf16) on a pool of `threads`
 * (0: all CPUs, as the trainer's default) and caches the winners; the exit
 * status. */
int tune_run(FILE *out, const IrGraph *g, int64_t B, int64_t T, bool fp32, bool bf16, int reps, int threads);
#endif
