/* safetensors_test.c - checkpoint files (runtime/store/safetensors.h): round trip
 * of every dtype a checkpoint uses, the writer's exact bytes for a small
 * file, the exact error of each malformed header, every truncation and
 * random corruption failing cleanly, atomic replacement (disk full
 * mid-write, the temporary name blocked, a writer killed at random moments:
 * the old file always survives whole), and an independent reference:
 * tests/safetensors_reference.py reads our file (with the `safetensors`
 * package if installed, else its own reader written from the spec) and
 * writes one we must read.  That part needs /usr/bin/python3 with numpy;
 * without them it is reported as skipped and the rest still counts.
 * Exit 0 pass, 1 fail. */
#define _GNU_SOURCE
#include "store/safetensors.h"
#include "test_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* --- the reference contents (also in tests/safetensors_reference.py) ------ */

static const char *MODEL_TEXT = "model tiny {\n  d = 64  # \"quoted\" \xc3\xbcnic\xc3\xb6" "de\n}\n";
static const char *CONFIG_TEXT = "{\"d\": 64, \"lr\": 0.001}";

static float w_[15], scalar_ = 3.5f;
static double m_[4];
static int64_t step_[1] = {123456789012LL};
static int32_t ids_[6];
static uint8_t rng_[7];

static void fill_reference(RtStWriter *w)
{
    char *err = NULL;
    for (int i = 0; i < 15; i++)
        w_[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 4; i++)
        m_[i] = 1.0 / (i + 1);
    for (int i = 0; i < 6; i++)
        ids_[i] = i - 3;
    for (int i = 0; i < 7; i++)
        rng_[i] = (uint8_t)(i * 37 % 256);
    rt_st_writer_init(w);
    int rc = 0;
    rc |= rt_st_add(w, "w", RT_F32, (int64_t[]){3, 5}, 2, w_, &err);
    rc |= rt_st_add(w, "m", RT_F64, (int64_t[]){4}, 1, m_, &err);
    rc |= rt_st_add(w, "step", RT_I64, (int64_t[]){1}, 1, step_, &err);
    rc |= rt_st_add(w, "ids", RT_I32, (int64_t[]){2, 3}, 2, ids_, &err);
    rc |= rt_st_add(w, "rng", RT_U8, (int64_t[]){7}, 1, rng_, &err);
    rc |= rt_st_add(w, "empty", RT_F32, (int64_t[]){0, 4}, 2, NULL, &err);
    rc |= rt_st_add(w, "scalar", RT_F32, NULL, 0, &scalar_, &err);
    rc |= rt_st_add_meta(w, "model", MODEL_TEXT, &err);
    rc |= rt_st_add_meta(w, "config", CONFIG_TEXT, &err);
    CHECK(rc == 0, "building the reference file: %s", err);
}

static void check_reference(const RtSafetensors *st)
{
    char *err = NULL;
    float w[15], s;
    double m[4];
    int64_t step;
    int32_t ids[6];
    uint8_t rng[7];
    CHECK(st->n == 7 && st->nmeta == 2, "%d tensors, %d metadata", st->n, st->nmeta);
    CHECK(rt_st_read(st, "w", RT_F32, (int64_t[]){3, 5}, 2, w, &err) == 0 && !memcmp(w, w_, sizeof w), "w: %s", err);
    CHECK(rt_st_read(st, "m", RT_F64, (int64_t[]){4}, 1, m, &err) == 0 && !memcmp(m, m_, sizeof m), "m: %s", err);
    CHECK(rt_st_read(st, "step", RT_I64, (int64_t[]){1}, 1, &step, &err) == 0 && step == step_[0], "step: %s", err);
    CHECK(rt_st_read(st, "ids", RT_I32, (int64_t[]){2, 3}, 2, ids, &err) == 0 && !memcmp(ids, ids_, sizeof ids),
          "ids: %s", err);
    CHECK(rt_st_read(st, "rng", RT_U8, (int64_t[]){7}, 1, rng, &err) == 0 && !memcmp(rng, rng_, sizeof rng),
          "rng: %s", err);
    CHECK(rt_st_read(st, "empty", RT_F32, (int64_t[]){0, 4}, 2, NULL, &err) == 0, "empty: %s", err);
    CHECK(rt_st_read(st, "scalar", RT_F32, NULL, 0, &s, &err) == 0 && s == 3.5f, "scalar: %s", err);
    const char *model = rt_st_meta(st, "model"), *config = rt_st_meta(st, "config");
    CHECK(model && !strcmp(model, MODEL_TEXT), "model text '%s'", model ? model : "(none)");
    CHECK(config && !strcmp(config, CONFIG_TEXT), "config text '%s'", config ? config : "(none)");
    CHECK(!rt_st_meta(st, "nothing") && !rt_st_find(st, "nothing"), "found what is not there");
}

