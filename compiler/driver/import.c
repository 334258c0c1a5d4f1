/* import.c - `strata import HF_DIR -o CKPT MODEL.strata` and the
 * `--init HF_DIR` of strata train and sft (import.h): a Hugging Face
 * LlamaForCausalLM directory (config.json, model.safetensors or shards
 * listed in model.safetensors.index.json, F32/BF16/F16/F64) as a Strata
 * checkpoint of a model whose IR is LLaMA (llama.h), the inverse of
 * export.c's mapping:
 *   - config.json must match the resolved model (sizes, heads, layers,
 *     vocabulary, rms_norm_eps, rope_theta; no grouped-query attention,
 *     rope scaling, biases or another activation): every difference is
 *     listed, with the -D that fixes it where the config has a constant of
 *     that value;
 *   - projections are copied ([out, in]; transposed for W [in, out]);
 *     HF's RoPE is rotate_half, Strata's half-split pairs, so q and k need
 *     no permutation;
 *   - scales export folded into a weight are unfolded: learned scale
 *     parameters a LLaMA does not have start at 1, and the weight (a norm's
 *     gain vector, else a projection's rows) takes HF's value divided by
 *     the constant factor, so the model computes HF's function;
 *   - a tied head reads model.embed_tokens.weight once (lm_head.weight, if
 *     present, must equal it); an untied one reads lm_head.weight, or the
 *     embedding when HF ties them.
 * Every mismatch is an error naming the file and the tensor; tensors the
 * model does not use are listed.  Memory: everything is freed here. */
#define _GNU_SOURCE /* asprintf */
#include "driver/import.h"
#include "driver/llama.h"
#include "driver/config.h"
#include "store/checkpoint.h"

#include "core/util.h"
#include "data/tokenizer.h"
#include "front/ast.h"
#include "store/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* printf to the report stream f, if there is one. */
__attribute__((format(printf, 2, 3))) static void say(FILE *f, const char *fmt, ...)
{
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
}

/* --- the Hugging Face directory ------------------------------------------- */

/* The weight files: one model.safetensors, or the shards of the index. */
typedef struct HfFiles {
    const char *dir;
    RtSafetensors *st;  /* (n) open files */
    char **name;        /* (n) their file names */
    int n;
    json_t *map;        /* the index's weight_map, or NULL: every tensor is in st[0] */
    PtrVec used;        /* names of the tensors read */
} HfFiles;

static void hf_close(HfFiles *h)
{
    for (int i = 0; i < h->n; i++) {
        rt_st_close(&h->st[i]);
        free(h->name[i]);
    }
    free(h->st);
    free(h->name);
    json_decref(h->map);
    vec_free(&h->used);
}

/* Opens dir's weights; false with *err. */
static bool hf_open(HfFiles *h, const char *dir, char **err)
{
    memset(h, 0, sizeof *h);
    h->dir = dir;
    char *index = rt_fmt("%s/model.safetensors.index.json", dir);
    struct stat sb;
    bool ok = true;
    if (stat(index, &sb) == 0) {
        json_error_t je;
        json_t *j = json_load_file(index, JSON_REJECT_DUPLICATES, &je);
        json_t *map = json_object_get(j, "weight_map");
        if (!json_is_object(map)) {
            *err = j ? rt_fmt("%s: no \"weight_map\" object", index)
                     : rt_fmt("%s:%d:%d: %s", index, je.line, je.column, je.text);
            json_decref(j);
            free(index);
            return false;
        }
        h->map = json_incref(map);
        json_decref(j);
        h->st = xcalloc(json_object_size(map) + 1, sizeof *h->st);
        h->name = xcalloc(json_object_size(map) + 1, sizeof *h->name);
        const char *key;
        json_t *v;
        json_object_foreach(map, key, v) {
            if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
                *err = rt_fmt("%s: weight_map \"%s\" is not a file name in the directory", index, key);
                ok = false;
                break;
            }
            int k = 0;
            while (k < h->n && strcmp(h->name[k], json_string_value(v)))
                k++;
            if (k < h->n)
                continue;
            char *path = rt_fmt("%s/%s", dir, json_string_value(v));
            ok = rt_st_open(&h->st[h->n], path, err) == 0;
            free(path);
            if (!ok)
                break;
            h->name[h->n++] = xstrdup(json_string_value(v));
        }
    } else {
        char *path = rt_fmt("%s/model.safetensors", dir);
        h->st = xcalloc(1, sizeof *h->st);
        h->name = xcalloc(1, sizeof *h->name);
        ok = rt_st_open(&h->st[0], path, err) == 0;
        if (ok)
            h->name[h->n++] = xstrdup("model.safetensors");
        free(path);
    }
    free(index);
    if (!ok)
        hf_close(h);
    return ok;
}

