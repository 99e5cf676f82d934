// Safetensors reader: good single and sharded checkpoints open and index correctly; every kind
// of broken header is refused with ERR_FORMAT (or ERR_UNSUPPORTED for a real but unloadable
// dtype) and a message that names the file, the tensor and the problem. Fixtures are written by
// the tests (stw_*), so each one is exactly as broken as it claims to be.
#include "common/err.h"
#include "models/safetensors.h"
#include "tests/test.h"
#include "tests/unit/st_write.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- the writer

void stw_init(struct stw *w) {
    memset(w, 0, sizeof *w);
    w->header = cJSON_CreateObject();
    CHECK(w->header != NULL);
}

void stw_add_data(struct stw *w, const void *bytes, size_t n) {
    if (w->data_len + n > w->data_cap) {
        w->data_cap = (w->data_len + n) * 2 + 64;
        w->data = realloc(w->data, w->data_cap);
        CHECK(w->data != NULL);
    }
    if (n) memcpy(w->data + w->data_len, bytes, n);
    w->data_len += n;
}

void stw_add(struct stw *w, const char *name, const char *dtype, int n_dims,
             const int64_t *shape, const void *bytes, size_t n) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "dtype", dtype);
    cJSON *sh = cJSON_AddArrayToObject(e, "shape");
    for (int i = 0; i < n_dims; i++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shape[i]));
    cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)w->data_len));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(w->data_len + n)));
    cJSON_AddItemToObject(w->header, name, e);
    stw_add_data(w, bytes, n);
}

void stw_add_raw(struct stw *w, const char *name, const char *entry_json) {
    cJSON_AddItemToObject(w->header, name, cJSON_CreateRaw(entry_json));
}

void stw_write_file(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    CHECK(fwrite(bytes, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

void stw_write(struct stw *w, const char *path) {
    char *json = cJSON_PrintUnformatted(w->header);
    CHECK(json != NULL);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    size_t total = 8 + padded + w->data_len;
    uint8_t *buf = malloc(total);
    CHECK(buf != NULL);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, jl);
    memset(buf + 8 + jl, ' ', padded - jl);
    if (w->data_len) memcpy(buf + 8 + padded, w->data, w->data_len);
    stw_write_file(path, buf, total);
    free(buf);
    free(json);
}

void stw_free(struct stw *w) {
    cJSON_Delete(w->header);
    free(w->data);
    memset(w, 0, sizeof *w);
}

void stw_tmpdir(char *out, size_t n) {
    snprintf(out, n, "/tmp/keel_st_XXXXXX");
    CHECK(mkdtemp(out) != NULL);
}

void stw_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char path[1024];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

// ---- helpers

// Writes a file whose header is `header` verbatim (length prefix computed) followed by `data_len`
// bytes of data, and returns st_open_file's code.
static int open_raw_header(const char *dir, const char *header, size_t data_len) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t hl = strlen(header), total = 8 + hl + data_len;
    uint8_t *buf = calloc(1, total);
    CHECK(buf != NULL);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    stw_write_file(path, buf, total);
    free(buf);
    struct st_checkpoint ck;
    err_clear();
    int rc = st_open_file(&ck, path);
    if (rc) CHECK(ck.n_tensors == 0 && ck.n_files == 0 && ck.tensors == NULL); // left empty
    st_close(&ck);
    return rc;
}

static void expect_header(int want, const char *dir, const char *header, size_t data_len,
                          const char *needle) {
    int rc = open_raw_header(dir, header, data_len);
    CHECK_MSG(rc == want, "header %s: rc %s, want %s (%s)", header, err_name(rc), err_name(want),
              err_msg());
    CHECK_MSG(strstr(err_msg(), needle) != NULL, "header %s: message \"%s\" lacks \"%s\"", header,
              err_msg(), needle);
    CHECK_MSG(strstr(err_msg(), "model.safetensors") != NULL, "message \"%s\" lacks the file",
              err_msg());
}

// ---- good checkpoints

TEST(st_single_file_opens_and_indexes) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    uint16_t a[6] = {0x3f80, 0x4000, 0x4040, 0xbf80, 0x0001, 0x7f7f};
    uint16_t h[4] = {0x3c00, 0x4000, 0xc000, 0x0400};
    float f[3] = {1.5f, -2.25f, 1e-3f};
    struct stw w;
    stw_init(&w);
    stw_add_raw(&w, "__metadata__", "{\"format\":\"pt\"}");
    stw_add(&w, "b.weight", "BF16", 2, (int64_t[]){2, 3}, a, sizeof a);
    stw_add(&w, "a.half", "F16", 1, (int64_t[]){4}, h, sizeof h);
    stw_add(&w, "c.float", "F32", 3, (int64_t[]){1, 3, 1}, f, sizeof f);
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    stw_write(&w, path);
    stw_free(&w);

    struct st_checkpoint ck;
    CHECK_OK(st_open(&ck, dir));
    CHECK_EQ(ck.n_files, 1);
    CHECK_EQ(ck.n_tensors, 3);
    CHECK_EQ(ck.data_bytes, sizeof a + sizeof h + sizeof f);
    CHECK_STR(ck.tensors[0].name, "a.half"); // sorted by name
    const struct st_tensor *t = st_find(&ck, "b.weight");
    CHECK(t != NULL);
    CHECK_EQ(t->dtype, ST_BF16);
    CHECK_EQ(t->n_dims, 2);
    CHECK_EQ(t->shape[0], 2);
    CHECK_EQ(t->shape[1], 3);
    CHECK_EQ(t->n_elems, 6);
    CHECK_EQ(t->bytes, 12);
    CHECK(memcmp(t->data, a, sizeof a) == 0);
    t = st_find(&ck, "a.half");
    CHECK(t && t->dtype == ST_F16 && memcmp(t->data, h, sizeof h) == 0);
    t = st_find(&ck, "c.float");
    CHECK(t && t->dtype == ST_F32 && t->n_elems == 3 && t->bytes == 12);
    CHECK(memcmp(t->data, f, sizeof f) == 0);
    CHECK(st_find(&ck, "missing") == NULL);
    CHECK(st_find(&ck, "__metadata__") == NULL);
    CHECK_STR(st_dtype_name(ST_F16), "F16");
    CHECK_EQ(st_dtype_size(ST_F32), 4);
    st_close(&ck);
    st_close(&ck); // idempotent
    stw_rmdir(dir);
}

