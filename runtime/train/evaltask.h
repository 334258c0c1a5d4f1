/* evaltask.h - the task side of evaluation: reading task files, scoring
 * rules and answer extraction (the model side, log-likelihoods and greedy
 * decoding, comes from the generated forward pass).
 *
 * Multiple choice, as lm-evaluation-harness scores PIQA, ARC, HellaSwag or
 * BoolQ: JSONL records {"context": C, "choices": [S1, S2, ...], "label": k}
 * (k 0-based).  For each choice the model gives loglik = sum of the log
 * probabilities of the choice's tokens after the context; "acc" picks the
 * largest loglik, "acc_norm" the largest loglik / (bytes of the choice
 * string), the harness's length normalization.  Ties go to the first.
 *
 * Exact match, as GSM8K: the model's greedy continuation is cut at the stop
 * sequence, an answer is extracted by a rule and compared, after
 * normalization, with the reference (extracted from the reference answer
 * by the same rule when the task gives a worked solution).  Rules:
 *   "gsm8k"        the text after the last "####", up to the end of its line
 *   "last-number"  the last number in the text
 *   "first-line"   the first non-empty line
 * Normalization: surrounding spaces removed; for numbers, '$' and ','
 * removed, a trailing '.' dropped, and "18.00" written as "18". */
#ifndef STRATA_EVALTASK_H
#define STRATA_EVALTASK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct RtMcItem {
    char *context;
    char **choices;
    int nchoices;
    int label;
} RtMcItem;

typedef struct RtMcTask {
    RtMcItem *items;
    int64_t n;
} RtMcTask;

/* Reads a multiple-choice JSONL file; -1 with a malloc'd message naming the
 * file and line in *err. */
int rt_mc_load(RtMcTask *t, const char *path, char **err);
void rt_mc_free(RtMcTask *t);
/* Picks by raw and by length-normalized log-likelihood (see above). */
void rt_mc_pick(const double *loglik, const char *const *choices, int n, int *raw, int *norm);

/* Extracts the answer of `text` by `rule` into out (normalized); false if
 * there is none (e.g. no "####").  Unknown rule: false and *bad_rule set. */
bool rt_extract_answer(const char *text, const char *rule, char *out, size_t n, bool *bad_rule);
/* Cuts text at the first occurrence of stop (in place); returns its length. */
size_t rt_cut_at_stop(char *text, const char *stop);
#endif
