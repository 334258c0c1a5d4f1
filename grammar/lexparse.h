/* lexparse.h - state shared by the lexer and the parser (one per file). */
#ifndef STRATA_LEXPARSE_H
#define STRATA_LEXPARSE_H
#include "front/ast.h"

typedef struct Parser {
    Arena *arena;
    Diag *diag;
    const SrcFile *src;
    NodeList items;     /* result */
    int line, col;      /* position of the next byte */
    void *scanner;      /* yyscan_t */
    Loc braces[64];     /* innermost unclosed '{' (for "never closed" notes) */
    int nbraces;        /* may exceed 64; only the first 64 are kept */
} Parser;

void lex_step(Parser *p, Loc *loc, const char *text, int len);
char *lex_save(Parser *p, const char *text, int len);
void lex_eof(Parser *p, Loc *loc);
#endif
