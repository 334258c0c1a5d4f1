/* ir.h - the tensor IR that the front end produces and later passes consume.
 * An IrGraph is a DAG of IrNodes in topological order, plus the parameter
 * table, the per-block records (residual stream in/out of each block, for
 * depth diagnostics and block skipping) and the human-readable plan.
 * Everything is allocated in the graph's Arena.
 *
 * Shapes: an activation is (B, T, width), row-major, one row per token
 * (`tok` set).  A non-token value is a parameter or constant: a scalar
 * (width 1), a per-channel vector (width n) or a matrix [rows, width]. */
#ifndef STRATA_IR_H
#define STRATA_IR_H
#include "front/arena.h"
#include "front/diag.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum IrOp {
#define IR_OPS(name, text, arity, ew, red, fus) IR_##name,
#include "ir/ops.h"
#undef IR_OPS
    IR_NUM_OPS
} IrOp;

typedef struct IrOpInfo {
    const char *text;
    int arity;
    bool elementwise, reduction, fusable;
} IrOpInfo;
extern const IrOpInfo ir_op_info[IR_NUM_OPS];

typedef enum IrInitKind {
    INIT_NORMAL,       /* N(0, a^2) */
    INIT_TRUNC_NORMAL, /* N(0, a^2) truncated to [b, c] */
    INIT_XAVIER,       /* N(0, (a * sqrt(2 / (fan_in + fan_out)))^2), as torch xavier_normal_ */
    INIT_ZEROS,
    INIT_ONES,
    INIT_CONSTANT,     /* every element = a */
} IrInitKind;

typedef struct IrInit {
    IrInitKind kind;
    double a, b, c;    /* see IrInitKind */
} IrInit;

typedef enum IrParamRole {
    PARAM_MATRIX,      /* weight of a matmul */
    PARAM_EMBEDDING,   /* table of embed() */
    PARAM_VECTOR,      /* per-channel vector (norm gains, LayerScale) */
    PARAM_SCALAR,      /* a single learnable number */
} IrParamRole;

typedef struct IrParam {
    const char *name;  /* stable dotted name, e.g. "layers.3.attn.wq" */
    int ndim;          /* 0 scalar, 1 vector, 2 matrix */
    int64_t dims[2];   /* [rows, cols]; a vector is [n] */
    int64_t numel;
    IrInit init;
    IrParamRole role;
    int block;         /* index of the block that created it, -1 outside blocks */
    Loc loc;           /* the `param` declaration or the linear/embed call */
    int index;         /* position in the parameter table */
} IrParam;

typedef struct IrNode IrNode;
/* Op semantics (shapes as above; "g" is an incoming gradient):
 *   ADD SUB MUL DIV        elementwise with broadcasting of width-1 operands over
 *                          the width and of non-token operands over the rows
 *   POWC                   x ^ num
 *   GELU                   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   MEAN SUM MAX           over the last dimension, width 1 result
 *   MATMUL                 trans_b: y = x W^T with W [out, in]; else y = x W, W [in, out]
 *   EMBED                  y[t] = table[tokens[t]]
 *   ROPE                   per head of size hd = width/heads, pairs (i, i + hd/2) of
 *                          the token at position t (t = row % T) rotated by angle
 *                          t * base^(-2i/hd), i < hd/2 (LLaMA / GPT-NeoX layout)
 *   ATTENTION              per head: softmax(q k^T / sqrt(hd) + causal mask) v
 *   CROSS_ENTROPY          mean over tokens with mask 1 of -log softmax(logits)[target];
 *                          the mask is a run-time input (all ones in pretraining)
 *   SUM_ROWS               [w] = sum over the B*T rows of x
 *   EXPAND                 (.., 1) -> (.., width): every column = x
 *   MATMUL_GRAD_W          [wa, wb] = sum over rows of a[r]^T b[r]
 *   EMBED_GRAD             [num (=vocab), width]: row v = sum of g[t] with tokens[t] = v
 *   ROPE_GRAD              ROPE with the angle negated (the transpose of ROPE)
 *   ATTENTION_GRAD         gradient of ATTENTION wrt in[which] (0 q, 1 k, 2 v) given g
 *   CE_GRAD                g * mask * (softmax(logits) - onehot(target)) / count */
