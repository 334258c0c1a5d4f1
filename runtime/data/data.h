/* data.h - token shards (llm.c's .bin format), the batch loader that
 * samples training windows from them, and the train/validation split that
 * turns a tokenized corpus into shards.
 *
 * Shard format (llm.c, dev/data/data_common.py), little-endian:
 *   header: 256 int32 (1024 bytes)
 *     [0] magic    20240520 for uint16 tokens, 20240801 for uint32 tokens
 *     [1] version  1 with magic 20240520 (GPT-2 shards),
 *                  7 with magic 20240801 (LLaMA-3 shards)
 *     [2] number of tokens N (0 <= N < 2^31)
 *     [3..255] reserved (llm.c ignores them); 0, except in the shards of
 *              a set that `strata data` wrote (rt_data_split), which
 *              carry its mark:
 *     [3] RT_SHARD_MARK
 *     [4] [5] the set's id, low and high 32 bits
 *     [6] role: 1 a train shard, 2 the validation shard
 *     [7] [8] index k of the K shards of that role (val: 0 of 1)
 *     [9] CRC-32 (zlib's) of the N tokens' bytes
 *   then N tokens, uint16 or uint32 by the magic; the file is exactly
 *   1024 + N * width bytes.
 * Only these two (magic, version) pairs exist; anything else is refused.
 * The writer picks uint16 when every id fits (< 65536), uint32 otherwise.
 *
 * Windows: a shard of N tokens holds floor((N - 1) / T) windows; window k
 * is tokens [k T, k T + T] (T + 1 tokens): inputs are the first T, targets
 * the last T (inputs shifted by one).  Windows never cross shards.  Inputs
 * do not overlap, so an epoch trains on every target once (up to the tail
 * of each shard that fills no whole window).  Windows of all shards are
 * numbered in shard order (the order the paths are given; rt_glob sorts).
 *
 * Random mode (training): epoch e visits all W windows in the order of a
 * Fisher-Yates shuffle of 0..W-1 (i from W-1 down to 1, swap i with
 * j = uniform in [0, i]) drawn from xoshiro256** whose four state words are
 * the first four outputs of splitmix64 started at
 * seed + 0x9E3779B97F4A7C15 * (e + 1); uniform in [0, n) takes outputs r
 * until r < 2^64 - (2^64 mod n) and returns r mod n.  A batch is the next
 * B windows; at the end of an epoch the next epoch begins (a batch may
 * straddle two epochs).  The state is two integers (epoch, pos = windows of
 * that epoch already used): saving it and restoring it into a loader made
 * with the same shards, B, T and seed continues bit-identically.  Memory:
 * 4 bytes per window for the shuffle.
 * Sequential mode (validation): windows 0, 1, ..., W-1 in order, B per
 * batch; the last batch may be partial; then the loader is exhausted until
 * rt_loader_reset.
 *
 * Shard sets: rt_data_split writes PREFIX_train_NNNNNN.bin, PREFIX_val.bin
 * and, last, PREFIX.manifest.json (the set's id, the tokenizer, every
 * shard's name, tokens and CRC-32), staging every shard under a temporary
 * name first and removing the train shards of an older set under the same
 * PREFIX, so a glob of PREFIX_train_*.bin never takes two corpora.  A
 * killed `strata data` leaves the older set (and temporary files) or a set
 * without its manifest.  rt_loader_init refuses a marked shard whose
 * manifest (found by its name) is missing or names another set;
 * rt_loader_check_vocab refuses one whose bytes do not match its CRC-32.
 * Shards without the mark (llm.c's) are taken as they are.
 *
 * Shards are memory-mapped read-only; the loader owns the maps.  Errors are
 * malloc'd messages naming the file ("data/train_000.bin: header says 1000
 * tokens but the file holds 998"). */
#ifndef STRATA_DATA_H
#define STRATA_DATA_H
#include <stddef.h>
#include <stdint.h>