/* --- round trip ----------------------------------------------------------- */

static void test_round_trip(void)
{
    RtStWriter w;
    RtSafetensors st;
    char *err = NULL;
    const char *p = tu_path("ref.safetensors");
    fill_reference(&w);
    CHECK(rt_st_write(&w, p, &err) == 0, "write: %s", err);
    rt_st_writer_free(&w);
    CHECK(rt_st_open(&st, p, &err) == 0, "open: %s", err);
    if (tu_fails)
        return;
    check_reference(&st);
    /* Our layout: header 8-aligned, every tensor aligned to its element. */
    uint64_t N;
    memcpy(&N, st.map, 8);
    CHECK(N % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)N);
    for (int i = 0; i < st.n; i++)
        CHECK((uintptr_t)st.t[i].data % rt_dtype_size(st.t[i].dtype) == 0, "tensor '%s' is not aligned",
              st.t[i].name);
    CHECK(!strcmp(st.t[0].name, "m") && !strcmp(st.t[1].name, "step"), "layout starts with %s, %s", st.t[0].name,
          st.t[1].name);
    /* The errors of a checked read. */
    float buf[64];
    char want[700];
    err = NULL;
    snprintf(want, sizeof want, "%s: no tensor 'x'", p);
    CHECK(rt_st_read(&st, "x", RT_F32, (int64_t[]){1}, 1, buf, &err) == -1 && err && !strcmp(err, want), "%s", err);
    free(err);
    err = NULL;
    snprintf(want, sizeof want, "%s: tensor 'm' is F64, expected F32", p);
    CHECK(rt_st_read(&st, "m", RT_F32, (int64_t[]){4}, 1, buf, &err) == -1 && err && !strcmp(err, want), "%s", err);
    free(err);
    err = NULL;
    snprintf(want, sizeof want, "%s: tensor 'w' has shape [3, 5], expected [5, 3]", p);
    CHECK(rt_st_read(&st, "w", RT_F32, (int64_t[]){5, 3}, 2, buf, &err) == -1 && err && !strcmp(err, want), "%s",
          err);
    free(err);
    rt_st_close(&st);
}

/* The exact bytes of a small file. */
static void test_exact_bytes(void)
{
    RtStWriter w;
    char *err = NULL;
    float a[2] = {1.0f, 2.0f};
    uint8_t b[3] = {1, 2, 3};
    rt_st_writer_init(&w);
    CHECK(rt_st_add(&w, "b", RT_U8, (int64_t[]){3}, 1, b, &err) == 0, "%s", err);
    CHECK(rt_st_add(&w, "a", RT_F32, (int64_t[]){2}, 1, a, &err) == 0, "%s", err);
    CHECK(rt_st_add_meta(&w, "k", "old", &err) == 0 && rt_st_add_meta(&w, "k", "v", &err) == 0, "%s", err);
    /* Refused additions. */
    err = NULL;
    CHECK(rt_st_add(&w, "a", RT_F32, (int64_t[]){2}, 1, a, &err) == -1 && err &&
          !strcmp(err, "tensor 'a' is added twice"), "duplicate: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_st_add(&w, "__metadata__", RT_F32, (int64_t[]){2}, 1, a, &err) == -1 && err &&
          !strcmp(err, "tensor name '__metadata__' is reserved"), "reserved: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_st_add(&w, "c", RT_F32, (int64_t[]){-2}, 1, a, &err) == -1 && err &&
          !strcmp(err, "tensor 'c': bad shape entry -2"), "negative shape: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_st_add(&w, "c", RT_F32, (int64_t[9]){1}, 9, a, &err) == -1 && err &&
          !strcmp(err, "tensor 'c': 9 dimensions (at most 8)"), "9 dims: %s", err);
    free(err);
    const char *p = tu_path("small.safetensors");
    CHECK(rt_st_write(&w, p, &err) == 0, "write: %s", err);
    rt_st_writer_free(&w);
    const char *json = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}";
    size_t n = strlen(json), padded = (n + 7) / 8 * 8, len;
    unsigned char want[512] = {0};
    want[0] = (unsigned char)padded;
    memcpy(want + 8, json, n);
    memset(want + 8 + n, ' ', padded - n);
    memcpy(want + 8 + padded, a, 8);
    memcpy(want + 16 + padded, b, 3);
    unsigned char *got = (unsigned char *)tu_slurp(p, &len);
    CHECK(got && len == padded + 19 && !memcmp(got, want, len), "the bytes of %s differ from the expected", p);
    free(got);
}

