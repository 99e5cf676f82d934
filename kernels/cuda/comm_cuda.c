// The NCCL communicator for tensor parallelism (kernels/comm.h). NCCL is not linked: it is
// loaded with dlopen the first time a tensor-parallel group is made, so a keel binary starts on
// machines without NCCL as long as it runs on one GPU. nccl.h is used for its types only.
//
// Where the library comes from: KEEL_NCCL_LIBRARY (a path), else "libnccl.so.2" on the loader's
// path. On machines where NCCL only ships with PyTorch it lives at
//   $(python3 -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))")/lib
// and the error message says so.
//
// Collectives are queued on the rank's context stream and never wait on the host; each rank's
// calls come from its own thread (models/tp.c), as NCCL allows for one communicator per thread.
#include "common/err.h"
#include "common/log.h"
#include "common/cuda_check.h"
#include "kernels/comm.h"
#include "kernels/cuda/ctx.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdlib.h>

cudaStream_t kern_cuda_stream(struct kern_ctx *c);

int kern_cuda_bind_thread(struct kern_ctx *c) {
    CUDA_CHECK(cudaSetDevice(c->device));
    return 0;
}
struct kern_comm *kern__comm_wrap(int size, int rank, void *nccl);
void **kern__comm_p2p_slot(struct kern_comm *c);
int kern_cuda_allreduce_push(bf16 *x, size_t n, int rank, int P, void *ctrl, void *const *data,
                             size_t max_elems, cudaStream_t s); // allreduce.cu

// ---- the library, loaded once

struct nccl_lib {
    void *so;
    ncclResult_t (*comm_init_all)(ncclComm_t *comms, int ndev, const int *devlist);
    ncclResult_t (*all_reduce)(const void *send, void *recv, size_t count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*all_gather)(const void *send, void *recv, size_t count, ncclDataType_t type,
                               ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*comm_destroy)(ncclComm_t comm);
    ncclResult_t (*comm_abort)(ncclComm_t comm);
    const char *(*get_error_string)(ncclResult_t r);
    ncclResult_t (*get_version)(int *version);
};

static struct nccl_lib nccl;
static pthread_mutex_t nccl_mu = PTHREAD_MUTEX_INITIALIZER;

static int nccl__load(void) {
    pthread_mutex_lock(&nccl_mu);
    int rc = 0;
    if (nccl.so) goto out;
    const char *path = getenv("KEEL_NCCL_LIBRARY");
    if (!path || !*path) path = "libnccl.so.2";
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        rc = err_set(ERR_NOT_FOUND,
                     "tensor parallel needs NCCL, and %s cannot be loaded (%s); set "
                     "KEEL_NCCL_LIBRARY to the path of libnccl.so.2 (with PyTorch installed: "
                     "$(python3 -c \"import nvidia.nccl, os; "
                     "print(os.path.dirname(nvidia.nccl.__file__))\")/lib/libnccl.so.2)",
                     path, dlerror());
        goto out;
    }
#define NCCL__SYM(field, name)                                                                  \
    do {                                                                                        \
        *(void **)&nccl.field = dlsym(so, name);                                                \
        if (!nccl.field) {                                                                      \
            dlclose(so);                                                                        \
            rc = err_set(ERR_NOT_FOUND, "%s has no symbol %s: not an NCCL 2 library (set "      \
                                        "KEEL_NCCL_LIBRARY to libnccl.so.2)", path, name);      \
            goto out;                                                                           \
        }                                                                                       \
    } while (0)
    NCCL__SYM(comm_init_all, "ncclCommInitAll");
    NCCL__SYM(all_reduce, "ncclAllReduce");
    NCCL__SYM(all_gather, "ncclAllGather");
    NCCL__SYM(comm_destroy, "ncclCommDestroy");
    NCCL__SYM(comm_abort, "ncclCommAbort");
    NCCL__SYM(get_error_string, "ncclGetErrorString");
    NCCL__SYM(get_version, "ncclGetVersion");
