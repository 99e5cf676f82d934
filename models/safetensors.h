// Safetensors checkpoints, read through mmap: one file (model.safetensors) or a sharded set
// (model.safetensors.index.json naming each tensor's file). Every header is validated in full
// before any tensor is used: header length against the file, the JSON, each tensor's dtype,
// shape and byte range (inside the data section, matching prod(shape) * dtype size, overlapping
// no other tensor). Every error names the file, the tensor and the problem.
//
// Format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N,
// N bytes of JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the data section; offsets are relative to the data section.
#ifndef KEEL_MODELS_SAFETENSORS_H
#define KEEL_MODELS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
// The safetensors reference implementation refuses headers beyond 100 MB; so does keel.
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

enum st_dtype { ST_BF16 = 0, ST_F16 = 1, ST_F32 = 2 };

struct st_tensor {
    char *name;            // owned by the checkpoint
    enum st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    int64_t n_elems;       // prod(shape); 1 for a scalar
    size_t bytes;          // n_elems * st_dtype_size(dtype)
    const uint8_t *data;   // inside the read-only mapping of its file, valid until st_close
    int file_id;           // index into the checkpoint's files
};

struct st_file {
    char *path;
    const uint8_t *map;    // the whole file, mapped read-only
    size_t size;
    size_t data_offset;    // 8 + header length
};

struct st_checkpoint {
    struct st_file *files;     // [n_files]
    int n_files;
    struct st_tensor *tensors; // [n_tensors], sorted by name
    int n_tensors;
    size_t data_bytes;         // sum of all tensors' bytes
};

// Opens the checkpoint in `dir`: model.safetensors.index.json when present (sharded), else
// model.safetensors, else every *.safetensors file in the folder. Returns 0, ERR_NOT_FOUND (no
// safetensors file; a shard named by the index is missing), ERR_IO, ERR_NOMEM, ERR_FORMAT (any
// validation failure, or a tensor named twice) or ERR_UNSUPPORTED (a valid dtype keel does not
// load, such as I64 or F8_E4M3). On error *ck is left empty (safe to st_close).
int st_open(struct st_checkpoint *ck, const char *dir);

// Opens one .safetensors file as a checkpoint. Same codes.
int st_open_file(struct st_checkpoint *ck, const char *path);

// Unmaps every file and frees everything. NULL-safe, and safe on a zeroed struct.
void st_close(struct st_checkpoint *ck);

// The tensor called `name`, or NULL.
const struct st_tensor *st_find(const struct st_checkpoint *ck, const char *name);

size_t st_dtype_size(enum st_dtype t);
const char *st_dtype_name(enum st_dtype t); // "BF16", "F16", "F32"

#endif
