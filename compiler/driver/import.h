/* import.h - `strata import`: a Hugging Face LlamaForCausalLM directory as a
 * Strata checkpoint of a model file whose IR is LLaMA up to scales (the
 * inverse of strata export), and the same for `--init HF_DIR` of strata
 * train and sft.  See import.c. */
#ifndef STRATA_IMPORT_H
#define STRATA_IMPORT_H
#include "resolve/sema.h"

#include <stdio.h>

/* strata import HF_DIR -o CKPT MODEL.strata [-D NAME=VALUE]... [--preset NAME]
 * argv holds the arguments after "import".  Returns the exit status:
 * 0 written, 1 bad input (a directory that does not fit the model, a model
 * that is not LLaMA; the reason on stderr), 2 bad usage. */
int import_main(int argc, char **argv);

/* Reads dir (config.json, model.safetensors or its shards, tokenizer.json
 * when Strata reads it) into the checkpoint out for the model file resolved
 * with opt; says what it did on log (NULL: nothing).  0, or 1 with *err
 * (malloc'd). */
int drv_import(const char *dir, const char *model, const SemaOptions *opt, const char *out, FILE *log, char **err);
#endif
