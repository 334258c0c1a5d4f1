/* data_test.c - token shards and the batch loader (runtime/data/data.h): uint16
 * and uint32 round trips in llm.c's format, the exact error of each bad
 * header, windows and shifted targets, deterministic shuffles (pinned to
 * an independent Python implementation of the scheme data.h documents),
 * exact resume from a saved state, one sequential pass over every window,
 * globs, and the train/val split written as a shard set: the header marks
 * (set id, role, index, CRC-32 recomputed here), the manifest, and the
 * loader's refusals of a shard without its manifest, of another set, or
 * edited since; and that the loader's reads do not stay resident in the
 * process.  Files go to a fresh directory under $TMPDIR.  Exit 0
 * pass, 1 fail. */
#define _GNU_SOURCE
#include "data/data.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The error of opening path as a shard must be exactly "PATH: want". */
static void expect_shard_error(const char *path, const char *want)
{
    RtShard s;
    char *err = NULL, full[1024];
    snprintf(full, sizeof full, "%s: %s", path, want);
    int rc = rt_shard_open(&s, path, &err);
    CHECK(rc == -1 && err && !strcmp(err, full), "open %s: got '%s', want '%s'", path, rc ? err : "success", full);
    if (rc == 0)
        rt_shard_close(&s);
    free(err);
}

static void put32(FILE *f, long at, int32_t v)
{
    fseek(f, at, SEEK_SET);
    fwrite(&v, 4, 1, f);
}

/* Writes a shard of n tokens, then patches header word `word` to v (word
 * < 0: no patch) and cuts the file by `cut` bytes. */
static void make_bad(const char *path, int width, int64_t n, int word, int32_t v, long cut)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(i % 1000);
    char *err = NULL;
    if (rt_shard_write(path, ids, n, width, &err) != 0) {
        printf("FAIL: write %s: %s\n", path, err);
        tu_fails++;
    }
    free(ids);
    FILE *f = fopen(path, "r+b");
    if (word >= 0)
        put32(f, word * 4, v);
    fclose(f);
    if (cut) {
        struct stat st;
        stat(path, &st);
        if (truncate(path, st.st_size - cut) != 0)
            perror(path);
    }
}

static void test_round_trip(void)
{
    enum { N = 70000 };
    int32_t *ids = malloc(N * sizeof *ids);
    char *err = NULL;
    for (int width = 2; width <= 4; width += 2) {
        for (int i = 0; i < N; i++)
            ids[i] = width == 2 ? (int32_t)((i * 7919) % 65536) : i * 3 + 1;
        const char *p = tu_path(width == 2 ? "u16.bin" : "u32.bin");
        CHECK(rt_shard_width(ids, N) == width, "width of the ids %d, want %d", rt_shard_width(ids, N), width);
        CHECK(rt_shard_write(p, ids, N, 0, &err) == 0, "write: %s", err);
        /* The header, byte for byte, as llm.c writes it. */
        FILE *f = fopen(p, "rb");
        int32_t h[256];
        CHECK(fread(h, 4, 256, f) == 256, "short header");
        fseek(f, 0, SEEK_END);
        CHECK(ftell(f) == 1024 + (long)N * width, "file size %ld", ftell(f));
        fclose(f);
        CHECK(h[0] == (width == 2 ? 20240520 : 20240801) && h[1] == (width == 2 ? 1 : 7) && h[2] == N,
              "header %d %d %d", h[0], h[1], h[2]);
        int zero = 1;
        for (int i = 3; i < 256; i++)
            zero &= h[i] == 0;
        CHECK(zero, "reserved header words are not zero");
        RtShard s;
        CHECK(rt_shard_open(&s, p, &err) == 0, "open: %s", err);
        CHECK(s.width == width && s.ntok == N, "opened width %d, %lld tokens", s.width, (long long)s.ntok);
        int same = 1;
        for (int i = 0; i < N; i++)
            same &= rt_shard_token(&s, i) == ids[i];
        CHECK(same, "width %d: tokens differ after the round trip", width);
        rt_shard_close(&s);
    }
    /* Forced width 4 for small ids; width 2 refuses a large id; negatives. */
    int32_t small[3] = {1, 2, 3}, big[2] = {5, 65536}, neg[2] = {5, -1};
    RtShard s;
    CHECK(rt_shard_write(tu_path("w4.bin"), small, 3, 4, &err) == 0 &&
              rt_shard_open(&s, tu_path("w4.bin"), &err) == 0 && s.width == 4 && rt_shard_token(&s, 2) == 3,
          "forced uint32 shard");
    rt_shard_close(&s);
    err = NULL;
    CHECK(rt_shard_write(tu_path("x.bin"), big, 2, 2, &err) == -1 && err &&
              strstr(err, "x.bin: token 1 is 65536, too large for a uint16 shard"),
          "uint16 overflow: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_shard_write(tu_path("x.bin"), neg, 2, 0, &err) == -1 && err && strstr(err, "token 1 is -1, negative"),
          "negative id: %s", err);
    free(err);
    CHECK(access(tu_path("x.bin"), F_OK) != 0, "a refused shard was written");
    /* An empty shard is valid. */
    CHECK(rt_shard_write(tu_path("empty.bin"), small, 0, 0, &err) == 0 &&
              rt_shard_open(&s, tu_path("empty.bin"), &err) == 0 && s.ntok == 0,
          "empty shard");
    rt_shard_close(&s);
    free(ids);
}

