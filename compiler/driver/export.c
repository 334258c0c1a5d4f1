/* export.c - `strata export`: a Strata checkpoint as a Hugging Face
 * LlamaForCausalLM directory (config.json + model.safetensors, and the
 * tokenizer as tokenizer.json + tokenizer_config.json).
 * Entry point export_main (export.h).  The model is resolved to IR (no
 * autodiff) and its LLaMA structure is recognised in the graph, op by op
 * (llama_recognise, llama.c): the token embedding; per block x = x + attn(norm1(x)) and
 * x = x + swiglu(norm2(x)) with RMSNorm (one eps), RoPE (half-split pairs,
 * as HF's rotate_half, so q/k rows need no permutation), q/k/v/o and
 * gate/up/down projections; a final RMSNorm and a linear head.  Scales
 * fold into weights, exactly in real arithmetic:
 *   - a product of constants, learned scalars and per-channel vectors on a
 *     norm's output folds into that norm's gain (LNS's 1/sqrt(l), a learned
 *     depth scale: its trained value is a constant of the checkpoint);
 *   - the same on a branch's output folds into the rows of o_proj or
 *     down_proj, diag(s) W (LayerScale), and on the logits into lm_head.
 * Anything else is refused with the block and what differs (Post-LN,
 * DeepNorm's residual scale, Peri-LN's output norms, DyT, ...).  A head
 * that is the embedding table (linear(..., tied = tok_embeddings)) is
 * written once, with tie_word_embeddings.  The tokenizer: --tokenizer,
 * --gpt2 or --bytes, else the one the checkpoint's training recorded.
 * Memory: the IR lives in its arena; parameter values read from the
 * checkpoint and the exported tensors are malloc'd here and freed here. */
#define _GNU_SOURCE /* asprintf */
#include "driver/export.h"
#include "driver/llama.h"

#include "cmd/commands.h"

#include "front/ast.h"
#include "ir/ir.h"
#include "store/checkpoint.h"
#include "store/safetensors.h"
#include "store/atomic_file.h"
#include "core/util.h"
#include "resolve/sema.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --- the checkpoint -------------------------------------------------------- */

/* Compares the checkpoint's strata.config (when present) with the resolved
 * config, so that a forgotten -D is named rather than a tensor shape. */
static bool check_config(const RtSafetensors *st, const IrGraph *g, char **err)
{
    const char *text = rt_st_meta(st, "strata.config");
    if (!text)
        return true;
    json_error_t je;
    json_t *cfg = json_loads(text, 0, &je);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        if (asprintf(err, "%s: metadata strata.config is not a JSON object", st->path) < 0)
            *err = NULL;
        return false;
    }
    bool ok = true;
    for (int i = 0; ok && i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        json_t *v = json_object_get(cfg, c->name);
        if (v && json_is_number(v) && json_number_value(v) != c->value) {
            if (asprintf(err, "%s was written for %s=%g, the model resolves to %s=%g (pass -D %s=%g)", st->path,
                         c->name, json_number_value(v), c->name, c->value, c->name, json_number_value(v)) < 0)
                *err = NULL;
            ok = false;
        }
    }
    json_decref(cfg);
    return ok;
}

/* Every parameter of g from the checkpoint, F32 with its shape: vals[index]. */
static float **read_params(const RtSafetensors *st, const IrGraph *g, char **err)
{
    float **vals = xcalloc((size_t)g->params.n + 1, sizeof *vals);
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        int64_t shape[2] = {p->dims[0], p->dims[1]};
        vals[i] = xmalloc((size_t)(p->numel > 0 ? p->numel : 1) * sizeof(float));
        if (rt_st_read(st, p->name, RT_F32, shape, p->ndim, vals[i], err) ||
            rt_ckpt_check_finite(st->path, p->name, vals[i], p->numel, err)) {
            for (int k = 0; k <= i; k++)
                free(vals[k]);
            free(vals);
            return NULL;
        }
    }
    return vals;
}

/* f's value at channel i: c times each scalar and each vector's element i. */
static double factor_at(const Factors *f, float **vals, int64_t i)
{
    double s = f->c;
    for (int k = 0; k < f->n; k++)
        s *= vals[f->p[k]->index][f->p[k]->ndim == 0 ? 0 : i];
    return s;
}