/* --- malformed files ------------------------------------------------------ */

/* Parses 8-byte N + header + data_len zero bytes; the error must be
 * "t.safetensors: want" (want NULL: must succeed; a leading '~': the
 * message must contain the rest). */
static void expect(uint64_t N, const char *header, size_t data_len, const char *want)
{
    size_t h = strlen(header), len = 8 + h + data_len;
    unsigned char *buf = calloc(len, 1);
    memcpy(buf, &N, 8);
    memcpy(buf + 8, header, h);
    RtSafetensors st;
    char *err = NULL, full[1024];
    int rc = rt_st_parse(&st, "t.safetensors", buf, len, &err);
    if (!want) {
        CHECK(rc == 0, "%s: %s", header, err);
    } else if (want[0] == '~') {
        CHECK(rc == -1 && err && strstr(err, want + 1), "%s: got '%s', want '...%s...'", header, rc ? err : "success",
              want + 1);
    } else {
        snprintf(full, sizeof full, "t.safetensors: %s", want);
        CHECK(rc == -1 && err && !strcmp(err, full), "%s: got '%s', want '%s'", header, rc ? err : "success", full);
    }
    if (rc == 0)
        rt_st_close(&st);
    free(err);
    free(buf);
}

static void bad(const char *header, size_t data_len, const char *want)
{
    expect(strlen(header), header, data_len, want);
}

#define F32_2 "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":"

static void test_malformed(void)
{
    RtSafetensors st;
    char *err = NULL;
    CHECK(rt_st_parse(&st, "t.safetensors", "\x05\0\0\0\0", 5, &err) == -1 && err &&
          !strcmp(err, "t.safetensors: 5 bytes, too short for a safetensors file (it starts with an 8-byte header "
                       "length)"), "5 bytes: %s", err);
    free(err);
    expect(UINT64_MAX, "{}", 0, "header length 18446744073709551615 is over the limit of 100000000 bytes (not a "
                                "safetensors file?)");
    expect(1000, "{}  ", 10, "header length 1000 runs past the end of the file (22 bytes; truncated?)");
    expect(0, "", 0, "the header does not start with '{' (not a safetensors file?)");
    bad("[1]", 0, "the header does not start with '{' (not a safetensors file?)");
    bad("{\"a\": ", 0, "~t.safetensors: bad header JSON at byte");
    bad("{\"a\":" F32_2 "[0,8]},\"a\":" F32_2 "[8,16]}}", 16, "~duplicate object key");
    bad("{\"a\":1}", 0, "tensor 'a': its header entry is not a JSON object");
    bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor 'a': no \"shape\" in its header entry");
    bad("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': no \"dtype\" in its header entry");
    bad("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': unknown dtype \"F33\"");
    bad("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': dtype is not a string");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "tensor 'a': shape is not an array");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8,
        "tensor 'a': shape entry 0 is not a non-negative integer");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8,
        "tensor 'a': shape entry 0 is not a non-negative integer");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
        "tensor 'a': 9 dimensions, more than the 8 supported");
    bad("{\"a\":" F32_2 "[0]}}", 8, "tensor 'a': data_offsets is not [BEGIN, END] with non-negative integers");
    bad("{\"a\":" F32_2 "[-8,0]}}", 8, "tensor 'a': data_offsets is not [BEGIN, END] with non-negative integers");
    bad("{\"a\":" F32_2 "[8,0]}}", 8, "tensor 'a': data_offsets [8, 0] end before they begin");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
        "tensor 'a': data_offsets [0, 20] hold 20 bytes but F32 [2, 3] needs 24");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,16]}}", 16,
        "tensor 'a': data_offsets [0, 16] hold 16 bytes but F32 [4611686018427387904, 4] needs more than "
        "9223372036854775807");
    bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,0]}}", 0,
        "tensor 'a': data_offsets [0, 0] hold 0 bytes but F64 [1152921504606846976] needs more than "
        "9223372036854775807");
    bad("{\"a\":" F32_2 "[0,8]}}", 4, "tensor 'a': data_offsets [0, 8] run past the end of the data (4 bytes; "
                                     "truncated?)");
    bad("{\"a\":" F32_2 "[0,8]},\"b\":" F32_2 "[4,12]}}", 12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    bad("{\"b\":" F32_2 "[0,8]},\"a\":" F32_2 "[0,8]}}", 8, "tensors 'a' [0, 8] and 'b' [0, 8] overlap");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
        "\"data_offsets\":[8,12]}}", 12, "data bytes [4, 8) belong to no tensor (before 'b')");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
        "data bytes [0, 4) belong to no tensor (before 'a')");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
        "the last 4 bytes of the data belong to no tensor");
    bad("{}", 3, "the last 3 bytes of the data belong to no tensor");
    bad("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ 'k' is not a string");
    bad("{\"__metadata__\":[]}", 0, "__metadata__ is not a JSON object");
    /* Valid corner cases: no tensor, empty metadata, padding, a zero-size
     * tensor at the same offset as another, unaligned data. */
    bad("{}", 0, NULL);
    bad("{\"__metadata__\":{}}      ", 0, NULL);
    bad("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
        "\"data_offsets\":[0,4]}}", 4, NULL);
    bad("{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"d\":{\"dtype\":\"F64\",\"shape\":[1],"
        "\"data_offsets\":[1,9]}}", 9, NULL);
    /* The file name is in the message of rt_st_open too. */
    err = NULL;
    const char *p = tu_path("garbage.safetensors");
    FILE *f = fopen(p, "wb");
    fputs("hello, world", f);
    fclose(f);
    char want[700];
    snprintf(want, sizeof want, "%s: header length 8583909746840200552 is over the limit of 100000000 bytes (not a "
             "safetensors file?)", p);
    CHECK(rt_st_open(&st, p, &err) == -1 && err && !strcmp(err, want), "garbage: %s", err);
    free(err);
    err = NULL;
    f = fopen(p, "wb");
    fclose(f);
    snprintf(want, sizeof want, "%s: 0 bytes, too short for a safetensors file (it starts with an 8-byte header "
             "length)", p);
    CHECK(rt_st_open(&st, p, &err) == -1 && err && !strcmp(err, want), "empty file: %s", err);
    free(err);
    err = NULL;
    CHECK(rt_st_open(&st, tu_path("missing.safetensors"), &err) == -1 && err &&
              strstr(err, "missing.safetensors: No such file or directory"),
          "missing: %s", err);
    free(err);
}

