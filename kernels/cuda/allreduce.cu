// allreduce_push: in-place sum of a bf16 vector over the P GPUs of one process, peer to peer
// (NVLink), for the small messages of decode steps, where NCCL's per-call latency (~10 us)
// dominates: a one-shot "custom all-reduce" (as in vLLM and TensorRT-LLM) that works inside CUDA
// graphs. NCCL remains the path for larger messages (prefill) and whenever this one is off
// (kernels/cuda/comm_cuda.c, models/tp.c).
//
// The messages travel with their own flags (NCCL's "LL" protocol): every 4 bytes of data (two
// bf16) go out as one 8-byte word {data, flag}, and an aligned 8-byte store arrives whole, so a
// reader that sees this call's flag in a word also sees its data. No fence, no separate flag, no
// barrier: a sender stores and goes on, a receiver polls its own memory.
//
// Every rank owns two areas that all ranks address directly (peer access):
//   ctrl   the call counter (64-bit) and a done count; kept between calls
//   data   [2 slots][P senders][max_elems / 2] words {bf16x2, uint32 flag}; only used during a
//          call, so it may be a buffer that is free between calls (models/tp.c lends it the
//          logits all-gather buffer)
// Call k (counted on the device: every block reads the counter at its start, the last block to
// finish stores k, so a graph replay counts like an eager call and every rank counts the same
// calls) uses slot k & 1 and flag 1 + k mod (2^32 - 1), never 0. Thread t of block b of rank r,
// for its 16-byte pieces of x (piece t of chunks b, b + G, ...):
//   1. stores each piece into data[slot][r] of every peer (two 16-byte stores of two words each);
//   2. for each peer p, polls its own data[slot][p] at the same place until both flags say call
//      k, and then sets those flags back to 0 (so a word never holds a stale flag that a later
//      call could mistake for its own, however long it was unused);
//   3. sums every rank's values in rank order (its own from x) in float32 and writes x.
// The sum's order is the same on every rank, so every rank ends with the same bits. Two slots
// suffice: rank r stores into slot k & 1 again in call k + 2, which starts after its call k + 1
// has received every peer's call k + 1 data, which each peer sent after finishing call k (a
// rank's calls run in stream order). At most KC_AR_MAX_BLOCKS blocks of KC_AR_THREADS run, all
// resident before the kernel lets the next one launch (kc_pdl_begin), and a thread stores all it
// sends before it polls, so no wait depends on work that cannot run. A peer that never sends (its
// process or GPU died) makes the poll give up after KC_AR_TIMEOUT_NS with a trap: a device fault
// for this rank's next check, instead of a hang.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#define KC_AR_THREADS 512
#define KC_AR_VEC 8                            // bf16 per thread per chunk (16 bytes of data)
#define KC_AR_CHUNK (KC_AR_THREADS * KC_AR_VEC) // elements per block per chunk
#define KC_AR_MAX_BLOCKS 64
#define KC_AR_MAX_RANKS 8
#define KC_AR_CTRL_BYTES 256
#define KC_AR_TIMEOUT_NS 20000000000ull // 20 s

struct kc_ar_peers {
    uint4 *data[KC_AR_MAX_RANKS]; // each rank's data: [2, P, max_elems / 8] pieces of 2 uint4
};

// ---- kernels

__device__ __forceinline__ void kc_ar_st(uint4 *p, uint4 v) {
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
}

__device__ __forceinline__ uint4 kc_ar_ld(const uint4 *p) {
    uint4 v;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}

