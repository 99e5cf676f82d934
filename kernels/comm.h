// Communicators for tensor parallelism: the collectives the sharded forward pass needs, between
// the ranks of one process (one rank per GPU, or per thread on the CPU backend).
//
// - all_reduce: x = sum over ranks of x, bf16, in place (after the row-parallel GEMMs wo and
//   down, and after the vocab-sharded embedding).
// - all_gather: out = [rank 0's in | rank 1's in | ...], float32 (logits shards) or bf16.
//
// Every rank calls the same collectives in the same order, each from its own thread (NCCL's
// rule, and the CPU communicator's barrier works the same way). A collective is queued on the
// rank's backend stream (`ctx`) like any op: it never synchronises the host with the device.
//
// Backends:
// - CPU (kernels/cpu/comm.c): ranks are threads of this process sharing one group; sums and
//   gathers run in float32 in rank order, so the result is the same every time and on every rank.
// - CUDA (kernels/cuda/comm_cuda.c): NCCL, loaded at run time with dlopen (KEEL_NCCL_LIBRARY, else
//   "libnccl.so.2"), so keel starts on machines without NCCL as long as tp_size is 1; once
//   kern_comm_p2p_init has run, all-reduces small enough for its areas take keel's peer-to-peer
//   kernel instead (kernels/cuda/allreduce.cu), eagerly and inside CUDA graphs.
#ifndef KEEL_KERNELS_COMM_H
#define KEEL_KERNELS_COMM_H

#include "kernels/bf16.h"
#include "kernels/ops.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kern_comm; // one rank's end of a communicator; opaque

// The number of ranks and this rank's index.
int kern_comm_size(const struct kern_comm *c);
int kern_comm_rank(const struct kern_comm *c);

// x[n] = sum over ranks of x[n]. bf16 in and out, float32 sums. Returns 0 or an ERR_* code.
int kern_comm_all_reduce_bf16(struct kern_comm *c, struct kern_ctx *ctx, bf16 *x /* [n] */,
                              size_t n);

// out[size * n] = every rank's in[n], in rank order. out may not overlap in unless
// in == out + rank * n (NCCL's in-place form).
int kern_comm_all_gather_f32(struct kern_comm *c, struct kern_ctx *ctx, float *out /* [size, n] */,
                             const float *in /* [n] */, size_t n);
int kern_comm_all_gather_bf16(struct kern_comm *c, struct kern_ctx *ctx, bf16 *out /* [size, n] */,
                              const bf16 *in /* [n] */, size_t n);

// The logits of a vocabulary-sharded LM head, assembled on one or more ranks: every rank gives
// its in[S, vl] (columns [rank * vl, rank * vl + vl) of the full rows), all-gathered into its own
// buf[size, S, vl] (backend memory, size * S * vl floats), and a rank with out != NULL then
// copies the slices into out[S, v] row by row, dropping the columns past v (the last rank's
// padding). in may lie inside out (the copy runs after the gather). Every rank must call it,
// in the same order as its other collectives. Returns 0, ERR_INVAL (bad sizes) or ERR_*.
int kern_comm_gather_logits(struct kern_comm *c, struct kern_ctx *ctx, float *out /* [S, v] */,
                            const float *in /* [S, vl] */, float *buf /* [size, S, vl] */, int S,
                            int vl, int v);

// Frees one rank's end (NULL-safe). Every rank's end must be freed; the group's shared state goes
// with the last one.
void kern_comm_free(struct kern_comm *c);

// ---- the CPU communicator

// Makes the ends of a group of n_ranks ranks: comms[r] for r in [0, n_ranks). Each end must then
// be used from one thread only. Returns 0, ERR_INVAL or ERR_NOMEM.
int kern_cpu_comm_init_all(struct kern_comm **comms /* [n_ranks] */, int n_ranks);

// Makes every rank fail its next collective with ERR_INTERNAL (and the ones after): a rank that
// dies mid-step must not leave the others waiting forever at the barrier. Safe from any thread.
void kern_comm_abort(struct kern_comm *c);

#ifdef KEEL_CUDA
// ---- the NCCL communicator

// Loads NCCL (KEEL_NCCL_LIBRARY, else libnccl.so.2) and makes one communicator per device with
// ncclCommInitAll: comms[r] for devices[r], bound to ctxs[r]'s device. Returns 0, ERR_NOT_FOUND
// (NCCL cannot be loaded: the message says what to set) or ERR_CUDA.
int kern_nccl_comm_init_all(struct kern_comm **comms /* [n] */, int n, const int *devices /* [n] */);

// Makes the calling thread use c's device (cudaSetDevice): every thread that queues work for a
// rank calls it first, since kernels launch on the thread's current device.
int kern_cuda_bind_thread(struct kern_ctx *c);

// The one-shot peer-to-peer all-reduce (kernels/cuda/allreduce.cu) for small messages, beside
// NCCL. Each rank gives it two areas of its device memory (16-byte aligned), both for the
// communicator's life and for nothing else: ctrl (a call counter, kern_cuda_allreduce_ctrl_bytes())
// and data (data_bytes: the message slots, whose words carry their own flags; messages of up to
// kern_cuda_allreduce_max_elems bf16; kern_cuda_allreduce_data_bytes sizes it for a message). kern_comm_p2p_init enables peer access
// between the devices, clears ctrl and hands every rank all ranks' areas. After it, all_reduce of
// at most max_elems elements (x 16-byte aligned) takes the peer-to-peer path, eagerly and inside
// CUDA graphs alike (its call count lives on the device). Returns 0, ERR_UNSUPPORTED (a pair of
// devices without peer access: nothing changes, NCCL stays), ERR_INVAL or a CUDA error.
size_t kern_cuda_allreduce_ctrl_bytes(void);
size_t kern_cuda_allreduce_data_bytes(size_t max_elems, int P);
size_t kern_cuda_allreduce_max_elems(size_t data_bytes, int P);
int kern_comm_p2p_init(struct kern_comm **comms /* [n] */, int n, struct kern_ctx **ctxs /* [n] */,
                       void **ctrl /* [n] */, void **data /* [n] */, size_t data_bytes);
#endif

#ifdef __cplusplus
}
#endif

#endif
