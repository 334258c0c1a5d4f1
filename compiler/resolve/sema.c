/* sema.c - semantic checks and per-layer resolution (see sema.h).
 * The model block is interpreted at compile time: numbers are evaluated,
 * tensor expressions become IR nodes, user functions are inlined with their
 * own scope and parameter-name prefix, and every iteration of a model-level
 * `for` loop becomes one block.  A failed expression yields V_ERR, which
 * propagates silently, so one mistake gives one message; a message inside a
 * loop is reported once, with the loop variables' values. */
#include "resolve/sema.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOOP_ITERS 100000     /* iterations of one loop */
#define MAX_STEPS 20000000L       /* statements + calls executed in total */
#define MAX_NODES 2000000         /* IR nodes */
#define MAX_FRAMES 256            /* nested function calls */
#define MAX_DIM 2147483647.0      /* largest width or parameter dimension */

typedef enum VKind {
    V_ERR,     /* an error was already reported */
    V_NUM,     /* compile-time number (booleans are 1/0) */
    V_TENSOR,  /* IR node */
    V_INIT,    /* an init rule */
    V_STR,     /* string literal (only imports use them) */
} VKind;

typedef struct Value {
    VKind kind;
    double num;
    IrNode *t;
    IrInit init;
} Value;

static const Value ERR = {V_ERR, 0, NULL, {0}};

typedef struct Binding Binding;
struct Binding {
    const char *name;
    Value v;
    bool loop_var;   /* `for` variable: read-only */
    Loc loc;         /* last assignment */
    Binding *next;
};

typedef struct Frame Frame;
struct Frame {
    const Node *fn;      /* AST_FN, or NULL for the model block */
    const Node *call;    /* the call that created it */
    Frame *parent;
    Binding *vars;
    const char *path;    /* parameter-name prefix ("" at the top) */
    bool returned;
    Value ret;
};

typedef struct Loop {
    const char *var;
    double value;
} Loop;

typedef struct Reported {
    Loc loc;
    const Node *outer_call;
    const char *msg;     /* without the loop suffix */
} Reported;

/* Open-addressing hash map from a string to a pointer (the keys are not
 * copied), so that resolution stays linear in the model's size: a model
 * of thousands of layers makes tens of thousands of names. */
typedef struct StrMap {
    const char **keys;   /* NULL: empty */
    void **vals;
    size_t cap, n;       /* cap a power of two (or 0), n < cap / 2 */
} StrMap;

static size_t str_hash(const char *s)
{
    size_t h = 14695981039346656037u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static void *strmap_get(const StrMap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = str_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return NULL;
        if (!strcmp(m->keys[i], key))
            return m->vals[i];
    }
}

static void strmap_put(StrMap *m, const char *key, void *val)
{
    if (2 * (m->n + 1) > m->cap) {
        StrMap old = *m;
        m->cap = old.cap ? 2 * old.cap : 64;
        m->keys = xcalloc(m->cap, sizeof *m->keys);
        m->vals = xcalloc(m->cap, sizeof *m->vals);
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i])
                strmap_put(m, old.keys[i], old.vals[i]);
        free(old.keys);
        free(old.vals);
    }
    size_t i = str_hash(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key))
        i = (i + 1) & (m->cap - 1);
    m->n += !m->keys[i];
    m->keys[i] = key;
    m->vals[i] = val;
}

static void strmap_free(StrMap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

typedef struct ScopeClaim {
    const char *full;    /* e.g. "layers.3.attn" */
    Loc loc;             /* the call (or its label) that took it */
} ScopeClaim;

typedef struct Sema {
    const Program *prog;
    Diag *d;
    IrGraph *g;
    Arena *arena;        /* = &g->arena */
    Binding *config;     /* config constants (global scope) */
    PtrVec fns;          /* AST_FN nodes */
    Frame *frame;        /* innermost */
    int depth;           /* number of frames */
    Loop loops[64];
    int nloops;
    int block;           /* current block index, -1 outside */
    int nblock_loops;    /* model-level loops seen (for the "layers" prefix) */
    int plan_depth;      /* nesting inside the current plan scope */
    long steps;
    bool silent;         /* evaluating for the plan text: report nothing */
    bool budget_blown;
    bool printed;        /* did the last err() print (not a repeat)? */
    bool in_config;      /* resolving the config block */
    const Node *config_rest; /* then: the entries after the current one */
    Reported *reported;
    int nreported, capreported;
    StrMap used_scopes;  /* full scope name -> ScopeClaim*: parameter scopes taken by calls */
    StrMap param_names;  /* full name -> IrParam*, to find duplicates in constant time */
    PtrVec cmdline;      /* SrcFile* of -D arguments */
} Sema;

/* ---- diagnostics ---------------------------------------------------- */

static const Node *outer_call(Sema *S)
{
    const Node *c = NULL;
    for (Frame *f = S->frame; f; f = f->parent)
        if (f->call)
            c = f->call;
    return c;
}

static bool in_std(Loc loc)
{
    return loc.file && !strcmp(loc.file->name, "<std>");
}

/* Reports an error at `loc`, once per (location, outermost call) and once
 * per (message, outermost call), with the values of the enclosing loop
 * variables and the chain of calls.  A mistake caught inside the standard
 * library is reported at the user's call, with the library line as a note. */
__attribute__((format(printf, 3, 4)))
static Value err(Sema *S, Loc loc, const char *fmt, ...)
{
    S->printed = false;
    if (S->silent)
        return ERR;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n >= (int)sizeof msg)
        n = (int)sizeof msg - 1;
    const Node *oc = outer_call(S);
    Loc std_loc = {0};
    const Frame *from = S->frame;
    if (in_std(loc)) {
        while (from && from->call && in_std(from->call->loc))
            from = from->parent;
        if (from && from->call) {
            std_loc = loc;
            loc = from->call->loc;
            from = from->parent;
        }
    }
    for (int i = 0; i < S->nreported; i++) {
        Reported *r = &S->reported[i];
        if (r->outer_call != oc)
            continue;
        if ((oc && !strcmp(r->msg, msg)) ||
            (r->loc.file == loc.file && r->loc.first_line == loc.first_line && r->loc.first_column == loc.first_column))
            return ERR;
    }
    if (S->nreported == S->capreported) {
        S->capreported = S->capreported ? 2 * S->capreported : 16;
        S->reported = xrealloc(S->reported, (size_t)S->capreported * sizeof *S->reported);
    }
    S->reported[S->nreported++] = (Reported){loc, oc, arena_strdup(S->arena, msg)};
    S->printed = true;
    for (int i = 0; i < S->nloops && n < (int)sizeof msg - 1; i++)
        n += snprintf(msg + n, sizeof msg - (size_t)n, "%s%s = %g%s", i ? ", " : " (at ", S->loops[i].var,
                      S->loops[i].value, i == S->nloops - 1 ? ")" : "");
    diag_error(S->d, loc, "%s", msg);
    if (std_loc.file)
        diag_note(S->d, std_loc, "the standard library's '%s' fails here", S->frame->fn ? S->frame->fn->name : "?");
    int shown = 0;
    for (const Frame *f = from; f && shown < 4; f = f->parent)
        if (f->call) {
            diag_note(S->d, f->call->loc, "in call to '%s' from here", f->call->name);
            shown++;
        }
    return ERR;
}

/* ---- values and scopes ---------------------------------------------- */

static Value num(double x)
{
    return (Value){.kind = V_NUM, .num = x};
}

static Value tensor(IrNode *t)
{
    return (Value){.kind = V_TENSOR, .t = t};
}

static Binding *find(Binding *b, const char *name)
{
    for (; b; b = b->next)
        if (strcmp(b->name, name) == 0)
            return b;
    return NULL;
}

static Binding *bind(Sema *S, Binding **list, const char *name, Value v)
{
    Binding *b = find(*list, name);
    if (!b) {
        b = arena_alloc(S->arena, sizeof *b);
        b->name = name;
        /* Append, so the order of first assignment is kept. */
        Binding **p = list;
        while (*p)
            p = &(*p)->next;
        *p = b;
    }
    b->v = v;
    return b;
}