/* Every prefix of a valid file fails; random byte changes fail or give a
 * file whose tensors lie inside it.  Nothing may crash. */
static void test_truncation_and_noise(void)
{
    size_t len;
    unsigned char *good = (unsigned char *)tu_slurp(tu_path("ref.safetensors"), &len);
    if (!good) {
        CHECK(0, "no reference file");
        return;
    }
    RtSafetensors st;
    char *err;
    int ok = 0;
    for (size_t l = 0; l < len; l++) {
        unsigned char *copy = malloc(l ? l : 1); /* exactly l bytes, so ASan sees overreads */
        memcpy(copy, good, l);
        err = NULL;
        if (rt_st_parse(&st, "cut", copy, l, &err) == 0) {
            ok++;
            rt_st_close(&st);
        }
        free(err);
        free(copy);
    }
    CHECK(ok == 0, "%d truncated files were accepted", ok);
    uint64_t N;
    memcpy(&N, good, 8);
    unsigned seed = 12345;
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        unsigned char *copy = malloc(len);
        memcpy(copy, good, len);
        int k = 1 + (int)(rand_r(&seed) % 4);
        for (int j = 0; j < k; j++) {
            size_t at = (size_t)rand_r(&seed) % (8 + N); /* the length and the header */
            copy[at] = it % 2 ? (unsigned char)rand_r(&seed) : copy[at] ^ (unsigned char)(1u << (rand_r(&seed) % 8));
        }
        err = NULL;
        if (rt_st_parse(&st, "noise", copy, len, &err) == 0) {
            accepted++;
            for (int i = 0; i < st.n; i++) {
                const unsigned char *d = st.t[i].data;
                size_t nb = (size_t)st.t[i].numel * rt_dtype_size(st.t[i].dtype);
                CHECK(d >= copy && d + nb <= copy + len, "accepted tensor '%s' lies outside the file", st.t[i].name);
            }
            rt_st_close(&st);
        } else {
            CHECK(err && !strncmp(err, "noise: ", 7), "an error without the file name: %s", err ? err : "(null)");
        }
        free(err);
        free(copy);
    }
    printf("noise: %d of 20000 changed files still valid (changes in names or padding)\n", accepted);
    free(good);
}

