/* data_main.h - the data preparation commands of `strata`:
 *   strata data       text or JSONL files -> llm.c token shards with a
 *                     train/validation split (data_main.c)
 *   strata tokenizer  train | encode | decode | info (tokenizer_main.c)
 * Both take argv with argv[0] the command word ("data"; "train", "encode",
 * ... for the tokenizer) and return the exit status: 0 ok, 1 bad input
 * (unreadable or malformed file, write error), 2 usage. */
#ifndef STRATA_DATA_MAIN_H
#define STRATA_DATA_MAIN_H
#include "tokenizer.h"

int rt_data_main(int argc, char **argv);
int rt_tokenizer_main(int argc, char **argv);

/* The tokenizer chosen by --tokenizer FILE, --bytes or --gpt2 DIR (DIR
 * holds encoder.json and vocab.bpe); exactly one of the three must be
 * given (bytes nonzero counts as given).  NULL with *err (malloc'd). */
RtTokenizer *rt_cli_tokenizer(const char *file, int bytes, const char *gpt2_dir, char **err);
#endif