/* Tensor `name` as n floats into out, checking its shape (rows, cols; a
 * vector when cols is 0); false with *err naming the file and tensor. */
static bool hf_read(HfFiles *h, const char *name, int64_t rows, int64_t cols, float *out, char **err)
{
    int k = 0;
    if (h->map) {
        json_t *f = json_object_get(h->map, name);
        while (f && k < h->n && strcmp(h->name[k], json_string_value(f)))
            k++;
        if (!f || k == h->n) {
            *err = rt_fmt("%s: no tensor '%s' (model.safetensors.index.json does not list it)", h->dir, name);
            return false;
        }
    }
    const RtSafetensors *st = &h->st[k];
    const RtStTensor *t = rt_st_find(st, name);
    if (!t) {
        *err = rt_fmt("%s: no tensor '%s'", st->path, name);
        return false;
    }
    int ndim = cols ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char got[96] = "";
        for (int i = 0, at = 0; i < t->ndim && at < (int)sizeof got - 24; i++)
            at += snprintf(got + at, sizeof got - (size_t)at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        *err = cols ? rt_fmt("%s: tensor '%s' is [%s], the model needs [%lld, %lld]", st->path, name, got,
                             (long long)rows, (long long)cols)
                    : rt_fmt("%s: tensor '%s' is [%s], the model needs [%lld]", st->path, name, got,
                             (long long)rows);
        return false;
    }
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case RT_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case RT_F64: {
            double x;
            memcpy(&x, p + 8 * i, 8);
            out[i] = (float)x;
            break;
        }
        case RT_BF16: {
            uint32_t u = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
            u <<= 16;
            memcpy(&out[i], &u, 4);
            break;
        }
        case RT_F16: {
            uint32_t x = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8, s = (x >> 15) & 1, e = (x >> 10) & 31,
                     m = x & 1023;
            double v = e == 0 ? ldexp((double)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024.0 + m, (int)e - 25);
            out[i] = (float)(s ? -v : v);
            break;
        }
        default:
            *err = rt_fmt("%s: tensor '%s' is %s; Strata imports F32, BF16, F16 or F64", st->path, name,
                          rt_dtype_name(t->dtype));
            return false;
        }
        if (!isfinite(out[i])) {
            *err = rt_fmt("%s: tensor '%s' holds a NaN or infinity (element %lld)", st->path, name, (long long)i);
            return false;
        }
    }
    vec_push(&h->used, (void *)t->name);
    return true;
}

/* --- config.json ------------------------------------------------------------ */

/* A config constant whose value is v and whose name is one of the usual
 * size names, for a "-D NAME=..." hint; NULL if none. */
static const char *config_name(const IrGraph *g, double v, const char *const *names)
{
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        for (const char *const *n = names; *n; n++)
            if (!strcmp(c->name, *n) && c->value == v)
                return c->name;
    }
    return NULL;
}

/* Appends "key: HF's value, the model's (hint)" to *msg for a mismatch. */
static void mismatch(char **msg, const IrGraph *g, const char *key, double hf, double model, const char *const *names)
{
    const char *cn = names ? config_name(g, model, names) : NULL;
    char *hint = cn ? rt_fmt(" (pass -D %s=%.17g)", cn, hf) : xstrdup("");
    char *m = rt_fmt("%s\n  %s is %.17g in config.json, %.17g in the model%s", *msg ? *msg : "", key, hf, model, hint);
    free(hint);
    free(*msg);
    *msg = m;
}