/* The exported tensors: names, shapes and data (owned). */
typedef struct Out {
    RtStWriter w;
    PtrVec bufs;
    int64_t numel;
} Out;

static bool out_add(Out *o, const char *name, float *data, int64_t rows, int64_t cols, char **err)
{
    vec_push(&o->bufs, data);
    int64_t shape[2] = {rows, cols};
    o->numel += rows * (cols ? cols : 1);
    return rt_st_add(&o->w, name, RT_F32, shape, cols ? 2 : 1, data, err) == 0;
}

/* HF's [out, in] weight of lin, row i times the scale f(i). */
static float *linear_rows(const Linear *lin, const Factors *f, float **vals)
{
    int64_t out, in;
    llama_hf_shape(lin, &out, &in);
    const float *w = vals[lin->w->index];
    float *y = xmalloc((size_t)(out * in) * sizeof *y);
    for (int64_t i = 0; i < out; i++) {
        double s = factor_at(f, vals, i);
        for (int64_t j = 0; j < in; j++)
            y[i * in + j] = (float)((double)(lin->trans_b ? w[i * in + j] : w[j * out + i]) * s);
    }
    return y;
}

static float *gain(const Norm *n, int64_t d, float **vals)
{
    float *y = xmalloc((size_t)d * sizeof *y);
    for (int64_t i = 0; i < d; i++)
        y[i] = (float)factor_at(&n->gain, vals, i);
    return y;
}

/* Prints what folded into a tensor when it is more than a plain gain or weight. */
static void print_fold(const char *target, const Factors *f, bool norm)
{
    if (llama_identity(f) || (norm && f->c == 1 && f->n == 1 && f->p[0]->ndim == 1))
        return;
    printf("  %s = ", target);
    const char *sep = "";
    for (int k = 0; k < f->n; k++, sep = " * ")
        printf("%s%s", sep, f->p[k]->name);
    if (f->c != 1 || !f->n)
        printf("%s%.6g", sep, f->c);
    printf("%s\n", norm ? "" : " (per output row)");
}

/* The shortest decimal that reads back as v, as a JSON number with a
 * fraction or exponent (Python's json then reads a float). */
static void json_number_text(char *buf, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.1f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".eEn"))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static bool write_config(const char *path, const Llama *m, int64_t ctx, bool tied, char **err)
{
    char eps[40], theta[40], *text = NULL;
    json_number_text(eps, sizeof eps, m->eps);
    json_number_text(theta, sizeof theta, m->theta);
    int len = asprintf(&text,
                       "{\n"
                       "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                       "  \"model_type\": \"llama\",\n"
                       "  \"hidden_size\": %lld,\n"
                       "  \"intermediate_size\": %lld,\n"
                       "  \"num_attention_heads\": %d,\n"
                       "  \"num_key_value_heads\": %d,\n"
                       "  \"head_dim\": %lld,\n"
                       "  \"num_hidden_layers\": %d,\n"
                       "  \"vocab_size\": %lld,\n"
                       "  \"rms_norm_eps\": %s,\n"
                       "  \"rope_theta\": %s,\n"
                       "  \"rope_scaling\": null,\n"
                       "  \"max_position_embeddings\": %lld,\n"
                       "  \"tie_word_embeddings\": %s,\n"
                       "  \"hidden_act\": \"silu\",\n"
                       "  \"attention_bias\": false,\n"
                       "  \"attention_dropout\": 0.0,\n"
                       "  \"mlp_bias\": false,\n"
                       "  \"torch_dtype\": \"float32\"\n"
                       "}\n",
                       (long long)m->d, (long long)m->ffn, m->heads, m->heads, (long long)(m->d / m->heads), m->L,
                       (long long)m->vocab, eps, theta, (long long)ctx, tied ? "true" : "false");
    if (len < 0)
        die("out of memory");
    bool ok = rt_atomic_write_file(path, text, (size_t)len, err) == 0;
    free(text);
    return ok;
}