static void write_shard(const char *dir, const char *file, const char *name, uint16_t v) {
    uint16_t data[4] = {v, (uint16_t)(v + 1), (uint16_t)(v + 2), (uint16_t)(v + 3)};
    struct stw w;
    stw_init(&w);
    stw_add(&w, name, "BF16", 2, (int64_t[]){2, 2}, data, sizeof data);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    stw_write(&w, path);
    stw_free(&w);
}

static void write_index(const char *dir, const char *weight_map) {
    char path[256], text[1024];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":16},\"weight_map\":%s}", weight_map);
    stw_write_file(path, text, strlen(text));
}

TEST(st_sharded_checkpoint_opens) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    write_shard(dir, "model-00001-of-00002.safetensors", "x.weight", 0x1000);
    write_shard(dir, "model-00002-of-00002.safetensors", "y.weight", 0x2000);
    write_index(dir, "{\"x.weight\":\"model-00001-of-00002.safetensors\","
                     "\"y.weight\":\"model-00002-of-00002.safetensors\"}");
    struct st_checkpoint ck;
    CHECK_OK(st_open(&ck, dir));
    CHECK_EQ(ck.n_files, 2);
    CHECK_EQ(ck.n_tensors, 2);
    const struct st_tensor *x = st_find(&ck, "x.weight"), *y = st_find(&ck, "y.weight");
    CHECK(x && y);
    CHECK(x->file_id != y->file_id);
    uint16_t v;
    memcpy(&v, y->data + 6, 2);
    CHECK_EQ(v, 0x2003);
    st_close(&ck);

    // The index names a shard that does not exist.
    write_index(dir, "{\"x.weight\":\"model-00001-of-00002.safetensors\","
                     "\"y.weight\":\"model-00009-of-00002.safetensors\"}");
    CHECK_EQ(st_open(&ck, dir), ERR_NOT_FOUND);
    CHECK_MSG(strstr(err_msg(), "model-00009-of-00002") && strstr(err_msg(), "y.weight"), "%s",
              err_msg());
    // The index puts a tensor in the wrong shard.
    write_index(dir, "{\"x.weight\":\"model-00002-of-00002.safetensors\","
                     "\"y.weight\":\"model-00002-of-00002.safetensors\"}");
    CHECK_EQ(st_open(&ck, dir), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "x.weight"), "%s", err_msg());
    // Shard names may not leave the folder.
    write_index(dir, "{\"x.weight\":\"../x.safetensors\"}");
    CHECK_EQ(st_open(&ck, dir), ERR_FORMAT);
    write_index(dir, "{}");
    CHECK_EQ(st_open(&ck, dir), ERR_FORMAT);
    // A tensor present in two shards.
    write_shard(dir, "model-00002-of-00002.safetensors", "x.weight", 0x2000);
    write_index(dir, "{\"x.weight\":\"model-00001-of-00002.safetensors\","
                     "\"y.weight\":\"model-00002-of-00002.safetensors\"}");
    CHECK_EQ(st_open(&ck, dir), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "twice"), "%s", err_msg());
    // A broken index.
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    stw_write_file(path, "{\"weight_map\":", 14);
    CHECK_EQ(st_open(&ck, dir), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "index.json"), "%s", err_msg());
    stw_rmdir(dir);
}

TEST(st_folder_without_index_globs_and_empty_folder_is_not_found) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    struct st_checkpoint ck;
    CHECK_EQ(st_open(&ck, dir), ERR_NOT_FOUND);
    CHECK_EQ(st_open(&ck, "/nonexistent/keel"), ERR_NOT_FOUND);
    write_shard(dir, "b.safetensors", "b", 1);
    write_shard(dir, "a.safetensors", "a", 5);
    CHECK_OK(st_open(&ck, dir));
    CHECK_EQ(ck.n_files, 2);
    CHECK(strstr(ck.files[0].path, "a.safetensors") != NULL);
    CHECK(st_find(&ck, "a") && st_find(&ck, "b"));
    st_close(&ck);
    stw_rmdir(dir);
}