static bool num_at(json_t *cfg, const char *key, double *v)
{
    json_t *j = json_object_get(cfg, key);
    if (!json_is_number(j))
        return false;
    *v = json_number_value(j);
    return true;
}

/* Checks HF_DIR/config.json against m; *tied gets tie_word_embeddings
 * (default false, as transformers' LlamaConfig).  False with *err listing
 * every difference. */
static bool check_hf_config(const char *dir, const Llama *m, const IrGraph *g, bool *tied, char **err)
{
    char *path = rt_fmt("%s/config.json", dir);
    json_error_t je;
    struct stat sb;
    json_t *cfg = stat(path, &sb) == 0 ? json_load_file(path, 0, &je) : NULL;
    if (!json_is_object(cfg)) {
        if (cfg)
            *err = rt_fmt("%s: not a JSON object", path);
        else if (stat(path, &sb) != 0)
            *err = rt_fmt("%s: %s (not a Hugging Face model directory?)", path, strerror(errno));
        else
            *err = rt_fmt("%s:%d:%d: %s", path, je.line, je.column, je.text);
        json_decref(cfg);
        free(path);
        return false;
    }
    char *msg = NULL;
    json_t *mt = json_object_get(cfg, "model_type");
    if (json_is_string(mt) && strcmp(json_string_value(mt), "llama")) {
        char *e = rt_fmt("%s\n  model_type is \"%s\"; Strata imports \"llama\"", msg ? msg : "",
                         json_string_value(mt));
        free(msg);
        msg = e;
    }
    static const char *const width[] = {"d", "dim", "width", "hidden", NULL}, *const ffn[] = {"ffn", "hidden", NULL},
                             *const heads[] = {"heads", "n_heads", NULL}, *const layers[] = {"L", "layers", NULL},
                             *const vocab[] = {"vocab", NULL}, *const rope[] = {"rope", "theta", NULL};
    struct {
        const char *key;
        double model;
        const char *const *names;
        bool required;
    } want[] = {
        {"hidden_size", (double)m->d, width, true},
        {"intermediate_size", (double)m->ffn, ffn, true},
        {"num_attention_heads", m->heads, heads, true},
        {"num_hidden_layers", m->L, layers, true},
        {"vocab_size", (double)m->vocab, vocab, true},
        {"num_key_value_heads", m->heads, NULL, false},
        {"head_dim", (double)(m->d / m->heads), NULL, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        double v;
        if (!num_at(cfg, want[i].key, &v)) {
            if (want[i].required) {
                char *e = rt_fmt("%s\n  %s is missing", msg ? msg : "", want[i].key);
                free(msg);
                msg = e;
            }
        } else if (v != want[i].model) {
            if (!strcmp(want[i].key, "num_key_value_heads")) {
                char *e = rt_fmt("%s\n  num_key_value_heads is %g of %d heads: grouped-query attention, which "
                                 "Strata's sdpa does not have",
                                 msg ? msg : "", v, m->heads);
                free(msg);
                msg = e;
            } else
                mismatch(&msg, g, want[i].key, v, want[i].model, want[i].names);
        }
    }
    double v;
    if (num_at(cfg, "rms_norm_eps", &v) && fabs(v - m->eps) > 1e-9 * m->eps) {
        char *e = rt_fmt("%s\n  rms_norm_eps is %g in config.json, %g in the model (rmsnorm(x, eps = %g))",
                         msg ? msg : "", v, m->eps, v);
        free(msg);
        msg = e;
    }
    if (num_at(cfg, "rope_theta", &v) ? v != m->theta : m->theta != 10000)
        mismatch(&msg, g, "rope_theta", num_at(cfg, "rope_theta", &v) ? v : 10000, m->theta, rope);
    json_t *rs = json_object_get(cfg, "rope_scaling"), *act = json_object_get(cfg, "hidden_act");
    const char *flags[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++)
        if (json_is_true(json_object_get(cfg, flags[i]))) {
            char *e = rt_fmt("%s\n  %s is true; Strata's projections have no bias", msg ? msg : "", flags[i]);
            free(msg);
            msg = e;
        }
    if (rs && !json_is_null(rs)) {
        char *e = rt_fmt("%s\n  rope_scaling is set; Strata's RoPE has no scaling", msg ? msg : "");
        free(msg);
        msg = e;
    }
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
        char *e = rt_fmt("%s\n  hidden_act is %s; Strata's SwiGLU uses silu", msg ? msg : "",
                         json_is_string(act) ? json_string_value(act) : "not a string");
        free(msg);
        msg = e;
    }
    json_t *tw = json_object_get(cfg, "tie_word_embeddings");
    *tied = json_is_true(tw);
    json_decref(cfg);
    if (msg) {
        *err = rt_fmt("%s does not fit %s:%s", path, g->model_name, msg);
        free(msg);
    }
    free(path);
    return !msg;
}

