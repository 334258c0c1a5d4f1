/* export.h - `strata export`: a checkpoint as a Hugging Face LLaMA directory
 * (config.json + model.safetensors, and tokenizer.json +
 * tokenizer_config.json) for models whose IR is LLaMA up to constant or
 * learned scales that fold into weights.  See export.c. */
#ifndef STRATA_EXPORT_H
#define STRATA_EXPORT_H

/* strata export MODEL.strata --ckpt CKPT -o DIR [-D NAME=VALUE]... [--preset NAME]
 * argv holds the arguments after "export".  Returns the exit status:
 * 0 written, 1 bad input or a model that is not LLaMA (the reason on
 * stderr), 2 bad usage. */
int export_main(int argc, char **argv);
#endif
