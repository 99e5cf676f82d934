// A tiny safetensors writer for the tests (defined in test_safetensors.c): tests build their
// fixtures in C, valid or deliberately broken, instead of committing binary files.
#ifndef KEEL_TESTS_UNIT_ST_WRITE_H
#define KEEL_TESTS_UNIT_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

struct stw {
    void *header;  // cJSON object being built
    uint8_t *data; // the data section
    size_t data_len, data_cap;
};

void stw_init(struct stw *w);
// Appends a tensor: its bytes go to the end of the data section, its entry gets the offsets.
void stw_add(struct stw *w, const char *name, const char *dtype, int n_dims,
             const int64_t *shape, const void *bytes, size_t n_bytes);
// Adds an entry written by hand (any JSON text, valid or not as a tensor entry).
void stw_add_raw(struct stw *w, const char *name, const char *entry_json);
// Appends bytes to the data section without an entry.
void stw_add_data(struct stw *w, const void *bytes, size_t n_bytes);
// Writes length + header (space-padded to 8 bytes) + data. Aborts the test on I/O errors.
void stw_write(struct stw *w, const char *path);
void stw_free(struct stw *w);

// Writes raw bytes to a file.
void stw_write_file(const char *path, const void *bytes, size_t n);
// A fresh temporary folder (mkdtemp) and its recursive removal.
void stw_tmpdir(char *out, size_t n);
void stw_rmdir(const char *dir);

#endif
