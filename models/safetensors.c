// Safetensors reader: map the files, validate every header completely, index the tensors.
//
// Nothing is trusted: a checkpoint is input from outside, and a wrong offset would otherwise
// become a read past the mapping (a crash at best) or silently wrong weights. So the header's
// length is checked against the file before it is read, each tensor's byte range is checked
// against its shape and the data section, and tensors may not overlap.
#include "models/safetensors.h"

#include "common/err.h"
#include "common/file.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- dtypes

size_t st_dtype_size(enum st_dtype t) { return t == ST_F32 ? 4 : 2; }

const char *st_dtype_name(enum st_dtype t) {
    switch (t) {
    case ST_BF16: return "BF16";
    case ST_F16: return "F16";
    case ST_F32: return "F32";
    }
    return "?";
}

// Dtypes that the safetensors format defines but keel does not load: refusing them is
// ERR_UNSUPPORTED (a real checkpoint, e.g. quantized), anything else is ERR_FORMAT (a broken one).
static const char *const st__other_dtypes[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
};

static int st__dtype(const char *s, enum st_dtype *out, const char *path, const char *name) {
    if (strcmp(s, "BF16") == 0) *out = ST_BF16;
    else if (strcmp(s, "F16") == 0) *out = ST_F16;
    else if (strcmp(s, "F32") == 0) *out = ST_F32;
    else {
        for (size_t i = 0; i < sizeof st__other_dtypes / sizeof *st__other_dtypes; i++)
            if (strcmp(s, st__other_dtypes[i]) == 0)
                return err_set(ERR_UNSUPPORTED,
                               "%s: tensor \"%s\": dtype %s is not supported (BF16, F16, F32)",
                               path, name, s);
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", path, name, s);
    }
    return 0;
}

// ---- files

