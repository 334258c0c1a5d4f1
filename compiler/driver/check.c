/* check.c - the human-readable summary of a resolved model (driver/check.h).
 * FLOP conventions: a matmul of a (rows x in) by (in x out) costs 2*in*out
 * per row forward and twice that backward (input and weight gradients);
 * causal attention costs 4*width*(T+1)/2 per token forward (QK^T and AV over
 * the (T+1)/2 visible keys on average) and twice that backward; other ops
 * count one FLOP per element forward and two backward. */
#include "driver/check.h"

#include "ir/kinds.h"

#include <inttypes.h>
#include <string.h>

ReportCost report_cost(const IrGraph *g, int64_t batch, int64_t seq)
{
    ReportCost c = {0};
    double tavg = (double)(seq + 1) / 2;
    double act_per_token = 0, attn_stats = 0;
    int nfwd = g->nforward ? g->nforward : g->nodes.n;
    for (int i = 0; i < nfwd; i++) {
        const IrNode *x = g->nodes.v[i];
        double f = 0, b = 0, w = (double)x->width;
        switch (x->op) {
        case IR_MATMUL: {
            const IrNode *wt = x->in[1];
            f = 2.0 * (double)wt->rows * (double)wt->width;
            b = 2 * f;
            break;
        }
        case IR_ATTENTION:
            f = 4.0 * w * tavg;
            b = 2 * f;
            attn_stats += x->heads; /* one log-sum-exp per head and token */
            break;
        case IR_CROSS_ENTROPY:
            f = 3.0 * (double)x->in[0]->width;
            b = 2.0 * (double)x->in[0]->width;
            break;
        case IR_EMBED:
        case IR_INPUT_TOKENS:
        case IR_INPUT_TARGETS:
            break;
        default:
            if (x->tok) {
                f = ir_op_info[x->op].reduction ? (double)x->in[0]->width : w;
                b = 2 * f;
            }
        }
        c.fwd_flops += f;
        c.bwd_flops += b;
        if (x->tok)
            act_per_token += w;
    }
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        c.params += p->numel;
        if (p->role == PARAM_EMBEDDING)
            c.embedding_params += p->numel;
    }
    c.param_bytes = 4.0 * (double)c.params;
    c.grad_bytes = 4.0 * (double)c.params;
    c.optim_bytes = 8.0 * (double)c.params;
    c.act_bytes = 4.0 * (double)batch * (double)seq * (act_per_token + attn_stats);
    return c;
}

/* 134105856 -> "134,105,856" */
static const char *commas(char *buf, int64_t n)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%" PRId64, n < 0 ? -n : n);
    int len = (int)strlen(tmp), o = 0;
    if (n < 0)
        buf[o++] = '-';
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static const char *human(char *buf, double x, const char *unit)
{
    const char *pre[] = {"", "K", "M", "G", "T", "P"};
    int k = 0;
    double base = strcmp(unit, "B") == 0 ? 1024 : 1000;
    while (x >= base && k < 5) {
        x /= base;
        k++;
    }
    snprintf(buf, 32, "%.4g %s%s%s", x, pre[k], k && base == 1024 ? "i" : "", unit);
    return buf;
}

void report_print(FILE *out, const IrGraph *g, const MemPlan *mp, int64_t batch, int64_t seq)
{
    char b1[48], b2[48], b3[48];
    fprintf(out, "model %s\n\nconfig:\n", g->model_name ? g->model_name : "?");
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        if (strcmp(c->source, "file"))
            fprintf(out, "  %-12s %-12.10g  # %s\n", c->name, c->value, c->source);
        else
            fprintf(out, "  %-12s %.10g\n", c->name, c->value);
    }
    fprintf(out, "\nplan:\n");
    int cur = -1;
    for (int i = 0; i < g->plan.n; i++) {
        const IrPlanLine *pl = g->plan.v[i];
        if (pl->block != cur && pl->block >= 0) {
            const IrBlock *blk = g->blocks.v[pl->block];
            fprintf(out, "  block %d (l = %g)%s%s:\n", pl->block + 1, blk->l, blk->var ? ", residual " : "",
                    blk->var ? blk->var : "");
        }
        cur = pl->block;
        fprintf(out, "%*s%s\n", 2 + (pl->block >= 0 ? 2 : 0) + 2 * pl->depth, "", pl->text);
    }
    if (mp && mp->layout.value && g->blocks.n && g->kernels.n) { /* what will be compiled: one function per kind */
        Kinds k;
        kinds_find(&k, g, &mp->layout);
        fputc('\n', out);
        kinds_print(out, &k, g);
        kinds_free(&k);
    }
    fprintf(out, "\nparameters:\n");
    int namew = 4;
    for (int i = 0; i < g->params.n; i++) {
        int n = (int)strlen(((IrParam *)g->params.v[i])->name);
        namew = n > namew ? n : namew;
    }
    fprintf(out, "  %-*s  %-14s %13s  %s\n", namew, "name", "shape", "count", "init");
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        char shape[64], init[96];
        if (p->ndim == 0)
            snprintf(shape, sizeof shape, "[]");
        else if (p->ndim == 1)
            snprintf(shape, sizeof shape, "[%" PRId64 "]", p->dims[0]);
        else
            snprintf(shape, sizeof shape, "[%" PRId64 ", %" PRId64 "]", p->dims[0], p->dims[1]);
        ir_init_text(init, sizeof init, &p->init);
        fprintf(out, "  %-*s  %-14s %13s  %s\n", namew, p->name, shape, commas(b1, p->numel), init);
    }
    ReportCost c = report_cost(g, batch, seq);
    fprintf(out, "\ntotal parameters: %s (%.1fM)\n", commas(b1, c.params), (double)c.params / 1e6);
    fprintf(out, "  embedding tables: %s; the rest: %s\n", commas(b2, c.embedding_params),
            commas(b3, c.params - c.embedding_params));
    double nonemb = (double)(c.params - c.embedding_params);
    fprintf(out, "\nFLOPs per token (seq %" PRId64 ", causal attention):\n", seq);
    fprintf(out, "  forward   %s\n", human(b1, c.fwd_flops, "FLOP"));
    fprintf(out, "  backward  %s\n", human(b1, c.bwd_flops, "FLOP"));
    fprintf(out, "  total     %s  (6N rule with N = non-embedding parameters: %s)\n",
            human(b1, c.fwd_flops + c.bwd_flops, "FLOP"), human(b2, 6 * nonemb, "FLOP"));
    fprintf(out, "\nmemory estimate (batch %" PRId64 ", seq %" PRId64 ", fp32, AdamW):\n", batch, seq);
    fprintf(out, "  parameters       %s\n", human(b1, c.param_bytes, "B"));
    fprintf(out, "  gradients        %s\n", human(b1, c.grad_bytes, "B"));
    fprintf(out, "  optimizer state  %s  (two moments)\n", human(b1, c.optim_bytes, "B"));
    double act = mp ? (double)mp->arena_bytes : c.act_bytes;
    if (mp)
        fprintf(out, "  activations      %s  (memory plan of forward + backward after fusion; %s if\n"
                     "                   nothing were reused, %s if every forward value were kept)\n",
                human(b1, act, "B"), human(b2, (double)mp->total_bytes, "B"), human(b3, c.act_bytes, "B"));
    else
        fprintf(out, "  activations      %s  (every forward value kept)\n", human(b1, act, "B"));
    fprintf(out, "  total            %s\n", human(b1, c.param_bytes + c.grad_bytes + c.optim_bytes + act, "B"));
}