struct IrNode {
    IrOp op;
    IrNode *in[4];     /* operands, ir_op_info[op].arity of them */
    bool tok;          /* one row per token (B*T rows); else a parameter/constant */
    bool is_int;       /* int32 ids (tokens, targets) */
    int64_t rows;      /* rows when !tok: 1, or the rows of a matrix param */
    int64_t width;     /* last dimension */
    double num;        /* CONST value; POWC exponent; ROPE base */
    int heads;         /* ROPE, ATTENTION */
    bool trans_b;      /* MATMUL: W stored [out, in] and used transposed */
    int which;         /* ATTENTION_GRAD: 0 dq, 1 dk, 2 dv */
    IrNode *saved;     /* ATTENTION_GRAD, CE_GRAD: the forward node whose output
                          and aux state (log-sum-exp) the backward reuses */
    IrParam *param;    /* PARAM */
    int block;         /* block that created the node, -1 outside */
    int id;            /* position in IrGraph.nodes */
    int kernel;        /* fused kernel (IrKernel.index) computing it; -1 for leaves */
    bool stored;       /* value written to memory (used outside its kernel, or an output) */
    Loc loc;           /* user source construct that created it */
};

/* A fused kernel (fuse.c): either one non-fusable op (matmul, attention,
 * ...) or a chain of elementwise ops and last-dimension reductions over the
 * same token rows, run as one loop over rows in which each member is
 * computed for the row and only `stored` members are written out. */
typedef struct IrKernel {
    int index;         /* position in IrGraph.kernels = execution order */
    bool rowwise;      /* a fused row loop (else a single op) */
    PtrVec nodes;      /* IrNode* members in topological order */
} IrKernel;

/* One iteration of a model-level `for` loop: a transformer block. */
typedef struct IrBlock {
    int index;         /* 0-based block number */
    double l;          /* value of the loop variable */
    const char *var;   /* the carried residual variable, e.g. "x" */
    IrNode *in, *out;  /* residual stream entering / leaving the block */
    IrNode *d_in, *d_out; /* after ad_build: d loss / d in and / d out (NULL: none) */
} IrBlock;

/* A line of the resolved plan; block -1 = outside any block. */
typedef struct IrPlanLine {
    int block;
    int depth;         /* nesting inside the block (inner loops, ifs) */
    const char *text;
} IrPlanLine;

typedef struct IrConfig {
    const char *name;
    double value;
    const char *source; /* "file", "preset NAME" or "-D" */
} IrConfig;

typedef struct IrGraph {
    Arena arena;
    PtrVec nodes;      /* IrNode*, topological order */
    PtrVec params;     /* IrParam*, table order */
    PtrVec blocks;     /* IrBlock* */
    PtrVec plan;       /* IrPlanLine* */
    PtrVec config;     /* IrConfig* */
    IrNode *tokens, *targets, *logits, *loss;
    const char *model_name;  /* the model file as given */
    int nforward;      /* nodes of the forward pass (0 until autodiff ran) */
    PtrVec grads;      /* IrNode* per parameter: d loss / d param (NULL: zero) */
    PtrVec kernels;    /* IrKernel*, execution order (empty until fuse_graph ran) */
} IrGraph;

void ir_init(IrGraph *g);
void ir_free(IrGraph *g);
IrNode *ir_add(IrGraph *g, IrOp op, Loc loc);
IrParam *ir_add_param(IrGraph *g, const char *name, Loc loc);
int64_t ir_param_total(const IrGraph *g);
/* Text form (--dump=ir), one node per line: %id = op(operands) : shape. */
void ir_dump(FILE *out, const IrGraph *g);
/* Checks structural invariants; returns false and prints on failure. */
bool ir_verify(const IrGraph *g, FILE *out);
void ir_init_text(char *buf, size_t n, const IrInit *init);
#endif
