/* ast.h - syntax tree of a .strata file, as the parser builds it.
 * Nodes live in the Arena of the Program; every node keeps its source Loc.
 * Lists (statements, arguments, items) are singly linked through `next`. */
#ifndef STRATA_AST_H
#define STRATA_AST_H
#include "front/arena.h"
#include "front/diag.h"

#include <stdbool.h>

typedef enum AstKind {
    /* expressions */
    AST_NUM,     /* num */
    AST_STR,     /* str */
    AST_NAME,    /* name */
    AST_CALL,    /* name(args) [as label]; args: AST_ARG list in a */
    AST_ARG,     /* [name =] a   (name NULL when positional) */
    AST_BINARY,  /* a op b */
    AST_UNARY,   /* op a */
    /* statements */
    AST_ASSIGN,  /* name = a */
    AST_PARAM,   /* param name[dims in a] = b  (b: init expression) */
    AST_FOR,     /* for name in a .. b { body } */
    AST_IF,      /* if a { body } else { c } (c: statement list or a single AST_IF) */
    AST_RETURN,  /* return a */
    /* top-level items */
    AST_IMPORT,  /* import str */
    AST_CONFIG,  /* config { body: AST_ASSIGN list } */
    AST_FN,      /* fn name(a: AST_ARG list as formals) { body } */
    AST_MODEL,   /* model { body } */
} AstKind;

typedef enum AstOp {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
    OP_AND, OP_OR,
    OP_NEG, OP_NOT,
} AstOp;

typedef struct Node Node;
struct Node {
    AstKind kind;
    Loc loc;       /* whole construct */
    Loc name_loc;  /* of `name` */
    Loc label_loc; /* AST_CALL: of the `as` label */
    AstOp op;      /* AST_BINARY, AST_UNARY */
    double num;    /* AST_NUM */
    char *name;    /* identifier / call target / import path */
    char *label;   /* AST_CALL: `as label` (NULL if none) */
    Node *a, *b, *c;
    Node *body;    /* statement list */
    Node *next;    /* next in list */
};

typedef struct NodeList {
    Node *head, *tail;
} NodeList;

typedef struct Program {
    Arena arena;
    Node *items;        /* top-level items of all files, imports first */
    PtrVec files;       /* SrcFile* owned by the program */
} Program;

Node *ast_new(Arena *a, AstKind kind, Loc loc);
void ast_list_push(NodeList *l, Node *n);
const char *ast_op_text(AstOp op);
const char *ast_kind_name(AstKind k);
/* --dump=ast: an S-expression-like tree, one node per line. */
void ast_dump(FILE *out, const Node *items);

/* Parses one source file; appends items to *out.  Returns false on syntax
 * errors (reported through d).  Implemented in grammar/parser.y. */
bool parse_file(Arena *arena, Diag *d, const SrcFile *src, NodeList *out);

/* Parses `main` and, transitively, the files it imports ("std" is built in;
 * other paths are searched in the importing file's directory, then in the
 * colon-separated STRATA_PATH).  Each file is loaded once; the program takes
 * ownership of `main`.  Returns false if any file had errors. */
bool ast_load(Program *prog, Diag *d, SrcFile *main);
void ast_program_free(Program *prog);
/* The standard library source, generated from lib/std.strata. */
extern const char strata_std_lib[];
#endif
