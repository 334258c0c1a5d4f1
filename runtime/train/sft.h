/* sft.h - supervised fine-tuning data: JSONL records -> token rows with a
 * loss mask that covers response tokens only.
 *
 * Accepted records, one JSON object per line (blank lines are skipped):
 *   {"prompt": P, "response": R}
 *   {"instruction": I, "input": X (may be "" or absent), "output": R}
 *   {"question": Q, "answer": R}
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": C}, ...]}
 * Template (plain text, so any tokenizer can encode it; EOT = the
 * tokenizer's end-of-text id, appended after every response):
 *   prompt/response:  "### Prompt:\n" P "\n### Response:\n" | R EOT
 *   instruction:      P = I, or I "\n\n" X when X is not empty
 *   question:         P = Q
 *   messages:         for each message, "### " Role ":\n" C "\n" where Role is
 *                     System, User or Assistant; an assistant message's C and
 *                     the EOT after it are the response part (trained), the
 *                     "### Assistant:\n" header before it and everything else
 *                     are prompt (not trained).
 * ('|' marks where the prompt part ends.)
 * The loss mask lines up with the shifted targets: a row of tokens
 * t[0..T] gives inputs t[0..T-1] and targets t[1..T], and mask[i] = 1 exactly
 * when target t[i+1] is a response token.
 * Records longer than T+1 tokens are truncated at the end (counted); a
 * record with no response token left is skipped (counted) and never
 * trained on.  Short records are padded, not packed: one record per row,
 * padding tokens EOT with mask 0, so no row attends across records. */
#ifndef STRATA_SFT_H
#define STRATA_SFT_H
#include <stdint.h>
#include <stdio.h>

/* Encodes text into *ids (malloc'd); returns the count, or -1 on error. */
typedef int64_t (*RtEncodeFn)(void *ctx, const char *text, size_t len, int32_t **ids);

typedef struct RtSftExample {
    int32_t *tokens;     /* (n) */
    uint8_t *response;   /* (n) 1 where the token belongs to a response */
    int64_t n;
} RtSftExample;

typedef struct RtSftSet {
    RtSftExample *ex;
    int64_t n, cap;
    int64_t records;     /* non-blank lines read */
    int64_t skipped;     /* no response token left (empty, or truncated away) */
    int64_t truncated;   /* longer than T+1 tokens */
    int64_t response_tokens; /* targets in the loss, over all kept records */
} RtSftSet;

/* Reads a JSONL file; every record becomes at most T+1 tokens.  Returns 0,
 * or -1 with a malloc'd message naming the file and line in *err. */
int rt_sft_load(RtSftSet *set, const char *path, int64_t T, RtEncodeFn encode, void *ctx, int32_t eot,
                char **err);
/* Same from memory (name is used in messages). */
int rt_sft_load_text(RtSftSet *set, const char *name, const char *text, size_t len, int64_t T,
                     RtEncodeFn encode, void *ctx, int32_t eot, char **err);
void rt_sft_free(RtSftSet *set);

/* Fills one batch of B rows from examples first, first+1, ... (wrapping
 * around): tokens, targets (B, T) and mask (B, T) as float weights. */
void rt_sft_batch(const RtSftSet *set, int64_t first, int64_t B, int64_t T, int32_t eot, int32_t *tokens,
                  int32_t *targets, float *mask);
#endif
