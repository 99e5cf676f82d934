#include "common/file.h"

#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int file_read_all(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return err_set(ERR_NOT_FOUND, "%s: no such file", path);
        return err_set(ERR_IO, "%s: %s", path, strerror(errno));
    }
    size_t cap = max_bytes < ((size_t)1 << 16) ? max_bytes : (size_t)1 << 16, n = 0;
    char *buf = NULL;
    int rc = 0;
    for (;;) {
        char *nb = realloc(buf, cap + 1); // + 1 for the NUL
        if (!nb) {
            rc = err_set(ERR_NOMEM, "%s: out of memory reading it", path);
            break;
        }
        buf = nb;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap >= max_bytes) {
            rc = err_set(ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
            break;
        }
        cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
    }
    if (!rc && ferror(f)) rc = err_set(ERR_IO, "%s: read error", path);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}