static void test_bad_headers(void)
{
    const char *p = tu_path("bad.bin");
    make_bad(p, 2, 1000, -1, 0, 4);
    expect_shard_error(p, "header says 1000 tokens but the file holds 998");
    make_bad(p, 2, 1000, 2, 2000, 0);
    expect_shard_error(p, "header says 2000 tokens but the file holds 1000");
    make_bad(p, 2, 1000, -1, 0, 1);
    expect_shard_error(p, "header says 1000 tokens (2 bytes each) but the file holds 1999 bytes of tokens, not a "
                          "whole number");
    make_bad(p, 4, 100, -1, 0, 8);
    expect_shard_error(p, "header says 100 tokens but the file holds 98");
    make_bad(p, 2, 10, 0, 12345, 0);
    expect_shard_error(p, "not a token shard (magic 12345; expected 20240520 or 20240801)");
    make_bad(p, 2, 10, 1, 2, 0);
    expect_shard_error(p, "token shard version 2 is not supported (magic 20240520 goes with version 1, uint16 "
                          "tokens)");
    make_bad(p, 4, 10, 1, 1, 0);
    expect_shard_error(p, "token shard version 1 is not supported (magic 20240801 goes with version 7, uint32 "
                          "tokens)");
    make_bad(p, 2, 10, 2, -5, 0);
    expect_shard_error(p, "header says -5 tokens");
    make_bad(p, 2, 10, -1, 0, 1024);
    expect_shard_error(p, "20 bytes, too short for the 1024-byte header of a token shard");
    FILE *f = fopen(p, "wb");
    fclose(f);
    expect_shard_error(p, "0 bytes, too short for the 1024-byte header of a token shard");
    expect_shard_error(tu_path("missing.bin"), "No such file or directory");
    expect_shard_error(tu_dir, "is a directory, not a token shard");
}

/* Two shards whose tokens say where they come from: A holds 1001 tokens
 * with value i, B 57 tokens with value 30000 + i.  T = 10: A has 100
 * windows, B 5 (the 7th token of B's last partial window is unused). */
enum { T = 10, WA = 100, WB = 5, W = WA + WB };
static const char *shards[2];

static void make_shards(void)
{
    int32_t a[1001], b[57];
    for (int i = 0; i < 1001; i++)
        a[i] = i;
    for (int i = 0; i < 57; i++)
        b[i] = 30000 + i;
    char *err = NULL;
    shards[0] = strdup(tu_path("set_a.bin"));
    shards[1] = strdup(tu_path("set_b.bin"));
    CHECK(rt_shard_write(shards[0], a, 1001, 0, &err) == 0, "%s", err);
    CHECK(rt_shard_write(shards[1], b, 57, 4, &err) == 0, "%s", err); /* mixed widths in one set */
}

/* The window a row holds (-1 if the row is not a window with shifted targets). */
static int window_of(const int32_t *tok, const int32_t *tgt)
{
    for (int t = 0; t < T; t++)
        if (tgt[t] != tok[t] + 1)
            return -1;
    if (tok[0] >= 30000)
        return (tok[0] - 30000) % T ? -1 : WA + (tok[0] - 30000) / T;
    return tok[0] % T ? -1 : tok[0] / T;
}

