/* parser.y - grammar of the .strata model language.
 * Pure, reentrant bison parser with locations; builds the AST (compiler/front/ast.h)
 * in the caller's arena.  Syntax errors are reported as
 * `file:line:col: error: unexpected X, expecting Y` and parsing resumes at the
 * next top-level item or closing brace, so one file can report several. */
%require "3.6"
%define api.pure full
%define parse.error custom
%locations
%param {Parser *p}
%param {void *scanner}

%code requires {
#include "lexparse.h"
#define YYLTYPE Loc
#define YYLTYPE_IS_DECLARED 1
#define YYLTYPE_IS_TRIVIAL 1
}

%code provides {
int yylex(YYSTYPE *yylval, YYLTYPE *yylloc, Parser *p, void *scanner);
}

%code {
#include <string.h>

#define YYLLOC_DEFAULT(Cur, Rhs, N)                                    \
    do {                                                               \
        if (N) {                                                       \
            (Cur).file = YYRHSLOC(Rhs, 1).file;                        \
            (Cur).first_line = YYRHSLOC(Rhs, 1).first_line;            \
            (Cur).first_column = YYRHSLOC(Rhs, 1).first_column;        \
            (Cur).last_line = YYRHSLOC(Rhs, N).last_line;              \
            (Cur).last_column = YYRHSLOC(Rhs, N).last_column;          \
        } else {                                                       \
            (Cur) = YYRHSLOC(Rhs, 0);                                  \
            (Cur).first_line = (Cur).last_line;                        \
            (Cur).first_column = (Cur).last_column + 1;                \
            (Cur).last_column = (Cur).first_column;                    \
        }                                                              \
    } while (0)

#define NEW(kind, loc) ast_new(p->arena, kind, loc)

static Node *binary(Parser *p, AstOp op, Node *a, Node *b, Loc loc)
{
    Node *n = NEW(AST_BINARY, loc);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static Node *unary(Parser *p, AstOp op, Node *a, Loc loc)
{
    Node *n = NEW(AST_UNARY, loc);
    n->op = op;
    n->a = a;
    return n;
}

/* Bison calls this only for "memory exhausted": its stack is full. */
static void yyerror(Loc *loc, Parser *p, void *scanner, const char *msg)
{
    (void)scanner;
    (void)msg;
    diag_error(p->diag, *loc, "file too deeply nested to parse");
}
}

%union {
    double num;
    char *str;
    Node *node;
    NodeList list;
}

%token <num> NUMBER "number"
%token <str> IDENT "identifier" STRING "string"
%token IMPORT "import" CONFIG "config" FN "fn" MODEL "model" PARAM "param"
%token FOR "for" IN "in" IF "if" ELSE "else" RETURN "return"
%token AND "and" OR "or" NOT "not" AS "as"
%token DOTDOT ".." EQ "==" NE "!=" LE "<=" GE ">="
%token INVALID "invalid character" BADSTRING "bad string" BADNUMBER "bad number"

%type <node> item stmt expr primary call arg formal else_part if_stmt block dim
%type <list> items stmts args arg_list formals formal_list config_entries dims dim_list

%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE
%left '+' '-'
%left '*' '/'
%precedence UMINUS
%right '^'

%initial-action { @$ = (Loc){1, 1, 1, 1, p->src}; }

%%

/* file: item* */
file:
    items                       { p->items = $1; }
    ;

items:
    %empty                      { $$ = (NodeList){0}; }
  | items item                  { $$ = $1; ast_list_push(&$$, $2); }
  | items ';'                   { $$ = $1; }
  ;

/* item: 'import' STRING | 'config' '{' entries '}' | 'fn' NAME '(' formals ')' block | 'model' block */
item:
    IMPORT STRING               { $$ = NEW(AST_IMPORT, @$); $$->name = $2; $$->name_loc = @2; }
  | CONFIG '{' config_entries '}'
                                { $$ = NEW(AST_CONFIG, @$); $$->body = $3.head; }
  | FN IDENT '(' formals ')' block
                                { $$ = NEW(AST_FN, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->a = $4.head; $$->body = $6; }
  | MODEL block                 { $$ = NEW(AST_MODEL, @$); $$->body = $2; $$->name_loc = @1; }
  | error                       { $$ = NULL; }
  ;

/* entries: (NAME '=' expr [';'])* */
config_entries:
    %empty                      { $$ = (NodeList){0}; }
  | config_entries IDENT '=' expr
                                { $$ = $1; Node *n = NEW(AST_ASSIGN, @2); n->name = $2;
                                  n->name_loc = @2; n->a = $4; n->loc.last_column = @4.last_column;
                                  n->loc.last_line = @4.last_line; ast_list_push(&$$, n); }
  | config_entries ';'          { $$ = $1; }
  ;

/* formals: [formal (',' formal)*];  formal: NAME ['=' expr] */
formals:
    %empty                      { $$ = (NodeList){0}; }
  | formal_list                 { $$ = $1; }
  ;
formal_list:
    formal                      { $$ = (NodeList){0}; ast_list_push(&$$, $1); }
  | formal_list ',' formal      { $$ = $1; ast_list_push(&$$, $3); }
  ;
formal:
    IDENT                       { $$ = NEW(AST_ARG, @$); $$->name = $1; $$->name_loc = @1; }
  | IDENT '=' expr              { $$ = NEW(AST_ARG, @$); $$->name = $1; $$->name_loc = @1; $$->a = $3; }
  ;

/* block: '{' stmt* '}' */
block:
    '{' stmts '}'               { $$ = $2.head; }
  | '{' stmts error '}'         { $$ = $2.head; }
  ;

stmts:
    %empty                      { $$ = (NodeList){0}; }
  | stmts stmt                  { $$ = $1; ast_list_push(&$$, $2); }
  | stmts ';'                   { $$ = $1; }
  ;

/* stmt: NAME '=' expr | 'param' NAME [dims] '=' expr | 'for' NAME 'in' expr '..' expr block
 *     | if_stmt | 'return' expr */
stmt:
    IDENT '=' expr              { $$ = NEW(AST_ASSIGN, @$); $$->name = $1; $$->name_loc = @1; $$->a = $3; }
  | PARAM IDENT dims '=' expr   { $$ = NEW(AST_PARAM, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->a = $3.head; $$->b = $5; }
  | FOR IDENT IN expr DOTDOT expr block
                                { $$ = NEW(AST_FOR, @$); $$->name = $2; $$->name_loc = @2;
                                  $$->a = $4; $$->b = $6; $$->body = $7; }
  | if_stmt                     { $$ = $1; }
  | RETURN expr                 { $$ = NEW(AST_RETURN, @$); $$->a = $2; }
  ;

/* dims: ['[' [expr (',' expr)*] ']'] */
dims:
    %empty                      { $$ = (NodeList){0}; }
  | '[' ']'                     { $$ = (NodeList){0}; }
  | '[' dim_list ']'            { $$ = $2; }
  ;
dim_list:
    dim                         { $$ = (NodeList){0}; ast_list_push(&$$, $1); }
  | dim_list ',' dim            { $$ = $1; ast_list_push(&$$, $3); }
  ;
dim:
    expr                        { $$ = NEW(AST_ARG, @$); $$->a = $1; }
  ;

/* if_stmt: 'if' expr block ['else' (block | if_stmt)] */
if_stmt:
    IF expr block else_part     { $$ = NEW(AST_IF, @$); $$->a = $2; $$->body = $3; $$->c = $4; }
  ;
else_part:
    %empty                      { $$ = NULL; }
  | ELSE block                  { $$ = $2; }
  | ELSE if_stmt                { $$ = $2; }
  ;

expr:
    primary
  | expr '+' expr               { $$ = binary(p, OP_ADD, $1, $3, @$); }
  | expr '-' expr               { $$ = binary(p, OP_SUB, $1, $3, @$); }
  | expr '*' expr               { $$ = binary(p, OP_MUL, $1, $3, @$); }
  | expr '/' expr               { $$ = binary(p, OP_DIV, $1, $3, @$); }
  | expr '^' expr               { $$ = binary(p, OP_POW, $1, $3, @$); }
  | expr EQ expr                { $$ = binary(p, OP_EQ, $1, $3, @$); }
  | expr NE expr                { $$ = binary(p, OP_NE, $1, $3, @$); }
  | expr '<' expr               { $$ = binary(p, OP_LT, $1, $3, @$); }
  | expr LE expr                { $$ = binary(p, OP_LE, $1, $3, @$); }
  | expr '>' expr               { $$ = binary(p, OP_GT, $1, $3, @$); }
  | expr GE expr                { $$ = binary(p, OP_GE, $1, $3, @$); }
  | expr AND expr               { $$ = binary(p, OP_AND, $1, $3, @$); }
  | expr OR expr                { $$ = binary(p, OP_OR, $1, $3, @$); }
  | '-' expr %prec UMINUS       { $$ = unary(p, OP_NEG, $2, @$); }
  | NOT expr                    { $$ = unary(p, OP_NOT, $2, @$); }
  ;

/* primary: NUMBER | STRING | NAME | call | '(' expr ')' */
primary:
    NUMBER                      { $$ = NEW(AST_NUM, @$); $$->num = $1; }
  | STRING                      { $$ = NEW(AST_STR, @$); $$->name = $1; }
  | IDENT                       { $$ = NEW(AST_NAME, @$); $$->name = $1; }
  | call
  | call AS IDENT               { $$ = $1; $$->label = $3; $$->label_loc = @3; }
  | '(' expr ')'                { $$ = $2; }
  ;

/* call: NAME '(' [arg (',' arg)*] ')' */
call:
    IDENT '(' args ')'          { $$ = NEW(AST_CALL, @$); $$->name = $1; $$->name_loc = @1; $$->a = $3.head; }
  ;
args:
    %empty                      { $$ = (NodeList){0}; }
  | arg_list                    { $$ = $1; }
  ;
arg_list:
    arg                         { $$ = (NodeList){0}; ast_list_push(&$$, $1); }
  | arg_list ',' arg            { $$ = $1; ast_list_push(&$$, $3); }
  ;
/* arg: expr | NAME '=' expr */
arg:
    expr                        { $$ = NEW(AST_ARG, @$); $$->a = $1; }
  | IDENT '=' expr              { $$ = NEW(AST_ARG, @$); $$->name = $1; $$->name_loc = @1; $$->a = $3; }
  ;

%%

/* A token's name for messages: keywords and operators in quotes. */
static void sym_text(char *buf, size_t n, yysymbol_kind_t sym)
{
    const char *name = yysymbol_name(sym);
    if (sym == YYSYMBOL_YYEOF)
        snprintf(buf, n, "end of file");
    else if (name[0] == '\'' || sym == YYSYMBOL_IDENT || sym == YYSYMBOL_NUMBER || sym == YYSYMBOL_STRING)
        snprintf(buf, n, "%s", name);
    else
        snprintf(buf, n, "'%s'", name);
}

/* The source text of a one-line span, cut to at most 40 bytes. */
static void span_text(char *buf, size_t n, const Parser *p, const Loc *loc)
{
    const char *s = p->src->text, *end = s + p->src->len;
    for (int line = 1; s < end && line < loc->first_line; s++)
        if (*s == '\n')
            line++;
    s += loc->first_column - 1;
    int len = loc->last_line == loc->first_line ? loc->last_column - loc->first_column + 1 : 1;
    if (len > 40)
        len = 40;
    if (s + len > end)
        len = (int)(end - s);
    snprintf(buf, n, "%.*s", len < 0 ? 0 : len, s);
}

/* Reports a syntax error: "unexpected X, expecting A, B or C". */
static int yyreport_syntax_error(const yypcontext_t *ctx, Parser *p, void *scanner)
{
    (void)scanner;
    const Loc *loc = yypcontext_location(ctx);
    yysymbol_kind_t tok = yypcontext_token(ctx);
    char msg[512], name[64];
    int n = 0;
    if (tok == YYSYMBOL_INVALID) {
        /* Recover the byte from the source for a precise message. */
        const char *s = p->src->text;
        int line = 1;
        size_t i = 0;
        for (; i < p->src->len && line < loc->first_line; i++)
            if (s[i] == '\n')
                line++;
        unsigned char c = (unsigned char)s[i + (size_t)loc->first_column - 1];
        if (c >= 0x21 && c < 0x7f)
            n = snprintf(msg, sizeof msg, "invalid character '%c'", c);
        else
            n = snprintf(msg, sizeof msg, "invalid byte 0x%02x", c);
        diag_error(p->diag, *loc, "%s", msg);
        return 0;
    }
    if (tok == YYSYMBOL_BADSTRING) {
        diag_error(p->diag, *loc, "unterminated string (strings end on the same line and have no escapes)");
        return 0;
    }
    if (tok == YYSYMBOL_BADNUMBER) {
        diag_error(p->diag, *loc, "number out of range");
        return 0;
    }
    sym_text(name, sizeof name, tok);
    n = snprintf(msg, sizeof msg, "syntax error, unexpected %s", name);
    if (tok == YYSYMBOL_IDENT || tok == YYSYMBOL_NUMBER) {
        char text[48];
        span_text(text, sizeof text, p, loc);
        n += snprintf(msg + n, sizeof msg - (size_t)n, " '%s'", text);
    }
    yysymbol_kind_t expected[8];
    int ne = yypcontext_expected_tokens(ctx, expected, 8);
    if (ne > 0 && ne <= 6) {
        for (int i = 0; i < ne && n < (int)sizeof msg; i++) {
            sym_text(name, sizeof name, expected[i]);
            n += snprintf(msg + n, sizeof msg - (size_t)n, "%s%s",
                          i == 0 ? ", expecting " : i == ne - 1 ? " or " : ", ", name);
        }
    }
    diag_error(p->diag, *loc, "%s", msg);
    if (tok == YYSYMBOL_YYEOF && p->nbraces > 0 && p->nbraces <= 64)
        diag_note(p->diag, p->braces[p->nbraces - 1], "this '{' is never closed");
    return 0;
}