static int st__map(struct st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return err_set(ERR_NOT_FOUND, "%s: no such file", path);
        return err_set(ERR_IO, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return err_set(ERR_IO, "%s: %s", path, strerror(e));
    }
    if (st.st_size < 8) {
        close(fd);
        return err_set(ERR_FORMAT, "%s: %lld bytes, too short for a safetensors header", path,
                       (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return err_set(ERR_IO, "%s: mmap: %s", path, strerror(e));
    // The loader reads each file front to back once: ask for aggressive read-ahead.
    madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
    f->path = strdup(path);
    if (!f->path) {
        munmap(map, (size_t)st.st_size);
        return err_set(ERR_NOMEM, "%s: out of memory", path);
    }
    f->map = map;
    f->size = (size_t)st.st_size;
    return 0;
}

static void st__unmap(struct st_file *f) {
    if (f->map) munmap((void *)f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

// ---- the tensor index

static int st__push(struct st_checkpoint *ck, int *cap, const struct st_tensor *t) {
    if (ck->n_tensors == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        struct st_tensor *nt = realloc(ck->tensors, sizeof *nt * (size_t)nc);
        if (!nt) return err_set(ERR_NOMEM, "safetensors: out of memory for the tensor index");
        ck->tensors = nt;
        *cap = nc;
    }
    ck->tensors[ck->n_tensors++] = *t;
    return 0;
}

static int st__by_name(const void *a, const void *b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

// Byte ranges of one file, for the overlap check.
struct st__range {
    uint64_t begin, end;
    const char *name;
};

static int st__by_begin(const void *a, const void *b) {
    const struct st__range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

// ---- one header

// Reads a JSON number that must be a non-negative integer representable exactly (< 2^53).
static int st__uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

// Validates one tensor entry and fills *t (name not yet duplicated).
static int st__entry(const struct st_file *f, const cJSON *e, size_t data_bytes,
                     struct st_tensor *t) {
    const char *path = f->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" missing or not a string", path,
                       name);
    int rc = st__dtype(dt->valuestring, &t->dtype, path, name);
    if (rc) return rc;
    if (!cJSON_IsArray(sh))
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": \"shape\" missing or not a list", path,
                       name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": %d dimensions (at most %d)", path, name,
                       nd, ST_MAX_DIMS);
    t->n_dims = nd;
    // The element count must not overflow: bound it by the data section as we multiply.
    uint64_t n = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (st__uint(cJSON_GetArrayItem(sh, i), &d) != 0)
            return err_set(ERR_FORMAT, "%s: tensor \"%s\": shape[%d] is not a non-negative integer",
                           path, name, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && n > (uint64_t)data_bytes / d + 1) n = (uint64_t)data_bytes + 1; // saturate
        else n *= d;
    }
    uint64_t begin, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        st__uint(cJSON_GetArrayItem(off, 0), &begin) != 0 ||
        st__uint(cJSON_GetArrayItem(off, 1), &end) != 0)
        return err_set(ERR_FORMAT,
                       "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] of non-negative "
                       "integers",
                       path, name);
    if (begin > end)
        return err_set(ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] run backwards",
                       path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_bytes)
        return err_set(ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets [%llu, %llu] end past the data section "
                       "(%zu bytes)",
                       path, name, (unsigned long long)begin, (unsigned long long)end, data_bytes);
    uint64_t want = n * st_dtype_size(t->dtype);
    if (n > data_bytes || want != end - begin)
        return err_set(ERR_FORMAT,
                       "%s: tensor \"%s\": %s shape of %llu elements needs %llu bytes but "
                       "data_offsets [%llu, %llu] hold %llu",
                       path, name, dt->valuestring, (unsigned long long)n,
                       (unsigned long long)want, (unsigned long long)begin,
                       (unsigned long long)end, (unsigned long long)(end - begin));
    t->n_elems = (int64_t)n;
    t->bytes = (size_t)want;
    t->data = f->map + f->data_offset + begin;
    return 0;
}

static int st__check_overlaps(const struct st_file *f, struct st__range *r, int n) {
    qsort(r, (size_t)n, sizeof *r, st__by_begin);
    for (int i = 1; i < n; i++)
        if (r[i].begin < r[i - 1].end)
            return err_set(ERR_FORMAT,
                           "%s: tensor \"%s\" [%llu, %llu] overlaps tensor \"%s\" [%llu, %llu]",
                           f->path, r[i].name, (unsigned long long)r[i].begin,
                           (unsigned long long)r[i].end, r[i - 1].name,
                           (unsigned long long)r[i - 1].begin, (unsigned long long)r[i - 1].end);
    return 0;
}

// Parses and validates the header of ck->files[file_id], appending its tensors to ck.
static int st__header(struct st_checkpoint *ck, int *cap, int file_id) {
    struct st_file *f = &ck->files[file_id];
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER_BYTES)
        return err_set(ERR_FORMAT, "%s: header length %llu is not plausible (2 to %u bytes)",
                       f->path, (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
    if (hlen > f->size - 8)
        return err_set(ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       f->path, (unsigned long long)hlen, f->size);
    f->data_offset = 8 + (size_t)hlen;
    const char *text = (const char *)f->map + 8;
    if (text[0] != '{')
        return err_set(ERR_FORMAT, "%s: header does not start with '{'", f->path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        long pos = (at && at >= text && at <= text + hlen) ? (long)(at - text) : -1;
        cJSON_Delete(root);
        return err_set(ERR_FORMAT, "%s: header is not valid JSON (near byte %ld)", f->path, pos);
    }
    // The format pads the header with spaces to align the data; anything else is trailing junk.
    for (const char *p = end; p && p < text + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return err_set(ERR_FORMAT, "%s: junk after the header JSON at byte %ld", f->path,
                           (long)(p - text));
        }

    size_t data_bytes = f->size - f->data_offset;
    int n = cJSON_GetArraySize(root), n_ranges = 0, rc = 0;
    struct st__range *ranges = calloc((size_t)n + 1, sizeof *ranges);
    if (!ranges) rc = err_set(ERR_NOMEM, "%s: out of memory", f->path);
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (rc) break;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e))
                rc = err_set(ERR_FORMAT, "%s: \"__metadata__\" is not an object", f->path);
            continue;
        }
        struct st_tensor t = {0};
        rc = st__entry(f, e, data_bytes, &t);
        if (rc) break;
        t.file_id = file_id;
        t.name = strdup(e->string);
        if (!t.name) {
            rc = err_set(ERR_NOMEM, "%s: out of memory", f->path);
            break;
        }
        rc = st__push(ck, cap, &t);
        if (rc) {
            free(t.name);
            break;
        }
        uint64_t begin = (uint64_t)(t.data - (f->map + f->data_offset));
        ranges[n_ranges++] = (struct st__range){begin, begin + t.bytes, t.name};
    }
    if (!rc) rc = st__check_overlaps(f, ranges, n_ranges);
    free(ranges);
    cJSON_Delete(root);
    return rc;
}

// ---- checkpoints

static int st__add_file(struct st_checkpoint *ck, int *file_cap, const char *path) {
    if (ck->n_files == *file_cap) {
        int nc = *file_cap ? *file_cap * 2 : 4;
        struct st_file *nf = realloc(ck->files, sizeof *nf * (size_t)nc);
        if (!nf) return err_set(ERR_NOMEM, "safetensors: out of memory");
        ck->files = nf;
        *file_cap = nc;
    }
    int rc = st__map(&ck->files[ck->n_files], path);
    if (rc) return rc;
    ck->n_files++;
    return 0;
}