/* --- atomic replacement --------------------------------------------------- */

/* A file of one tensor "v" (n floats, all x) with metadata iteration = x. */
static int write_const(const char *path, int64_t n, float x, float *buf, char **err)
{
    RtStWriter w;
    char it[32];
    for (int64_t i = 0; i < n; i++)
        buf[i] = x;
    snprintf(it, sizeof it, "%g", x);
    rt_st_writer_init(&w);
    rt_st_add(&w, "v", RT_F32, &n, 1, buf, err);
    rt_st_add_meta(&w, "iteration", it, err);
    int rc = rt_st_write(&w, path, err);
    rt_st_writer_free(&w);
    return rc;
}

/* path holds a whole file of write_const(n, x) for some x; returns x, or
 * -1 (and counts a failure) if not. */
static float check_const(const char *path, int64_t n)
{
    RtSafetensors st;
    char *err = NULL;
    if (rt_st_open(&st, path, &err) != 0) {
        CHECK(0, "after an interrupted write: %s", err);
        free(err);
        return -1;
    }
    const RtStTensor *t = rt_st_find(&st, "v");
    float x = -1;
    if (!t || t->dtype != RT_F32 || t->numel != n) {
        CHECK(0, "%s: no tensor v of %lld floats", path, (long long)n);
    } else {
        const float *v = t->data;
        x = v[0];
        int same = 1;
        for (int64_t i = 0; i < n; i++)
            same &= v[i] == x;
        char it[32];
        snprintf(it, sizeof it, "%g", x);
        const char *m = rt_st_meta(&st, "iteration");
        CHECK(same && m && !strcmp(m, it), "%s: a mixed file (v[0] = %g, iteration %s)", path, x, m ? m : "-");
    }
    rt_st_close(&st);
    return x;
}

static void test_atomic(void)
{
    const char *p = tu_path("ckpt.safetensors");
    char tmp[600], *err = NULL;
    float small[4];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(write_const(p, 4, 1.0f, small, &err) == 0, "write: %s", err);

    /* Disk full in the middle of the write: the temporary name leads to
     * /dev/full, where every write fails with ENOSPC. */
    enum { BIG = 1 << 20 };
    float *big = malloc(BIG * sizeof *big);
    if (access("/dev/full", W_OK) == 0 && symlink("/dev/full", tmp) == 0) {
        err = NULL;
        CHECK(write_const(p, BIG, 2.0f, big, &err) == -1 && err && strstr(err, "No space left on device"),
              "a write to a full disk: %s", err ? err : "succeeded");
        free(err);
        CHECK(access(tmp, F_OK) != 0 && errno == ENOENT, "the temporary file was left behind");
        CHECK(check_const(p, 4) == 1.0f, "the old file did not survive a full disk");
    } else {
        printf("note: no /dev/full here; the disk-full case is skipped\n");
    }

    /* The temporary name cannot be created. */
    CHECK(mkdir(tmp, 0700) == 0, "mkdir %s", tmp);
    err = NULL;
    CHECK(write_const(p, 4, 3.0f, small, &err) == -1 && err && strstr(err, "cannot create") &&
          strstr(err, "Is a directory"), "blocked temporary: %s", err ? err : "succeeded");
    free(err);
    rmdir(tmp);
    CHECK(check_const(p, 4) == 1.0f, "the old file did not survive a failed create");
    err = NULL;
    CHECK(write_const(tu_path("no/such/dir.safetensors"), 4, 3.0f, small, &err) == -1 && err &&
              strstr(err, "No such file or directory"),
          "missing directory: %s", err ? err : "succeeded");
    free(err);

    /* Killed at random moments while rewriting a large file again and
     * again: the file is always one whole version. */
    enum { HUGE = 8 << 20 }; /* 32 MB */
    float *huge = malloc((size_t)HUGE * sizeof *huge);
    CHECK(write_const(p, HUGE, 0.0f, huge, &err) == 0, "write: %s", err);
    int midway = 0, tries = 0, before = tu_fails;
    unsigned seed = 7;
    for (; tries < 12 && tu_fails == before; tries++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int k = 1;; k++)
                if (write_const(p, HUGE, (float)k, huge, &err) != 0)
                    _exit(2);
        }
        struct timespec ts = {0, (long)(5 + rand_r(&seed) % 200) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status), "the writer ended by itself (status %d)", status);
        char ctmp[600];
        snprintf(ctmp, sizeof ctmp, "%s.tmp.%ld", p, (long)pid);
        if (access(ctmp, F_OK) == 0) {
            midway++;
            unlink(ctmp);
        }
        check_const(p, HUGE);
    }
    printf("atomic: killed the writer %d times, %d of them mid-file; the file was whole every time\n", tries, midway);
    if (!midway)
        printf("note: no kill landed in the middle of a write on this machine\n");
    free(big);
    free(huge);
}

