// A model on the CPU backend for the engine tests (cpu_model.h).
#include "tests/unit/cpu_model.h"

#include "common/err.h"
#include "kernels/ops.h"
#include "memory/plan.h"
#include "models/config.h"
#include "tests/test.h"

#include <string.h>

void cpu_model_open(struct cpu_model *c, const char *dir, enum model_load_format fmt, int n_blocks,
                    int block_size, int max_seqs, int max_tokens, int max_model_len) {
    memset(c, 0, sizeof(*c));
    struct model_config cfg;
    CHECK_OK(model_config_load(dir, &cfg));
    int max_blocks = (max_model_len + block_size - 1) / block_size;
    struct mem_plan plan;
    struct mem_plan_settings set;
    memset(&plan, 0, sizeof(plan));
    memset(&set, 0, sizeof(set));
    set.gpu_memory_utilization = 0.9;
    set.max_num_batched_tokens = max_tokens;
    set.max_num_seqs = max_seqs;
    set.block_size = block_size;
    set.max_model_len = max_model_len;
    set.num_kv_blocks = n_blocks;
    plan.num_kv_blocks = n_blocks;
    plan.max_blocks_per_seq = max_blocks;
    struct mem_plan_shape shape;
    struct mem_scratch_layout lay;
    model_plan_shape(&cfg, &shape);
    mem_plan_scratch_layout(&shape, max_tokens, max_seqs, max_blocks, &lay);
    size_t kv = (size_t)2 * cfg.n_layers * n_blocks * block_size * cfg.n_kv_heads * cfg.head_dim *
                sizeof(bf16);
    size_t bytes = (size_t)model_weights_bytes(&cfg) + lay.bytes + kv +
                   (size_t)max_seqs * cfg.vocab_size * 4 +
                   (8 + 16 * cfg.n_layers) * MEM_ARENA_ALIGN;
    CHECK_OK(mem_arena_init(&c->arena, MEM_HOST, 0, bytes, 1 << 20));
    CHECK_OK(kern_cpu_ctx_init(&c->ctx, 1));
    CHECK_OK(model_weights_load(&c->m.w, &cfg, dir, fmt, 1234, &kern_cpu_ops, c->ctx, &c->arena));
    CHECK_OK(model_init(&c->m, &cfg, &kern_cpu_ops, c->ctx, &c->arena, &plan, &set));
}

void cpu_model_close(struct cpu_model *c) {
    model_weights_free(&c->m.w);
    model_free(&c->m);
    kern_cpu_ctx_free(c->ctx);
    mem_arena_free(&c->arena);
}
