/* safetensors.h - checkpoint files in Hugging Face's safetensors format:
 * reader (mmap + full validation) and writer (atomic replace).
 *
 * Format (https://huggingface.co/docs/safetensors):
 *   8 bytes   N, unsigned little-endian: length of the header
 *   N bytes   UTF-8 JSON object, padded with spaces:
 *             {"__metadata__": {"key": "value", ...},      (optional, strings only)
 *              "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
 *   the data  raw little-endian tensors, row-major; BEGIN and END are byte
 *             offsets into the data (END exclusive).
 * What the reader checks, each failure a message naming the file and, where
 * there is one, the tensor: N <= 100,000,000 and within the file; the
 * header starts with '{' and is one JSON object without duplicate keys;
 * every tensor has a known dtype, a shape of at most RT_ST_MAX_DIMS
 * non-negative integers and data_offsets [BEGIN, END] with BEGIN <= END;
 * END - BEGIN equals the shape's product times the dtype's size (no
 * overflow); in offset order the tensors tile the data exactly: the first
 * begins at 0, each begins where the previous ends (no overlap, no gap),
 * the last ends at the end of the file; __metadata__ maps strings to
 * strings.  (These are the checks of the reference Rust implementation.)
 * What the writer makes: N a multiple of 8 (so the data starts 8-aligned),
 * compact JSON with __metadata__ first, tensors laid out by dtype size,
 * largest first, then by name (as the Python package does, so every
 * tensor is aligned to its element size).
 *
 * Strata checkpoints keep their texts in __metadata__ (model description,
 * resolved config JSON, training state JSON) and every tensor group as a
 * tensor: parameters and optimizer moments F32, step counts I64, RNG state
 * U64 or U8.  The host must be little-endian (checked at build time). */
#ifndef STRATA_SAFETENSORS_H
#define STRATA_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define RT_ST_MAX_DIMS 8
#define RT_ST_MAX_HEADER 100000000ULL

/* Every dtype the reader knows: enum name, name in the file, bytes per
 * element.  (Sub-byte dtypes such as F4 are not supported.) */
#define RT_DTYPES(X)                                                           \
    X(BOOL, "BOOL", 1)                                                         \
    X(U8, "U8", 1)                                                             \
    X(I8, "I8", 1)                                                             \
    X(F8_E4M3, "F8_E4M3", 1)                                                   \
    X(F8_E5M2, "F8_E5M2", 1)                                                   \
    X(I16, "I16", 2)                                                           \
    X(U16, "U16", 2)                                                           \
    X(F16, "F16", 2)                                                           \
    X(BF16, "BF16", 2)                                                         \
    X(I32, "I32", 4)                                                           \
    X(U32, "U32", 4)                                                           \
    X(F32, "F32", 4)                                                           \
    X(I64, "I64", 8)                                                           \
    X(U64, "U64", 8)                                                           \
    X(F64, "F64", 8)

typedef enum RtDtype {
#define X(e, s, n) RT_##e,
    RT_DTYPES(X)
#undef X
    RT_NDTYPES
} RtDtype;

const char *rt_dtype_name(RtDtype d);   /* "F32" */
size_t rt_dtype_size(RtDtype d);        /* 4 */
/* The dtype named s, or -1. */
int rt_dtype_parse(const char *s);

/* --- reader --------------------------------------------------------------- */

typedef struct RtStTensor {
    const char *name;              /* owned by the file's header */
    RtDtype dtype;
    int ndim;
    int64_t shape[RT_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;           /* byte offsets in the data */
    const void *data;              /* (numel) in the map; may be unaligned in files from other writers */
} RtStTensor;

typedef struct RtSafetensors {
    char *path;
    void *map;                     /* the whole file (NULL after rt_st_parse) */
    size_t map_len;
    struct json_t *header;         /* parsed header (jansson) */
    RtStTensor *t;                 /* (n) in data order */
    int n;
    const char **meta_key, **meta_val; /* (nmeta) */
    int nmeta;
} RtSafetensors;

/* Maps and validates path; 0, or -1 with a malloc'd message in *err. */
int rt_st_open(RtSafetensors *st, const char *path, char **err);
/* Validates a file already in memory (buf must outlive st); name is used in
 * messages.  For tests and fuzzing. */
int rt_st_parse(RtSafetensors *st, const char *name, const void *buf, size_t len, char **err);
void rt_st_close(RtSafetensors *st);
/* The tensor called name, or NULL. */
const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name);
/* The metadata value of key, or NULL. */
const char *rt_st_meta(const RtSafetensors *st, const char *key);
/* Copies tensor name into out after checking it exists and has exactly this
 * dtype and shape; -1 with *err ("FILE: tensor 'wte' has shape [4, 8],
 * expected [5, 8]"). */
int rt_st_read(const RtSafetensors *st, const char *name, RtDtype dtype, const int64_t *shape, int ndim, void *out,
               char **err);

/* --- writer --------------------------------------------------------------- */

typedef struct RtStEntry {
    char *name;
    RtDtype dtype;
    int ndim;
    int64_t shape[RT_ST_MAX_DIMS];
    const void *data;              /* borrowed until rt_st_write */
} RtStEntry;

typedef struct RtStWriter {
    RtStEntry *e;
    int n, cap;
    char **meta_key, **meta_val;   /* copies */
    int nmeta, meta_cap;
} RtStWriter;

void rt_st_writer_init(RtStWriter *w);
void rt_st_writer_free(RtStWriter *w);
/* Adds a tensor; data (the shape's product of elements, little-endian) is
 * not copied and must stay valid until rt_st_write.  -1 with *err on a
 * duplicate or reserved name, a bad shape or dtype. */
int rt_st_add(RtStWriter *w, const char *name, RtDtype dtype, const int64_t *shape, int ndim, const void *data,
              char **err);
/* Adds (or replaces) a metadata string; both must be valid UTF-8. */
int rt_st_add_meta(RtStWriter *w, const char *key, const char *value, char **err);
/* Writes the file atomically (atomic_file.h): PATH holds either its old
 * contents or the complete new file, whatever happens. */
int rt_st_write(const RtStWriter *w, const char *path, char **err);
#endif
