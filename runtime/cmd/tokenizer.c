/* tokenizer.c - `strata tokenizer train|encode|decode|info|export`.
 *   train   tokenizer_train_main (the trainer is data/bpe_train.c)
 *   encode  text files (or stdin) -> decimal ids, one line per file
 *   decode  token shards (or decimal ids on stdin) -> the bytes they spell
 *   info    vocabulary size, merges, special tokens; --tokens lists them all
 *   export  DIR/tokenizer.json + tokenizer_config.json (Hugging Face's)
 * The tokenizer is chosen as in `strata data` (rt_cli_tokenizer).
 * Entry point: rt_tokenizer_main; all memory is freed before it returns. */
#define _GNU_SOURCE /* vasprintf */
#include "cmd/commands.h"
#include "core/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/data.h"
#include "data/tokenizer_impl.h"

static void tokenizer_usage(FILE *out)
{
    fprintf(out,
            "usage: strata tokenizer train --vocab N [-o FILE] [-q] CORPUS...\n"
            "       strata tokenizer encode TOKENIZER [--special] [FILE...]\n"
            "       strata tokenizer decode TOKENIZER [-o OUT] [SHARD.bin...]\n"
            "       strata tokenizer info TOKENIZER [--tokens]\n"
            "       strata tokenizer export TOKENIZER -o DIR [--max-length N]\n"
            "  TOKENIZER: --tokenizer FILE | --bytes | --gpt2 DIR (encoder.json, vocab.bpe);\n"
            "           FILE is Strata's JSON or a Hugging Face tokenizer.json\n"
            "  encode   prints the ids of each file (stdin without one), a line per file;\n"
            "           --special: special tokens' texts become their ids\n"
            "  decode   writes the bytes of the shards' tokens (of decimal ids read\n"
            "           from stdin without a shard) to OUT or stdout\n"
            "  info     the vocabulary; --tokens: every id and its bytes, escaped\n"
            "  export   writes DIR/tokenizer.json and DIR/tokenizer_config.json in\n"
            "           Hugging Face's format (model_max_length N when given)\n");
}

/* All of a stream into *data (malloc'd, NUL-terminated).  0 or -1. */
static int read_stream(FILE *f, char **data, size_t *len)
{
    size_t n = 0, cap = 1 << 16;
    char *p = malloc(cap);
    if (!p)
        return -1;
    for (;;) {
        if (cap - n < 2) {
            char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                return -1;
            }
            p = q;
        }
        size_t got = fread(p + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(p);
        return -1;
    }
    p[n] = 0;
    *data = p;
    *len = n;
    return 0;
}

/* Writes a token's bytes as a C-like string: printable ASCII as is, \n \t
 * \\ \" and \xHH for the rest. */
static void put_escaped(FILE *out, const char *s, size_t n)
{
    putc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c == '\\' || c == '"')
            fprintf(out, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F)
            putc(c, out);
        else
            fprintf(out, "\\x%02X", c);
    }
    putc('"', out);
}

static int cmd_info(RtTokenizer *t, int tokens)
{
    int32_t v = rt_tok_vocab_size(t), m = rt_tok_n_merges(t), s = rt_tok_n_special(t);
    printf("vocab_size %d\nbytes 256 (ids 0..255)\nmerges %d", v, m);
    if (m > 0)
        printf(" (ids 256..%d)", 255 + m);
    printf("\nspecial %d\n", s);
    for (int32_t k = 0; k < s; k++)
        printf("  %s = %d\n", rt_tok_special_text(t, k), 256 + m + k);
    printf("eot %d\n", rt_tok_eot(t));
    if (tokens)
        for (int32_t id = 0; id < v; id++) {
            size_t n;
            const char *b = rt_tok_token(t, id, &n);
            printf("%d\t", id);
            put_escaped(stdout, b, n);
            putchar('\n');
        }
    return ferror(stdout) ? 1 : 0;
}

