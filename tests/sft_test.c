/* sft_test.c - fine-tuning records to rows (runtime/train/sft.h), with a byte
 * tokenizer (id = byte, EOT = 256) so expected rows can be written by hand:
 * the template, the loss mask on shifted targets (the first trained target
 * is the response's first byte, predicted from the '\n' before it), every
 * record schema, truncation and skipping with their counts, padding, and
 * the error messages.  Exit 0 pass, 1 fail. */
#include "train/sft.h"

#include <stdlib.h>
#include <string.h>

#define EOT 256
static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; } } while (0)

static int64_t bytes(void *ctx, const char *text, size_t len, int32_t **ids)
{
    (void)ctx;
    *ids = malloc((len ? len : 1) * sizeof **ids);
    for (size_t i = 0; i < len; i++)
        (*ids)[i] = (unsigned char)text[i];
    return (int64_t)len;
}

static int load(RtSftSet *s, const char *text, int64_t T, char **err)
{
    return rt_sft_load_text(s, "t.jsonl", text, strlen(text), T, bytes, NULL, EOT, err);
}

/* The masked targets of row 0 as a string (EOT as '$'). */
static void trained(const RtSftSet *s, int64_t T, char *out)
{
    int32_t tok[256], tgt[256];
    float mask[256];
    rt_sft_batch(s, 0, 1, T, EOT, tok, tgt, mask);
    int n = 0;
    for (int64_t i = 0; i < T; i++)
        if (mask[i] == 1.0f)
            out[n++] = tgt[i] == EOT ? '$' : (char)tgt[i];
    out[n] = 0;
}

static void test_prompt_response(void)
{
    RtSftSet s;
    char *err, got[256];
    const char *rec = "{\"prompt\": \"Hi\", \"response\": \"Yo\"}\n";
    CHECK(load(&s, rec, 100, &err) == 0, "load: %s", err);
    const char *prompt = "### Prompt:\nHi\n### Response:\n";
    int64_t P = (int64_t)strlen(prompt);
    CHECK(s.n == 1 && s.ex[0].n == P + 3, "row length %lld, want %lld", (long long)s.ex[0].n, (long long)(P + 3));
    trained(&s, 100, got);
    CHECK(!strcmp(got, "Yo$"), "trained targets '%s', want 'Yo$'", got);
    int32_t tok[100], tgt[100];
    float mask[100];
    rt_sft_batch(&s, 0, 1, 100, EOT, tok, tgt, mask);
    /* The first trained position: input '\n' (end of the prompt), target 'Y'. */
    CHECK(mask[P - 1] == 1 && tok[P - 1] == '\n' && tgt[P - 1] == 'Y', "mask not aligned with shifted targets");
    CHECK(mask[P - 2] == 0, "a prompt target is trained");
    CHECK(tok[P + 3] == EOT && mask[P + 3] == 0 && mask[99] == 0, "padding is not EOT with mask 0");
    CHECK(s.response_tokens == 3, "response tokens %lld, want 3", (long long)s.response_tokens);
    rt_sft_free(&s);
}

static void test_schemas(void)
{
    RtSftSet s;
    char *err, got[256];
    const char *text = "{\"instruction\": \"Add\", \"input\": \"1 1\", \"output\": \"2\"}\n"
                       "\n"
                       "{\"question\": \"Q?\", \"answer\": \"A\"}\n"
                       "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"u\"},"
                       " {\"role\": \"assistant\", \"content\": \"ab\"}, {\"role\": \"user\", \"content\": \"v\"},"
                       " {\"role\": \"assistant\", \"content\": \"c\"}]}\n";
    CHECK(load(&s, text, 200, &err) == 0, "load: %s", err);
    CHECK(s.records == 3 && s.n == 3, "records %lld kept %lld, want 3 and 3", (long long)s.records, (long long)s.n);
    const char *want0 = "### Prompt:\nAdd\n\n1 1\n### Response:\n2";
    CHECK(s.ex[0].n == (int64_t)strlen(want0) + 1 && !memcmp(s.ex[0].tokens, (int32_t[]){'#'}, 4),
          "instruction template");
    for (size_t i = 0; i < strlen(want0); i++)
        if (s.ex[0].tokens[i] != (unsigned char)want0[i]) {
            CHECK(0, "instruction template differs at byte %zu", i);
            break;
        }
    RtSftSet one = {.ex = &s.ex[2], .n = 1};
    trained(&one, 200, got);
    CHECK(!strcmp(got, "ab$c$"), "chat trains '%s', want 'ab$c$' (assistant turns and their EOT)", got);
    rt_sft_free(&s);
}

static void test_truncation(void)
{
    RtSftSet s;
    char *err, got[256];
    /* The prompt is 29 bytes; T + 1 = 31 keeps "Yo" and cuts the EOT. */
    const char *text = "{\"prompt\": \"Hi\", \"response\": \"Yo\"}\n"
                       "{\"prompt\": \"a much longer prompt than the row\", \"response\": \"x\"}\n"
                       "{\"prompt\": \"Hi\", \"response\": \"\"}\n";
    CHECK(load(&s, text, 30, &err) == 0, "load: %s", err);
    CHECK(s.truncated == 2 && s.skipped == 1 && s.n == 2, "truncated %lld skipped %lld kept %lld, want 2 1 2",
          (long long)s.truncated, (long long)s.skipped, (long long)s.n);
    trained(&s, 30, got);
    CHECK(!strcmp(got, "Yo"), "truncated record trains '%s', want 'Yo'", got);
    /* The empty response still trains its EOT (the model learns to stop). */
    RtSftSet last = {.ex = &s.ex[1], .n = 1};
    trained(&last, 30, got);
    CHECK(!strcmp(got, "$"), "empty response trains '%s', want '$'", got);
    rt_sft_free(&s);
}

static void test_errors(void)
{
    RtSftSet s;
    char *err = NULL;
    CHECK(load(&s, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": 1}\n", 50, &err) == -1 && err &&
              !strncmp(err, "t.jsonl:2: expected {\"prompt\",\"response\"}", 41),
          "unknown schema: '%s'", err ? err : "(none)");
    free(err);
    CHECK(load(&s, "{\"prompt\": \"a\",\n", 50, &err) == -1 && err && !strncmp(err, "t.jsonl:1:", 10),
          "bad JSON: '%s'", err ? err : "(none)");
    free(err);
    CHECK(load(&s, "[1, 2]\n", 50, &err) == -1 && err && !strcmp(err, "t.jsonl:1: a record must be a JSON object"),
          "not an object: '%s'", err ? err : "(none)");
    free(err);
    CHECK(load(&s, "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n", 50, &err) == -1 && err &&
              strstr(err, "role \"bot\""),
          "bad role: '%s'", err ? err : "(none)");
    free(err);
    CHECK(rt_sft_load(&s, "/nonexistent/x.jsonl", 50, bytes, NULL, EOT, &err) == -1 && err &&
              !strcmp(err, "/nonexistent/x.jsonl: No such file or directory"),
          "missing file: '%s'", err ? err : "(none)");
    free(err);
}

int main(void)
{
    test_prompt_response();
    test_schemas();
    test_truncation();
    test_errors();
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("sft: all checks pass\n");
    return 0;
}
