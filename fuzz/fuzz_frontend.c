/* fuzz_frontend.c - libFuzzer target for the front end: parse, load imports,
 * resolve to IR and, for graphs of moderate size, everything `strata check`
 * runs after that (autodiff, fusion, memory plan, report).  Any input may be rejected with errors but must never
 * crash, leak, trip a sanitizer or hang.  Built by `make check` when
 * configure finds clang with libFuzzer (tests/fuzz.test runs it); by hand:
 *   fuzz/fuzz_frontend -dict=fuzz/strata.dict CORPUS_DIR
 * Inputs with a '/' inside a string are skipped, so imports can only name
 * files in the working directory (run it from an empty one). */
#include "ir/ad.h"
#include "front/ast.h"
#include "ir/fuse.h"
#include "ir/ir.h"
#include "ir/memplan.h"
#include "driver/check.h"
#include "resolve/sema.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* True if a string literal (from '"' to '"' or newline) contains a '/':
 * such an import could read any file, /dev/zero included. */
static bool has_path_string(const uint8_t *data, size_t size)
{
    bool in_string = false;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '"' || data[i] == '\n')
            in_string = data[i] == '"' && !in_string;
        else if (in_string && data[i] == '/')
            return true;
    }
    return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsetenv("STRATA_PATH");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();
    if (has_path_string(data, size))
        return -1; /* not added to the corpus */

    Diag diag;
    diag_init(&diag, devnull);
    Program prog = {0};
    SrcFile *src = src_from_memory("fuzz.strata", (const char *)data, size);
    if (ast_load(&prog, &diag, src)) {
        IrGraph g;
        ir_init(&g);
        if (sema_resolve(&prog, &(SemaOptions){0}, &diag, &g) && g.nodes.n < 5000) {
            ad_build(&g);
            if (!ir_verify(&g, devnull))
                abort();
            fuse_graph(&g);
            MemPlan mp;
            memplan_build(&mp, &g, 2, 3, 4, MEMPLAN_HEAD_DIV);
            report_print(devnull, &g, &mp, 2, 3);
            memplan_free(&mp);
        }
        ir_free(&g);
    }
    ast_program_free(&prog);
    return 0;
}