/* The context length: the config's ctx, else 2048. */
static int64_t config_ctx(const IrGraph *g)
{
    int64_t ctx = 2048;
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        if (!strcmp(c->name, "ctx") && c->value >= 1 && c->value < 1e9)
            ctx = (int64_t)c->value;
    }
    return ctx;
}

/* Writes DIR/config.json and DIR/model.safetensors. */
static bool write_hf(const char *dir, const Llama *m, const IrGraph *g, float **vals, const char *source,
                     char **err)
{
    Out o = {0};
    rt_st_writer_init(&o.w);
    char name[160];
    bool ok = out_add(&o, "model.embed_tokens.weight", linear_rows(&(Linear){m->embed, true}, &(Factors){.c = 1}, vals),
                      m->vocab, m->d, err);
    for (int i = 0; ok && i < m->L; i++) {
        const Layer *ly = &m->layers[i];
        static const Factors one = {.c = 1};
        struct {
            const char *hf;
            const Linear *lin;
            const Factors *f;
        } proj[] = {{"self_attn.q_proj", &ly->q, &one}, {"self_attn.k_proj", &ly->k, &one},
                    {"self_attn.v_proj", &ly->v, &one}, {"self_attn.o_proj", &ly->o, &ly->o_scale},
                    {"mlp.gate_proj", &ly->gate, &one}, {"mlp.up_proj", &ly->up, &one},
                    {"mlp.down_proj", &ly->down, &ly->down_scale}};
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
        ok = out_add(&o, name, gain(&ly->attn_norm, m->d, vals), m->d, 0, err);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
        ok = ok && out_add(&o, name, gain(&ly->mlp_norm, m->d, vals), m->d, 0, err);
        for (size_t k = 0; ok && k < sizeof proj / sizeof *proj; k++) {
            int64_t rows, cols;
            llama_hf_shape(proj[k].lin, &rows, &cols);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, proj[k].hf);
            ok = out_add(&o, name, linear_rows(proj[k].lin, proj[k].f, vals), rows, cols, err);
        }
    }
    ok = ok && out_add(&o, "model.norm.weight", gain(&m->norm, m->d, vals), m->d, 0, err);
    bool tied = m->head.w == m->embed && m->head.trans_b && llama_identity(&m->head_scale);
    if (ok && !tied)
        ok = out_add(&o, "lm_head.weight", linear_rows(&m->head, &m->head_scale, vals), m->vocab, m->d, err);
    ok = ok && rt_st_add_meta(&o.w, "format", "pt", err) == 0 &&
         rt_st_add_meta(&o.w, "strata.model_path", g->model_name, err) == 0 &&
         rt_st_add_meta(&o.w, "strata.model", source, err) == 0;
    char *path = NULL;
    if (ok) {
        if (asprintf(&path, "%s/model.safetensors", dir) < 0)
            die("out of memory");
        ok = rt_st_write(&o.w, path, err) == 0;
        free(path);
    }
    int64_t ctx = config_ctx(g);
    if (ok) {
        if (asprintf(&path, "%s/config.json", dir) < 0)
            die("out of memory");
        ok = write_config(path, m, ctx, tied, err);
        free(path);
    }
    if (ok) {
        printf("exported %s as LlamaForCausalLM to %s: %d layers, hidden %lld, intermediate %lld, %d heads, "
               "vocab %lld, %lld parameters%s\n",
               g->model_name, dir, m->L, (long long)m->d, (long long)m->ffn, m->heads, (long long)m->vocab,
               (long long)o.numel, tied ? " (tied head)" : "");
        for (int i = 0; i < m->L; i++) {
            char t[120];
            snprintf(t, sizeof t, "model.layers.%d.input_layernorm.weight", i);
            print_fold(t, &m->layers[i].attn_norm.gain, true);
            snprintf(t, sizeof t, "model.layers.%d.post_attention_layernorm.weight", i);
            print_fold(t, &m->layers[i].mlp_norm.gain, true);
            snprintf(t, sizeof t, "model.layers.%d.self_attn.o_proj.weight", i);
            print_fold(t, &m->layers[i].o_scale, false);
            snprintf(t, sizeof t, "model.layers.%d.mlp.down_proj.weight", i);
            print_fold(t, &m->layers[i].down_scale, false);
        }
        print_fold("model.norm.weight", &m->norm.gain, true);
        print_fold("lm_head.weight", &m->head_scale, false);
    }
    for (int i = 0; i < o.bufs.n; i++)
        free(o.bufs.v[i]);
    vec_free(&o.bufs);
    rt_st_writer_free(&o.w);
    return ok;
}