static int cmd_export(const RtTokenizer *t, const char *dir, int64_t max_length)
{
    char *err = NULL;
    int rc = rt_tok_save_hf_dir(t, dir, max_length, &err);
    if (rc)
        fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
    else
        fprintf(stderr, "strata: wrote %s/tokenizer.json and %s/tokenizer_config.json (%d ids)\n", dir, dir,
                rt_tok_vocab_size(t));
    free(err);
    return rc ? 1 : 0;
}

static int cmd_encode(RtTokenizer *t, int special, char **files, int nfile)
{
    int status = 0;
    for (int k = 0; k < (nfile ? nfile : 1); k++) {
        const char *path = nfile ? files[k] : "-";
        char *text = NULL, *err = NULL;
        size_t len;
        int rc;
        if (strcmp(path, "-") == 0) {
            rc = read_stream(stdin, &text, &len);
            if (rc)
                err = rt_fmt("stdin: %s", strerror(errno));
        } else {
            rc = rt_tok_read_file(path, &text, &len, &err);
        }
        RtTokIds ids;
        rt_tok_ids_init(&ids);
        if (rc == 0 && rt_tok_encode_append(t, text, len, special ? RT_TOK_SPECIAL : 0, &ids) != 0) {
            err = rt_fmt("%s: out of memory", path);
            rc = -1;
        }
        if (rc != 0) {
            fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
            status = 1;
        } else {
            for (int64_t i = 0; i < ids.n; i++)
                printf(i ? " %d" : "%d", ids.v[i]);
            putchar('\n');
        }
        free(err);
        free(text);
        rt_tok_ids_free(&ids);
        if (status)
            break;
    }
    return status;
}

