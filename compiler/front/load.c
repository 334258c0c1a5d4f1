/* load.c - reads a model file and everything it imports into one Program.
 * Imports are resolved relative to the importing file, then STRATA_PATH;
 * "std" names the standard library compiled into the binary.  Imported
 * items come before the importing file's items, and each file is read once
 * (so an import cycle is harmless). */
#include "front/ast.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool loaded(const Program *prog, const char *name)
{
    for (int i = 0; i < prog->files.n; i++)
        if (strcmp(((SrcFile *)prog->files.v[i])->name, name) == 0)
            return true;
    return false;
}

/* Finds the file for `import "path"` written in `from`; returns a malloc'd
 * path, or NULL. */
static char *find_import(const SrcFile *from, const char *path)
{
    char *cand;
    if (path[0] == '/')
        return access(path, R_OK) == 0 ? xstrdup(path) : NULL;
    size_t n = strlen(from->dir) + strlen(path) + 2;
    cand = xmalloc(n);
    snprintf(cand, n, "%s/%s", from->dir, path);
    if (strcmp(from->dir, ".") == 0)
        snprintf(cand, n, "%s", path);
    if (access(cand, R_OK) == 0)
        return cand;
    free(cand);
    const char *sp = getenv("STRATA_PATH");
    while (sp && *sp) {
        const char *colon = strchr(sp, ':');
        size_t len = colon ? (size_t)(colon - sp) : strlen(sp);
        if (len) {
            n = len + strlen(path) + 2;
            cand = xmalloc(n);
            snprintf(cand, n, "%.*s/%s", (int)len, sp, path);
            if (access(cand, R_OK) == 0)
                return cand;
            free(cand);
        }
        sp = colon ? colon + 1 : NULL;
    }
    return NULL;
}

static bool load_file(Program *prog, Diag *d, SrcFile *src, NodeList *out, int depth)
{
    vec_push(&prog->files, src);
    NodeList mine = {0};
    bool ok = parse_file(&prog->arena, d, src, &mine);
    /* Imports first, so a file's functions are known before its items. */
    for (Node *it = mine.head; it; it = it->next) {
        if (it->kind != AST_IMPORT)
            continue;
        SrcFile *dep = NULL;
        if (strcmp(it->name, "std") == 0) {
            if (loaded(prog, "<std>"))
                continue;
            dep = src_from_memory("<std>", strata_std_lib, strlen(strata_std_lib));
        } else {
            char *path = find_import(src, it->name);
            if (!path) {
                diag_error(d, it->name_loc, "cannot find import \"%s\" (looked next to %s and in STRATA_PATH)",
                           it->name, src->name);
                ok = false;
                continue;
            }
            if (loaded(prog, path)) {
                free(path);
                continue;
            }
            const char *why = NULL;
            dep = src_read(path, &why);
            if (!dep) {
                diag_error(d, it->name_loc, "cannot read import \"%s\": %s", path, why);
                free(path);
                ok = false;
                continue;
            }
            free(path);
        }
        if (depth > 64) {
            diag_error(d, it->name_loc, "imports nested too deeply");
            src_free(dep);
            return false;
        }
        ok &= load_file(prog, d, dep, out, depth + 1);
    }
    if (mine.head) {
        if (out->tail)
            out->tail->next = mine.head;
        else
            out->head = mine.head;
        out->tail = mine.tail;
    }
    return ok;
}

bool ast_load(Program *prog, Diag *d, SrcFile *main)
{
    NodeList items = {0};
    bool ok = load_file(prog, d, main, &items, 0);
    prog->items = items.head;
    return ok && d->nerrors == 0;
}

void ast_program_free(Program *prog)
{
    for (int i = 0; i < prog->files.n; i++)
        src_free(prog->files.v[i]);
    vec_free(&prog->files);
    arena_free(&prog->arena);
    prog->items = NULL;
}
