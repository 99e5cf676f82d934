// The unhappy paths of the CUDA backend: bad sizes and unsupported shapes are refused with the
// right code before anything is launched, empty batches launch nothing and write nothing, and a
// context refuses a workspace that is not an arena region.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

TEST(gpu_errors) {
    struct kern_ctx *c = gt_ctx();
    const struct kern_ops *o = &kern_cuda_ops;
    bf16 *buf = gt_dev(1 << 20);
    int32_t *ibuf = gt_dev(1 << 12);
    gt_poison(buf, 1 << 20);

    CHECK_EQ(o->gemm(c, buf, buf, buf, NULL, -1, 8, 8), ERR_INVAL);
    CHECK_EQ(o->gemm(c, buf, buf, buf, NULL, 4, 0, 8), ERR_INVAL);
    CHECK_EQ(o->add_rmsnorm(c, buf, buf, NULL, buf, 1, 8, 1e-6f), ERR_INVAL); // out aliases residual
    CHECK_EQ(o->qk_norm(c, buf, buf, buf, 1, 2, 1, 288, 1e-6f), ERR_UNSUPPORTED); // > 256
    CHECK_EQ(o->rope(c, buf, ibuf, 1, 2, 1, 7, 1e4f), ERR_INVAL); // odd head_dim
    CHECK_EQ(o->rope(c, buf, ibuf, 1, 2, 1, 8, 0.0f), ERR_INVAL);
    struct kern_attn_batch b = {1, 1, ibuf, ibuf, ibuf, 1, 1, 1};
    CHECK_EQ(o->attention(c, buf, buf, buf, buf, &b, 4, 4, 80, 16, 0.1f), ERR_UNSUPPORTED);
    CHECK_EQ(o->attention(c, buf, buf, buf, buf, &b, 6, 4, 64, 16, 0.1f), ERR_INVAL); // 6 % 4
    CHECK_EQ(o->attention(c, buf, buf, buf, buf, &b, 4, 4, 64, 0, 0.1f), ERR_INVAL);
    CHECK(strstr(err_msg(), "block_size") != NULL);
    CHECK_EQ(o->embed(c, buf, ibuf, buf, 1, 0), ERR_INVAL);
    CHECK_EQ(kern_cuda_argmax(ibuf, (float *)buf, 1, 0, kern_cuda_stream(c)), ERR_INVAL);

    // Empty batches: success, nothing launched, the poisoned buffer untouched.
    CHECK_OK(o->embed(c, buf, ibuf, buf, 0, 64));
    CHECK_OK(o->gemm(c, buf, buf, buf, NULL, 0, 64, 64));
    struct kern_attn_batch e = {0, 0, ibuf, ibuf, ibuf, 1, 0, 0};
    CHECK_OK(o->attention(c, buf, buf, buf, buf, &e, 4, 4, 64, 16, 0.1f));
    CHECK_OK(o->sync(c));
    uint16_t first[4];
    gt_down(first, buf, sizeof first);
    CHECK_EQ(first[0], 0xffff);
    CHECK_EQ(first[3], 0xffff);

    // A workspace that is not 256-byte aligned is not an arena region.
    struct kern_ctx *c2 = NULL;
    CHECK_EQ(kern_cuda_ctx_init(&c2, 0, (uint8_t *)buf + 8, 4096, NULL, 0), ERR_INVAL);
    CHECK(c2 == NULL);
    CHECK_EQ(kern_cuda_ctx_init(&c2, -1, buf, 4096, NULL, 0), ERR_INVAL);
    CHECK_EQ(kern_cuda_ctx_set_regions(c, (uint8_t *)buf + 64, 4096, NULL, 0), ERR_INVAL);
    CHECK_EQ(kern_cuda_ctx_set_regions(c, NULL, 4096, NULL, 0), ERR_INVAL);
    kern_cuda_ctx_free(NULL); // NULL-safe
    gt_free(buf);
    gt_free(ibuf);
}

// A sticky fault (an illegal address inside a kernel) is classified ERR_CUDA_FAULT, so the
// server knows to drain and exit.
TEST(gpu_fault_is_sticky) {
    struct kern_ctx *c = gt_ctx();
    bf16 *out = gt_dev(4096);
    int32_t bad_ids[1] = {1 << 28}; // far outside the table
    int32_t *d_ids = gt_up(bad_ids, sizeof bad_ids);
    bf16 *table = gt_dev(4096);
    int rc = kern_cuda_ops.embed(c, out, d_ids, table, 1, 1024);
    if (rc == 0) rc = kern_cuda_ops.sync(c);
    printf("  sync after an out-of-range read: %s: %s\n", err_name(rc), err_msg());
    CHECK_EQ(rc, ERR_CUDA_FAULT);
}