/* Writes the bytes of ids (n) to out; 0, or -1 with *err naming where. */
static int decode_ids(const RtTokenizer *t, const int32_t *ids, int64_t n, const char *where, FILE *out,
                      char **err)
{
    int32_t v = rt_tok_vocab_size(t);
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        const char *b = ids[i] >= 0 && ids[i] < v ? rt_tok_token(t, ids[i], &len) : NULL;
        if (!b) {
            *err = rt_fmt("%s: token %lld is %d, outside the vocabulary of %d ids", where, (long long)i, ids[i], v);
            return -1;
        }
        if (len && fwrite(b, 1, len, out) != len) {
            *err = rt_fmt("write error: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int cmd_decode(RtTokenizer *t, const char *out_path, char **files, int nfile)
{
    FILE *out = out_path ? fopen(out_path, "wb") : stdout;
    char *err = NULL;
    int status = 1;
    if (!out) {
        fprintf(stderr, "strata: error: %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    if (nfile == 0) {
        char *text;
        size_t len;
        if (read_stream(stdin, &text, &len) != 0) {
            err = rt_fmt("stdin: %s", strerror(errno));
            goto done;
        }
        RtTokIds ids;
        rt_tok_ids_init(&ids);
        for (char *p = text;;) {
            while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
                p++;
            if (*p == 0)
                break;
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < INT32_MIN || v > INT32_MAX ||
                (*end && *end != ' ' && *end != '\n' && *end != '\t' && *end != '\r')) {
                err = rt_fmt("stdin: byte %td: expected a decimal token id", p - text);
                break;
            }
            if (ids.n == ids.cap) {
                int64_t cap = ids.cap ? 2 * ids.cap : 1024;
                int32_t *q = realloc(ids.v, (size_t)cap * sizeof *q);
                if (!q) {
                    err = rt_fmt("stdin: out of memory");
                    break;
                }
                ids.v = q;
                ids.cap = cap;
            }
            ids.v[ids.n++] = (int32_t)v;
            p = end;
        }
        if (!err && decode_ids(t, ids.v, ids.n, "stdin", out, &err) == 0)
            status = 0;
        rt_tok_ids_free(&ids);
        free(text);
        goto done;
    }
    for (int k = 0; k < nfile; k++) {
        RtShard s;
        if (rt_shard_open(&s, files[k], &err) != 0)
            goto done;
        int32_t *ids = malloc((size_t)(s.ntok ? s.ntok : 1) * sizeof *ids);
        if (!ids) {
            err = rt_fmt("%s: out of memory", files[k]);
            rt_shard_close(&s);
            goto done;
        }
        for (int64_t i = 0; i < s.ntok; i++)
            ids[i] = rt_shard_token(&s, i);
        int rc = decode_ids(t, ids, s.ntok, files[k], out, &err);
        free(ids);
        rt_shard_close(&s);
        if (rc != 0)
            goto done;
    }
    status = 0;
done:
    int to_stdout = out == stdout;
    if (!to_stdout && fclose(out) != 0 && status == 0) {
        err = rt_fmt("%s: %s", out_path, strerror(errno));
        status = 1;
    }
    if (to_stdout && fflush(stdout) != 0 && status == 0) {
        err = rt_fmt("stdout: %s", strerror(errno));
        status = 1;
    }
    if (status)
        fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
    free(err);
    return status;
}

/* --- strata tokenizer train ----------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void train_usage(FILE *out)
{
    fprintf(out, "usage: strata tokenizer train --vocab N [-o FILE] [-q] CORPUS...\n"
                 "  Trains a byte-level BPE tokenizer of N ids (256 bytes, N - 257 merges,\n"
                 "  <|endoftext|>) on the text files and writes it as JSON to FILE\n"
                 "  (default tokenizer.json).  -q: no summary on stderr.\n");
}

/* `strata tokenizer train --vocab N [-o FILE] [-q] CORPUS...`: argv[0] is
 * "train".  Trains on the concatenated files and writes FILE (default
 * tokenizer.json); prints a summary to stderr.  Returns the exit status:
 * 0 ok, 1 bad input (unreadable corpus, write error), 2 usage. */
static int tokenizer_train_main(int argc, char **argv)
{
    const char *out = "tokenizer.json";
    long vocab = -1;
    int quiet = 0, n_files = 0;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "strata: error: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "--vocab") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "strata: error: %s needs a value\n", a);
                train_usage(stderr);
                free(files);
                return 2;
            }
            v = argv[++i];
        } else if (strncmp(a, "--vocab=", 8) == 0) {
            v = a + 8;
            a = "--vocab";
        }
        if (v && strcmp(a, "--vocab") == 0) {
            char *end;
            vocab = strtol(v, &end, 10);
            if (*v == 0 || *end || vocab < 257 || vocab > INT32_MAX) {
                fprintf(stderr, "strata: error: --vocab %s: expected an integer from 257 to %d\n", v, INT32_MAX);
                free(files);
                return 2;
            }
        } else if (v) {
            out = v;
        } else if (strcmp(a, "-q") == 0) {
            quiet = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            train_usage(stdout);
            free(files);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "strata: error: unknown option %s\n", a);
            train_usage(stderr);
            free(files);
            return 2;
        } else {
            files[n_files++] = argv[i];
        }
    }
    if (vocab < 0 || n_files == 0) {
        fprintf(stderr, "strata: error: %s\n", vocab < 0 ? "--vocab N is required" : "no corpus file given");
        train_usage(stderr);
        free(files);
        return 2;
    }
    double t0 = now_s();
    RtBpeTrainer *tr = rt_bpe_trainer_new();
    char *err = NULL;
    int status = 1;
    RtTokenizer *tok = NULL;
    if (!tr) {
        fprintf(stderr, "strata: error: out of memory\n");
        goto done;
    }
    for (int k = 0; k < n_files; k++) {
        char *data;
        size_t len;
        if (rt_tok_read_file(files[k], &data, &len, &err) != 0)
            goto fail;
        int rc = rt_bpe_trainer_add(tr, data, len);
        free(data);
        if (rc != 0) {
            err = rt_fmt("%s: out of memory counting its pre-tokens", files[k]);
            goto fail;
        }
    }
    double t1 = now_s();
    tok = rt_bpe_trainer_train(tr, (int32_t)vocab, &err);
    if (!tok)
        goto fail;
    double t2 = now_s();
    if (rt_tok_save(tok, out, &err) != 0)
        goto fail;
    if (!quiet) {
        double mb = (double)rt_bpe_trainer_bytes(tr) / 1e6;
        fprintf(stderr,
                "strata: %s: %d ids (%d merges) from %.2f MB in %d file%s, %lld unique pre-tokens; "
                "%.2f s (count %.2f s, merges %.2f s), %.1f MB/s\n",
                out, rt_tok_vocab_size(tok), rt_tok_n_merges(tok), mb, n_files, n_files == 1 ? "" : "s",
                (long long)rt_bpe_trainer_words(tr), t2 - t0, t1 - t0, t2 - t1, t2 > t0 ? mb / (t2 - t0) : 0.0);
        if (rt_tok_vocab_size(tok) < vocab)
            fprintf(stderr, "strata: warning: the corpus ran out of pairs before %ld ids\n", vocab);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
done:
    free(err);
    rt_tok_free(tok);
    rt_bpe_trainer_free(tr);
    free(files);
    return status;
}