/* --- the command ----------------------------------------------------------- */

typedef struct ExportArgs {
    const char *model, *ckpt, *dir;
    const char *tokenizer, *gpt2; /* --tokenizer FILE, --gpt2 DIR */
    int bytes;                    /* --bytes */
    SemaOptions opt;
} ExportArgs;

static int parse_export_args(int argc, char **argv, ExportArgs *a, const char **defines)
{
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        bool takes = !strcmp(s, "-D") || !strcmp(s, "--preset") || !strcmp(s, "--ckpt") || !strcmp(s, "-o") ||
                     !strcmp(s, "--tokenizer") || !strcmp(s, "--gpt2");
        if (takes && i + 1 >= argc) {
            fprintf(stderr, "strata: error: %s needs a value\n", s);
            return 2;
        }
        if (!strcmp(s, "-D"))
            defines[a->opt.ndefines++] = argv[++i];
        else if (!strncmp(s, "-D", 2))
            defines[a->opt.ndefines++] = s + 2;
        else if (!strcmp(s, "--preset"))
            a->opt.preset = argv[++i];
        else if (!strcmp(s, "--ckpt"))
            a->ckpt = argv[++i];
        else if (!strcmp(s, "-o"))
            a->dir = argv[++i];
        else if (!strcmp(s, "--tokenizer"))
            a->tokenizer = argv[++i];
        else if (!strcmp(s, "--gpt2"))
            a->gpt2 = argv[++i];
        else if (!strcmp(s, "--bytes"))
            a->bytes = 1;
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "strata: error: export: unknown option '%s' (see strata --help)\n", s);
            return 2;
        } else if (a->model) {
            fprintf(stderr, "strata: error: more than one model file given ('%s' and '%s')\n", a->model, s);
            return 2;
        } else
            a->model = s;
    }
    if (!a->model || !a->ckpt || !a->dir) {
        fprintf(stderr, "strata: error: usage: strata export MODEL.strata --ckpt CHECKPOINT.safetensors -o DIR "
                        "[-D NAME=VALUE]... [--preset NAME] [--tokenizer FILE | --gpt2 DIR | --bytes]\n");
        return 2;
    }
    if ((a->tokenizer != NULL) + (a->gpt2 != NULL) + a->bytes > 1) {
        fprintf(stderr, "strata: error: export: give only one of --tokenizer FILE, --gpt2 DIR and --bytes\n");
        return 2;
    }
    a->opt.defines = defines;
    return 0;
}

/* The tokenizer "tokenizer" that the checkpoint's training state recorded
 * (malloc'd), or NULL. */
static char *recorded_tokenizer(const RtSafetensors *st)
{
    const char *text = rt_st_meta(st, "strata.state");
    json_t *j = text ? json_loads(text, 0, NULL) : NULL, *t = json_object_get(j, "tokenizer");
    char *path = json_is_string(t) && *json_string_value(t) ? strdup(json_string_value(t)) : NULL;
    json_decref(j);
    return path;
}

/* The tokenizer to write beside the weights: --tokenizer, --gpt2 or
 * --bytes, else the checkpoint's recorded one, else raw bytes for a
 * 256-token vocabulary; with none of these, a note and *t NULL.  It may
 * have fewer ids than the model (the rest are never made), not more.
 * Chosen before anything is written, so that a bad one writes nothing. */