__device__ __forceinline__ uint64_t kc_globaltimer(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Waits until both words of the 16 bytes at p carry `flag`; returns their data {w0, w1}.
__device__ __forceinline__ uint2 kc_ar_poll(const uint4 *p, uint32_t flag) {
    uint4 v = kc_ar_ld(p);
    if (v.y != flag || v.w != flag) {
        const uint64_t t0 = kc_globaltimer();
        do {
            v = kc_ar_ld(p);
            if (kc_globaltimer() - t0 > KC_AR_TIMEOUT_NS) __trap(); // a peer never came
        } while (v.y != flag || v.w != flag);
    }
    return make_uint2(v.x, v.z);
}

__device__ __forceinline__ void kc_add2(float *acc, uint32_t w) {
    acc[0] += kc_f((bf16)(w & 0xffff));
    acc[1] += kc_f((bf16)(w >> 16));
}

__global__ void __launch_bounds__(KC_AR_THREADS)
    kc_allreduce_push(bf16 *x /* [n] */, int n, int rank, int P, kc_ar_peers peers,
                      unsigned long long *ctrl /* this rank's: counter, done */, size_t max_elems) {
    // x is the previous kernel's output, and the counter the last all-reduce's: wait for both,
    // then let the next kernel launch (its weight loads overlap this kernel's NVLink waits).
    kc_pdl_begin();
    const unsigned long long k = *(volatile unsigned long long *)ctrl + 1;
    const uint32_t flag = 1u + (uint32_t)(k % 0xffffffffull);
    const int G = gridDim.x;
    // Pieces of 8 bf16 per sender and slot; piece j of sender s in slot q is two uint4 at
    // data + ((q * P + s) * pieces + j) * 2.
    const size_t pieces = max_elems / KC_AR_VEC, slot = (size_t)(k & 1) * P;
    const int n_full = n / KC_AR_VEC; // whole pieces; the tail (n % 8) goes element-wise below

    for (size_t c0 = (size_t)blockIdx.x * KC_AR_CHUNK; c0 < (size_t)n;
         c0 += (size_t)G * KC_AR_CHUNK) {
        const size_t i0 = c0 + (size_t)threadIdx.x * KC_AR_VEC, j = i0 / KC_AR_VEC;
        if (i0 >= (size_t)n) continue;
        const bool full = j < (size_t)n_full;
        uint32_t mine[4];
        if (full) {
            const uint4 v = *(const uint4 *)(x + i0);
            mine[0] = v.x, mine[1] = v.y, mine[2] = v.z, mine[3] = v.w;
        } else {
            for (int e = 0; e < 4; e++) {
                const size_t a = i0 + 2 * e;
                uint32_t lo = a < (size_t)n ? (uint32_t)x[a] : 0u;
                uint32_t hi = a + 1 < (size_t)n ? (uint32_t)x[a + 1] : 0u;
                mine[e] = lo | (hi << 16);
            }
        }
        // 1. send
        for (int p = 0; p < P; p++) {
            if (p == rank) continue;
            uint4 *d = peers.data[p] + ((slot + rank) * pieces + j) * 2;
            kc_ar_st(d, make_uint4(mine[0], flag, mine[1], flag));
            kc_ar_st(d + 1, make_uint4(mine[2], flag, mine[3], flag));
        }
        // 2. receive, 3. sum in rank order
        float acc[KC_AR_VEC] = {0};
        for (int p = 0; p < P; p++) {
            uint32_t w[4];
            if (p == rank) {
                for (int e = 0; e < 4; e++) w[e] = mine[e];
            } else {
                uint4 *d = peers.data[rank] + ((slot + p) * pieces + j) * 2;
                const uint2 a = kc_ar_poll(d, flag), b = kc_ar_poll(d + 1, flag);
                kc_ar_st(d, make_uint4(0u, 0u, 0u, 0u));
                kc_ar_st(d + 1, make_uint4(0u, 0u, 0u, 0u));
                w[0] = a.x, w[1] = a.y, w[2] = b.x, w[3] = b.y;
            }
            for (int e = 0; e < 4; e++) kc_add2(acc + 2 * e, w[e]);
        }
        if (full) {
            uint4 o;
            o.x = kc_pack_bf16x2(acc[0], acc[1]);
            o.y = kc_pack_bf16x2(acc[2], acc[3]);
            o.z = kc_pack_bf16x2(acc[4], acc[5]);
            o.w = kc_pack_bf16x2(acc[6], acc[7]);
            *(uint4 *)(x + i0) = o;
        } else {
            for (int e = 0; e < KC_AR_VEC && i0 + e < (size_t)n; e++) x[i0 + e] = kc_bf(acc[e]);
        }
    }

    // The last block to finish records call k for the next call (a kernel boundary orders it).
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int *done = (unsigned int *)(ctrl + 1);
        __threadfence();
        if (atomicAdd(done, 1u) == (unsigned)G - 1) {
            *done = 0;
            *ctrl = k;
        }
    }
}

// ---- launchers

extern "C" size_t kern_cuda_allreduce_ctrl_bytes(void) { return KC_AR_CTRL_BYTES; }

// Each element travels as 4 bytes (its half of a {bf16x2, flag} word), in 2 slots per sender.
extern "C" size_t kern_cuda_allreduce_data_bytes(size_t max_elems, int P) {
    size_t e = (max_elems + KC_AR_VEC - 1) / KC_AR_VEC * KC_AR_VEC;
    size_t b = (size_t)2 * (size_t)P * e * 4;
    return (b + 255) / 256 * 256;
}

extern "C" size_t kern_cuda_allreduce_max_elems(size_t data_bytes, int P) {
    if (P < 1) return 0;
    // Whole pieces of 8 elements per sender, so every sender's part stays 16-byte aligned.
    return data_bytes / ((size_t)2 * P * 4) / KC_AR_VEC * KC_AR_VEC;
}

extern "C" int kern_cuda_allreduce_push(bf16 *x, size_t n, int rank, int P,
                                        void *ctrl /* this rank's */, void *const *data /* [P] */,
                                        size_t max_elems, cudaStream_t s) {
    if (P < 2 || P > KC_AR_MAX_RANKS || rank < 0 || rank >= P || n > max_elems ||
        n > (size_t)INT32_MAX || ((uintptr_t)x & 15) || (max_elems % KC_AR_VEC))
        return err_set(ERR_INVAL, "allreduce_push: n=%zu rank %d of %d, x %p, max_elems %zu "
                                  "(n <= max_elems, 16-byte aligned, 2..%d ranks)",
                       n, rank, P, (void *)x, max_elems, KC_AR_MAX_RANKS);
    if (n == 0) return 0;
    kc_ar_peers peers;
    memset(&peers, 0, sizeof peers);
    for (int p = 0; p < P; p++) peers.data[p] = (uint4 *)data[p];
    size_t chunks = (n + KC_AR_CHUNK - 1) / KC_AR_CHUNK;
    unsigned blocks = (unsigned)(chunks < KC_AR_MAX_BLOCKS ? chunks : KC_AR_MAX_BLOCKS);
    kc_launch(kc_allreduce_push, blocks, KC_AR_THREADS, 0, s, x, (int)n, rank, P, peers,
              (unsigned long long *)ctrl, max_elems);
    KC_LAUNCHED();
    return 0;
}