/* --- unfolding ------------------------------------------------------------ */

/* The values of the model's parameters as they are filled in. */
typedef struct Vals {
    const IrGraph *g;
    float **v;     /* (params) values, NULL until set */
    char *err;
} Vals;

/* The values of parameter p (allocated on first use). */
static float *slot(Vals *V, const IrParam *p)
{
    if (!V->v[p->index])
        V->v[p->index] = xcalloc((size_t)(p->numel > 0 ? p->numel : 1), sizeof(float));
    return V->v[p->index];
}

/* Sets every parameter of f but `keep` to 1; false when one was already
 * set otherwise (a parameter shared by two folds cannot be unfolded). */
static bool ones_but(Vals *V, const Factors *f, const IrParam *keep, const char *where)
{
    for (int k = 0; k < f->n; k++) {
        const IrParam *p = f->p[k];
        if (p == keep)
            continue;
        bool was = V->v[p->index] != NULL;
        float *x = slot(V, p);
        for (int64_t i = 0; i < (p->numel > 0 ? p->numel : 1); i++) {
            if (was && x[i] != 1) {
                V->err = rt_fmt("parameter '%s' scales %s and another tensor; it cannot be set from both",
                                p->name, where);
                return false;
            }
            x[i] = 1;
        }
    }
    return true;
}

/* A norm's gain from HF's weight g (d): the first d-wide vector of the
 * gain's factors takes g / c, the other learned factors 1; without a
 * vector, a scalar takes g (which must then be one value) / c; without
 * either, g must be the constant c. */
static bool unfold_gain(Vals *V, const Norm *n, const float *g, int64_t d, const char *hf)
{
    const Factors *f = &n->gain;
    const IrParam *keep = NULL;
    for (int k = 0; k < f->n && !keep; k++)
        if (f->p[k]->ndim == 1 && f->p[k]->dims[0] == d)
            keep = f->p[k];
    for (int k = 0; k < f->n && !keep; k++)
        if (f->p[k]->ndim == 0)
            keep = f->p[k];
    if (!ones_but(V, f, keep, hf))
        return false;
    if (keep && keep->ndim == 1) {
        float *x = slot(V, keep);
        for (int64_t i = 0; i < d; i++)
            x[i] = (float)((double)g[i] / f->c);
        return true;
    }
    for (int64_t i = 1; i < d; i++)
        if (g[i] != g[0]) {
            V->err = rt_fmt("%s varies across channels, but the model's norm has no per-channel gain", hf);
            return false;
        }
    if (keep) {
        *slot(V, keep) = (float)((double)g[0] / f->c);
        return true;
    }
    if (fabs((double)g[0] - f->c) > 1e-6 * fabs(f->c)) {
        V->err = rt_fmt("%s is %g, but the model's norm has no learned gain and scales by %g", hf, (double)g[0], f->c);
        return false;
    }
    return true;
}

/* A projection from HF's [out, in] weight w: its rows divided by the
 * constant of the scale f on its output (learned factors start at 1), into
 * the model's layout. */
