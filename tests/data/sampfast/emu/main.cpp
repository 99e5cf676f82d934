// The driver of run.sh: random rows, the three kernel variants, cache on and off, compared.
#include "prelude.h"
#include "body.inc" // the device part of kernels/cuda/sample.cu, cut out by run.sh
#include <vector>
struct emu_args {
    int algo;
    kern_sample_out *out;
    float *logits;
    int vocab;
    const kern_sample_params *P;
    float *pc;
    int n_pc;
    unsigned tid;
};
static void *emu_thread(void *a_) {
    emu_args *a = (emu_args *)a_;
    threadIdx.x = a->tid;
    if (a->algo == 0)
        kc_sample<0>(a->out, a->logits, a->vocab, a->P, NULL, NULL, a->pc, a->n_pc);
    else if (a->algo == 1)
        kc_sample<1>(a->out, a->logits, a->vocab, a->P, NULL, NULL, a->pc, a->n_pc);
    else
        kc_sample<2>(a->out, a->logits, a->vocab, a->P, NULL, NULL, a->pc, a->n_pc);
    return NULL;
}
static void emu_launch(int algo, int rows, kern_sample_out *out, float *logits, int vocab,
                       const kern_sample_params *P, float *pc, int n_pc) {
    static pthread_t th[1024];
    static emu_args args[1024];
    for (int r = 0; r < rows; r++) {
        blockIdx.x = r;
        for (int t = 0; t < 1024; t++) {
            args[t] = {algo, out, logits, vocab, P, pc, n_pc, (unsigned)t};
            pthread_create(&th[t], NULL, emu_thread, &args[t]);
        }
        for (int t = 0; t < 1024; t++)
            pthread_join(th[t], NULL);
    }
}
static uint64_t st = 0x9e3779b97f4a7c15ull;
static uint64_t rnd() {
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return st;
}
static float fr() {
    return (float)((rnd() >> 11) * 0x1.0p-53);
}
int main(int argc, char **argv) {
    pthread_barrier_init(&emu_block, NULL, 1024);
    for (int w = 0; w < 32; w++)
        pthread_barrier_init(&emu_warp[w], NULL, 32);
    int vocab = argc > 1 ? atoi(argv[1]) : 4097, rows = argc > 2 ? atoi(argv[2]) : 40;
    st ^= (uint64_t)vocab * 7919;
    std::vector<float> l((size_t)rows * vocab), pc((size_t)rows * vocab);
    std::vector<kern_sample_params> P(rows);
    static const float temps[] = {0, 0.3f, 0.7f, 1.0f, 1.5f};
    static const int ks[] = {0, 1, 2, 7, 50, 333, 1000, 3000};
    static const float ps[] = {1, 0.01f, 0.3f, 0.9f, 0.95f, 0.999f};
    static const float mps[] = {0, 0, 0.01f, 0.2f};
    for (int r = 0; r < rows; r++) {
        float *x = &l[(size_t)r * vocab];
        int kind = r % 5;
        for (int i = 0; i < vocab; i++) {
            x[i] = (fr() * 2 - 1) * (kind == 0 ? 3.0f : 6.0f);
            if (kind == 2) x[i] = (float)(int)(x[i] * 2) * 0.5f;
            if (kind == 4) x[i] = (float)(rnd() % 6) * 0.75f;
        }
        if (kind == 1)
            for (int j = 0; j < 8; j++)
                x[rnd() % vocab] = 14.0f + fr() * 3;
        if (kind == 3)
            for (int j = 0; j < vocab / 10; j++)
                x[rnd() % vocab] = -INFINITY;
        kern_sample_params p = {};
        p.temperature = temps[rnd() % 5];
        p.top_k = ks[rnd() % 8];
        p.top_p = ps[rnd() % 6];
        p.min_p = mps[rnd() % 4];
        p.n_valid = rnd() % 5 == 0 ? vocab - 3 : vocab;
        p.n_logprobs = (int)(rnd() % 4) - 1;
        p.u = fr();
        p.repetition_penalty = 1;
        P[r] = p;
    }
    std::vector<kern_sample_out> o[3];
    for (int a = 0; a < 3; a++) {
        o[a].resize(rows);
        emu_launch(a, rows, o[a].data(), l.data(), vocab, P.data(), a == 2 ? pc.data() : NULL,
                   a == 2 ? rows : 0);
    }
    // and algo 2 without the cache
    std::vector<kern_sample_out> o2n(rows);
    emu_launch(2, rows, o2n.data(), l.data(), vocab, P.data(), NULL, 0);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        bool exact = P[r].top_p >= 1 || P[r].temperature < 1e-5f;
        for (int a = 1; a < 3; a++) {
            bool same = a == 1 && exact
                            ? memcmp(&o[0][r], &o[a][r], sizeof(o[0][r])) == 0
                            : o[0][r].token == o[a][r].token && o[0][r].status == o[a][r].status;
            if (!same) {
                bad++;
                printf("row %d algo %d: T %.2f k %d p %.3f minp %.2f u %.6f: tok %d vs old %d\n", r,
                       a, P[r].temperature, P[r].top_k, P[r].top_p, P[r].min_p, P[r].u,
                       o[a][r].token, o[0][r].token);
            }
        }
        if (o2n[r].token != o[2][r].token) {
            bad++;
            printf("row %d: cache changes token %d -> %d\n", r, o[2][r].token, o2n[r].token);
        }
    }
    printf("vocab %d rows %d: %d mismatches; tokens:", vocab, rows, bad);
    for (int r = 0; r < rows && r < 12; r++)
        printf(" %d", o[2][r].token);
    printf("\n");
    return bad != 0;
}
