/* arena.h - bump allocator that owns the AST and the IR.
 * Everything allocated from an Arena is freed at once by arena_free. */
#ifndef STRATA_ARENA_H
#define STRATA_ARENA_H
#include <stddef.h>

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
    ArenaBlock *head; /* newest block first */
} Arena;

void *arena_alloc(Arena *a, size_t n);          /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);

/* Growable array of pointers (owned by malloc, not the arena). */
typedef struct PtrVec {
    void **v;
    int n, cap;
} PtrVec;
void vec_push(PtrVec *vec, void *p);
void vec_free(PtrVec *vec);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Internal bug: print C file and line, abort.  Never used for bad input. */
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
_Noreturn void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif
