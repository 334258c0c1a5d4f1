/* ops.h - THE op table of the tensor IR.  Every list of ops (the IrOp enum,
 * the IR printer and verifier, FLOP counting, autodiff and lowering
 * dispatch) is generated from this one X-macro; keep it the only list.
 *
 *   OP(name, text, arity, elementwise, reduction, fusable)
 *
 * elementwise: output element i depends only on input element i (with
 *   broadcasting of per-channel vectors and scalars over rows/columns).
 * reduction:   reduces the last (feature) dimension to width 1.
 * fusable:     may be placed in a fused loop nest with its neighbours. */
#ifndef IR_OPS
#error "define IR_OPS before including ops.h"
#endif
/*     name            text             ar ew red fus */
IR_OPS(INPUT_TOKENS,   "tokens",        0, 0, 0, 0) /* (B,T,1) int32 token ids */
IR_OPS(INPUT_TARGETS,  "targets",       0, 0, 0, 0) /* (B,T,1) int32 next-token ids */
IR_OPS(PARAM,          "param",         0, 0, 0, 0) /* a learnable tensor (IrParam) */
IR_OPS(CONST,          "const",         0, 0, 0, 1) /* compile-time scalar num */
IR_OPS(ADD,            "add",           2, 1, 0, 1)
IR_OPS(SUB,            "sub",           2, 1, 0, 1)
IR_OPS(MUL,            "mul",           2, 1, 0, 1)
IR_OPS(DIV,            "div",           2, 1, 0, 1)
IR_OPS(NEG,            "neg",           1, 1, 0, 1)
IR_OPS(POWC,           "powc",          1, 1, 0, 1) /* x ^ num (compile-time exponent) */
IR_OPS(EXP,            "exp",           1, 1, 0, 1)
IR_OPS(LOG,            "log",           1, 1, 0, 1)
IR_OPS(TANH,           "tanh",          1, 1, 0, 1)
IR_OPS(SIGMOID,        "sigmoid",       1, 1, 0, 1)
IR_OPS(SILU,           "silu",          1, 1, 0, 1)
IR_OPS(GELU,           "gelu",          1, 1, 0, 1) /* tanh approximation, as GPT-2 */
IR_OPS(SQRT,           "sqrt",          1, 1, 0, 1)
IR_OPS(RSQRT,          "rsqrt",         1, 1, 0, 1)
IR_OPS(ABS,            "abs",           1, 1, 0, 1)
IR_OPS(SQUARE,         "square",        1, 1, 0, 1)
IR_OPS(MEAN,           "mean",          1, 0, 1, 1) /* over the last dim -> width 1 */
IR_OPS(SUM,            "sum",           1, 0, 1, 1)
IR_OPS(MAX,            "max",           1, 0, 1, 1)
IR_OPS(MATMUL,         "matmul",        2, 0, 0, 0) /* x (B,T,in) . W; W [out,in] if trans */
IR_OPS(EMBED,          "embed",         2, 0, 0, 0) /* tokens, table [vocab, d] -> (B,T,d) */
IR_OPS(ROPE,           "rope",          1, 0, 0, 0) /* rotary embedding per head; num = base */
IR_OPS(ATTENTION,      "attention",     3, 0, 0, 0) /* causal multi-head sdpa of q, k, v */
IR_OPS(CROSS_ENTROPY,  "cross_entropy", 2, 0, 0, 0) /* mean over unmasked tokens -> scalar */
/* Ops that only autodiff creates (ad.c); semantics in ir.h. */
IR_OPS(SUM_ROWS,       "sum_rows",      1, 0, 0, 0) /* (B,T,w) -> [w]: sum over all tokens */
IR_OPS(EXPAND,         "expand",        1, 1, 0, 1) /* width 1 -> width `width` (copies) */
IR_OPS(SIGN,           "sign",          1, 1, 0, 1) /* -1, 0, +1 */
IR_OPS(SILU_GRAD,      "silu_grad",     1, 1, 0, 1) /* d silu(x) / dx */
IR_OPS(GELU_GRAD,      "gelu_grad",     1, 1, 0, 1) /* d gelu(x) / dx */
IR_OPS(EQ_MASK,        "eq_mask",       2, 1, 0, 1) /* 1 where a == b (b broadcast), else 0 */
IR_OPS(MATMUL_GRAD_W,  "matmul_grad_w", 2, 0, 0, 0) /* a^T b over all tokens -> [wa, wb] */
IR_OPS(EMBED_GRAD,     "embed_grad",    2, 0, 0, 0) /* tokens, g (B,T,d) -> [vocab, d] scatter-add */
IR_OPS(ROPE_GRAD,      "rope_grad",     1, 0, 0, 0) /* inverse rotation of g */
IR_OPS(ATTENTION_GRAD, "attention_grad",4, 0, 0, 0) /* q, k, v, g -> dq, dk or dv (`which`) */
IR_OPS(CE_GRAD,        "cross_entropy_grad", 3, 0, 0, 0) /* logits, targets, g -> d logits */