static void test_sequential(void)
{
    RtLoader l;
    char *err = NULL;
    enum { B = 8 };
    CHECK(rt_loader_init(&l, shards, 2, B, T, RT_LOADER_SEQUENTIAL, 0, &err) == 0, "init: %s", err);
    CHECK(l.nwin == W && l.ntok == 1058, "%lld windows, %lld tokens", (long long)l.nwin, (long long)l.ntok);
    CHECK(rt_loader_batches(&l) == 14, "batches %lld", (long long)rt_loader_batches(&l));
    int32_t tok[B * T], tgt[B * T], first[B * T];
    int next = 0, rows, calls = 0;
    while ((rows = rt_loader_next(&l, tok, tgt)) > 0) {
        if (calls++ == 0)
            memcpy(first, tok, sizeof tok);
        CHECK(rows == (calls < 14 ? B : 1), "batch %d has %d rows", calls, rows);
        for (int b = 0; b < B; b++) {
            int w = window_of(tok + b * T, tgt + b * T);
            int want = b < rows ? next + b : next + rows - 1; /* padding repeats the last window */
            CHECK(w == want, "batch %d row %d holds window %d, want %d", calls, b, w, want);
        }
        next += rows;
    }
    CHECK(next == W && calls == 14, "a pass returned %d windows in %d batches", next, calls);
    CHECK(rt_loader_next(&l, tok, tgt) == 0, "an exhausted loader returned rows");
    rt_loader_reset(&l);
    CHECK(rt_loader_next(&l, tok, tgt) == B && !memcmp(tok, first, sizeof tok), "reset does not start over");
    rt_loader_free(&l);
}

/* n batches of B rows, as window numbers. */
static void draw(RtLoader *l, int n, int *out)
{
    int32_t tok[64 * T], tgt[64 * T];
    for (int k = 0; k < n; k++) {
        CHECK(rt_loader_next(l, tok, tgt) == l->B, "random batch not full");
        for (int b = 0; b < l->B; b++)
            out[k * l->B + b] = window_of(tok + b * T, tgt + b * T);
    }
}

static void test_random(void)
{
    RtLoader l, m;
    char *err = NULL;
    enum { B = 5, NB = 3 * W / B }; /* three epochs exactly */
    static int x[NB * B], y[NB * B], z[NB * B];
    CHECK(rt_loader_init(&l, shards, 2, B, T, RT_LOADER_RANDOM, 42, &err) == 0, "init: %s", err);
    draw(&l, NB, x);
    /* The scheme of data.h, computed independently in Python. */
    static const int pin0[12] = {55, 101, 48, 88, 38, 37, 41, 25, 16, 7, 72, 3};
    static const int pin1[12] = {7, 96, 103, 27, 67, 93, 0, 70, 98, 14, 51, 104};
    CHECK(!memcmp(x, pin0, sizeof pin0) && !memcmp(x + W, pin1, sizeof pin1),
          "seed 42 order %d %d %d ... / %d %d %d ..., want 55 101 48 ... / 7 96 103 ...", x[0], x[1], x[2], x[W],
          x[W + 1], x[W + 2]);
    /* Every epoch visits every window once, in a different order. */
    for (int e = 0; e < 3; e++) {
        int seen[W] = {0}, bad = 0;
        for (int i = 0; i < W; i++) {
            int w = x[e * W + i];
            if (w < 0 || w >= W || seen[w]++)
                bad = 1;
        }
        CHECK(!bad, "epoch %d is not a permutation of the windows", e);
    }
    CHECK(memcmp(x, x + W, W * sizeof *x) != 0, "epochs 0 and 1 have the same order");
    CHECK(rt_loader_state(&l).epoch == 2 && rt_loader_state(&l).pos == W, "state after 3 epochs (%lld, %lld)",
          (long long)rt_loader_state(&l).epoch, (long long)rt_loader_state(&l).pos);
    /* Same seed: same batches; another seed: others. */
    CHECK(rt_loader_init(&m, shards, 2, B, T, RT_LOADER_RANDOM, 42, &err) == 0, "init: %s", err);
    draw(&m, NB, y);
    CHECK(!memcmp(x, y, sizeof x), "the same seed gave other batches");
    rt_loader_free(&m);
    CHECK(rt_loader_init(&m, shards, 2, B, T, RT_LOADER_RANDOM, 43, &err) == 0, "init: %s", err);
    draw(&m, NB, y);
    CHECK(memcmp(x, y, sizeof x) != 0, "seeds 42 and 43 gave the same batches");
    rt_loader_free(&m);
    /* Resume: save after 7 batches (mid-epoch) and after 21 (at an epoch's
     * end); a fresh loader set to the state continues identically. */
    static const int cut[2] = {7, 21};
    for (int c = 0; c < 2; c++) {
        rt_loader_reset(&l);
        draw(&l, cut[c], y);
        RtLoaderState s = rt_loader_state(&l);
        draw(&l, NB - cut[c], y);
        CHECK(rt_loader_init(&m, shards, 2, B, T, RT_LOADER_RANDOM, 42, &err) == 0, "init: %s", err);
        CHECK(rt_loader_set_state(&m, s, &err) == 0, "set_state: %s", err);
        draw(&m, NB - cut[c], z);
        CHECK(!memcmp(y, z, (size_t)(NB - cut[c]) * B * sizeof *y) && !memcmp(z, x + cut[c] * B,
              (size_t)(NB - cut[c]) * B * sizeof *z), "resume after %d batches differs", cut[c]);
        rt_loader_free(&m);
    }
    /* A state that cannot belong to these shards. */
    err = NULL;
    CHECK(rt_loader_set_state(&l, (RtLoaderState){0, W + 1}, &err) == -1 && err &&
          strstr(err, "set_a.bin: loader state (epoch 0, window 106) does not fit these shards (105 windows of 11 "
                      "tokens)"), "bad state: %s", err);
    free(err);
    rt_loader_free(&l);
}

