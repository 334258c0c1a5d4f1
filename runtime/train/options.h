/* options.h - the option tables of the runtime's commands: one RtOptSpec
 * per flag (its field, kind, whether a checkpoint's state keeps it, help),
 * parsed by rt_parse_opts into the command's options struct and, for
 * `train` and `sft`, saved to and restored from the checkpoint's state by
 * train.c with the same table.  Implemented in options.c. */
#ifndef STRATA_OPTIONS_H
#define STRATA_OPTIONS_H
#include <stdbool.h>
#include <stdio.h>

typedef enum RtOptKind {
    RT_OPT_STR,   /* const char * (argv's string or the state's) */
    RT_OPT_INT,   /* int64_t */
    RT_OPT_REAL,  /* double */
    RT_OPT_FLAG,  /* int, 1 when given */
} RtOptKind;

/* One option of a command. */
typedef struct RtOptSpec {
    const char *key;    /* "batch": the field, and the key in the checkpoint's state */
    const char *flag;   /* "--batch" */
    RtOptKind kind;
    int saved;          /* kept in the checkpoint's state */
    int offset;         /* of the field in the options struct */
    const char *arg, *help;
} RtOptSpec;

#define RT_NSPECS(a) ((int)(sizeof(a) / sizeof *(a)))

/* Parses argv[2..argc) (argv[1] is the command) into base by specs;
 * given[i] marks what was set.  0 ok, 1 --help shown, 2 usage error
 * (message printed, naming prog and cmd). */
int rt_parse_opts(const char *prog, const char *cmd, const RtOptSpec *specs, int n, void *base, bool *given,
                  int argc, char **argv);
/* "usage: PROG CMD [options]" and a line per option. */
void rt_usage_cmd(FILE *f, const char *prog, const char *cmd, const RtOptSpec *specs, int n);
#endif
