/* ast.c - AST construction helpers and the --dump=ast printer. */
#include "front/ast.h"

#include <stdio.h>
#include <stdlib.h>

Node *ast_new(Arena *a, AstKind kind, Loc loc)
{
    Node *n = arena_alloc(a, sizeof *n);
    n->kind = kind;
    n->loc = loc;
    n->name_loc = loc;
    return n;
}

void ast_list_push(NodeList *l, Node *n)
{
    if (!n)
        return;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

/* Same order as AstOp. */
const char *ast_op_text(AstOp op)
{
    static const char *t[] = {"+", "-", "*", "/", "^", "==", "!=", "<", "<=", ">", ">=",
                              "and", "or", "-", "not"};
    return t[op];
}

/* Same order as AstKind. */
const char *ast_kind_name(AstKind k)
{
    static const char *t[] = {"num", "str", "name", "call", "arg", "binary", "unary",
                              "assign", "param", "for", "if", "return",
                              "import", "config", "fn", "model"};
    return t[k];
}

static void indent(FILE *out, int depth)
{
    for (int i = 0; i < depth; i++)
        fputs("  ", out);
}

static void dump(FILE *out, const Node *n, int depth);

static void dump_list(FILE *out, const char *tag, const Node *n, int depth)
{
    indent(out, depth);
    fprintf(out, "(%s\n", tag);
    for (; n; n = n->next)
        dump(out, n, depth + 1);
    indent(out, depth);
    fputs(")\n", out);
}

static void dump(FILE *out, const Node *n, int depth)
{
    indent(out, depth);
    fprintf(out, "(%s", ast_kind_name(n->kind));
    switch (n->kind) {
    case AST_NUM: { /* the shortest form that reads back as the same double */
        char buf[32];
        snprintf(buf, sizeof buf, "%.15g", n->num);
        if (strtod(buf, NULL) != n->num)
            snprintf(buf, sizeof buf, "%.17g", n->num);
        fprintf(out, " %s", buf);
        break;
    }
    case AST_STR: fprintf(out, " \"%s\"", n->name); break;
    case AST_BINARY:
    case AST_UNARY: fprintf(out, " %s", ast_op_text(n->op)); break;
    default:
        if (n->name)
            fprintf(out, " %s", n->name);
        break;
    }
    if (n->label)
        fprintf(out, " as %s", n->label);
    fprintf(out, " @%d:%d", n->loc.first_line, n->loc.first_column);
    int leaf = !n->a && !n->b && !n->c && !n->body;
    if (leaf) {
        fputs(")\n", out);
        return;
    }
    fputc('\n', out);
    const char *tags[3] = {"a", "b", "c"};
    const Node *kids[3] = {n->a, n->b, n->c};
    if (n->kind == AST_CALL)
        tags[0] = "args";
    if (n->kind == AST_FN)
        tags[0] = "formals";
    if (n->kind == AST_PARAM)
        tags[0] = "dims";
    if (n->kind == AST_IF)
        tags[2] = "else";
    for (int i = 0; i < 3; i++) {
        if (!kids[i])
            continue;
        int is_list = (i == 0 && (n->kind == AST_CALL || n->kind == AST_FN || n->kind == AST_PARAM)) ||
                      (i == 2 && n->kind == AST_IF);
        if (is_list)
            dump_list(out, tags[i], kids[i], depth + 1);
        else
            dump(out, kids[i], depth + 1);
    }
    if (n->body)
        dump_list(out, "body", n->body, depth + 1);
    indent(out, depth);
    fputs(")\n", out);
}

void ast_dump(FILE *out, const Node *items)
{
    const SrcFile *file = NULL;
    for (const Node *n = items; n; n = n->next) {
        if (n->loc.file != file) { /* items come file by file, imports first */
            file = n->loc.file;
            fprintf(out, "; %s\n", file ? file->name : "?");
        }
        dump(out, n, 0);
    }
}
