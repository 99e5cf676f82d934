// The step profiler: which op group of the forward pass costs what, printed on demand.
//
//   KEEL_PROFILE=1      per-op times: the forward pass waits for the backend (ops->sync) after
//                       each op group and charges the host clock since the previous mark to that
//                       group. The waits serialise host and device, so the per-op figures include
//                       one launch latency each and the step gets slower: use them for "which op
//                       costs what", and the step times of KEEL_PROFILE=steps for speed.
//   KEEL_PROFILE=steps  step times only: one host clock read per step, no extra waits (a step
//                       already ends in the logits copy, which waits), so speed is undisturbed.
//   KEEL_PROFILE_EVERY=N  also print the table every N steps (default: only at exit).
//
// Unset (or "0"), every call here is one load of a cached flag and a branch: zero cost.
// Steps are split into decode steps (one new token per sequence) and prefill steps (any step
// with a prompt chunk), because the two are bounded by different ceilings.
// The state is process-wide (one engine thread runs forward passes); not thread-safe.
#ifndef KEEL_MODELS_PROFILE_H
#define KEEL_MODELS_PROFILE_H

#include <stdio.h>

enum model_prof_op {
    MODEL_PROF_META = 0,  // pack and copy the step's metadata to the backend
    MODEL_PROF_EMBED,     // token embedding gather
    MODEL_PROF_NORM,      // add_rmsnorm before attention and MLP
    MODEL_PROF_QKV,       // fused QKV gemm (+bias)
    MODEL_PROF_QK_ROPE,   // q/k RMSNorm (Qwen3) and RoPE
    MODEL_PROF_KV_WRITE,  // K/V into their cache slots
    MODEL_PROF_ATTENTION, // paged attention
    MODEL_PROF_WO,        // attention output gemm
    MODEL_PROF_GATE_UP,   // fused gate/up gemm
    MODEL_PROF_SILU,      // silu(gate) * up
    MODEL_PROF_DOWN,      // down gemm
    MODEL_PROF_LOGITS,    // gather last rows, final norm, logits gemm
    MODEL_PROF_COPY_OUT,  // logits to the host (the step's one wait)
    MODEL_PROF_N_OPS
};

enum model_prof_mode { MODEL_PROF_OFF = 0, MODEL_PROF_OPS = 1, MODEL_PROF_STEPS = 2 };

// The mode from KEEL_PROFILE, read once on the first call.
enum model_prof_mode model_prof_mode(void);

// Brackets one forward pass of n_tokens tokens of n_seqs sequences. begin reads the clock;
// end charges the step's wall time to its kind (decode when n_tokens == n_seqs).
void model_prof_step_begin(int n_tokens, int n_seqs);
void model_prof_step_end(void);

// Charges the time since the previous mark (or the step's start) to `op`. Call after the
// backend has finished the op (KEEL_PROFILE=1 only).
void model_prof_mark(enum model_prof_op op);

// Prints the tables (per kind: steps, tokens, median and mean step time, tokens/s; per op:
// total, per step, share) to f. Also called at exit when profiling is on.
void model_prof_print(FILE *f);

// Clears all counters (tests, or a warm-up that should not count).
void model_prof_reset(void);

#endif