#undef NCCL__SYM
    nccl.so = so;
    int v = 0;
    nccl.get_version(&v);
    log_info("tensor parallel: NCCL %d loaded from %s", v, path);
out:
    pthread_mutex_unlock(&nccl_mu);
    return rc;
}

static int nccl__check(ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return 0;
    // A CUDA error inside NCCL (ncclUnhandledCudaError) may be a dead context; the next CUDA
    // call on the rank's stream classifies it exactly, so report a plain CUDA failure here.
    return err_set(ERR_CUDA, "%s failed: %s (NCCL error %d)", what,
                   nccl.get_error_string ? nccl.get_error_string(r) : "?", (int)r);
}

// ---- the calls comm.c forwards

int kern__nccl_all_reduce_bf16(void *comm, void *p2p, struct kern_ctx *ctx, bf16 *x, size_t n);
void kern__p2p_free(void *p2p);
int kern__nccl_all_gather(void *comm, struct kern_ctx *ctx, void *out, const void *in, size_t n,
                          int is_f32);
void kern__nccl_free(void *comm);
void kern__nccl_abort(void *comm);

// One rank's view of the peer-to-peer all-reduce: its control area (the call count lives on the
// device, allreduce.cu), every rank's data area, and the largest message they take.
struct p2p_state {
    int rank, size;
    void *ctrl, *data[8];
    size_t max_elems;
};

void kern__p2p_free(void *p2p) { free(p2p); }

int kern__nccl_all_reduce_bf16(void *comm, void *p2p, struct kern_ctx *ctx, bf16 *x, size_t n) {
    struct p2p_state *st = p2p;
    if (n == 0) return 0; // every rank skips it alike, so the call counts stay equal
    // The same test on every rank (same n, and the arenas align alike), so the ranks take the
    // same path for every call.
    if (st && n <= st->max_elems && ((uintptr_t)x & 15) == 0)
        return kern_cuda_allreduce_push(x, n, st->rank, st->size, st->ctrl, st->data,
                                        st->max_elems, kern_cuda_stream(ctx));
    return nccl__check(nccl.all_reduce(x, x, n, ncclBfloat16, ncclSum, (ncclComm_t)comm,
                                       kern_cuda_stream(ctx)),
                       "ncclAllReduce");
}

int kern__nccl_all_gather(void *comm, struct kern_ctx *ctx, void *out, const void *in, size_t n,
                          int is_f32) {
    return nccl__check(nccl.all_gather(in, out, n, is_f32 ? ncclFloat32 : ncclBfloat16,
                                       (ncclComm_t)comm, kern_cuda_stream(ctx)),
                       "ncclAllGather");
}

// buf [size, S, vl] -> out [S, v]: one 2-D copy per rank (rows of its slice into its columns of
// out's rows), queued on the stream and capturable like any copy.
int kern__cuda_scatter_cols(struct kern_ctx *ctx, float *out, const float *buf, int size, int S,
                            int vl, int v);
int kern__cuda_scatter_cols(struct kern_ctx *ctx, float *out, const float *buf, int size, int S,
                            int vl, int v) {
    cudaStream_t st = kern_cuda_stream(ctx);
    for (int r = 0; r < size; r++) {
        int cols = v - r * vl < vl ? v - r * vl : vl;
        if (cols <= 0) continue;
        CUDA_CHECK(cudaMemcpy2DAsync(out + (size_t)r * vl, (size_t)v * sizeof(float),
                                     buf + (size_t)r * S * vl, (size_t)vl * sizeof(float),
                                     (size_t)cols * sizeof(float), (size_t)S,
                                     cudaMemcpyDeviceToDevice, st));
    }
    return 0;
}

void kern__nccl_free(void *comm) {
    if (comm && nccl.comm_destroy) nccl.comm_destroy((ncclComm_t)comm);
}

void kern__nccl_abort(void *comm) {
    if (comm && nccl.comm_abort) nccl.comm_abort((ncclComm_t)comm);
}

// ---- making the group

