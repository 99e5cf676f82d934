// The process-wide switch for programmatic dependent launch (kernels/cuda/device.h, kc_launch):
// on by default where the device's compute capability is 9.0 or higher (Hopper's griddepcontrol),
// off on older GPUs and with KEEL_PDL=0. Decided on the first launch and kept: launchers read one
// word per launch. kern_cuda_set_pdl overrides it (tests compare the two paths in one process).
// Graphs keep what was in force when they were captured.
//
// The state is an atomic word because tensor-parallel ranks launch from their own threads; all of
// them compute the same answer (one kind of GPU per host), so a race to decide first is harmless.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <stdlib.h>
#include <string.h>

// -1: not decided yet; 0: off; 1: on.
static int kc_pdl_state = -1;

// Whether the current device can take the attribute (compute capability >= 9.0).
static int kc_pdl_supported(void) {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        (void)cudaGetLastError(); // not a launch error: leave nothing for KC_LAUNCHED to find
        return 0;
    }
    return major >= 9;
}

extern "C" int kern_cuda_pdl_enabled(void) {
    int on = __atomic_load_n(&kc_pdl_state, __ATOMIC_RELAXED);
    if (on >= 0) return on;
    const char *env = getenv("KEEL_PDL");
    on = env && strcmp(env, "0") == 0 ? 0 : kc_pdl_supported();
    __atomic_store_n(&kc_pdl_state, on, __ATOMIC_RELAXED);
    return on;
}

extern "C" int kern_cuda_set_pdl(int on) {
    int v = on < 0 ? -1 : on > 0 ? kc_pdl_supported() : 0;
    __atomic_store_n(&kc_pdl_state, v, __ATOMIC_RELAXED);
    return kern_cuda_pdl_enabled();
}