static const Node *find_fn(Sema *S, const char *name)
{
    for (int i = 0; i < S->fns.n; i++) {
        const Node *f = S->fns.v[i];
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

static const char *kind_text(const Value *v)
{
    switch (v->kind) {
    case V_NUM: return "a number";
    case V_TENSOR: return v->t->tok ? "a tensor" : "a parameter";
    case V_INIT: return "an init rule";
    case V_STR: return "a string";
    default: return "an error";
    }
}

/* ---- IR construction ------------------------------------------------ */

static IrNode *node(Sema *S, IrOp op, Loc loc)
{
    if (S->g->nodes.n >= MAX_NODES) {
        if (!S->budget_blown)
            err(S, loc, "model too large: more than %d tensor operations", MAX_NODES);
        S->budget_blown = true;
    }
    IrNode *n = ir_add(S->g, op, loc);
    n->block = S->block;
    return n;
}

static IrNode *const_node(Sema *S, double x, Loc loc)
{
    IrNode *n = node(S, IR_CONST, loc);
    n->num = x;
    return n;
}

/* Checks that v can be an operand of elementwise arithmetic. */
static bool float_operand(Sema *S, const Value *v, Loc loc, const char *what)
{
    if (v->kind == V_NUM)
        return true;
    if (v->kind != V_TENSOR) {
        err(S, loc, "%s needs a number or a tensor, not %s", what, kind_text(v));
        return false;
    }
    if (v->t->is_int) {
        err(S, loc, "'%s' holds integer token ids; use embed() to turn them into vectors",
            v->t->op == IR_INPUT_TOKENS ? "tokens" : "targets");
        return false;
    }
    if (v->t->rows > 1) {
        err(S, loc, "parameter '%s' is a [%lld, %lld] matrix; matrices are only used by matmul",
            v->t->param ? v->t->param->name : "?", (long long)v->t->rows, (long long)v->t->width);
        return false;
    }
    return true;
}

static IrNode *as_node(Sema *S, Value v, Loc loc)
{
    return v.kind == V_NUM ? const_node(S, v.num, loc) : v.t;
}

static Value unary_op(Sema *S, IrOp op, Value x, Loc loc)
{
    IrNode *n = node(S, op, loc);
    n->in[0] = x.t;
    n->tok = x.t->tok;
    n->width = ir_op_info[op].reduction ? 1 : x.t->width;
    return tensor(n);
}

static Value binary_op(Sema *S, IrOp op, const char *optext, Value a, Value b, Loc loc)
{
    if (!float_operand(S, &a, loc, optext) || !float_operand(S, &b, loc, optext))
        return ERR;
    int64_t wa = a.kind == V_NUM ? 1 : a.t->width, wb = b.kind == V_NUM ? 1 : b.t->width;
    if (wa != wb && wa != 1 && wb != 1)
        return err(S, loc, "width mismatch in '%s': the left operand is %lld wide, the right one %lld",
                   optext, (long long)wa, (long long)wb);
    IrNode *x = as_node(S, a, loc), *y = as_node(S, b, loc);
    IrNode *n = node(S, op, loc);
    n->in[0] = x;
    n->in[1] = y;
    n->tok = n->in[0]->tok || n->in[1]->tok;
    n->width = wa > wb ? wa : wb;
    return tensor(n);
}

/* ---- parameters ----------------------------------------------------- */

static const char *join(Sema *S, const char *path, const char *name)
{
    return *path ? arena_printf(S->arena, "%s.%s", path, name) : arena_strdup(S->arena, name);
}

static IrParam *find_param(Sema *S, const char *name)
{
    return strmap_get(&S->param_names, name);
}

/* Creates parameter `name` in the current scope; NULL if the name is taken. */
static IrNode *new_param(Sema *S, const char *name, Loc loc, int ndim, const int64_t *dims,
                         IrInit init, IrParamRole role)
{
    const char *full = join(S, S->frame->path, name);
    IrParam *old = find_param(S, full);
    if (old) {
        err(S, loc, "duplicate parameter name '%s'", full);
        if (S->printed)
            diag_note(S->d, old->loc, "'%s' was first defined here", full);
        return NULL;
    }
    IrParam *p = ir_add_param(S->g, full, loc);
    strmap_put(&S->param_names, p->name, p);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->dims[i] = dims[i];
        p->numel *= dims[i];
    }
    p->init = init;
    p->role = role;
    p->block = S->block;
    IrNode *n = node(S, IR_PARAM, loc);
    n->param = p;
    n->rows = ndim == 2 ? dims[0] : 1;
    n->width = ndim == 0 ? 1 : dims[ndim - 1];
    return n;
}

static ScopeClaim *find_claim(Sema *S, const char *full)
{
    return strmap_get(&S->used_scopes, full);
}

static void claim(Sema *S, const char *full, Loc loc)
{
    ScopeClaim *c = arena_alloc(S->arena, sizeof *c);
    c->full = full;
    c->loc = loc;
    strmap_put(&S->used_scopes, c->full, c);
}

/* The name a call gives its parameters' scope: its label, or `base`, then
 * base_2, base_3, ...  NULL (after an error) if the label is taken. */
static const char *call_label(Sema *S, const Node *call, const char *base)
{
    const char *path = S->frame->path;
    if (call->label) {
        const char *full = join(S, path, call->label);
        ScopeClaim *old = find_claim(S, full);
        if (old) {
            err(S, call->label_loc, "the label '%s' is already used%s%s", call->label, *path ? " in " : "",
                path);
            if (S->printed)
                diag_note(S->d, old->loc, "'%s' was first used here", full);
            return NULL;
        }
        claim(S, full, call->label_loc);
        return call->label;
    }
    for (int k = 1;; k++) {
        const char *name = k == 1 ? base : arena_printf(S->arena, "%s_%d", base, k);
        const char *full = join(S, path, name);
        if (!find_claim(S, full)) {
            claim(S, full, call->loc);
            return name;
        }
    }
}

/* ---- evaluation ----------------------------------------------------- */

static Value eval(Sema *S, const Node *e);
static void exec_list(Sema *S, const Node *stmts);

/* A width, dimension, head count, or loop bound: a whole number in range. */
static bool whole(Sema *S, Value v, const Node *e, const char *what, double lo, int64_t *out)
{
    if (v.kind == V_ERR)
        return false;
    if (v.kind != V_NUM) {
        err(S, e->loc, "%s must be a compile-time number, but this is %s", what, kind_text(&v));
        return false;
    }
    if (v.num != floor(v.num) || v.num < lo || v.num > MAX_DIM) {
        err(S, e->loc, "%s must be a whole number %s %g, got %g", what, lo > 0 ? ">=" : "from", lo, v.num);
        return false;
    }
    *out = (int64_t)v.num;
    return true;
}

static Value checked(Sema *S, double r, Loc loc, const char *what)
{
    if (!isfinite(r))
        return err(S, loc, "%s is not a finite number", what);
    return num(r);
}

static Value arith(Sema *S, const Node *e, AstOp op, Value a, Value b)
{
    static const IrOp irop[] = {[OP_ADD] = IR_ADD, [OP_SUB] = IR_SUB, [OP_MUL] = IR_MUL, [OP_DIV] = IR_DIV};
    const char *t = ast_op_text(op);
    if (a.kind == V_NUM && b.kind == V_NUM) {
        double x = a.num, y = b.num;
        switch (op) {
        case OP_ADD: return checked(S, x + y, e->loc, "the sum");
        case OP_SUB: return checked(S, x - y, e->loc, "the difference");
        case OP_MUL: return checked(S, x * y, e->loc, "the product");
        case OP_DIV:
            if (y == 0)
                return err(S, e->loc, "division by zero");
            return checked(S, x / y, e->loc, "the quotient");
        case OP_POW:
            if (x < 0 && y != floor(y))
                return err(S, e->loc, "negative number %g raised to the fractional power %g", x, y);
            if (x == 0 && y < 0)
                return err(S, e->loc, "zero raised to the negative power %g", y);
            return checked(S, pow(x, y), e->loc, "the power");
        case OP_EQ: return num(x == y);
        case OP_NE: return num(x != y);
        case OP_LT: return num(x < y);
        case OP_LE: return num(x <= y);
        case OP_GT: return num(x > y);
        case OP_GE: return num(x >= y);
        default: break;
        }
    }
    if (op >= OP_EQ) /* comparisons, and/or */
        return err(S, e->loc, "'%s' compares compile-time numbers; the %s operand is %s", t,
                   a.kind != V_NUM ? "left" : "right", kind_text(a.kind != V_NUM ? &a : &b));
    if (op == OP_POW) {
        if (b.kind != V_NUM)
            return err(S, e->b->loc, "the exponent of '^' must be a compile-time number");
        if (!float_operand(S, &a, e->loc, "'^'"))
            return ERR;
        if (b.num == 1)
            return a;
        Value r = unary_op(S, IR_POWC, a, e->loc);
        r.t->num = b.num;
        return r;
    }
    if (op == OP_DIV && b.kind == V_NUM && b.num == 0)
        return err(S, e->loc, "division by zero");
    return binary_op(S, irop[op], t, a, b, e->loc);
}

static Value eval_binary(Sema *S, const Node *e)
{
    Value a = eval(S, e->a);
    if (a.kind == V_ERR)
        return ERR;
    if ((e->op == OP_AND || e->op == OP_OR) && a.kind == V_NUM) {
        if ((e->op == OP_AND) == (a.num == 0))
            return num(e->op == OP_OR);
        Value b = eval(S, e->b);
        if (b.kind == V_ERR)
            return ERR;
        if (b.kind != V_NUM)
            return err(S, e->b->loc, "'%s' needs compile-time values, but this is %s", ast_op_text(e->op),
                       kind_text(&b));
        return num(b.num != 0);
    }
    Value b = eval(S, e->b);
    if (b.kind == V_ERR)
        return ERR;
    if (a.kind == V_STR || b.kind == V_STR || a.kind == V_INIT || b.kind == V_INIT)
        return err(S, e->loc, "'%s' cannot be applied to %s", ast_op_text(e->op),
                   kind_text(a.kind == V_STR || a.kind == V_INIT ? &a : &b));
    if (e->op == OP_AND || e->op == OP_OR)
        return err(S, e->a->loc, "'%s' needs compile-time values, but this is %s", ast_op_text(e->op),
                   kind_text(&a));
    return arith(S, e, e->op, a, b);
}

static Value eval_unary(Sema *S, const Node *e)
{
    Value a = eval(S, e->a);
    if (a.kind == V_ERR)
        return ERR;
    if (a.kind == V_NUM)
        return num(e->op == OP_NEG ? -a.num : (double)(a.num == 0));
    if (e->op == OP_NOT)
        return err(S, e->loc, "'not' needs a compile-time value, but this is %s", kind_text(&a));
    if (!float_operand(S, &a, e->loc, "'-'"))
        return ERR;
    return unary_op(S, IR_NEG, a, e->loc);
}

static Value eval_name(Sema *S, const Node *e)
{
    Binding *b = find(S->frame->vars, e->name);
    if (!b)
        b = find(S->config, e->name);
    if (b)
        return b->v;
    if (strcmp(e->name, "true") == 0)
        return num(1);
    if (strcmp(e->name, "false") == 0)
        return num(0);
    if (strcmp(e->name, "pi") == 0)
        return num(M_PI);
    if (strcmp(e->name, "zeros") == 0)
        return (Value){.kind = V_INIT, .init = {INIT_ZEROS, 0, 0, 0}};
    if (strcmp(e->name, "ones") == 0)
        return (Value){.kind = V_INIT, .init = {INIT_ONES, 0, 0, 0}};
    if (strcmp(e->name, "xavier") == 0)
        return (Value){.kind = V_INIT, .init = {INIT_XAVIER, 1, 0, 0}};
    if (find_fn(S, e->name))
        return err(S, e->loc, "'%s' is a function; call it with arguments: %s(...)", e->name, e->name);
    for (const Node *c = S->config_rest; c; c = c->next)
        if (!strcmp(c->name, e->name))
            return err(S, e->loc, "'%s' is defined further down; a config constant can only use those above it",
                       e->name);
    if ((strcmp(e->name, "tokens") == 0 || strcmp(e->name, "targets") == 0) && S->in_config)
        return err(S, e->loc, "'%s' is an input of the model, not a compile-time value", e->name);
    if ((strcmp(e->name, "tokens") == 0 || strcmp(e->name, "targets") == 0) && S->frame->fn)
        return err(S, e->loc, "'%s' is only visible in the model block; pass it to the function as an argument",
                   e->name);
    return err(S, e->loc, "unknown name '%s'", e->name);
}

/* ---- calls ---------------------------------------------------------- */

/* Matches the arguments of `call` to the formal names; fills args[] and
 * argn[] (NULL for defaulted).  nreq formals are required. */
static bool bind_args(Sema *S, const Node *call, const char *fname, const char *const *formals, int nformals,
                      int nreq, const Node **argn)
{
    for (int i = 0; i < nformals; i++)
        argn[i] = NULL;
    int pos = 0, given = 0;
    bool named_seen = false, ok = true;
    for (const Node *a = call->a; a; a = a->next, given++) {
        int slot = -1;
        if (a->name) {
            named_seen = true;
            for (int i = 0; i < nformals; i++)
                if (strcmp(formals[i], a->name) == 0)
                    slot = i;
            if (slot < 0) {
                err(S, a->name_loc, "'%s' has no parameter named '%s'", fname, a->name);
                ok = false;
                continue;
            }
        } else {
            if (named_seen) {
                err(S, a->loc, "positional argument after a named one in call to '%s'", fname);
                ok = false;
                continue;
            }
            slot = pos++;
            if (slot >= nformals) {
                int n = 0;
                for (const Node *x = call->a; x; x = x->next)
                    n++;
                err(S, call->name_loc, "'%s' takes %s%d argument%s, but %d %s given", fname,
                    nreq == nformals ? "" : "at most ", nformals, nformals == 1 ? "" : "s", n,
                    n == 1 ? "was" : "were");
                return false;
            }
        }
        if (argn[slot]) {
            err(S, a->loc, "argument '%s' of '%s' is given twice", formals[slot], fname);
            ok = false;
            continue;
        }
        argn[slot] = a->a;
    }
    for (int i = 0; i < nreq && ok; i++)
        if (!argn[i]) {
            err(S, call->name_loc, "'%s' is missing its argument '%s' (it takes %s%d)", fname, formals[i],
                nreq == nformals ? "" : "at least ", nreq);
            ok = false;
        }
    return ok;
}

typedef enum BiKind {
    BI_MATH,     /* numbers only */
    BI_EW,       /* elementwise: numbers or tensors */
    BI_RED,      /* reduction over the last dim */
    BI_OTHER,
} BiKind;

typedef struct Builtin {
    const char *name;
    BiKind kind;
    IrOp op;           /* BI_EW, BI_RED */
    int nreq, nformals;
    const char *formals[4];
} Builtin;

static const Builtin builtins[] = {
    {"sqrt", BI_EW, IR_SQRT, 1, 1, {"x"}},
    {"rsqrt", BI_EW, IR_RSQRT, 1, 1, {"x"}},
    {"exp", BI_EW, IR_EXP, 1, 1, {"x"}},
    {"log", BI_EW, IR_LOG, 1, 1, {"x"}},
    {"abs", BI_EW, IR_ABS, 1, 1, {"x"}},
    {"square", BI_EW, IR_SQUARE, 1, 1, {"x"}},
    {"tanh", BI_EW, IR_TANH, 1, 1, {"x"}},
    {"sigmoid", BI_EW, IR_SIGMOID, 1, 1, {"x"}},
    {"silu", BI_EW, IR_SILU, 1, 1, {"x"}},
    {"gelu", BI_EW, IR_GELU, 1, 1, {"x"}},
    {"mean", BI_RED, IR_MEAN, 1, 1, {"x"}},
    {"sum", BI_RED, IR_SUM, 1, 1, {"x"}},
    {"max", BI_OTHER, IR_MAX, 1, 2, {"x", "y"}},
    {"min", BI_MATH, 0, 2, 2, {"x", "y"}},
    {"pow", BI_OTHER, 0, 2, 2, {"x", "y"}},
    {"floor", BI_MATH, 0, 1, 1, {"x"}},
    {"ceil", BI_MATH, 0, 1, 1, {"x"}},
    {"dim", BI_OTHER, 0, 1, 1, {"x"}},
    {"embed", BI_OTHER, IR_EMBED, 3, 4, {"tokens", "vocab", "width", "init"}},
    {"linear", BI_OTHER, IR_MATMUL, 2, 4, {"x", "width", "init", "tied"}},
    {"matmul", BI_OTHER, IR_MATMUL, 2, 2, {"x", "w"}},
    {"rope", BI_OTHER, IR_ROPE, 2, 3, {"x", "heads", "base"}},
    {"sdpa", BI_OTHER, IR_ATTENTION, 4, 4, {"q", "k", "v", "heads"}},
    {"cross_entropy", BI_OTHER, IR_CROSS_ENTROPY, 2, 2, {"logits", "targets"}},
    {"normal", BI_OTHER, 0, 1, 1, {"std"}},
    {"trunc_normal", BI_OTHER, 0, 1, 3, {"std", "a", "b"}},
    {"xavier", BI_OTHER, 0, 0, 1, {"gain"}},
    {"constant", BI_OTHER, 0, 1, 1, {"value"}},
    {"zeros", BI_OTHER, 0, 0, 0, {0}},
    {"ones", BI_OTHER, 0, 0, 0, {0}},
};

static const Builtin *find_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
        if (strcmp(builtins[i].name, name) == 0)
            return &builtins[i];
    return NULL;
}

