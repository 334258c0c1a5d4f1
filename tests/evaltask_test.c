/* evaltask_test.c - answer extraction and normalization by hand-written
 * cases, multiple-choice picks (raw and length-normalized), task-file
 * errors, and, when ../shared/data/gsm8k is present, that the "gsm8k" rule
 * finds the reference answer of every GSM8K test problem (first: 18).
 * Exit 0 pass, 1 fail. */
#define _GNU_SOURCE /* getline, mkstemp, fdopen */
#include "train/evaltask.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; } } while (0)

static void extract(const char *text, const char *rule, const char *want)
{
    char out[128];
    bool bad;
    bool ok = rt_extract_answer(text, rule, out, sizeof out, &bad);
    if (!want)
        CHECK(!ok, "%s on '%s' found '%s', want nothing", rule, text, out);
    else
        CHECK(ok && !strcmp(out, want), "%s on '%s' gave '%s', want '%s'", rule, text, ok ? out : "(none)", want);
}

static void test_extract(void)
{
    extract("She makes 9 * 2 = $18.\n#### 18", "gsm8k", "18");
    extract("#### 1,234\nextra", "gsm8k", "1234");
    extract("#### 5 #### $7.50", "gsm8k", "7.5");
    extract("#### 18.00", "gsm8k", "18");
    extract("#### -3", "gsm8k", "-3");
    extract("no marker here 42", "gsm8k", NULL);
    extract("The answer is $1,000.", "last-number", "1000");
    extract("2 apples and 3.5 pears", "last-number", "3.5");
    extract("nothing", "last-number", NULL);
    extract("\n  Paris \nFrance", "first-line", "Paris");
    char out[8];
    bool bad;
    CHECK(!rt_extract_answer("x", "regex", out, sizeof out, &bad) && bad, "unknown rule not reported");
    char stop[] = "The answer is 4.\nQuestion: next";
    CHECK(rt_cut_at_stop(stop, "\nQuestion:") == 16 && !strcmp(stop, "The answer is 4."), "stop sequence");
}

static void test_pick(void)
{
    const char *c1[] = {"a", "bbbbbb", "cc"};
    double l1[] = {-3, -2.5, -4};
    int raw, norm;
    rt_mc_pick(l1, c1, 3, &raw, &norm);
    CHECK(raw == 1 && norm == 1, "pick 1: raw %d norm %d, want 1 1", raw, norm);
    const char *c2[] = {"x", "yyyyyy"};
    double l2[] = {-2, -3}; /* per byte: -2 vs -0.5 */
    rt_mc_pick(l2, c2, 2, &raw, &norm);
    CHECK(raw == 0 && norm == 1, "pick 2: raw %d norm %d, want 0 1", raw, norm);
}

static void test_load(void)
{
    char path[] = "/tmp/strata-mc-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "{\"context\": \"Sky is\", \"choices\": [\" blue\", \" green\"], \"label\": 0}\n\n"
               "{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 2}\n");
    fclose(f);
    RtMcTask t;
    char *err = NULL;
    char want[128];
    snprintf(want, sizeof want, "%s:3: label 2 is not an index of the 2 choices", path);
    CHECK(rt_mc_load(&t, path, &err) == -1 && err && !strcmp(err, want), "bad label: '%s'", err ? err : "(none)");
    free(err);
    f = fopen(path, "w");
    fprintf(f, "{\"context\": \"Sky is\", \"choices\": [\" blue\", \" green\"], \"label\": 0}\n");
    fclose(f);
    CHECK(rt_mc_load(&t, path, &err) == 0 && t.n == 1 && t.items[0].nchoices == 2 &&
              !strcmp(t.items[0].choices[1], " green"),
          "good file: %s", err ? err : "wrong content");
    rt_mc_free(&t);
    remove(path);
}

static void test_gsm8k(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/gsm8k/test.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("note: %s not found; GSM8K check skipped\n", path);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    int n = 0, found = 0;
    char first[64] = "";
    while (getline(&line, &cap, f) > 0) {
        /* The answer string's "#### N" is JSON-escaped text; the rule works on it directly. */
        char *a = strstr(line, "\"answer\":");
        char out[64];
        bool bad;
        n++;
        if (a && rt_extract_answer(a, "gsm8k", out, sizeof out, &bad)) {
            char *q = strchr(out, '"'); /* the JSON string ends the line */
            if (q)
                *q = 0;
            found++;
            if (n == 1)
                snprintf(first, sizeof first, "%s", out);
        }
    }
    free(line);
    fclose(f);
    printf("gsm8k test: %d problems, %d reference answers extracted, first %s\n", n, found, first);
    CHECK(n == 1319 && found == n && !strcmp(first, "18"), "gsm8k extraction");
}

int main(int argc, char **argv)
{
    test_extract();
    test_pick();
    test_load();
    const char *top = getenv("abs_top_srcdir");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/../shared/data", argc > 1 ? argv[1] : top ? top : ".");
    test_gsm8k(dir);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("evaltask: all checks pass\n");
    return 0;
}
