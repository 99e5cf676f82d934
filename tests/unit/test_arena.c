// The arena: one allocation, carved into named, aligned regions; refusals name the region and
// the numbers. Device arenas are checked for what this machine can do: without CUDA (or without
// a GPU) MEM_DEVICE must fail cleanly and allocate nothing.
#include "common/err.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "tests/test.h"

#include <stdint.h>

TEST(arena_host_carves_aligned_named_regions) {
    struct mem_arena a;
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, 4096, 0));
    CHECK(a.base != NULL);
    CHECK_EQ((uintptr_t)a.base % MEM_ARENA_ALIGN, 0);
    CHECK_EQ(a.bytes, 4096);
    CHECK(a.staging == NULL);
    void *p1, *p2, *p3;
    CHECK_OK(mem_arena_carve(&a, "weights", 1000, &p1)); // rounds to 1024
    CHECK_OK(mem_arena_carve(&a, "scratch", 1, &p2));    // rounds to 256
    CHECK_OK(mem_arena_carve(&a, "kv", 2816, &p3));      // exactly what is left
    CHECK_EQ((uint8_t *)p1 - a.base, 0);
    CHECK_EQ((uint8_t *)p2 - a.base, 1024);
    CHECK_EQ((uint8_t *)p3 - a.base, 1280);
    CHECK_EQ(a.used, 4096);
    CHECK_EQ(a.n_regions, 3);
    CHECK_STR(a.regions[0].name, "weights");
    CHECK_EQ(a.regions[0].bytes, 1024);
    CHECK_STR(a.regions[2].name, "kv");
    CHECK_EQ(a.regions[2].offset, 1280);
    // The memory is really ours: write all of it.
    memset(a.base, 0x5a, a.bytes);
    CHECK_EQ(((uint8_t *)p3)[2815], 0x5a);
    mem_arena_free(&a);
    CHECK(a.base == NULL);
    mem_arena_free(&a); // twice is fine
    mem_arena_free(NULL);
}

TEST(arena_refuses_a_region_that_does_not_fit) {
    struct mem_arena a;
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, 1024, 0));
    void *p = (void *)1;
    CHECK_OK(mem_arena_carve(&a, "first", 600, &p)); // 768
    CHECK_EQ(mem_arena_carve(&a, "second", 257, &p), ERR_NOSPACE);
    CHECK(p == NULL);
    CHECK_MSG(strstr(err_msg(), "'second' needs 512 bytes but only 256 of 1024") != NULL, "%s",
              err_msg());
    CHECK_EQ(a.used, 768);
    CHECK_EQ(a.n_regions, 1);
    // A size so large that rounding it up would overflow is refused, not wrapped.
    CHECK_EQ(mem_arena_carve(&a, "huge", SIZE_MAX - 10, &p), ERR_NOSPACE);
    CHECK_OK(mem_arena_carve(&a, "second", 256, &p));
    CHECK_OK(mem_arena_carve(&a, "empty", 0, &p)); // a zero-byte region takes no room
    CHECK_EQ(a.used, 1024);
    mem_arena_free(&a);
}

TEST(arena_limits_and_bad_arguments) {
    struct mem_arena a;
    CHECK_EQ(mem_arena_init(&a, MEM_HOST, 0, 0, 0), ERR_INVAL);
    CHECK_EQ(mem_arena_init(&a, (enum mem_kind)7, 0, 256, 0), ERR_INVAL);
    void *p;
    CHECK_EQ(mem_arena_carve(&a, "x", 16, &p), ERR_INVAL); // not set up
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, (size_t)MEM_ARENA_MAX_REGIONS * 256 + 256, 0));
    for (int i = 0; i < MEM_ARENA_MAX_REGIONS; i++) CHECK_OK(mem_arena_carve(&a, "r", 1, &p));
    CHECK_EQ(mem_arena_carve(&a, "one_too_many", 1, &p), ERR_NOSPACE);
    CHECK(strstr(err_msg(), "one_too_many") != NULL);
    mem_arena_free(&a);
    // Long names are cut to fit, not overflowed.
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, 512, 0));
    CHECK_OK(mem_arena_carve(&a, "a_region_name_that_is_far_longer_than_thirty_one", 8, &p));
    CHECK_EQ(strlen(a.regions[0].name), sizeof a.regions[0].name - 1);
    mem_arena_free(&a);
}