static double gelu_num(double x)
{
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* A builtin applied to a compile-time number. */
static Value math_num(Sema *S, const Node *call, const char *name, const Value *v, int n)
{
    double x = v[0].num, r;
    Loc loc = call->loc;
    if (!strcmp(name, "sqrt") || !strcmp(name, "rsqrt")) {
        if (x < 0)
            return err(S, loc, "%s of the negative number %g", name, x);
        if (x == 0 && name[0] == 'r')
            return err(S, loc, "rsqrt of zero");
        r = name[0] == 'r' ? 1 / sqrt(x) : sqrt(x);
    } else if (!strcmp(name, "log")) {
        if (x <= 0)
            return err(S, loc, "log of the non-positive number %g", x);
        r = log(x);
    } else if (!strcmp(name, "exp")) r = exp(x);
    else if (!strcmp(name, "abs")) r = fabs(x);
    else if (!strcmp(name, "square")) r = x * x;
    else if (!strcmp(name, "tanh")) r = tanh(x);
    else if (!strcmp(name, "sigmoid")) r = 1 / (1 + exp(-x));
    else if (!strcmp(name, "silu")) r = x / (1 + exp(-x));
    else if (!strcmp(name, "gelu")) r = gelu_num(x);
    else if (!strcmp(name, "floor")) r = floor(x);
    else if (!strcmp(name, "ceil")) r = ceil(x);
    else if (!strcmp(name, "min")) r = fmin(x, v[1].num);
    else if (!strcmp(name, "max") && n == 2) r = fmax(x, v[1].num);
    else if (!strcmp(name, "pow")) {
        double y = v[1].num;
        if (x < 0 && y != floor(y))
            return err(S, loc, "pow of the negative number %g to the fractional power %g", x, y);
        if (x == 0 && y < 0)
            return err(S, loc, "pow of zero to the negative power %g", y);
        r = pow(x, y);
    } else
        return err(S, loc, "'%s' needs a tensor argument, not a number", name);
    return checked(S, r, loc, name);
}

static bool tensor_arg(Sema *S, Value v, const Node *e, const char *fname, const char *formal)
{
    if (v.kind == V_ERR)
        return false;
    if (v.kind != V_TENSOR) {
        err(S, e->loc, "argument '%s' of '%s' must be a tensor, but this is %s", formal, fname, kind_text(&v));
        return false;
    }
    return true;
}

static bool activation_arg(Sema *S, Value v, const Node *e, const char *fname, const char *formal)
{
    if (!tensor_arg(S, v, e, fname, formal))
        return false;
    if (!v.t->tok) {
        err(S, e->loc, "argument '%s' of '%s' must be a per-token activation, not a parameter", formal, fname);
        return false;
    }
    if (v.t->is_int) {
        err(S, e->loc, "argument '%s' of '%s' must be a float activation; token ids need embed() first", formal,
            fname);
        return false;
    }
    return true;
}

static bool init_arg(Sema *S, Value v, const Node *e, IrInit *out)
{
    if (v.kind == V_ERR)
        return false;
    if (v.kind == V_NUM) { /* a plain number means constant(number) */
        *out = (IrInit){INIT_CONSTANT, v.num, 0, 0};
        return true;
    }
    if (v.kind != V_INIT) {
        err(S, e->loc, "expected an init rule (normal, trunc_normal, xavier, zeros, ones, constant), got %s",
            kind_text(&v));
        return false;
    }
    *out = v.init;
    return true;
}

/* The parameter that `linear(..., tied = NAME)` reuses: a variable holding
 * a 2-D parameter (`param E[vocab, d]`), else the parameter whose dotted
 * name is NAME in the current scope or the nearest enclosing one (the
 * label of `embed(...) as tok_embeddings` at the model level is
 * `tok_embeddings` from anywhere).  Its IR_PARAM node, so that autodiff
 * adds both uses' gradients into one adjoint; NULL after an error. */
static IrNode *tied_param(Sema *S, const Node *e)
{
    if (e->kind != AST_NAME) {
        err(S, e->loc, "'tied' needs the name of a parameter, e.g. tied = tok_embeddings (the label of its embed)");
        return NULL;
    }
    Binding *b = find(S->frame->vars, e->name);
    if (b && b->v.kind == V_TENSOR && b->v.t->op == IR_PARAM) {
        if (b->v.t->param->ndim != 2) {
            err(S, e->loc, "'tied' needs a 2-D parameter; '%s' is %s", e->name,
                b->v.t->param->ndim ? "a vector" : "a scalar");
            return NULL;
        }
        return b->v.t;
    }
    if (b) {
        err(S, e->loc, "'tied' needs a parameter; the variable '%s' is %s", e->name, kind_text(&b->v));
        return NULL;
    }
    IrParam *p = NULL;
    for (const char *path = S->frame->path;;) {
        p = find_param(S, join(S, path, e->name));
        const char *dot = strrchr(path, '.');
        if (p || !*path)
            break;
        path = dot ? arena_printf(S->arena, "%.*s", (int)(dot - path), path) : "";
    }
    if (!p) {
        err(S, e->loc, "'tied = %s': no parameter '%s' is defined before this line (tie to the label of an "
                       "embed, e.g. embed(tokens, vocab, d) as %s)",
            e->name, e->name, e->name);
        return NULL;
    }
    if (p->ndim != 2) {
        err(S, e->loc, "'tied' needs a 2-D parameter; '%s' is %s", p->name, p->ndim ? "a vector" : "a scalar");
        return NULL;
    }
    for (int i = 0; i < S->g->nodes.n; i++) {
        IrNode *n = S->g->nodes.v[i];
        if (n->op == IR_PARAM && n->param == p)
            return n;
    }
    die("parameter %s has no IR node", p->name);
}

static Value call_builtin(Sema *S, const Node *call, const Builtin *bi)
{
    if (call->label && strcmp(bi->name, "linear") && strcmp(bi->name, "embed"))
        return err(S, call->label_loc, "'as %s' names parameters, but '%s' creates none", call->label, bi->name);
    /* Zeroed: init rules read argn[i] past nformals (normal(0.02) has one). */
    const Node *argn[4] = {0};
    if (!bind_args(S, call, bi->name, bi->formals, bi->nformals, bi->nreq, argn))
        return ERR;
    Value v[4] = {0};
    int n = 0;
    for (int i = 0; i < bi->nformals; i++) {
        if (!argn[i] || (i == 3 && !strcmp(bi->name, "linear"))) /* tied: a name, not a value */
            continue;
        v[i] = eval(S, argn[i]);
        if (v[i].kind == V_ERR)
            return ERR;
        n = i + 1;
    }
    const char *name = bi->name;
    Loc loc = call->loc;
    bool all_num = true;
    for (int i = 0; i < n; i++)
        all_num &= v[i].kind == V_NUM;

    if (bi->kind == BI_MATH || (bi->kind == BI_EW && all_num) || (!strcmp(name, "pow") && all_num) ||
        (!strcmp(name, "max") && n == 2)) {
        for (int i = 0; i < n; i++)
            if (v[i].kind != V_NUM)
                return err(S, argn[i]->loc, "'%s' needs compile-time numbers, but this is %s", name,
                           kind_text(&v[i]));
        return math_num(S, call, name, v, n);
    }
    if (bi->kind == BI_EW || bi->kind == BI_RED || !strcmp(name, "max")) {
        if (!float_operand(S, &v[0], argn[0]->loc, name))
            return ERR;
        if (v[0].kind == V_NUM)
            return err(S, argn[0]->loc, "'%s' reduces a tensor over its last dimension; this is a number", name);
        return unary_op(S, bi->op, v[0], loc);
    }
    if (!strcmp(name, "pow")) {
        Node fake = *call;
        fake.op = OP_POW;
        fake.a = (Node *)argn[0];
        fake.b = (Node *)argn[1];
        return arith(S, &fake, OP_POW, v[0], v[1]);
    }
    if (!strcmp(name, "dim")) {
        if (!tensor_arg(S, v[0], argn[0], name, "x"))
            return ERR;
        return num((double)v[0].t->width);
    }
    /* init rules */
    if (!strcmp(name, "normal") || !strcmp(name, "trunc_normal") || !strcmp(name, "xavier") ||
        !strcmp(name, "constant") || !strcmp(name, "zeros") || !strcmp(name, "ones")) {
        for (int i = 0; i < n; i++)
            if (argn[i] && v[i].kind != V_NUM)
                return err(S, argn[i]->loc, "'%s' needs compile-time numbers, but this is %s", name,
                           kind_text(&v[i]));
        Value r = {.kind = V_INIT};
        if (!strcmp(name, "normal") || !strcmp(name, "trunc_normal")) {
            if (v[0].num < 0)
                return err(S, argn[0]->loc, "standard deviation must not be negative, got %g", v[0].num);
            r.init = (IrInit){name[0] == 'n' ? INIT_NORMAL : INIT_TRUNC_NORMAL, v[0].num, -2 * v[0].num,
                              2 * v[0].num};
            if (argn[1])
                r.init.b = v[1].num;
            if (argn[2])
                r.init.c = v[2].num;
            if (r.init.kind == INIT_TRUNC_NORMAL && !(r.init.b < r.init.c))
                return err(S, loc, "trunc_normal needs a < b, got [%g, %g]", r.init.b, r.init.c);
        } else if (!strcmp(name, "xavier")) {
            r.init = (IrInit){INIT_XAVIER, argn[0] ? v[0].num : 1, 0, 0};
        } else if (!strcmp(name, "constant")) {
            r.init = (IrInit){INIT_CONSTANT, v[0].num, 0, 0};
        } else {
            r.init = (IrInit){name[0] == 'z' ? INIT_ZEROS : INIT_ONES, 0, 0, 0};
        }
        return r;
    }
    if (!strcmp(name, "linear") || !strcmp(name, "matmul")) {
        if (!activation_arg(S, v[0], argn[0], name, "x"))
            return ERR;
        IrNode *w;
        int64_t width;
        if (name[0] == 'l' && argn[3]) {
            /* y = x E^T with the [width, dim(x)] parameter E of another use */
            if (!whole(S, v[1], argn[1], "the width of 'linear'", 1, &width))
                return ERR;
            if (argn[2])
                return err(S, argn[2]->loc, "a tied linear has no weight of its own to initialise ('%s' is "
                                            "initialised where it is defined)",
                           argn[3]->name ? argn[3]->name : "tied");
            if (call->label)
                return err(S, call->label_loc, "'as %s' names parameters, but a tied linear creates none",
                           call->label);
            if (!(w = tied_param(S, argn[3])))
                return ERR;
            if (w->param->dims[0] != width || w->param->dims[1] != v[0].t->width)
                return err(S, loc, "tied linear: '%s' is [%lld, %lld], a linear from %lld to %lld features needs "
                                   "[%lld, %lld]",
                           w->param->name, (long long)w->param->dims[0], (long long)w->param->dims[1],
                           (long long)v[0].t->width, (long long)width, (long long)width, (long long)v[0].t->width);
        } else if (name[0] == 'l') {
            if (!whole(S, v[1], argn[1], "the width of 'linear'", 1, &width))
                return ERR;
            IrInit init = {INIT_NORMAL, 0.02, 0, 0};
            if (argn[2] && !init_arg(S, v[2], argn[2], &init))
                return ERR;
            int64_t dims[2] = {width, v[0].t->width};
            const char *label = call_label(S, call, "linear");
            w = label ? new_param(S, label, call->label ? call->label_loc : loc, 2, dims, init, PARAM_MATRIX)
                      : NULL;
            if (!w)
                return ERR;
        } else {
            if (!tensor_arg(S, v[1], argn[1], name, "w"))
                return ERR;
            w = v[1].t;
            if (w->tok || !w->param || w->rows == 1 || w->param->ndim != 2)
                return err(S, argn[1]->loc, "argument 'w' of 'matmul' must be a 2-D parameter [in, out]");
            if (w->rows != v[0].t->width)
                return err(S, loc, "matmul shape mismatch: x is %lld wide but w is [%lld, %lld]",
                           (long long)v[0].t->width, (long long)w->rows, (long long)w->width);
            w->param->role = PARAM_MATRIX;
        }
        IrNode *m = node(S, IR_MATMUL, loc);
        m->in[0] = v[0].t;
        m->in[1] = w;
        m->trans_b = name[0] == 'l';
        m->tok = true;
        m->width = m->trans_b ? w->rows : w->width;
        return tensor(m);
    }
    if (!strcmp(name, "embed")) {
        if (!tensor_arg(S, v[0], argn[0], name, "tokens"))
            return ERR;
        if (!v[0].t->is_int)
            return err(S, argn[0]->loc, "argument 'tokens' of 'embed' must hold token ids (tokens or targets)");
        int64_t vocab, width;
        if (!whole(S, v[1], argn[1], "the vocabulary size", 1, &vocab) ||
            !whole(S, v[2], argn[2], "the embedding width", 1, &width))
            return ERR;
        IrInit init = {INIT_NORMAL, 0.02, 0, 0};
        if (argn[3] && !init_arg(S, v[3], argn[3], &init))
            return ERR;
        int64_t dims[2] = {vocab, width};
        const char *label = call_label(S, call, "embed");
        IrNode *w = label ? new_param(S, label, call->label ? call->label_loc : loc, 2, dims, init, PARAM_EMBEDDING)
                          : NULL;
        if (!w)
            return ERR;
        IrNode *m = node(S, IR_EMBED, loc);
        m->in[0] = v[0].t;
        m->in[1] = w;
        m->tok = true;
        m->width = width;
        return tensor(m);
    }
    if (!strcmp(name, "rope")) {
        if (!activation_arg(S, v[0], argn[0], name, "x"))
            return ERR;
        int64_t heads;
        if (!whole(S, v[1], argn[1], "the number of heads", 1, &heads))
            return ERR;
        double base = 10000;
        if (argn[2]) {
            if (v[2].kind != V_NUM || v[2].num <= 1)
                return err(S, argn[2]->loc, "the RoPE base must be a compile-time number > 1");
            base = v[2].num;
        }
        int64_t w = v[0].t->width;
        if (w % heads || (w / heads) % 2)
            return err(S, loc, "rope needs a width divisible by heads with an even head size; %lld / %lld heads",
                       (long long)w, (long long)heads);
        Value r = unary_op(S, IR_ROPE, v[0], loc);
        r.t->heads = (int)heads;
        r.t->num = base;
        return r;
    }
    if (!strcmp(name, "sdpa")) {
        for (int i = 0; i < 3; i++)
            if (!activation_arg(S, v[i], argn[i], name, bi->formals[i]))
                return ERR;
        int64_t heads;
        if (!whole(S, v[3], argn[3], "the number of heads", 1, &heads))
            return ERR;
        int64_t w = v[0].t->width;
        if (v[1].t->width != w || v[2].t->width != w)
            return err(S, loc, "sdpa needs q, k and v of equal width; got %lld, %lld and %lld", (long long)w,
                       (long long)v[1].t->width, (long long)v[2].t->width);
        if (w % heads)
            return err(S, loc, "sdpa: width %lld is not divisible by %lld heads", (long long)w, (long long)heads);
        IrNode *m = node(S, IR_ATTENTION, loc);
        for (int i = 0; i < 3; i++)
            m->in[i] = v[i].t;
        m->heads = (int)heads;
        m->tok = true;
        m->width = w;
        return tensor(m);
    }
    if (!strcmp(name, "cross_entropy")) {
        if (!activation_arg(S, v[0], argn[0], name, "logits"))
            return ERR;
        if (!tensor_arg(S, v[1], argn[1], name, "targets"))
            return ERR;
        if (!v[1].t->is_int)
            return err(S, argn[1]->loc, "argument 'targets' of 'cross_entropy' must hold token ids");
        IrNode *m = node(S, IR_CROSS_ENTROPY, loc);
        m->in[0] = v[0].t;
        m->in[1] = v[1].t;
        m->tok = false;
        m->width = 1;
        return tensor(m);
    }
    die("builtin %s not handled", name);
}

static Value call_user(Sema *S, const Node *call, const Node *fn)
{
    for (Frame *f = S->frame; f; f = f->parent)
        if (f->fn == fn)
            return err(S, call->name_loc,
                       "recursive call to '%s': functions are expanded at compile time, so recursion is not allowed",
                       fn->name);
    if (S->depth >= MAX_FRAMES)
        return err(S, call->name_loc, "calls nested more than %d deep", MAX_FRAMES);
    const char *formals[64] = {0};
    const Node *fnode[64] = {0};
    int nf = 0, nreq = 0;
    for (const Node *a = fn->a; a && nf < 64; a = a->next) {
        fnode[nf] = a;
        formals[nf++] = a->name;
        if (!a->a)
            nreq = nf;
    }
    const Node *argn[64];
    if (!bind_args(S, call, fn->name, formals, nf, nreq, argn))
        return ERR;
    Value args[64];
    for (int i = 0; i < nf; i++)
        if (argn[i] && (args[i] = eval(S, argn[i])).kind == V_ERR)
            return ERR;
    const char *label = call_label(S, call, fn->name);
    if (!label)
        return ERR;
    Frame fr = {.fn = fn, .call = call, .parent = S->frame};
    fr.path = join(S, S->frame->path, label);
    Frame *saved = S->frame;
    S->frame = &fr;
    S->depth++;
    bool ok = true;
    for (int i = 0; i < nf; i++) {
        Value v = argn[i] ? args[i] : eval(S, fnode[i]->a); /* defaults see earlier formals */
        if (v.kind == V_ERR)
            ok = false;
        bind(S, &fr.vars, formals[i], v);
    }
    if (ok)
        exec_list(S, fn->body);
    S->frame = saved;
    S->depth--;
    if (!ok)
        return ERR;
    if (!fr.returned) {
        err(S, call->name_loc, "'%s' ended without returning a value", fn->name);
        if (S->printed)
            diag_note(S->d, fn->name_loc, "'%s' is defined here; every path through it needs a 'return'",
                      fn->name);
        return ERR;
    }
    return fr.ret;
}

static Value eval_call(Sema *S, const Node *e)
{
    if (++S->steps > MAX_STEPS) {
        if (!S->budget_blown)
            err(S, e->loc, "model too large: resolution took more than %ld steps", MAX_STEPS);
        S->budget_blown = true;
        return ERR;
    }
    const Node *fn = find_fn(S, e->name);
    if (fn)
        return call_user(S, e, fn);
    const Builtin *bi = find_builtin(e->name);
    if (bi)
        return call_builtin(S, e, bi);
    if (find(S->frame->vars, e->name) || find(S->config, e->name))
        return err(S, e->name_loc, "'%s' is a value, not a function", e->name);
    return err(S, e->name_loc, "unknown function '%s'", e->name);
}

static Value eval(Sema *S, const Node *e)
{
    if (S->budget_blown)
        return ERR;
    switch (e->kind) {
    case AST_NUM: return num(e->num);
    case AST_STR: return err(S, e->loc, "strings are only used by import");
    case AST_NAME: return eval_name(S, e);
    case AST_BINARY: return eval_binary(S, e);
    case AST_UNARY: return eval_unary(S, e);
    case AST_CALL: return eval_call(S, e);
    default: die("eval of %s", ast_kind_name(e->kind));
    }
}

/* ---- plan text ------------------------------------------------------ */

/* Is e a compile-time number in the current scope?  (No evaluation.) */
static bool is_static(Sema *S, const Node *e)
{
    switch (e->kind) {
    case AST_NUM: return true;
    case AST_NAME: {
        Binding *b = find(S->frame->vars, e->name);
        if (!b)
            b = find(S->config, e->name);
        return b ? b->v.kind == V_NUM : !strcmp(e->name, "true") || !strcmp(e->name, "false") || !strcmp(e->name, "pi");
    }
    case AST_BINARY: return is_static(S, e->a) && is_static(S, e->b);
    case AST_UNARY: return is_static(S, e->a);
    case AST_CALL: {
        const Builtin *bi = find_builtin(e->name);
        if (find_fn(S, e->name) || !bi || !(bi->kind == BI_MATH || bi->kind == BI_EW || !strcmp(bi->name, "pow") ||
                                           !strcmp(bi->name, "max")))
            return false;
        for (const Node *a = e->a; a; a = a->next)
            if (!is_static(S, a->a))
                return false;
        return true;
    }
    default: return false;
    }
}

static int prec(const Node *e)
{
    if (e->kind == AST_BINARY)
        switch (e->op) {
        case OP_OR: return 1;
        case OP_AND: return 2;
        case OP_ADD: case OP_SUB: return 5;
        case OP_MUL: case OP_DIV: return 6;
        case OP_POW: return 8;
        default: return 4;
        }
    if (e->kind == AST_UNARY)
        return e->op == OP_NOT ? 3 : 7;
    return 9;
}

typedef struct Buf {
    char *s;
    size_t n, cap;
} Buf;

__attribute__((format(printf, 2, 3)))
static void put(Buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)n + 1 > b->cap) {
        b->cap = (b->n + (size_t)n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* Renders an expression with every compile-time subexpression replaced by
 * its value, e.g. `rmsnorm(x) * s` at l = 4 -> `rmsnorm(x) * 0.5`. */
static void render(Sema *S, Buf *b, const Node *e, int outer)
{
    if (b->n > 4000) /* keep plan lines readable */
        return;
    if (e->kind != AST_NUM && is_static(S, e)) {
        bool was = S->silent;
        S->silent = true;
        Value v = eval(S, e);
        S->silent = was;
        if (v.kind == V_NUM) {
            put(b, v.num < 0 && outer > 0 ? "(%.6g)" : "%.6g", v.num);
            return;
        }
    }
    int p = prec(e);
    bool paren = p < outer;
    if (paren)
        put(b, "(");
    switch (e->kind) {
    case AST_NUM: put(b, "%.6g", e->num); break;
    case AST_STR: put(b, "\"%s\"", e->name); break;
    case AST_NAME: put(b, "%s", e->name); break;
    case AST_BINARY:
        render(S, b, e->a, e->op == OP_POW ? p + 1 : p);
        put(b, " %s ", ast_op_text(e->op));
        render(S, b, e->b, e->op == OP_POW ? p : p + 1);
        break;
    case AST_UNARY:
        put(b, e->op == OP_NOT ? "not " : "-");
        render(S, b, e->a, p);
        break;
    case AST_CALL:
        put(b, "%s(", e->name);
        for (const Node *a = e->a; a; a = a->next) {
            if (a->name)
                put(b, "%s = ", a->name);
            render(S, b, a->a, 0);
            if (a->next)
                put(b, ", ");
        }
        put(b, ")");
        if (e->label)
            put(b, " as %s", e->label);
        break;
    default: break;
    }
    if (paren)
        put(b, ")");
}

static void plan_line(Sema *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plan_line(Sema *S, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[64];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(S->arena, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    IrPlanLine *pl = arena_alloc(S->arena, sizeof *pl);
    pl->block = S->block;
    pl->depth = S->plan_depth;
    pl->text = s;
    vec_push(&S->g->plan, pl);
}

/* The statement's right-hand side as plan text (model level only). */
static void plan_stmt(Sema *S, const char *lhs, const Node *rhs)
{
    if (S->frame->fn)
        return;
    Buf b = {0};
    render(S, &b, rhs, 0);
    plan_line(S, "%s = %s", lhs, b.s ? b.s : "");
    free(b.s);
}

/* ---- statements ----------------------------------------------------- */

static void exec_stmt(Sema *S, const Node *s);

static void exec_list(Sema *S, const Node *stmts)
{
    for (const Node *s = stmts; s && !S->frame->returned && !S->budget_blown; s = s->next)
        exec_stmt(S, s);
}

static void exec_assign(Sema *S, const Node *s)
{
    Binding *old = find(S->frame->vars, s->name);
    if (old && old->loop_var) {
        err(S, s->name_loc, "cannot assign to the loop variable '%s'", s->name);
        return;
    }
    if (!S->frame->fn && (!strcmp(s->name, "tokens") || !strcmp(s->name, "targets"))) {
        err(S, s->name_loc, "'%s' is an input of the model and cannot be assigned", s->name);
        return;
    }
    Value v = eval(S, s->a);
    if (v.kind == V_STR)
        v = err(S, s->a->loc, "strings are only used by import");
    if (v.kind != V_ERR)
        plan_stmt(S, s->name, s->a);
    bind(S, &S->frame->vars, s->name, v)->loc = s->loc;
}

static void exec_param(Sema *S, const Node *s)
{
    int64_t dims[2];
    int ndim = 0;
    bool ok = true;
    for (const Node *d = s->a; d; d = d->next) {
        if (ndim == 2) {
            err(S, d->loc, "parameters have at most 2 dimensions");
            ok = false;
            break;
        }
        int64_t x;
        if (!whole(S, eval(S, d->a), d->a, "a parameter dimension", 1, &x))
            ok = false;
        dims[ndim++] = ok ? x : 1;
    }
    IrInit init;
    if (!init_arg(S, eval(S, s->b), s->b, &init))
        ok = false;
    if (ok && init.kind == INIT_XAVIER && ndim != 2) {
        err(S, s->b->loc, "xavier init needs a 2-D parameter to know its fan-in and fan-out");
        ok = false;
    }
    if (ok && ndim > 0 && ((double)dims[0] * (ndim == 2 ? (double)dims[1] : 1)) > 1e12) {
        err(S, s->loc, "parameter '%s' is too large", s->name);
        ok = false;
    }
    IrNode *n = NULL;
    if (ok)
        n = new_param(S, s->name, s->name_loc, ndim, dims, init,
                      ndim == 2 ? PARAM_MATRIX : ndim == 1 ? PARAM_VECTOR : PARAM_SCALAR);
    if (n && !S->frame->fn) {
        Buf b = {0};
        for (const Node *d = s->a; d; d = d->next)
            put(&b, "%s%lld", d == s->a ? "[" : ", ", (long long)dims[d == s->a ? 0 : 1]);
        if (s->a)
            put(&b, "]");
        char it[128];
        ir_init_text(it, sizeof it, &init);
        plan_line(S, "param %s%s = %s", s->name, b.s ? b.s : "", it);
        free(b.s);
    }
    bind(S, &S->frame->vars, s->name, n ? tensor(n) : ERR);
}

static bool loop_bound(Sema *S, const Node *e, double *out)
{
    Value v = eval(S, e);
    if (v.kind == V_ERR)
        return false;
    if (v.kind != V_NUM) {
        err(S, e->loc, "a loop bound must be a compile-time number, but this is %s", kind_text(&v));
        return false;
    }
    if (v.num != floor(v.num)) {
        err(S, e->loc, "a loop bound must be a whole number, got %g", v.num);
        return false;
    }
    *out = v.num;
    return true;
}

static void exec_for(Sema *S, const Node *s)
{
    double lo, hi;
    bool ok_lo = loop_bound(S, s->a, &lo);
    bool ok_hi = loop_bound(S, s->b, &hi);
    if (!ok_lo || !ok_hi)
        return;
    Loc range = s->a->loc;
    range.last_line = s->b->loc.last_line;
    range.last_column = s->b->loc.last_column;
    if (hi < lo) {
        err(S, range, "%s range %g..%g (the range is inclusive and must not be empty)",
            hi == lo - 1 ? "empty" : "reversed", lo, hi);
        return;
    }
    if (hi - lo + 1 > MAX_LOOP_ITERS) {
        err(S, range, "range %g..%g has more than %d iterations", lo, hi, MAX_LOOP_ITERS);
        return;
    }
    if (S->nloops == (int)(sizeof S->loops / sizeof *S->loops)) {
        err(S, s->loc, "loops nested too deeply");
        return;
    }
    Binding *shadow = find(S->frame->vars, s->name);
    if (shadow && shadow->loop_var) {
        err(S, s->name_loc, "loop variable '%s' is already the variable of an enclosing loop", s->name);
        return;
    }
    Value saved = shadow ? shadow->v : ERR;
    bool is_block = !S->frame->fn && S->block < 0;
    const char *prefix = NULL;
    if (is_block)
        prefix = S->nblock_loops++ ? arena_printf(S->arena, "layers_%d", S->nblock_loops) : "layers";
    const char *outer_path = S->frame->path;
    int loop_index = S->nloops++;
    S->loops[loop_index].var = s->name;
    for (double i = lo; i <= hi && !S->frame->returned && !S->budget_blown; i++) {
        S->loops[loop_index].value = i;
        Binding *lv = bind(S, &S->frame->vars, s->name, num(i));
        lv->loop_var = true;
        IrBlock *blk = NULL;
        int nvars_before = 0;
        Value before[256];
        const char *names[256];
        if (is_block) {
            blk = arena_alloc(S->arena, sizeof *blk);
            blk->index = S->g->blocks.n;
            blk->l = i;
            vec_push(&S->g->blocks, blk);
            S->block = blk->index;
            S->plan_depth = 0;
            for (Binding *b = S->frame->vars; b && nvars_before < 256; b = b->next) {
                names[nvars_before] = b->name;
                before[nvars_before++] = b->v;
            }
            S->frame->path = arena_printf(S->arena, "%s.%g", prefix, i);
        } else {
            S->frame->path = join(S, outer_path, arena_printf(S->arena, "%s%g", s->name, i));
            S->plan_depth++;
        }
        exec_list(S, s->body);
        lv = find(S->frame->vars, s->name);
        if (lv)
            lv->loop_var = false;
        if (is_block) {
            /* The residual stream: the first float activation that existed
             * before the block and was reassigned in it. */
            for (int k = 0; k < nvars_before && !blk->var; k++) {
                Binding *b = find(S->frame->vars, names[k]);
                if (before[k].kind == V_TENSOR && before[k].t->tok && !before[k].t->is_int && b &&
                    b->v.kind == V_TENSOR && b->v.t != before[k].t && b->v.t->width == before[k].t->width &&
                    b->v.t->tok) {
                    blk->var = names[k];
                    blk->in = before[k].t;
                    blk->out = b->v.t;
                }
            }
            S->block = -1;
        } else {
            S->plan_depth--;
        }
    }
    S->frame->path = outer_path;
    S->nloops--;
    /* The loop variable goes out of scope (or its shadowed value returns). */
    for (Binding **p = &S->frame->vars; *p; p = &(*p)->next)
        if (!strcmp((*p)->name, s->name)) {
            (*p)->loop_var = false;
            if (shadow)
                (*p)->v = saved;
            else
                *p = (*p)->next;
            break;
        }
}

static void exec_if(Sema *S, const Node *s)
{
    Value c = eval(S, s->a);
    if (c.kind == V_ERR)
        return;
    if (c.kind != V_NUM) {
        err(S, s->a->loc, "an 'if' condition must be a compile-time value, but this is %s", kind_text(&c));
        return;
    }
    if (c.num != 0)
        exec_list(S, s->body);
    else if (s->c && s->c->kind == AST_IF)
        exec_if(S, s->c);
    else if (s->c)
        exec_list(S, s->c);
}

static void exec_stmt(Sema *S, const Node *s)
{
    if (++S->steps > MAX_STEPS) {
        if (!S->budget_blown)
            err(S, s->loc, "model too large: resolution took more than %ld steps", MAX_STEPS);
        S->budget_blown = true;
        return;
    }
    switch (s->kind) {
    case AST_ASSIGN: exec_assign(S, s); break;
    case AST_PARAM: exec_param(S, s); break;
    case AST_FOR: exec_for(S, s); break;
    case AST_IF: exec_if(S, s); break;
    case AST_RETURN:
        if (!S->frame->fn) {
            err(S, s->loc, "'return' outside a function");
            return;
        }
        S->frame->ret = eval(S, s->a);
        if (S->frame->ret.kind == V_STR)
            S->frame->ret = err(S, s->a->loc, "strings are only used by import");
        S->frame->returned = true;
        break;
    default: die("statement %s", ast_kind_name(s->kind));
    }
}

/* ---- config, presets, -D -------------------------------------------- */

typedef struct Preset {
    const char *name;
    double d, ffn, heads, L;
} Preset;

static const Preset presets[] = {
    {"llama-71m", 512, 1368, 8, 12},
    {"llama-130m", 768, 2048, 12, 12},
    {"llama-250m", 768, 2560, 16, 24},
    {"llama-350m", 1024, 2736, 16, 24},
    {"llama-1b", 2048, 5461, 32, 24},
};

const char *const *sema_preset_names(void)
{
    static const char *names[sizeof presets / sizeof *presets + 1];
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        names[i] = presets[i].name;
    return names;
}

typedef struct Override {
    const char *name;
    double value;
    const char *source;
    bool used;
    Loc loc;
} Override;

static bool is_ident(const char *s, size_t n)
{
    if (n == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

/* Parses one -D argument, reported as the pseudo-file "<command line>". */
static bool parse_define(Sema *S, const char *arg, Override *o)
{
    SrcFile *src = src_from_memory("<command line>", arg, strlen(arg));
    vec_push(&S->cmdline, src); /* freed at the end: later diagnostics point into it */
    const char *eq = strchr(arg, '=');
    int len = (int)strlen(arg);
    Loc whole_loc = {1, 1, 1, len > 0 ? len : 1, src};
    bool ok = true;
    if (!eq || !is_ident(arg, (size_t)(eq - arg))) {
        diag_error(S->d, whole_loc, "-D expects name=value, e.g. -D L=24");
        ok = false;
    } else {
        const char *val = eq + 1;
        Loc vloc = {1, (int)(val - arg) + 1, 1, len > (int)(val - arg) ? len : (int)(val - arg) + 1, src};
        char *end = (char *)val;
        double x = 0;
        /* Decimal numbers only (strtod alone would take hex, inf and nan). */
        if (strspn(val, "0123456789.eE+-") == strlen(val) && *val)
            x = strtod(val, &end);
        if (!strcmp(val, "true"))
            x = 1, end = (char *)val + 4;
        else if (!strcmp(val, "false"))
            x = 0, end = (char *)val + 5;
        if (!*val || *end) {
            diag_error(S->d, vloc, "-D %.*s: '%s' is not a number", (int)(eq - arg), arg, val);
            ok = false;
        } else if (!isfinite(x)) {
            diag_error(S->d, vloc, "-D %.*s: %s is out of range", (int)(eq - arg), arg, val);
            ok = false;
        } else {
            o->name = arena_strndup(S->arena, arg, (size_t)(eq - arg));
            o->value = x;
            o->source = "-D";
            o->loc = (Loc){1, 1, 1, (int)(eq - arg), src};
        }
    }
    return ok;
}

static bool resolve_config(Sema *S, const SemaOptions *opt)
{
    Override ov[128];
    int nov = 0;
    bool ok = true;
    for (int i = 0; opt && i < opt->nsoft && nov < 64; i++) {
        Override o = {0};
        if (!parse_define(S, opt->soft[i], &o))
            die("bad built-in default %s", opt->soft[i]);
        o.source = "tiny default";
        o.used = true; /* never reported as unknown */
        ov[nov++] = o;
    }
    if (opt && opt->preset) {
        const Preset *p = NULL;
        for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
            if (!strcmp(presets[i].name, opt->preset))
                p = &presets[i];
        if (!p) {
            char known[256] = "";
            for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", presets[i].name);
            diag_plain(S->d, "unknown preset '%s' (known: %s)", opt->preset, known);
            ok = false;
        } else {
            const char *src = arena_printf(S->arena, "preset %s", p->name);
            const char *nm[] = {"vocab", "d", "ffn", "heads", "L", "rope"};
            double val[] = {32000, p->d, p->ffn, p->heads, p->L, 10000};
            for (int i = 0; i < 6; i++)
                ov[nov++] = (Override){nm[i], val[i], src, false, {0}};
        }
    }
    int first_define = nov;
    for (int i = 0; opt && i < opt->ndefines && nov < 128; i++) {
        Override o = {0};
        if (parse_define(S, opt->defines[i], &o)) {
            /* A later -D of the same name wins. */
            int j = first_define;
            while (j < nov && strcmp(ov[j].name, o.name))
                j++;
            ov[j] = o;
            if (j == nov)
                nov++;
        } else {
            ok = false;
        }
    }
    for (const Node *it = S->prog->items; it; it = it->next) {
        if (it->kind != AST_CONFIG)
            continue;
        for (const Node *e = it->body; e; e = e->next) {
            Binding *old = find(S->config, e->name);
            if (old) {
                err(S, e->name_loc, "config constant '%s' is defined twice", e->name);
                if (S->printed)
                    diag_note(S->d, old->loc, "the first definition is here");
                continue;
            }
            Value v = {0};
            const char *source = "file";
            int hit = -1;
            for (int i = 0; i < nov; i++)
                if (!strcmp(ov[i].name, e->name))
                    hit = i; /* -D come after presets, so the last match wins */
            if (hit >= 0) {
                v = num(ov[hit].value);
                source = ov[hit].source;
                for (int i = 0; i < nov; i++)
                    if (!strcmp(ov[i].name, e->name))
                        ov[i].used = true;
            } else {
                S->in_config = true;
                S->config_rest = e->next;
                v = eval(S, e->a);
                S->in_config = false;
                S->config_rest = NULL;
                if (v.kind != V_NUM && v.kind != V_ERR)
                    v = err(S, e->a->loc, "config constant '%s' must be a compile-time number, but this is %s",
                            e->name, kind_text(&v));
            }
            bind(S, &S->config, e->name, v)->loc = e->name_loc;
            if (v.kind == V_NUM) {
                IrConfig *c = arena_alloc(S->arena, sizeof *c);
                c->name = e->name;
                c->value = v.num;
                c->source = source;
                vec_push(&S->g->config, c);
            }
        }
    }
    for (int i = first_define; i < nov; i++)
        if (!ov[i].used) {
            char known[512] = "";
            for (int k = 0; k < S->g->config.n; k++) {
                IrConfig *c = S->g->config.v[k];
                if (strlen(known) + strlen(c->name) + 8 < sizeof known)
                    snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "", c->name);
            }
            diag_error(S->d, ov[i].loc, "-D %s: the model has no config constant '%s'%s%s%s", ov[i].name,
                       ov[i].name, *known ? " (it has: " : "", known, *known ? ")" : "");
            ok = false;
        }
    return ok;
}

/* ---- top level ------------------------------------------------------ */

bool sema_resolve(const Program *prog, const SemaOptions *opt, Diag *d, IrGraph *g)
{
    Sema S = {.prog = prog, .d = d, .g = g, .arena = &g->arena, .block = -1};
    int errors_before = d->nerrors;
    const Node *model = NULL;
    for (const Node *it = prog->items; it; it = it->next) {
        if (it->kind == AST_FN) {
            const Node *old = find_fn(&S, it->name);
            if (old) {
                diag_error(d, it->name_loc, "function '%s' is defined twice", it->name);
                diag_note(d, old->name_loc, "the first definition is here");
                continue;
            }
            if (find_builtin(it->name)) {
                diag_error(d, it->name_loc, "'%s' is a builtin and cannot be redefined", it->name);
                continue;
            }
            const char *seen[64];
            int ns = 0;
            for (const Node *a = it->a; a; a = a->next) {
                for (int k = 0; k < ns; k++)
                    if (!strcmp(seen[k], a->name))
                        diag_error(d, a->name_loc, "parameter '%s' of '%s' is declared twice", a->name, it->name);
                if (ns < 64)
                    seen[ns++] = a->name;
                else {
                    diag_error(d, a->name_loc, "'%s' has more than 64 parameters", it->name);
                    break;
                }
            }
            vec_push(&S.fns, (void *)it);
        } else if (it->kind == AST_MODEL) {
            if (model) {
                diag_error(d, it->name_loc, "a second model block");
                diag_note(d, model->name_loc, "the first one is here");
                continue;
            }
            model = it;
        }
    }
    Frame top = {.path = ""};
    S.frame = &top;
    resolve_config(&S, opt);
    if (!model) {
        const SrcFile *main = prog->files.n ? prog->files.v[0] : NULL;
        diag_plain(d, "%s has no model block", main ? main->name : "the input");
    } else if (d->nerrors == errors_before) {
        g->tokens = node(&S, IR_INPUT_TOKENS, model->name_loc);
        g->tokens->tok = g->tokens->is_int = true;
        g->targets = node(&S, IR_INPUT_TARGETS, model->name_loc);
        g->targets->tok = g->targets->is_int = true;
        bind(&S, &top.vars, "tokens", tensor(g->tokens));
        bind(&S, &top.vars, "targets", tensor(g->targets));
        exec_list(&S, model->body);
        if (d->nerrors == errors_before) {
            Binding *lg = find(top.vars, "logits");
            Binding *ls = find(top.vars, "loss");
            if (!lg)
                diag_error(d, model->name_loc, "the model block must assign 'logits'");
            else if (lg->v.kind == V_TENSOR && lg->v.t->is_int)
                diag_error(d, lg->loc, "'logits' holds integer token ids; map them to vectors with embed() "
                           "and project to the vocabulary with linear()");
            else if (lg->v.kind != V_TENSOR || !lg->v.t->tok)
                diag_error(d, lg->loc, "'logits' must be a per-token activation, but it is %s",
                           kind_text(&lg->v));
            else
                g->logits = lg->v.t;
            if (ls && g->logits) {
                if (ls->v.kind != V_TENSOR || ls->v.t->tok || ls->v.t->width != 1 || ls->v.t->rows != 1)
                    diag_error(d, ls->loc, "'loss' must be a scalar such as cross_entropy(logits, targets), "
                               "but it is %s", ls->v.kind == V_TENSOR && ls->v.t->tok ? "a per-token tensor"
                                                                                   : kind_text(&ls->v));
                else
                    g->loss = ls->v.t;
            } else if (g->logits) {
                IrNode *ce = node(&S, IR_CROSS_ENTROPY, model->name_loc);
                ce->in[0] = g->logits;
                ce->in[1] = g->targets;
                ce->width = 1;
                g->loss = ce;
            }
        }
    }
    free(S.reported);
    vec_free(&S.fns);
    strmap_free(&S.used_scopes);
    strmap_free(&S.param_names);
    for (int i = 0; i < S.cmdline.n; i++)
        src_free(S.cmdline.v[i]);
    vec_free(&S.cmdline);
    bool ok = d->nerrors == errors_before;
    if (ok && !ir_verify(g, stderr))
        die("the front end built an invalid IR graph");
    return ok;
}