#define RT_SHARD_HEADER_INTS 256
#define RT_SHARD_HEADER_BYTES (RT_SHARD_HEADER_INTS * 4)
#define RT_SHARD_MAGIC_U16 20240520   /* llm.c "gpt-2" */
#define RT_SHARD_VERSION_U16 1
#define RT_SHARD_MAGIC_U32 20240801   /* llm.c "llama-3" */
#define RT_SHARD_VERSION_U32 7
#define RT_SHARD_MAX_TOKENS 2147483647LL  /* header[2] is an int32 */
#define RT_SHARD_MARK 0x54525453          /* header[3] of a set's shards: "STRT" */
#define RT_SHARD_TRAIN 1                  /* header[6] */
#define RT_SHARD_VAL 2
/* Train shard size of rt_data_split when not given (llm.c uses 1e8). */
#define RT_SHARD_TOKENS_DEFAULT 10000000LL

/* --- one shard ------------------------------------------------------------ */

typedef struct RtShard {
    char *path;
    void *map;           /* the whole file, read-only */
    int fd;              /* the file, open while map is (the loader reads windows with pread, so
                            that a run's RSS does not grow with the data it has read) */
    size_t map_len;      /* bytes */
    int width;           /* bytes per token: 2 or 4 */
    int64_t ntok;        /* N */
    const void *tok;     /* (N) uint16 or uint32, map + 1024 */
    /* The mark of a set's shard (header[3..9]); set_id 0 without one. */
    uint64_t set_id;
    int set_role;        /* RT_SHARD_TRAIN or RT_SHARD_VAL */
    int set_index, set_count;
    uint32_t set_crc;    /* CRC-32 of the tokens when written */
} RtShard;

/* Maps and checks a shard; 0, or -1 with *err. */
int rt_shard_open(RtShard *s, const char *path, char **err);
void rt_shard_close(RtShard *s);
static inline int32_t rt_shard_token(const RtShard *s, int64_t i)
{
    return s->width == 2 ? (int32_t)((const uint16_t *)s->tok)[i] : (int32_t)((const uint32_t *)s->tok)[i];
}
/* Bytes per token that ids need: 2 when all are < 65536, else 4; -1 when an
 * id is negative. */
int rt_shard_width(const int32_t *ids, int64_t n);
/* Writes ids (n) as a shard, atomically (atomic_file.h).  width: 2, 4, or
 * 0 for rt_shard_width.  Refuses negative ids, ids that do not fit width
 * and n > RT_SHARD_MAX_TOKENS. */
int rt_shard_write(const char *path, const int32_t *ids, int64_t n, int width, char **err);

/* Expands a glob pattern (glob(3), sorted) into malloc'd paths; a pattern
 * that matches nothing is an error ("PATTERN: no such file").  *n >= 1. */
int rt_glob(const char *pattern, char ***paths, int *n, char **err);
void rt_glob_free(char **paths, int n);

/* --- the loader ----------------------------------------------------------- */

typedef enum RtLoaderMode {
    RT_LOADER_RANDOM,      /* shuffled windows, epoch after epoch (training) */
    RT_LOADER_SEQUENTIAL   /* windows in order, once (validation) */
} RtLoaderMode;

typedef struct RtLoaderState {
    int64_t epoch;   /* epochs completed (random mode; 0 in sequential) */
    int64_t pos;     /* windows of this epoch already returned, 0..W */
} RtLoaderState;

typedef struct RtLoader {
    RtShard *shard;      /* (nshard) */
    int nshard;
    int B, T;
    RtLoaderMode mode;
    uint64_t seed;
    int64_t *first;      /* (nshard + 1) number of the first window of each shard; first[nshard] = W */
    int64_t nwin;        /* W, windows in all shards */
    int64_t ntok;        /* tokens in all shards */
    uint32_t *perm;      /* (W) random mode: window order of epoch perm_epoch */
    int64_t perm_epoch;  /* -1: perm not drawn yet */
    int64_t epoch, pos;  /* the state (RtLoaderState) */
    uint64_t id;         /* rt_loader_check_vocab: identity of the data (FNV-1a 64 of every shard's
                            tokens, width and CRC-32, in order); 0 before */
    uint8_t *win;        /* (T + 1) * 4 bytes: a window as read */
} RtLoader;