TEST(arena_host_staging_buffer) {
    struct mem_arena a;
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, 512, 1 << 20));
    CHECK(a.staging != NULL);
    CHECK_EQ(a.staging_bytes, 1 << 20);
    memset(a.staging, 1, a.staging_bytes);
    mem_arena_free(&a);
    CHECK(a.staging == NULL);
    CHECK_EQ(a.staging_bytes, 0);
}

TEST(arena_host_failure_is_err_nomem) {
#ifdef __SANITIZE_ADDRESS__
    // AddressSanitizer aborts on an impossible size instead of returning NULL.
    TEST_SKIP("under AddressSanitizer");
#endif
    struct mem_arena a;
    // More than any address space can hold: the allocation fails and says how much it wanted.
    int rc = mem_arena_init(&a, MEM_HOST, 0, SIZE_MAX / 2, 0);
    CHECK_EQ(rc, ERR_NOMEM);
    CHECK(strstr(err_msg(), "host memory") != NULL);
    CHECK(a.base == NULL);
    mem_arena_free(&a);
}

TEST(arena_holds_the_plan_exactly) {
    // The plan's regions are multiples of 256, so carving them back to back fills arena_bytes
    // to the byte. A tiny model and device keep this quick: 8 MiB of "device" in host memory.
    struct mem_plan_shape m = {.dim = 64, .hidden_dim = 192, .n_layers = 2, .n_heads = 4,
                               .n_kv_heads = 2, .head_dim = 32, .vocab_size = 1000,
                               .tie_word_embeddings = true, .qk_norm = true};
    struct mem_plan_settings s;
    mem_plan_settings_defaults(&s, 256);
    s.max_num_seqs = 4;
    s.max_num_batched_tokens = 64;
    struct mem_plan p;
    size_t total = (size_t)64 << 20;
    CHECK_OK(mem_plan_compute(&m, &s, total, total - ((size_t)8 << 20), &p));
    struct mem_arena a;
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, p.arena_bytes, 0));
    void *ptr;
    CHECK_OK(mem_arena_carve(&a, "weights", p.weights_bytes, &ptr));
    CHECK_OK(mem_arena_carve(&a, "workspace", p.workspace_bytes, &ptr));
    CHECK_OK(mem_arena_carve(&a, "scratch", p.activation_bytes, &ptr));
    CHECK_OK(mem_arena_carve(&a, "logits", p.logits_bytes, &ptr));
    CHECK_OK(mem_arena_carve(&a, "sampling", p.sampling_bytes, &ptr));
    CHECK_OK(mem_arena_carve(&a, "kv", p.kv_bytes, &ptr));
    CHECK_EQ(a.used, p.arena_bytes);
    CHECK_EQ(mem_arena_carve(&a, "extra", 1, &ptr), ERR_NOSPACE);
    mem_arena_free(&a);
}

TEST(arena_device_without_a_usable_gpu_allocates_nothing) {
    struct mem_arena a;
    size_t total = 0, free_b = 0;
    int info = mem_device_info(0, &total, &free_b);
    if (info == 0) TEST_SKIP("a GPU is present: tests/gpu covers the device arena");
    int before = mem_device_alloc_count();
    int rc = mem_arena_init(&a, MEM_DEVICE, 0, 1 << 20, 1 << 20);
#ifdef KEEL_CUDA
    // A CUDA build on a machine without a GPU: the CUDA runtime's error, classified.
    CHECK_MSG(rc == ERR_CUDA || rc == ERR_CUDA_FAULT || rc == ERR_INVAL, "rc %d (%s): %s", rc,
              err_name(rc), err_msg());
#else
    CHECK_EQ(rc, ERR_UNSUPPORTED);
    CHECK_EQ(info, ERR_UNSUPPORTED);
    CHECK(strstr(err_msg(), "CUDA") != NULL);
#endif
    CHECK(a.base == NULL);
    CHECK(a.staging == NULL);
    CHECK_EQ(mem_device_alloc_count(), before);
    CHECK_EQ(total, 0);
    mem_arena_free(&a);
}