static void test_loader_errors(void)
{
    RtLoader l;
    char *err = NULL;
    CHECK(rt_loader_init(&l, shards, 2, 4, 2000, RT_LOADER_RANDOM, 1, &err) == -1 && err &&
          !strcmp(err, strcat(strcpy((char[512]){0}, shards[0]),
                              ": 1001 tokens; a window needs T + 1 = 2001 (and this is the longest shard)")),
          "T too long: %s", err);
    free(err);
    err = NULL;
    const char *bad[2] = {shards[0], tu_path("missing.bin")};
    CHECK(rt_loader_init(&l, bad, 2, 4, 10, RT_LOADER_RANDOM, 1, &err) == -1 && err &&
          strstr(err, "missing.bin: No such file or directory"), "missing shard: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_loader_init(&l, shards, 2, 4, 10, RT_LOADER_RANDOM, 1, &err) == 0, "%s", err);
    CHECK(rt_loader_check_vocab(&l, 30057, &err) == 0, "vocab 30057: %s", err);
    err = NULL;
    CHECK(rt_loader_check_vocab(&l, 30000, &err) == -1 && err &&
          strstr(err, "set_b.bin: token 0 is 30000, outside the vocabulary (size 30000)"), "vocab: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_loader_check_vocab(&l, 500, &err) == -1 && err &&
          strstr(err, "set_a.bin: token 500 is 500, outside the vocabulary (size 500)"), "vocab: %s", err);
    free(err);
    rt_loader_free(&l);
}

static void test_glob(void)
{
    char **p, *err = NULL, pat[600];
    int n;
    snprintf(pat, sizeof pat, "%s/set_*.bin", tu_dir);
    CHECK(rt_glob(pat, &p, &n, &err) == 0 && n == 2 && !strcmp(p[0], shards[0]) && !strcmp(p[1], shards[1]),
          "glob %s", pat);
    rt_glob_free(p, n);
    snprintf(pat, sizeof pat, "%s/nothing_*.bin", tu_dir);
    char want[700];
    snprintf(want, sizeof want, "%s: no such file", pat);
    CHECK(rt_glob(pat, &p, &n, &err) == -1 && err && !strcmp(err, want), "glob without match: %s", err);
    free(err);
}

/* llm.c's reserved header words as strata data marks them (data.h),
 * read with stdio, and the manifest's lines. */
static void test_set_marks(const RtSplitResult *r, const int32_t *ids)
{
    for (int k = 0; k <= r->ntrain; k++) {
        const char *p = k < r->ntrain ? r->train_paths[k] : r->val_path;
        int32_t h[10];
        FILE *f = fopen(p, "rb");
        CHECK(f && fread(h, 4, 10, f) == 10, "%s: no header", p);
        if (f)
            fclose(f);
        uint64_t id = (uint64_t)(uint32_t)h[4] | (uint64_t)(uint32_t)h[5] << 32;
        CHECK(h[3] == 0x54525453 && id == r->id, "%s: mark %x, set %llx (want %llx)", p, h[3],
              (unsigned long long)id, (unsigned long long)r->id);
        CHECK(h[6] == (k < r->ntrain ? 1 : 2) && h[7] == (k < r->ntrain ? k : 0) &&
                  h[8] == (k < r->ntrain ? r->ntrain : 1),
              "%s: role %d, shard %d of %d", p, h[6], h[7], h[8]);
    }
    /* The CRC-32 of the first train shard's tokens, by the bitwise
     * definition (reflected polynomial 0xEDB88320), not by zlib. */
    uint32_t crc = 0xFFFFFFFFu;
    for (int i = 0; i < 300; i++)
        for (int b = 0; b < 2; b++) {
            crc ^= (uint32_t)(ids[i] >> (8 * b)) & 0xFF;
            for (int k = 0; k < 8; k++)
                crc = crc >> 1 ^ (crc & 1 ? 0xEDB88320u : 0);
        }
    crc ^= 0xFFFFFFFFu;
    int32_t h9 = 0;
    FILE *f = fopen(r->train_paths[0], "rb");
    if (f) {
        fseek(f, 36, SEEK_SET);
        CHECK(fread(&h9, 4, 1, f) == 1, "short header");
        fclose(f);
    }
    CHECK((uint32_t)h9 == crc, "header CRC-32 %08x, the definition gives %08x", (uint32_t)h9, crc);
    size_t n;
    char *man = tu_slurp(r->manifest_path, &n), want[64];
    snprintf(want, sizeof want, "\"id\": \"%016llx\"", (unsigned long long)r->id);
    CHECK(man && strstr(man, want) && strstr(man, "\"file\": \"corpus_train_000002.bin\"") &&
              strstr(man, "\"file\": \"corpus_val.bin\"") && strstr(man, "\"train_tokens\": 900"),
          "manifest %s: %s", r->manifest_path, man ? man : "(none)");
    free(man);
    RtLoader l;
    char *err = NULL;
    CHECK(rt_loader_init(&l, (const char *const *)r->train_paths, r->ntrain, 2, 10, RT_LOADER_RANDOM, 1, &err) == 0,
          "loader on a whole set: %s", err);
    CHECK(rt_loader_check_vocab(&l, 4000, &err) == 0 && l.id != 0, "scan of a whole set: %s", err);
    rt_loader_free(&l);
}

/* What the loader refuses: a set's shard without its manifest, with a
 * manifest of another set, or with bytes that do not match its CRC. */
static void test_set_refusals(const RtSplitResult *r)
{
    RtLoader l;
    char *err = NULL, *man = tu_path("corpus.manifest.json"), *moved = tu_path("moved.json");
    const char *one[1] = {r->train_paths[0]};
    CHECK(rename(man, moved) == 0, "rename the manifest");
    CHECK(rt_loader_init(&l, one, 1, 2, 10, RT_LOADER_RANDOM, 1, &err) == -1 && err &&
              strstr(err, "corpus_train_000000.bin: belongs to shard set") && strstr(err, "is missing"),
          "no manifest: %s", err ? err : "accepted");
    free(err);
    err = NULL;
    FILE *f = fopen(man, "w");
    fprintf(f, "{\"id\": \"00000000000000aa\"}\n");
    fclose(f);
    CHECK(rt_loader_init(&l, one, 1, 2, 10, RT_LOADER_RANDOM, 1, &err) == -1 && err &&
              strstr(err, "describes set 00000000000000aa") && strstr(err, "mix two corpora"),
          "another set's manifest: %s", err ? err : "accepted");
    free(err);
    err = NULL;
    CHECK(rename(moved, man) == 0, "rename the manifest back");
    f = fopen(r->train_paths[1], "r+b"); /* one token changed, the header kept */
    fseek(f, 1024 + 10, SEEK_SET);
    fputc(0x7f, f);
    fclose(f);
    const char *both[2] = {r->train_paths[0], r->train_paths[1]};
    CHECK(rt_loader_init(&l, both, 2, 2, 10, RT_LOADER_RANDOM, 1, &err) == 0, "%s", err);
    CHECK(rt_loader_check_vocab(&l, 1 << 20, &err) == -1 && err && strstr(err, "corpus_train_000001.bin: the tokens' "
                                                                            "CRC-32 is"),
          "edited shard: %s", err ? err : "accepted");
    free(err);
    rt_loader_free(&l);
}

static void test_split(void)
{
    enum { N = 1000 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = i * 13 % 4000;
    char prefix[600], *err = NULL;
    snprintf(prefix, sizeof prefix, "%s/corpus", tu_dir);
    RtSplitResult r;
    RtSplitOptions o = {.val_fraction = 0.1, .shard_tokens = 300};
    CHECK(rt_data_split(prefix, ids, N, &o, &r, &err) == 0, "split: %s", err);
    CHECK(r.ntrain == 3 && r.train_tokens == 900 && r.val_tokens == 100 && r.width == 2 && !r.removed,
          "split: %d shards, %lld + %lld tokens, width %d, removed %d", r.ntrain, (long long)r.train_tokens,
          (long long)r.val_tokens, r.width, r.removed);
    /* Train shards hold the corpus in order, val its last 100 tokens. */
    int64_t at = 0;
    for (int k = 0; k <= r.ntrain; k++) {
        RtShard s;
        const char *p = k < r.ntrain ? r.train_paths[k] : r.val_path;
        CHECK(rt_shard_open(&s, p, &err) == 0, "%s", err);
        int same = 1;
        for (int64_t i = 0; i < s.ntok; i++)
            same &= rt_shard_token(&s, i) == ids[at + i];
        CHECK(same && s.ntok == (k < 3 ? 300 : 100), "%s: wrong contents", p);
        at += s.ntok;
        rt_shard_close(&s);
    }
    CHECK(strstr(r.train_paths[2], "/corpus_train_000002.bin") && strstr(r.val_path, "/corpus_val.bin"),
          "names %s %s", r.train_paths[2], r.val_path);
    test_set_marks(&r, ids);
    uint64_t first_id = r.id;
    rt_split_result_free(&r);
    /* Fewer shards than last time: the leftover of the earlier set goes,
     * and so do temporary files of a killed split (a pid that cannot run). */
    FILE *tf = fopen(tu_path("corpus_train_000007.bin.tmp.2147483646"), "w");
    if (tf)
        fclose(tf);
    o = (RtSplitOptions){.val_tokens = 50, .shard_tokens = 500};
    CHECK(rt_data_split(prefix, ids, N, &o, &r, &err) == 0, "split: %s", err);
    CHECK(r.ntrain == 2 && r.val_tokens == 50 && r.train_tokens == 950 && r.removed == 1,
          "the earlier set's third shard was not removed (removed %d)", r.removed);
    CHECK(access(tu_path("corpus_train_000002.bin"), F_OK) != 0, "corpus_train_000002.bin is still there");
    CHECK(access(tu_path("corpus_train_000007.bin.tmp.2147483646"), F_OK) != 0, "a dead split's temp file is left");
    CHECK(r.id != first_id, "two layouts of one corpus got the same set id");
    test_set_refusals(&r);
    rt_split_result_free(&r);
    /* A large id makes every shard uint32. */
    ids[N - 1] = 100000;
    snprintf(prefix, sizeof prefix, "%s/wide", tu_dir);
    CHECK(rt_data_split(prefix, ids, N, &o, &r, &err) == 0 && r.width == 4, "wide split");
    RtShard s;
    CHECK(rt_shard_open(&s, r.train_paths[0], &err) == 0 && s.width == 4, "train shard of a wide corpus is not uint32");
    rt_shard_close(&s);
    rt_split_result_free(&r);
    err = NULL;
    o = (RtSplitOptions){.val_tokens = 999};
    CHECK(rt_data_split(prefix, ids, N, &o, &r, &err) == -1 && err &&
          strstr(err, "a corpus of 1000 tokens cannot give 999 to validation"), "split too big: %s", err);
    free(err);
    err = NULL;
    o = (RtSplitOptions){.val_fraction = 1.5};
    CHECK(rt_data_split(prefix, ids, N, &o, &r, &err) == -1 && err && strstr(err, "fraction 1.5"), "fraction: %s",
          err);
    free(err);
}

/* Resident kB of this process's mapping that starts at addr (smaps), -1
 * when there is none. */
static long mapping_rss_kb(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    long rss = -1;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, kb;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = lo == (unsigned long)(uintptr_t)addr;
        else if (in && sscanf(line, "Rss: %lu kB", &kb) == 1) {
            rss = (long)kb;
            break;
        }
    }
    fclose(f);
    return rss;
}

/* The loader's reads do not stay in the process: after the vocabulary
 * check and a whole epoch of random batches over a 16 MB shard, the map
 * holds a few pages, not the file (this fails without data.c's shard_drop and pread), and
 * every window read after its pages were dropped is still intact. */
static void test_resident(void)
{
    enum { N = 4 << 20, BR = 16, TR = 255 };
    int32_t *ids = malloc((size_t)N * sizeof *ids);
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)(i % 70001);
    char *err = NULL;
    const char *path = tu_path("big.bin");
    CHECK(rt_shard_write(path, ids, N, 4, &err) == 0, "%s", err);
    free(ids);
    RtLoader l;
    const char *paths[1] = {path};
    CHECK(rt_loader_init(&l, paths, 1, BR, TR, RT_LOADER_RANDOM, 7, &err) == 0, "init: %s", err);
    CHECK(rt_loader_check_vocab(&l, 70001, &err) == 0, "vocab: %s", err);
    long after_check = mapping_rss_kb(l.shard[0].map);
    static int32_t tok[BR * TR], tgt[BR * TR];
    int bad = 0;
    for (int64_t k = 0; k < rt_loader_batches(&l); k++) {
        CHECK(rt_loader_next(&l, tok, tgt) == BR, "batch %lld not full", (long long)k);
        for (int i = 0; i < BR * TR; i++)
            bad += tgt[i] != (tok[i] + 1) % 70001;
    }
    long after_epoch = mapping_rss_kb(l.shard[0].map);
    CHECK(bad == 0, "%d tokens of the epoch are not followed by their targets", bad);
    CHECK(after_check >= 0 && after_check <= 64, "after the vocabulary check the shard map holds %ld kB", after_check);
    CHECK(after_epoch >= 0 && after_epoch <= 64, "after an epoch the shard map holds %ld kB of 16384", after_epoch);
    rt_loader_free(&l);
}