static bool unfold_linear(Vals *V, const Linear *lin, const Factors *f, const float *w, const char *hf)
{
    if (f->c == 0) {
        V->err = rt_fmt("%s: the model multiplies this projection by 0; its weights cannot be recovered", hf);
        return false;
    }
    if (!ones_but(V, f, NULL, hf))
        return false;
    int64_t out, in;
    llama_hf_shape(lin, &out, &in);
    if (V->v[lin->w->index]) {
        V->err = rt_fmt("%s: the model's '%s' is used for another tensor too", hf, lin->w->name);
        return false;
    }
    float *x = slot(V, lin->w);
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < in; j++) {
            float y = (float)((double)w[i * in + j] / f->c);
            x[lin->trans_b ? i * in + j : j * out + i] = y;
        }
    return true;
}

/* Fills V from the directory's tensors. */
static bool unfold(Vals *V, HfFiles *h, const Llama *m, bool hf_tied, FILE *log, char **err)
{
    const int64_t d = m->d, ffn = m->ffn, vocab = m->vocab;
    float *buf = xmalloc((size_t)(vocab * d > d * ffn ? vocab * d : d * ffn) * sizeof *buf);
    float *lm = NULL;
    char name[160];
    bool ok = hf_read(h, "model.embed_tokens.weight", vocab, d, slot(V, m->embed), err);
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
        const Norm *norms[2] = {&ly->attn_norm, &ly->mlp_norm};
        const char *nn[2] = {"input_layernorm", "post_attention_layernorm"};
        for (int k = 0; ok && k < 2; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, nn[k]);
            ok = hf_read(h, name, d, 0, buf, err) && (unfold_gain(V, norms[k], buf, d, name) || (*err = V->err, false));
            V->err = NULL;
        }
        for (size_t k = 0; ok && k < sizeof proj / sizeof *proj; k++) {
            int64_t out, in;
            llama_hf_shape(proj[k].lin, &out, &in);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, proj[k].hf);
            ok = hf_read(h, name, out, in, buf, err) &&
                 (unfold_linear(V, proj[k].lin, proj[k].f, buf, name) || (*err = V->err, false));
            V->err = NULL;
        }
    }
    ok = ok && hf_read(h, "model.norm.weight", d, 0, buf, err) &&
         (unfold_gain(V, &m->norm, buf, d, "model.norm.weight") || (*err = V->err, false));
    V->err = NULL;
    /* the head: HF's own lm_head, else (tied) the embedding */
    bool have_lm = false;
    for (int k = 0; k < h->n && !have_lm; k++)
        have_lm = rt_st_find(&h->st[k], "lm_head.weight") != NULL;
    if (ok && have_lm) {
        lm = xmalloc((size_t)(vocab * d) * sizeof *lm);
        ok = hf_read(h, "lm_head.weight", vocab, d, lm, err);
    }
    bool model_tied = m->head.w == m->embed;
    if (ok && model_tied) {
        /* logits = x (c E)^T: HF's head must be c times the embedding */
        const float *e = V->v[m->embed->index], *head = have_lm && !hf_tied ? lm : e;
        if (!m->head.trans_b || m->head_scale.n) {
            *err = rt_fmt("the model's head is its embedding transposed differently or with learned scales; "
                          "Strata cannot import into it");
            ok = false;
        }
        for (int64_t i = 0; ok && i < vocab * d; i++)
            if (fabs((double)head[i] - m->head_scale.c * e[i]) > 1e-6 * fabs((double)head[i]) + 1e-30) {
                *err = rt_fmt("%s's lm_head.weight is not %smodel.embed_tokens.weight (tie_word_embeddings is "
                              "false), but %s ties its head to '%s': use a model with its own head",
                              h->dir, m->head_scale.c == 1 ? "" : "a multiple of ", V->g->model_name,
                              m->embed->name);
                ok = false;
            }
    } else if (ok) {
        const float *head = have_lm && !hf_tied ? lm : V->v[m->embed->index];
        if (!have_lm && !hf_tied) {
            *err = rt_fmt("%s: no tensor 'lm_head.weight' and tie_word_embeddings is false", h->dir);
            ok = false;
        }
        ok = ok && (unfold_linear(V, &m->head, &m->head_scale, head, "lm_head.weight") || (*err = V->err, false));
        if (ok && (hf_tied || !have_lm))
            say(log, "  %s = model.embed_tokens.weight (tie_word_embeddings)\n", m->head.w->name);
    }
    V->err = NULL;
    free(buf);
    free(lm);
    return ok;
}

