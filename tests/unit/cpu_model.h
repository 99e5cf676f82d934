// A model on the CPU backend for the engine tests: its host arena sized exactly from the shapes
// (weights, scratch, KV cache, logits), one kernel context of one thread, weights loaded (random
// from seed 1234 with MODEL_LOAD_DUMMY), the model set up for the given step limits.
#ifndef KEEL_TESTS_UNIT_CPU_MODEL_H
#define KEEL_TESTS_UNIT_CPU_MODEL_H

#include "memory/arena.h"
#include "models/model.h"

struct cpu_model {
    struct mem_arena arena;
    struct kern_ctx *ctx;
    struct model m;
};

// Aborts the test on any failure.
void cpu_model_open(struct cpu_model *c, const char *dir, enum model_load_format fmt, int n_blocks,
                    int block_size, int max_seqs, int max_tokens, int max_model_len);
void cpu_model_close(struct cpu_model *c);

#endif
