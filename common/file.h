// Reading a whole (small) file into memory: config files, tokenizer.json, safetensors indexes,
// bench datasets. Large files (weights) are mmapped instead (models/safetensors.c).
#ifndef KEEL_COMMON_FILE_H
#define KEEL_COMMON_FILE_H

#include <stddef.h>

// Reads `path` into a malloc'd buffer (*out, NUL-terminated, caller frees; *len excludes the NUL).
// Returns 0, ERR_NOT_FOUND ("PATH: no such file"), ERR_IO, ERR_NOMEM, or ERR_FORMAT when the file
// is larger than max_bytes ("PATH: larger than N bytes"). On error *out is NULL.
int file_read_all(const char *path, size_t max_bytes, char **out, size_t *len);

#endif