/* --- the checkpoint --------------------------------------------------------- */

/* The tokenizer.json of the directory when Strata reads it (its path,
 * malloc'd), else NULL with a note. */
static char *hf_tokenizer(const char *dir, int64_t vocab, FILE *log)
{
    char *path = rt_fmt("%s/tokenizer.json", dir), *err = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        say(log, "no tokenizer.json in %s: none recorded (give sft --tokenizer FILE)\n", dir);
        free(path);
        return NULL;
    }
    RtTokenizer *t = rt_tok_load(path, &err);
    if (t && rt_tok_vocab_size(t) > vocab) {
        free(err);
        err = rt_fmt("%d ids, more than the model's %lld", rt_tok_vocab_size(t), (long long)vocab);
        rt_tok_free(t);
        t = NULL;
    }
    if (!t) {
        say(log, "note: the tokenizer is not recorded: %s\n", err);
        free(err);
        free(path);
        return NULL;
    }
    say(log, "tokenizer: %s (%d ids), recorded in the checkpoint\n", path, rt_tok_vocab_size(t));
    rt_tok_free(t);
    return path;
}

static bool write_ckpt(const char *out, const IrGraph *g, Vals *V, const char *source, const char *dir,
                       const char *tok, char **err)
{
    RtStWriter w;
    rt_st_writer_init(&w);
    bool ok = true;
    for (int i = 0; ok && i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        if (!V->v[i]) {
            *err = rt_fmt("parameter '%s' of %s has no counterpart in %s", p->name, g->model_name, dir);
            ok = false;
            break;
        }
        int64_t shape[2] = {p->dims[0], p->dims[1]};
        ok = rt_st_add(&w, p->name, RT_F32, shape, p->ndim, V->v[i], err) == 0;
    }
    json_t *state = json_object();
    json_object_set_new(state, "step", json_integer(0));
    json_object_set_new(state, "tokenizer", json_string(tok ? tok : ""));
    json_object_set_new(state, "imported_from", json_string(dir));
    char *st = json_dumps(state, JSON_PRESERVE_ORDER), *config = drv_config_json(g);
    json_decref(state);
    ok = ok && rt_st_add_meta(&w, "format", "pt", err) == 0 && rt_st_add_meta(&w, "strata.abi", RT_ABI_STRING, err) == 0 &&
         rt_st_add_meta(&w, "strata.model", source, err) == 0 &&
         rt_st_add_meta(&w, "strata.model_path", g->model_name, err) == 0 &&
         rt_st_add_meta(&w, "strata.config", config, err) == 0 && rt_st_add_meta(&w, "strata.state", st, err) == 0 &&
         rt_st_write(&w, out, err) == 0;
    free(st);
    free(config);
    rt_st_writer_free(&w);
    return ok;
}