int rt_tokenizer_main(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        tokenizer_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *cmd = argv[0];
    if (strcmp(cmd, "train") == 0)
        return tokenizer_train_main(argc, argv);
    if (strcmp(cmd, "encode") && strcmp(cmd, "decode") && strcmp(cmd, "info") && strcmp(cmd, "export")) {
        fprintf(stderr, "strata: error: tokenizer: unknown command '%s' (train, encode, decode, info or export)\n",
                cmd);
        return 2;
    }
    const char *tok_file = NULL, *gpt2_dir = NULL, *out_path = NULL;
    int bytes = 0, special = 0, tokens = 0, nfile = 0;
    int64_t max_length = -1;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "strata: error: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tokenizer") == 0 || strcmp(a, "--gpt2") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "strata: error: tokenizer %s: %s needs a value\n", cmd, a);
                free(files);
                return 2;
            }
            const char **dst = a[2] == 't' ? &tok_file : a[2] == 'g' ? &gpt2_dir : &out_path;
            *dst = argv[++i];
        } else if (strcmp(a, "--bytes") == 0) {
            bytes = 1;
        } else if (strcmp(a, "--special") == 0 && strcmp(cmd, "encode") == 0) {
            special = 1;
        } else if (strcmp(a, "--tokens") == 0 && strcmp(cmd, "info") == 0) {
            tokens = 1;
        } else if (strcmp(a, "--max-length") == 0 && strcmp(cmd, "export") == 0) {
            char *end;
            if (i + 1 >= argc || (max_length = strtoll(argv[i + 1], &end, 10)) < 1 || *end) {
                fprintf(stderr, "strata: error: tokenizer export: --max-length needs a whole number >= 1\n");
                free(files);
                return 2;
            }
            i++;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            tokenizer_usage(stdout);
            free(files);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "strata: error: tokenizer %s: unknown option '%s'\n", cmd, a);
            tokenizer_usage(stderr);
            free(files);
            return 2;
        } else {
            files[nfile++] = argv[i];
        }
    }
    bool exporting = strcmp(cmd, "export") == 0;
    int bad_usage = (out_path && strcmp(cmd, "decode") != 0 && !exporting) ||
                    (nfile && (strcmp(cmd, "info") == 0 || exporting)) || (exporting && !out_path);
    if (bad_usage || bytes + (tok_file != NULL) + (gpt2_dir != NULL) != 1) {
        fprintf(stderr, "strata: error: tokenizer %s: %s\n", cmd,
                bad_usage ? (exporting && !out_path ? "-o DIR is required" : "unexpected argument")
                          : "give one of --tokenizer FILE, --bytes and --gpt2 DIR");
        tokenizer_usage(stderr);
        free(files);
        return 2;
    }
    char *err = NULL;
    RtTokenizer *t = rt_cli_tokenizer(tok_file, bytes, gpt2_dir, &err);
    int status;
    if (!t) {
        fprintf(stderr, "strata: error: %s\n", err ? err : "out of memory");
        status = 1;
    } else if (strcmp(cmd, "info") == 0) {
        status = cmd_info(t, tokens);
    } else if (strcmp(cmd, "encode") == 0) {
        status = cmd_encode(t, special, files, nfile);
    } else if (exporting) {
        status = cmd_export(t, out_path, max_length);
    } else {
        status = cmd_decode(t, out_path, files, nfile);
    }
    free(err);
    rt_tok_free(t);
    free(files);
    return status;
}