// ---- broken files

TEST(st_refuses_short_truncated_and_absurd_lengths) {
    char dir[64], path[128];
    stw_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct st_checkpoint ck;

    stw_write_file(path, "\x10\0\0", 3); // shorter than the length prefix
    CHECK_EQ(st_open_file(&ck, path), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "too short"), "%s", err_msg());

    // Header length past the end of the file.
    uint8_t buf[64] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    stw_write_file(path, buf, 10);
    CHECK_EQ(st_open_file(&ck, path), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "past the end"), "%s", err_msg());
    // Absurd (2^40) header length.
    uint8_t big[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    stw_write_file(path, big, sizeof big);
    CHECK_EQ(st_open_file(&ck, path), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "not plausible"), "%s", err_msg());
    // Length zero.
    memset(buf, 0, 16);
    stw_write_file(path, buf, 16);
    CHECK_EQ(st_open_file(&ck, path), ERR_FORMAT);

    // A good file cut short: the last tensor's bytes are gone.
    uint16_t data[64];
    for (int i = 0; i < 64; i++) data[i] = (uint16_t)(0x3f00 + i);
    struct stw w;
    stw_init(&w);
    stw_add(&w, "first", "BF16", 1, (int64_t[]){32}, data, 64);
    stw_add(&w, "second", "BF16", 1, (int64_t[]){32}, data + 32, 64);
    stw_write(&w, path);
    stw_free(&w);
    CHECK_OK(st_open_file(&ck, path));
    st_close(&ck);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK(truncate(path, st.st_size - 10) == 0);
    CHECK_EQ(st_open_file(&ck, path), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "\"second\"") && strstr(err_msg(), "data section"), "%s",
              err_msg());
    CHECK(st_open_file(&ck, "/nonexistent/x.safetensors") == ERR_NOT_FOUND);
    stw_rmdir(dir);
}

TEST(st_refuses_bad_json) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    expect_header(ERR_FORMAT, dir, "{\"a\": {\"dtype\": \"BF16\", ", 0, "valid JSON");
    expect_header(ERR_FORMAT, dir, "[1, 2, 3]   ", 0, "'{'");
    expect_header(ERR_FORMAT, dir, "{} xx", 0, "junk");
    expect_header(ERR_FORMAT, dir, "{\"__metadata__\": 3}", 0, "__metadata__");
    expect_header(ERR_FORMAT, dir, "{\"t\": 5}", 0, "\"t\"");
    CHECK_OK(open_raw_header(dir, "{\"__metadata__\":{\"format\":\"pt\"}}    ", 0));
    CHECK_OK(open_raw_header(dir, "{}", 0)); // an empty checkpoint is well-formed
    stw_rmdir(dir);
}

TEST(st_refuses_unknown_dtype) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                  "unknown dtype \"Q4_K\"");
    expect_header(ERR_UNSUPPORTED, dir,
                  "{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                  "I64 is not supported");
    expect_header(ERR_UNSUPPORTED, dir,
                  "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "\"w\"");
    expect_header(ERR_FORMAT, dir, "{\"w\":{\"dtype\":16,\"shape\":[2],\"data_offsets\":[0,4]}}",
                  4, "dtype");
    expect_header(ERR_FORMAT, dir, "{\"w\":{\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "dtype");
    stw_rmdir(dir);
}

TEST(st_refuses_overlapping_tensors) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    expect_header(ERR_FORMAT, dir,
                  "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[6,14]}}",
                  16, "overlaps");
    // The same range twice, listed in the other order.
    expect_header(ERR_FORMAT, dir,
                  "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                  "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}",
                  16, "overlaps");
    // Adjacent is fine.
    CHECK_OK(open_raw_header(dir,
                             "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}",
                             16));
    stw_rmdir(dir);
}

TEST(st_refuses_offsets_out_of_range) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[500],\"data_offsets\":[0,1000]}}", 16,
                  "data section");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16,
                  "backwards");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[-4,0]}}", 16,
                  "data_offsets");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0]}}", 16,
                  "data_offsets");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0, 4.5]}}", 16,
                  "data_offsets");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],"
                  "\"data_offsets\":[18446744073709551615,18446744073709551616]}}",
                  16, "data_offsets");
    stw_rmdir(dir);
}

TEST(st_refuses_shape_byte_mismatch) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 16,
                  "needs 12 bytes");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 16,
                  "needs 16 bytes");
    // A shape whose product overflows 64 bits must not wrap around to a small size.
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296,4],"
                  "\"data_offsets\":[0,0]}}",
                  16, "\"w\"");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 16,
                  "shape[0]");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":\"2\",\"data_offsets\":[0,4]}}", 16,
                  "shape");
    expect_header(ERR_FORMAT, dir,
                  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                  "\"data_offsets\":[0,2]}}",
                  16, "dimensions");
    // A scalar is one element.
    CHECK_OK(open_raw_header(dir, "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                             4));
    stw_rmdir(dir);
}