/* --- the independent reference -------------------------------------------- */

/* Runs /usr/bin/python3 SCRIPT mode file; its exit status, or -1. */
static int run_python(const char *script, const char *mode, const char *file)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execl("/usr/bin/python3", "python3", script, mode, file, (char *)NULL);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void test_reference(void)
{
    const char *srcdir = getenv("srcdir");
    char script[600];
    snprintf(script, sizeof script, "%s/tests/safetensors_reference.py", srcdir && *srcdir ? srcdir : ".");
    if (access(script, R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) {
        printf("SKIP: reference check (no %s or no /usr/bin/python3)\n", script);
        return;
    }
    fflush(stdout);
    int rc = run_python(script, "check", tu_path("ref.safetensors"));
    if (rc == 77) {
        printf("SKIP: reference check (/usr/bin/python3 has no numpy)\n");
        return;
    }
    CHECK(rc == 0, "%s check: exit %d", script, rc);
    const char *theirs = tu_path("theirs.safetensors");
    rc = run_python(script, "write", theirs);
    CHECK(rc == 0, "%s write: exit %d", script, rc);
    RtSafetensors st;
    char *err = NULL;
    if (rc != 0 || rt_st_open(&st, theirs, &err) != 0) {
        CHECK(rc != 0, "reading the reference's file: %s", err);
        free(err);
        return;
    }
    float a[6];
    double b[3];
    int64_t c[2];
    uint16_t d[2], e[3];
    uint8_t f[3], g[2];
    int ok = rt_st_read(&st, "a.weight", RT_F32, (int64_t[]){2, 3}, 2, a, &err) == 0 &&
             rt_st_read(&st, "b", RT_F64, (int64_t[]){3}, 1, b, &err) == 0 &&
             rt_st_read(&st, "c", RT_I64, (int64_t[]){2}, 1, c, &err) == 0 &&
             rt_st_read(&st, "d", RT_BF16, (int64_t[]){2}, 1, d, &err) == 0 &&
             rt_st_read(&st, "e", RT_F16, (int64_t[]){3}, 1, e, &err) == 0 &&
             rt_st_read(&st, "f", RT_U8, (int64_t[]){3}, 1, f, &err) == 0 &&
             rt_st_read(&st, "g", RT_BOOL, (int64_t[]){2}, 1, g, &err) == 0;
    CHECK(ok, "the reference's file: %s", err);
    if (ok) {
        int same = 1;
        for (int i = 0; i < 6; i++)
            same &= a[i] == (float)i / 4 - 0.5f;
        CHECK(same, "a.weight differs");
        CHECK(b[0] == 0.1 && b[1] == 0.2 && b[2] == 0.3, "b differs");
        CHECK(c[0] == -1 && c[1] == 1LL << 40, "c differs");
        CHECK(d[0] == 0x3F80 && d[1] == 0xC000, "d (bf16) bits %04x %04x", d[0], d[1]);
        CHECK(e[0] == 0x3C00 && e[1] == 0xC000 && e[2] == 0x3800, "e (f16) bits %04x %04x %04x", e[0], e[1], e[2]);
        CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3 && g[0] == 1 && g[1] == 0, "f or g differ");
    }
    const char *note = rt_st_meta(&st, "note");
    CHECK(note && !strcmp(note, "written by tests/safetensors_reference.py"), "metadata note '%s'",
          note ? note : "(none)");
    rt_st_close(&st);
}

int main(void)
{
    if (!tu_mkdtemp("strata-st-XXXXXX"))
        return 1;
    test_round_trip();
    test_exact_bytes();
    test_malformed();
    test_truncation_and_noise();
    test_atomic();
    test_reference();
    return tu_finish("safetensors_test");
}
