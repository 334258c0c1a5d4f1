/* options.c - the option parser of the runtime's commands (options.h):
 * "--flag value", "--flag=value" and flags; integers and reals checked,
 * and every command's --threads against the pool's cap. */
#include "train/options.h"
#include "core/pool.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void rt_usage_cmd(FILE *f, const char *prog, const char *cmd, const RtOptSpec *specs, int n)
{
    fprintf(f, "usage: %s %s [options]\n", prog, cmd);
    for (int i = 0; i < n; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", specs[i].flag, specs[i].arg ? " " : "",
                 specs[i].arg ? specs[i].arg : "");
        fprintf(f, "  %-24s %s\n", left, specs[i].help);
    }
}

int rt_parse_opts(const char *prog, const char *cmd, const RtOptSpec *specs, int n, void *base, bool *given,
                  int argc, char **argv)
{
    for (int a = 2; a < argc; a++) {
        const char *arg = argv[a], *eq = strchr(arg, '=');
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            rt_usage_cmd(stdout, prog, cmd, specs, n);
            return 1;
        }
        size_t len = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);
        int k = 0;
        while (k < n && !(strlen(specs[k].flag) == len && !strncmp(specs[k].flag, arg, len)))
            k++;
        if (k == n) {
            fprintf(stderr, "%s %s: unknown option '%.*s' (%s %s --help lists them)\n", prog, cmd, (int)len, arg,
                    prog, cmd);
            return 2;
        }
        const RtOptSpec *sp = &specs[k];
        char *at = (char *)base + sp->offset;
        given[k] = true;
        if (sp->kind == RT_OPT_FLAG) {
            if (eq && arg[len] == '=') {
                fprintf(stderr, "%s %s: %s takes no value\n", prog, cmd, sp->flag);
                return 2;
            }
            *(int *)at = 1;
            continue;
        }
        const char *v = arg[len] == '=' ? arg + len + 1 : a + 1 < argc ? argv[++a] : NULL;
        if (!v) {
            fprintf(stderr, "%s %s: %s needs a value (%s)\n", prog, cmd, sp->flag, sp->arg);
            return 2;
        }
        char *end = NULL;
        errno = 0;
        if (sp->kind == RT_OPT_STR)
            *(const char **)at = v;
        else if (sp->kind == RT_OPT_INT) {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || errno) {
                fprintf(stderr, "%s %s: %s: '%s' is not an integer\n", prog, cmd, sp->flag, v);
                return 2;
            }
            if (!strcmp(sp->flag, "--threads") && (x < 0 || x > RT_POOL_MAX_THREADS)) {
                fprintf(stderr, "%s %s: --threads %lld: give 0 (all CPUs) up to %d\n", prog, cmd, x,
                        RT_POOL_MAX_THREADS);
                return 2;
            }
            *(int64_t *)at = x;
        } else {
            double x = strtod(v, &end);
            if (!*v || *end || errno || !isfinite(x)) {
                fprintf(stderr, "%s %s: %s: '%s' is not a number\n", prog, cmd, sp->flag, v);
                return 2;
            }
            *(double *)at = x;
        }
    }
    return 0;
}