int drv_import(const char *dir, const char *model, const SemaOptions *opt, const char *out, FILE *log, char **err)
{
    *err = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        *err = rt_fmt("%s: %s", dir, stat(dir, &sb) ? strerror(errno) : "not a directory");
        return 1;
    }
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(model, &why);
    if (!src) {
        *err = rt_fmt("cannot read %s: %s", model, why);
        return 1;
    }
    const char *source = src->text;
    Program prog = {0};
    IrGraph g;
    ir_init(&g);
    g.model_name = model;
    bool ok = ast_load(&prog, &d, src) && sema_resolve(&prog, opt, &d, &g);
    diag_finish(&d);
    Llama m = {0};
    char nonllama[512];
    HfFiles h = {0};
    bool have_h = false, hf_tied = false;
    Vals V = {.g = &g, .v = xcalloc((size_t)g.params.n + 1, sizeof *V.v)};
    char *tok = NULL;
    if (ok && !llama_recognise(&g, &m, nonllama, sizeof nonllama)) {
        *err = rt_fmt("cannot import into %s: it is not LLaMA: %s", model, nonllama);
        ok = false;
    }
    ok = ok && check_hf_config(dir, &m, &g, &hf_tied, err) && (have_h = hf_open(&h, dir, err)) &&
         unfold(&V, &h, &m, hf_tied, log, err);
    if (ok) {
        tok = hf_tokenizer(dir, m.vocab, log);
        ok = write_ckpt(out, &g, &V, source, dir, tok, err);
    }
    if (ok) {
        int unused = 0;
        for (int k = 0; k < h.n; k++)
            for (int i = 0; i < h.st[k].n; i++) {
                bool used = false;
                for (int j = 0; j < h.used.n && !used; j++)
                    used = h.used.v[j] == h.st[k].t[i].name;
                if (!used && !strcmp(h.st[k].t[i].name, "lm_head.weight"))
                    used = true; /* checked against the tied embedding */
                if (!used && unused++ < 8)
                    say(log, "  not used: %s\n", h.st[k].t[i].name);
            }
        char extra[48] = "";
        if (unused)
            snprintf(extra, sizeof extra, " (%d tensor%s not used)", unused, unused == 1 ? "" : "s");
        say(log, "imported %s (%d layers, hidden %lld, %d heads, vocab %lld; %d file%s) into %s for %s%s\n", dir, m.L,
               (long long)m.d, m.heads, (long long)m.vocab, h.n, h.n == 1 ? "" : "s", out, model, extra);
    }
    free(tok);
    if (have_h)
        hf_close(&h);
    for (int i = 0; i < g.params.n; i++)
        free(V.v[i]);
    free(V.v);
    llama_free(&m);
    ir_free(&g);
    ast_program_free(&prog);
    if (!ok && !*err)
        *err = rt_fmt("cannot import %s", dir);
    return ok ? 0 : 1;
}

/* strata import HF_DIR -o CKPT MODEL.strata [-D NAME=VALUE]... [--preset NAME] */
int import_main(int argc, char **argv)
{
    const char **defines = xcalloc((size_t)argc + 1, sizeof *defines);
    SemaOptions opt = {.defines = defines};
    const char *dir = NULL, *model = NULL, *out = NULL;
    int rc = 0;
    for (int i = 0; i < argc && !rc; i++) {
        const char *s = argv[i];
        bool takes = !strcmp(s, "-D") || !strcmp(s, "--preset") || !strcmp(s, "-o");
        if (takes && i + 1 >= argc) {
            fprintf(stderr, "strata: error: %s needs a value\n", s);
            rc = 2;
        } else if (!strcmp(s, "-D"))
            defines[opt.ndefines++] = argv[++i];
        else if (!strncmp(s, "-D", 2))
            defines[opt.ndefines++] = s + 2;
        else if (!strcmp(s, "--preset"))
            opt.preset = argv[++i];
        else if (!strcmp(s, "-o"))
            out = argv[++i];
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "strata: error: import: unknown option '%s' (see strata --help)\n", s);
            rc = 2;
        } else if (!dir)
            dir = s;
        else if (!model)
            model = s;
        else {
            fprintf(stderr, "strata: error: import: one directory and one model file, not also '%s'\n", s);
            rc = 2;
        }
    }
    if (!rc && (!dir || !model || !out)) {
        fprintf(stderr, "strata: error: usage: strata import HF_DIR -o CHECKPOINT.safetensors MODEL.strata "
                        "[-D NAME=VALUE]... [--preset NAME]\n");
        rc = 2;
    }
    char *err = NULL;
    if (!rc && drv_import(dir, model, &opt, out, stdout, &err)) {
        fprintf(stderr, "strata: error: %s\n", err);
        rc = 1;
    }
    free(err);
    free(defines);
    return rc;
}