/* A shard cut short after the loader opened it: the next batch ends the
 * process with status 1 and a message (through the map it was SIGBUS). */
static void test_cut_short(void)
{
    enum { N = 1 << 16, BR = 4, TR = 64 };
    int32_t *ids = malloc((size_t)N * sizeof *ids);
    for (int i = 0; i < N; i++)
        ids[i] = i % 1000;
    char *err = NULL;
    const char *path = tu_path("cut.bin");
    CHECK(rt_shard_write(path, ids, N, 2, &err) == 0, "%s", err);
    free(ids);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        RtLoader l;
        const char *paths[1] = {path};
        if (rt_loader_init(&l, paths, 1, BR, TR, RT_LOADER_SEQUENTIAL, 0, &err) != 0 || truncate(path, 4096) != 0)
            _exit(3);
        static int32_t tok[BR * TR], tgt[BR * TR];
        for (int k = 0; k < 1000; k++)
            rt_loader_next(&l, tok, tgt);
        _exit(0);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "reading a shard cut short: %s %d, want exit status 1",
          WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

int main(void)
{
    if (!tu_mkdtemp("strata-data-XXXXXX"))
        return 1;
    test_round_trip();
    test_bad_headers();
    make_shards();
    test_sequential();
    test_random();
    test_loader_errors();
    test_glob();
    test_split();
    test_resident();
    test_cut_short();
    return tu_finish("data_test");
}