static bool choose_tokenizer(const ExportArgs *a, const RtSafetensors *st, const Llama *m, RtTokenizer **t,
                             char **err)
{
    char *rec = a->tokenizer || a->gpt2 || a->bytes ? NULL : recorded_tokenizer(st);
    int bytes = a->bytes || (!a->tokenizer && !a->gpt2 && !rec && m->vocab == 256);
    const char *file = a->tokenizer ? a->tokenizer : rec;
    *t = NULL;
    if (!file && !a->gpt2 && !bytes) {
        printf("no tokenizer: %s records none and none was given (--tokenizer FILE, --gpt2 DIR or --bytes), so "
               "no tokenizer.json is written\n",
               a->ckpt);
        return true;
    }
    char *e = NULL;
    *t = rt_cli_tokenizer(file, bytes, a->gpt2, &e);
    bool ok = *t != NULL;
    if (ok && rt_tok_vocab_size(*t) > m->vocab) {
        e = rt_fmt("the tokenizer %s has %d ids, more than the model's vocabulary of %lld",
                   file ? file : a->gpt2 ? a->gpt2 : "raw bytes", rt_tok_vocab_size(*t), (long long)m->vocab);
        ok = false;
    }
    if (!ok) {
        *err = rec ? rt_fmt("%s (the tokenizer recorded in %s; give --tokenizer FILE to use another)", e, a->ckpt)
                   : rt_fmt("%s", e);
        free(e);
        rt_tok_free(*t);
        *t = NULL;
    } else if (rec)
        printf("tokenizer: %s (recorded in %s)\n", rec, a->ckpt);
    free(rec);
    return ok;
}

/* DIR/tokenizer.json and tokenizer_config.json, when there is a tokenizer. */
static bool write_tokenizer(const char *dir, const RtTokenizer *t, const Llama *m, int64_t ctx, char **err)
{
    if (!t)
        return true;
    if (rt_tok_save_hf_dir(t, dir, ctx, err))
        return false;
    printf("wrote %s/tokenizer.json and tokenizer_config.json: %d ids%s\n", dir, rt_tok_vocab_size(t),
           rt_tok_vocab_size(t) < m->vocab ? " (fewer than the model's vocabulary)" : "");
    return true;
}

static bool make_dir(const char *dir, char **err)
{
    struct stat sb;
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return true;
    if (asprintf(err, "cannot create the directory %s: %s", dir, errno == EEXIST ? "a file is in the way"
                                                                                : strerror(errno)) < 0)
        *err = NULL;
    return false;
}

int export_main(int argc, char **argv)
{
    ExportArgs a = {0};
    const char **defines = xcalloc((size_t)argc + 1, sizeof *defines);
    int rc = parse_export_args(argc, argv, &a, defines);
    if (rc) {
        free(defines);
        return rc;
    }
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(a.model, &why);
    if (!src) {
        fprintf(stderr, "strata: error: cannot read %s: %s\n", a.model, why);
        free(defines);
        return 1;
    }
    const char *source = src->text;
    Program prog = {0};
    IrGraph g;
    ir_init(&g);
    g.model_name = a.model;
    bool ok = ast_load(&prog, &d, src) && sema_resolve(&prog, &a.opt, &d, &g);
    diag_finish(&d);
    Llama m = {0};
    char nonllama[512];
    RtSafetensors st = {0};
    bool st_open = false;
    float **vals = NULL;
    char *err = NULL;
    if (ok && !llama_recognise(&g, &m, nonllama, sizeof nonllama)) {
        fprintf(stderr, "strata: error: cannot export %s as LLaMA: %s\n", a.model, nonllama);
        ok = false;
    }
    if (ok && !(st_open = rt_st_open(&st, a.ckpt, &err) == 0))
        ok = false;
    RtTokenizer *tok = NULL;
    ok = ok && check_config(&st, &g, &err) && (vals = read_params(&st, &g, &err)) &&
         choose_tokenizer(&a, &st, &m, &tok, &err) && make_dir(a.dir, &err) &&
         write_hf(a.dir, &m, &g, vals, source, &err) && write_tokenizer(a.dir, tok, &m, config_ctx(&g), &err);
    rt_tok_free(tok);
    if (!ok && err)
        fprintf(stderr, "strata: error: %s\n", err);
    if (vals)
        for (int i = 0; i < g.params.n; i++)
            free(vals[i]);
    free(vals);
    free(err);
    if (st_open)
        rt_st_close(&st);
    llama_free(&m);
    ir_free(&g);
    ast_program_free(&prog);
    free(defines);
    return ok ? 0 : 1;
}
