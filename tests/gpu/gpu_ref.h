// A float64 host reference of every op of kernels/ops.h, used as the GPU tests' oracle next to
// kern_cpu_ops (kernels/cpu). It follows the op contracts literally: inputs are bf16, arithmetic
// is double, the only roundings are those the contract puts in a bf16 tensor (the residual of
// add_rmsnorm, every output). The tolerances of the tests absorb the kernels' extra bf16
// roundings (which copy transformers) and float32 accumulation.
#ifndef KEEL_TESTS_GPU_GPU_REF_H
#define KEEL_TESTS_GPU_GPU_REF_H

#include "kernels/ops.h"

extern const struct kern_ops gpu_ref_ops; // host pointers; the ctx argument is ignored

// ids[i] = argmax_j logits[i, j], the lowest index among ties.
void gpu_ref_argmax(int32_t *ids, const float *logits, int m, int vocab);

#endif
