/* parse.c - parse_file (front/ast.h): one file's text through the flex
 * lexer (lexer.l) and the bison parser (parser.y), the items appended to
 * the program's list.  Kept apart from both, so that the parser calls the
 * lexer and nothing calls back. */
#include "parser.h" /* generated: yyparse, YYSTYPE */
/* yylex takes the Parser too (lexer.l's YY_DECL): not the default one. */
#define YY_DECL int yylex(YYSTYPE *yylval_param, YYLTYPE *yylloc_param, Parser *parser, yyscan_t yyscanner)
#include "lexer.h"  /* generated: yylex_init_extra, yy_scan_bytes */
#include "lexparse.h"

bool parse_file(Arena *arena, Diag *d, const SrcFile *src, NodeList *out)
{
    Parser p = {.arena = arena, .diag = d, .src = src, .line = 1, .col = 1};
    yyscan_t scanner;
    if (yylex_init_extra(&p, &scanner))
        die("cannot initialise the lexer");
    YY_BUFFER_STATE buf = yy_scan_bytes(src->text, (int)src->len, scanner);
    int before = d->nerrors;
    int rc = yyparse(&p, scanner);
    yy_delete_buffer(buf, scanner);
    yylex_destroy(scanner);
    if (p.items.head) {
        if (out->tail)
            out->tail->next = p.items.head;
        else
            out->head = p.items.head;
        out->tail = p.items.tail;
    }
    return rc == 0 && d->nerrors == before;
}
