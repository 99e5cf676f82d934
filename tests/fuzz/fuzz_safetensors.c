// libFuzzer target: the safetensors header parser and validator (models/safetensors.c).
// The input is written to an in-memory file and opened like a checkpoint on disk; any input must
// give 0 or a clean ERR_* code, and an accepted file's tensors must lie inside it.
#include "common/err.h"
#include "models/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct st_checkpoint ck = {0};
    int rc = st_open_file(&ck, path);
    if (rc == 0) {
        for (int i = 0; i < ck.n_tensors; i++) {
            const struct st_tensor *t = &ck.tensors[i];
            const struct st_file *f = &ck.files[t->file_id];
            if (t->data < f->map + f->data_offset || t->data + t->bytes > f->map + f->size) abort();
            if (t->bytes != (size_t)t->n_elems * st_dtype_size(t->dtype)) abort();
            volatile uint8_t sink = t->bytes ? t->data[t->bytes - 1] : 0; // touch the last byte
            (void)sink;
        }
    } else if (err_msg()[0] == '\0') {
        abort();
    }
    st_close(&ck);
    close(fd);
    return 0;
}
