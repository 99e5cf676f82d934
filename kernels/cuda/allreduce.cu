// allreduce_1shot: in-place sum of a bf16 vector over the P GPUs of one process, peer to peer
// (NVLink), for the small messages of decode steps where NCCL's per-call latency dominates
// (vLLM's "custom all-reduce", one-shot variant). Switched on by KEEL_TP_CUSTOM_AR=1; NCCL
// remains the path for larger messages and whenever this one is off (kernels/cuda/comm_cuda.c).
//
// Every rank owns a region (KERN_COMM_P2P_BYTES, carved from its arena) that all ranks address
// directly: two stage slots of KC_AR_SLOT elements, then flags[KC_AR_MAX_BLOCKS][KC_AR_MAX_RANKS]
// (uint32). Call k (the same count on every rank: ranks run the same collectives in order) uses
// slot k & 1. Block b of rank r:
//   1. copies its chunk of x into its own stage slot;
//   2. tells every rank p "chunk b of call k is staged" (flags_p[b][r] = k, release, system
//      scope) and waits until every rank has told it the same (flags_r[b][p] >= k, acquire);
//   3. sums chunk b of every rank's stage in rank order (float32; uncached loads) and writes it
//      over its own x.
// Two slots make a second barrier unnecessary: rank r overwrites slot k & 1 again only in call
// k + 2, which cannot pass its step 2 before every rank has started call k + 1, that is, has
// finished reading call k. Blocks only wait for the same block on other GPUs, and at most
// KC_AR_MAX_BLOCKS blocks of KC_AR_THREADS run, so every block is resident at once.
// Constraints: n <= KC_AR_SLOT, x 16-byte aligned, P <= KC_AR_MAX_RANKS; the launcher refuses
// otherwise (the caller then uses NCCL). Not for CUDA graph capture: k is a kernel argument.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#define KC_AR_THREADS 512
#define KC_AR_VEC 8                               // bf16 per 16-byte vector
#define KC_AR_CHUNK (KC_AR_THREADS * KC_AR_VEC)    // elements per block
#define KC_AR_MAX_BLOCKS 64
#define KC_AR_MAX_RANKS 8
#define KC_AR_SLOT (KC_AR_MAX_BLOCKS * KC_AR_CHUNK) // elements per stage slot (512 KiB)

struct kc_ar_peers {
    bf16 *stage[KC_AR_MAX_RANKS];     // each rank's region: [2, KC_AR_SLOT] bf16
    uint32_t *flags[KC_AR_MAX_RANKS]; // each rank's flags: [KC_AR_MAX_BLOCKS, KC_AR_MAX_RANKS]
};

// ---- kernels

__device__ __forceinline__ void kc_st_release_sys(uint32_t *p, uint32_t v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t kc_ld_acquire_sys(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void kc_add8(float *acc, uint4 w) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
    for (int j = 0; j < 4; j++) {
        acc[2 * j] += kc_f((bf16)(u[j] & 0xffff));
        acc[2 * j + 1] += kc_f((bf16)(u[j] >> 16));
    }
}

__global__ void __launch_bounds__(KC_AR_THREADS)
    kc_allreduce_1shot(bf16 *x /* [n] */, int n, int rank, int P, kc_ar_peers peers, uint32_t k) {
    const int b = blockIdx.x;
    const size_t slot = (size_t)(k & 1) * KC_AR_SLOT;
    const size_t i0 = (size_t)b * KC_AR_CHUNK + (size_t)threadIdx.x * KC_AR_VEC;
    const bool full = i0 + KC_AR_VEC <= (size_t)n;

    // 1. stage my chunk
    bf16 *mine = peers.stage[rank] + slot;
    if (full) {
        *(uint4 *)(mine + i0) = *(const uint4 *)(x + i0);
    } else {
        for (size_t i = i0; i < (size_t)n && i < i0 + KC_AR_VEC; i++) mine[i] = x[i];
    }
    __syncthreads();

    // 2. barrier of block b across the ranks
    if (threadIdx.x < P) {
        __threadfence_system();
        kc_st_release_sys(peers.flags[threadIdx.x] + b * KC_AR_MAX_RANKS + rank, k);
        const uint32_t *f = peers.flags[rank] + b * KC_AR_MAX_RANKS + threadIdx.x;
        while ((int32_t)(kc_ld_acquire_sys(f) - k) < 0) {
        }
    }
    __syncthreads();

    // 3. sum in rank order, write over x
    float acc[KC_AR_VEC] = {0};
    if (full) {
        for (int p = 0; p < P; p++)
            kc_add8(acc, __ldcv((const uint4 *)(peers.stage[p] + slot + i0)));
        uint4 o;
        uint32_t *ou = (uint32_t *)&o;
        for (int j = 0; j < 4; j++)
            ou[j] = (uint32_t)kc_bf(acc[2 * j]) | ((uint32_t)kc_bf(acc[2 * j + 1]) << 16);
        *(uint4 *)(x + i0) = o;
    } else {
        for (size_t i = i0; i < (size_t)n && i < i0 + KC_AR_VEC; i++) {
            float s = 0.0f;
            for (int p = 0; p < P; p++)
                s += kc_f((bf16)__ldcv((const unsigned short *)(peers.stage[p] + slot + i)));
            x[i] = kc_bf(s);
        }
    }
}

// ---- launchers

extern "C" size_t kern_cuda_allreduce_region_bytes(void) {
    return (size_t)2 * KC_AR_SLOT * sizeof(bf16) +
           (size_t)KC_AR_MAX_BLOCKS * KC_AR_MAX_RANKS * sizeof(uint32_t);
}

extern "C" size_t kern_cuda_allreduce_max_elems(void) { return KC_AR_SLOT; }

extern "C" int kern_cuda_allreduce_1shot(bf16 *x, size_t n, int rank, int P,
                                         void *const *regions /* [P] */, uint32_t k,
                                         cudaStream_t s) {
    if (P < 1 || P > KC_AR_MAX_RANKS || rank < 0 || rank >= P || n > KC_AR_SLOT ||
        ((uintptr_t)x & 15))
        return err_set(ERR_INVAL, "allreduce_1shot: n=%zu rank %d of %d, x %p (n <= %d, 16-byte "
                                  "aligned, at most %d ranks)",
                       n, rank, P, (void *)x, KC_AR_SLOT, KC_AR_MAX_RANKS);
    if (n == 0) return 0;
    kc_ar_peers peers;
    memset(&peers, 0, sizeof peers);
    for (int p = 0; p < P; p++) {
        peers.stage[p] = (bf16 *)regions[p];
        peers.flags[p] = (uint32_t *)((uint8_t *)regions[p] + (size_t)2 * KC_AR_SLOT * sizeof(bf16));
    }
    int blocks = (int)((n + KC_AR_CHUNK - 1) / KC_AR_CHUNK);
    kc_allreduce_1shot<<<blocks, KC_AR_THREADS, 0, s>>>(x, (int)n, rank, P, peers, k);
    KC_LAUNCHED();
    return 0;
}