/* Maps the n shards (paths) and prepares batches of B windows of T + 1
 * tokens.  Fails when a shard is bad, no shard holds T + 1 tokens, or a
 * set's shard has no manifest of its set beside it (see above). */
int rt_loader_init(RtLoader *l, const char *const *paths, int n, int B, int T, RtLoaderMode mode,
                   uint64_t seed, char **err);
void rt_loader_free(RtLoader *l);
/* Fills tokens (B,T) and targets (B,T) (targets[b][t] = tokens[b][t+1] of
 * the window) and returns the rows filled: B in random mode; in sequential
 * mode B, fewer for the last batch (the rows past it repeat the last
 * window, so every id is valid), and 0 once all windows were returned.  A
 * shard that can no longer be read (cut short since it was opened, an I/O
 * error) ends the process with a message that names it. */
int rt_loader_next(RtLoader *l, int32_t *tokens, int32_t *targets);
/* Back to the start: (0, 0). */
void rt_loader_reset(RtLoader *l);
RtLoaderState rt_loader_state(const RtLoader *l);
/* Restores a state from rt_loader_state; -1 with *err if it is out of
 * range for these shards (pos > W, negative values). */
int rt_loader_set_state(RtLoader *l, RtLoaderState s, char **err);
/* Batches in one sequential pass: ceil(W / B); full ones: floor(W / B). */
int64_t rt_loader_batches(const RtLoader *l);
/* Scans every token of every shard; -1 with *err naming the file and the
 * position of the first id >= vocab, or a set's shard whose bytes do not
 * match the CRC-32 in its header (damaged or edited since).  Sets l->id. */
int rt_loader_check_vocab(RtLoader *l, int64_t vocab, char **err);

/* --- corpus -> shards ----------------------------------------------------- */

typedef struct RtSplitOptions {
    int64_t val_tokens;    /* tokens of the val shard when > 0 ... */
    double val_fraction;   /* ... else this fraction of the corpus, rounded down (0 < f < 1) */
    int64_t shard_tokens;  /* tokens per train shard (the last may hold fewer); <= 0: the default */
    const char *tokenizer; /* for the manifest: the tokenizer's name (NULL: none recorded) */
    int64_t vocab;         /* its vocabulary size (0: not recorded) */
    const char *const *inputs; /* for the manifest: the input files (ninputs) */
    int ninputs;
} RtSplitOptions;

typedef struct RtSplitResult {
    char *val_path;        /* PREFIX_val.bin */
    int64_t val_tokens;
    char **train_paths;    /* (ntrain) PREFIX_train_000000.bin, ... */
    int ntrain;
    int64_t train_tokens;
    int width;             /* bytes per token of every shard written */
    char *manifest_path;   /* PREFIX.manifest.json */
    uint64_t id;           /* the set's id */
    int removed;           /* train shards of an earlier set under PREFIX deleted */
} RtSplitResult;

/* Splits a corpus: the last val tokens become PREFIX_val.bin, the rest
 * (in order) PREFIX_train_NNNNNN.bin shards of shard_tokens each (the
 * convention of the shared tinyshakespeare data: first 90% train, last 10%
 * validation).  All shards get the width the whole corpus needs.  The set
 * is written as a whole (see "Shard sets" above), with its manifest last.
 * Fails unless both parts get at least 2 tokens. */
int rt_data_split(const char *prefix, const int32_t *ids, int64_t n, const RtSplitOptions *o, RtSplitResult *r,
                  char **err);
void rt_split_result_free(RtSplitResult *r);
#endif