int kern_nccl_comm_init_all(struct kern_comm **comms, int n, const int *devices) {
    if (n < 1 || n > 64) return err_set(ERR_INVAL, "tensor parallel: %d GPUs (1..64)", n);
    int rc = nccl__load();
    if (rc) return rc;
    ncclComm_t raw[64];
    if ((rc = nccl__check(nccl.comm_init_all(raw, n, devices), "ncclCommInitAll"))) return rc;
    for (int r = 0; r < n; r++) {
        comms[r] = kern__comm_wrap(n, r, raw[r]);
        if (!comms[r]) {
            for (int i = 0; i < r; i++) kern_comm_free(comms[i]);
            for (int i = r; i < n; i++) nccl.comm_destroy(raw[i]);
            return err_set(ERR_NOMEM, "tensor parallel: out of memory");
        }
    }
    return 0;
}

// ---- the peer-to-peer all-reduce's set-up

int kern_comm_p2p_init(struct kern_comm **comms, int n, struct kern_ctx **ctxs, void **ctrl,
                       void **data, size_t data_bytes) {
    if (n < 2 || n > 8) return err_set(ERR_INVAL, "p2p all-reduce: %d ranks (2..8)", n);
    size_t max_elems = kern_cuda_allreduce_max_elems(data_bytes, n);
    if (max_elems == 0)
        return err_set(ERR_INVAL, "p2p all-reduce: %zu bytes of data area hold no message",
                       data_bytes);
    for (int r = 0; r < n; r++)
        if (((uintptr_t)ctrl[r] | (uintptr_t)data[r]) & 15)
            return err_set(ERR_INVAL, "p2p all-reduce: rank %d's areas are not 16-byte aligned", r);
    for (int r = 0; r < n; r++) {
        if (!kern__comm_p2p_slot(comms[r]))
            return err_set(ERR_INVAL, "p2p all-reduce: rank %d is not an NCCL communicator", r);
        for (int p = 0; p < n; p++) {
            int ok = 0;
            if (p == r) continue;
            CUDA_CHECK(cudaDeviceCanAccessPeer(&ok, ctxs[r]->device, ctxs[p]->device));
            if (!ok)
                return err_set(ERR_UNSUPPORTED, "p2p all-reduce: device %d cannot access device %d",
                               ctxs[r]->device, ctxs[p]->device);
        }
    }
    for (int r = 0; r < n; r++) {
        CUDA_CHECK(cudaSetDevice(ctxs[r]->device));
        for (int p = 0; p < n; p++) {
            if (p == r) continue;
            cudaError_t e = cudaDeviceEnablePeerAccess(ctxs[p]->device, 0);
            if (e == cudaErrorPeerAccessAlreadyEnabled) (void)cudaGetLastError();
            else CUDA_CHECK(e);
        }
        // Flags and the call counter start at 0 (the first call is 1).
        CUDA_CHECK(cudaMemset(ctrl[r], 0, kern_cuda_allreduce_ctrl_bytes()));
        CUDA_CHECK(cudaMemset(data[r], 0, data_bytes)); // no word carries a call's flag yet
        CUDA_CHECK(cudaDeviceSynchronize());
    }
    // All ranks switch or none does: a rank alone on the peer-to-peer path would wait forever.
    struct p2p_state *st[8];
    for (int r = 0; r < n; r++) {
        if (!(st[r] = calloc(1, sizeof **st))) {
            for (int i = 0; i < r; i++) free(st[i]);
            return err_set(ERR_NOMEM, "p2p all-reduce: out of memory");
        }
        st[r]->rank = r;
        st[r]->size = n;
        st[r]->max_elems = max_elems;
        st[r]->ctrl = ctrl[r];
        for (int p = 0; p < n; p++) st[r]->data[p] = data[p];
    }
    for (int r = 0; r < n; r++) {
        void **slot = kern__comm_p2p_slot(comms[r]);
        free(*slot);
        *slot = st[r];
    }
    log_info("tensor parallel: peer-to-peer all-reduce for messages up to %zu KiB, NCCL above "
             "(KEEL_TP_CUSTOM_AR=0: NCCL only)", max_elems * 2 / 1024);
    return 0;
}