// Sorts the index and refuses a name given twice (in one file or across shards).
static int st__finish(struct st_checkpoint *ck) {
    if (ck->n_tensors > 1) qsort(ck->tensors, (size_t)ck->n_tensors, sizeof *ck->tensors, st__by_name);
    ck->data_bytes = 0;
    for (int i = 0; i < ck->n_tensors; i++) {
        ck->data_bytes += ck->tensors[i].bytes;
        if (i > 0 && strcmp(ck->tensors[i].name, ck->tensors[i - 1].name) == 0)
            return err_set(ERR_FORMAT, "tensor \"%s\" appears twice (%s and %s)",
                           ck->tensors[i].name, ck->files[ck->tensors[i - 1].file_id].path,
                           ck->files[ck->tensors[i].file_id].path);
    }
    return 0;
}

void st_close(struct st_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_tensors; i++) free(ck->tensors[i].name);
    free(ck->tensors);
    for (int i = 0; i < ck->n_files; i++) st__unmap(&ck->files[i]);
    free(ck->files);
    memset(ck, 0, sizeof *ck);
}

int st_open_file(struct st_checkpoint *ck, const char *path) {
    memset(ck, 0, sizeof *ck);
    int file_cap = 0, cap = 0;
    int rc = st__add_file(ck, &file_cap, path);
    if (!rc) rc = st__header(ck, &cap, 0);
    if (!rc) rc = st__finish(ck);
    if (rc) st_close(ck);
    return rc;
}

const struct st_tensor *st_find(const struct st_checkpoint *ck, const char *name) {
    if (!ck->n_tensors) return NULL;
    struct st_tensor key = {.name = (char *)name};
    return bsearch(&key, ck->tensors, (size_t)ck->n_tensors, sizeof key, st__by_name);
}

// Reads a small text file (the index) into a malloc'd buffer.
static int st__slurp(const char *path, char **out, size_t *len) {
    return file_read_all(path, ST_MAX_HEADER_BYTES, out, len);
}

// The sharded form: the index's weight_map names, for each tensor, the file that holds it.
static int st__open_index(struct st_checkpoint *ck, const char *dir, const char *index_path) {
    char *text = NULL;
    size_t len = 0;
    int rc = st__slurp(index_path, &text, &len);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return err_set(ERR_FORMAT, "%s: %s", index_path,
                       root ? "no \"weight_map\" object" : "not valid JSON");
    }
    int file_cap = 0, cap = 0;
    const cJSON *e;
    char path[4096];
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            strcmp(e->valuestring, "..") == 0) {
            rc = err_set(ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name in the folder",
                         index_path, e->string);
            break;
        }
        int known = 0;
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        for (int i = 0; i < ck->n_files && !known; i++) known = strcmp(ck->files[i].path, path) == 0;
        if (known) continue;
        rc = st__add_file(ck, &file_cap, path);
        if (rc == ERR_NOT_FOUND)
            err_set(rc, "%s: shard %s (named by %s for tensor \"%s\") is missing", dir,
                    e->valuestring, index_path, e->string);
        if (!rc) rc = st__header(ck, &cap, ck->n_files - 1);
        if (rc) break;
    }
    if (!rc && ck->n_files == 0) rc = err_set(ERR_FORMAT, "%s: weight_map is empty", index_path);
    if (!rc) rc = st__finish(ck);
    // Each tensor the index names must be in the shard it names.
    for (e = wm->child; !rc && e; e = e->next) {
        const struct st_tensor *t = st_find(ck, e->string);
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if (!t || strcmp(ck->files[t->file_id].path, path) != 0)
            rc = err_set(ERR_FORMAT, "%s: tensor \"%s\" is not in %s, where the index says it is",
                         index_path, e->string, e->valuestring);
    }
    cJSON_Delete(root);
    return rc;
}

static int st__by_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// No index and no model.safetensors: every *.safetensors in the folder, in name order.
static int st__open_glob(struct st_checkpoint *ck, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return err_set(ERR_NOT_FOUND, "%s: no such folder", dir);
        return err_set(ERR_IO, "%s: %s", dir, strerror(errno));
    }
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l <= 12 || strcmp(de->d_name + l - 12, ".safetensors") != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) rc = err_set(ERR_NOMEM, "%s: out of memory", dir);
            else names = nn;
        }
        if (!rc && !(names[n++] = strdup(de->d_name))) rc = err_set(ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (!rc && n == 0) rc = err_set(ERR_NOT_FOUND, "%s: no .safetensors file", dir);
    if (!rc) qsort(names, (size_t)n, sizeof *names, st__by_str);
    int file_cap = 0, tcap = 0;
    char path[4096];
    for (int i = 0; !rc && i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = st__add_file(ck, &file_cap, path);
        if (!rc) rc = st__header(ck, &tcap, ck->n_files - 1);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!rc) rc = st__finish(ck);
    return rc;
}

int st_open(struct st_checkpoint *ck, const char *dir) {
    memset(ck, 0, sizeof *ck);
    char path[4096];
    struct stat st;
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) == 0) {
        rc = st__open_index(ck, dir, path);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) == 0) return st_open_file(ck, path);
        rc = st__open_glob(ck, dir);
    }
    if (rc) st_close(ck);
    return rc;
}
