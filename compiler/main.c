/* main.c - the `strata` command: argument parsing and the pass pipeline.
 * Exit codes: 0 success, 1 bad input (model file, -D, preset), 2 usage,
 * 3 out of memory or an internal error. */
#include "ast.h"
#include "ir.h"
#include "report.h"
#include "sema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: strata check MODEL.strata [options]\n"
            "\n"
            "  check     parse, check and resolve a model; print its per-layer plan,\n"
            "            parameter table, parameter count, FLOPs per token and memory\n"
            "\n"
            "options:\n"
            "  -D NAME=VALUE    override a config constant (repeatable)\n"
            "  --preset NAME    set vocab, d, ffn, heads, L, rope to a published size:\n"
            "                  ");
    for (const char *const *p = sema_preset_names(); *p; p++)
        fprintf(out, " %s", *p);
    fprintf(out,
            "\n"
            "  --batch N        batch size for the memory estimate (default 8)\n"
            "  --seq T          sequence length for FLOPs and memory (default: config\n"
            "                   constant ctx if the model has one, else 256)\n"
            "  --dump=ast|ir    print that stage instead of the summary\n"
            "  -h, --help       this text;  --version  the version\n");
}

static bool parse_count(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 1 || v > (1LL << 32))
        return false;
    *out = v;
    return true;
}

static int cmd_check(int argc, char **argv)
{
    const char *model = NULL, *dump = NULL;
    SemaOptions opt = {0};
    const char **defines = xcalloc((size_t)argc + 1, sizeof *defines);
    int64_t batch = 8, seq = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (!strcmp(a, "-D") || !strcmp(a, "--preset") || !strcmp(a, "--batch") || !strcmp(a, "--seq")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "strata: error: %s needs a value\n", a);
                return 2;
            }
            val = argv[++i];
        } else if (!strncmp(a, "-D", 2)) {
            defines[opt.ndefines++] = a + 2;
            continue;
        }
        if (!strcmp(a, "-D"))
            defines[opt.ndefines++] = val;
        else if (!strcmp(a, "--preset"))
            opt.preset = val;
        else if (!strcmp(a, "--batch") || !strcmp(a, "--seq")) {
            if (!parse_count(val, a[2] == 'b' ? &batch : &seq)) {
                fprintf(stderr, "strata: error: %s expects a positive whole number, got '%s'\n", a, val);
                return 2;
            }
        } else if (!strncmp(a, "--dump=", 7)) {
            dump = a + 7;
            if (strcmp(dump, "ast") && strcmp(dump, "ir")) {
                fprintf(stderr, "strata: error: --dump expects ast or ir, got '%s'\n", dump);
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "strata: error: unknown option '%s' (see strata --help)\n", a);
            return 2;
        } else if (model) {
            fprintf(stderr, "strata: error: more than one model file given ('%s' and '%s')\n", model, a);
            return 2;
        } else {
            model = a;
        }
    }
    if (!model) {
        fprintf(stderr, "strata: error: no model file given\n");
        usage(stderr);
        return 2;
    }
    opt.defines = defines;

    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(model, &why);
    if (!src) {
        fprintf(stderr, "strata: error: cannot read %s: %s\n", model, why);
        free(defines);
        return 1;
    }
    Program prog = {0};
    bool ok = ast_load(&prog, &d, src);
    if (ok && dump && !strcmp(dump, "ast")) {
        ast_dump(stdout, prog.items);
        ast_program_free(&prog);
        free(defines);
        return 0;
    }
    IrGraph g;
    ir_init(&g);
    g.model_name = model;
    if (ok)
        ok = sema_resolve(&prog, &opt, &d, &g);
    if (ok) {
        if (!seq) {
            seq = 256;
            for (int i = 0; i < g.config.n; i++) {
                IrConfig *c = g.config.v[i];
                if (!strcmp(c->name, "ctx") && c->value >= 1 && c->value < 1e9)
                    seq = (int64_t)c->value;
            }
        }
        if (dump)
            ir_dump(stdout, &g);
        else
            report_print(stdout, &g, batch, seq);
    }
    diag_finish(&d);
    ir_free(&g);
    ast_program_free(&prog);
    free(defines);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("strata %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "check"))
        return cmd_check(argc - 2, argv + 2);
    fprintf(stderr, "strata: error: unknown command '%s' (see strata --help)\n", argv[1]);
    return 2;
}
