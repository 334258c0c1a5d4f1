/* llama.h - the LLaMA structure of a resolved model, recognised in its IR
 * op by op (llama.c): the token embedding; per block x = x + attn(norm1(x))
 * and x = x + swiglu(norm2(x)) with RMSNorm (one eps), RoPE (half-split
 * pairs, as Hugging Face's rotate_half), q/k/v/o and gate/up/down
 * projections; a final RMSNorm and a linear head (possibly the embedding
 * table itself, tied).  Constant and learned scales on a norm's output, a
 * branch's output or the logits are kept as Factors, so that strata export
 * (export.c) folds them into Hugging Face's LlamaForCausalLM weights and
 * strata import (import.c) unfolds those weights into the model's
 * parameters.  Llama.layers is malloc'd (llama_free); the IrParam
 * pointers belong to the graph. */
#ifndef STRATA_DRIVER_LLAMA_H
#define STRATA_DRIVER_LLAMA_H
#include "ir/ir.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLAMA_MAX_FACTORS 8

/* A product of scales: c times every parameter in p (a learned scalar, or
 * a per-channel vector as wide as what it scales). */
typedef struct Factors {
    double c;
    const IrParam *p[LLAMA_MAX_FACTORS];
    int n;
} Factors;

typedef struct Linear {
    const IrParam *w;  /* [out, in] when trans_b (HF's Linear layout), else [in, out] */
    bool trans_b;
} Linear;

typedef struct Norm {
    double eps;
    Factors gain;      /* the norm's gain times every scale on its output */
} Norm;

typedef struct Layer {
    double l;                      /* the block's loop value, for messages */
    Norm attn_norm, mlp_norm;      /* input_layernorm, post_attention_layernorm */
    Linear q, k, v, o, gate, up, down;
    Factors o_scale, down_scale;   /* per output channel of o_proj / down_proj */
    int heads;
    double theta;                  /* RoPE base */
} Layer;

typedef struct Llama {
    const IrParam *embed;          /* [vocab, d] */
    Layer *layers;                 /* (L) */
    int L;
    Norm norm;                     /* model.norm */
    Linear head;
    Factors head_scale;            /* per logit */
    int64_t d, ffn, vocab;
    int heads;
    double theta, eps;
} Llama;

/* Fills m with g's LLaMA structure; false with the first reason it is not
 * LLaMA in why ("block 1 normalises after the residual add (Post-LN)"). */
bool llama_recognise(const IrGraph *g, Llama *m, char *why, size_t nwhy);
void llama_free(Llama *m);
/* A projection's shape in Hugging Face's [out, in] layout; its name. */
const char *llama_hf_shape(const Linear *lin, int64_t *out, int64_t *in);
/* Whether f is the constant 1 (nothing to fold). */
bool llama_identity(const Factors *f);
#endif
