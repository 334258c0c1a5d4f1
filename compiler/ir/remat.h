/* remat.h - rematerialisation (activation checkpointing).
 * remat_blocks rewrites a differentiated graph (after ad_build, before
 * fuse_graph) so that the backward pass of each block recomputes the
 * block's forward values from the block's input instead of reading the
 * ones the forward pass computed.  The forward values then die inside the
 * forward pass, and the memory plan keeps only the residual stream between
 * blocks (each block's output) and attention's output and log-sum-exp
 * (kept, not redone: remat.c) plus one block's recomputed values at a
 * time: the activation memory of PyTorch's torch.utils.checkpoint around
 * every block, for about one more forward pass of the blocks.
 *
 * The recomputed nodes are copies of the forward nodes (same ops, same
 * kernels after fusion, same fixed work split), so the loss and every
 * gradient are the same numbers with and without it. */
#ifndef STRATA_REMAT_H
#define STRATA_REMAT_H
#include "ir/ir.h"

/* Returns the number of nodes added (0: no block had anything to redo). */
int remat_blocks(IrGraph *g);

/* The light form, on by default: a block's backward pass recomputes only
 * the elementwise values it reads (a norm's scaled rows, SwiGLU's gate and
 * product, ...) from operands it keeps anyway (the norm's input and its
 * rsqrt, the gate's two products); the matrix products, attention and
 * everything whose redoing would keep another value alive are kept, as
 * PyTorch's selective activation checkpointing saves the matmul outputs.
 * Same numbers as without it.  Returns the number of nodes added. */
int remat_pointwise(IrGraph *g);
#endif
