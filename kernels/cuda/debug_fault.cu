// debug_fault: a real sticky device fault on demand, for the fault-handling tests
// (KEEL_DEBUG_INJECT_FAULT). One thread executes a trap instruction; the launch then fails with
// cudaErrorLaunchFailure, which leaves the context unusable, exactly like an illegal address
// in a real kernel. Never launched in normal runs.
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/device.h"

// ---- kernels

__global__ void kc_trap() { __trap(); }

// ---- launchers

extern "C" int kern_cuda__debug_fault(struct kern_ctx *c) {
    kc_trap<<<1, 1, 0, c->stream>>>();
    KC_LAUNCHED();
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return err_set(ERR_INTERNAL, "debug_fault: the trap kernel did not fail");
}
