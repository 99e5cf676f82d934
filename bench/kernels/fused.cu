// Fused-op playground: each fused kernel against the op sequence it replaces, at the decode
// shapes of Qwen2.5-7B and Qwen3-8B, timed the way a decode step runs them (28 or 36 layers back
// to back on one stream, so launch gaps count; the figure is per layer).
//   down   silu_mul + kern_cuda_gemv (old)  vs  kern_cuda_gemv_silu (new), m = 1, 2, 4, 8:
//          the down weights (136 / 101 MB) do not fit in L2, so this is the weight stream
//   norm   add_rmsnorm + kern_cuda_gemv (old)  vs  kern_cuda_gemv_add_rmsnorm (new) before the
//          qkv (+bias) and gate_up projections, m = 1, 2, 4, 8
//   rope   [qk_norm +] rope + kv_write (old)  vs  kern_cuda_qk_rope_kv (new), n = 1, 8, 512
//   attn   decode attention (attention_dec.cu) at batch 1, h=28/4 hd=128, ctx 128..4096: the split
//          plan with the combine kernel (before), the split plan merging in the main kernel
//          (fused combine), and one slice; "default" marks what keel runs now. The crossover of
//          "1 slice" and "split fused" is where KERN_CUDA_DEC_MIN_SPLIT_CTX belongs.
// Run: make playgrounds && build/playgrounds/fused
#include "bench/kernels/play.h"
#include "kernels/cuda/attention_dec.h"

#define FZ_LAYERS 28

int main(void) {
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    cudaStream_t s = kern_cuda_stream(c);
    play_header();

    // ---- down projection
    struct {
        const char *name;
        int n, h;
    } downs[] = {{"7b down", 3584, 18944}, {"8b down", 4096, 12288}};
    for (auto &d : downs) {
        bf16 *w = (bf16 *)play_dev((size_t)d.n * d.h * 2);
        bf16 *gu = (bf16 *)play_dev((size_t)8 * 2 * d.h * 2), *hid = (bf16 *)play_dev(8 * d.h * 2);
        bf16 *y = (bf16 *)play_dev((size_t)8 * d.n * 2);
        play_fill(w, (size_t)d.n * d.h, 0.05f, 11);
        play_fill(gu, (size_t)8 * 2 * d.h, 3.0f, 12);
        for (int m = 1; m <= 8; m *= 2) {
            double bytes = (double)d.n * d.h * 2 + (double)m * 2 * d.h * 2 + (double)m * d.n * 2;
            char v[96];
            float t_old = play_time(s, 2, 10, [&](int) {
                for (int l = 0; l < FZ_LAYERS; l++) {
                    PLAY_OK(kern_cuda_silu_mul(hid, gu, m, d.h, s));
                    PLAY_OK(kern_cuda_gemv(y, 0, hid, w, NULL, m, d.n, d.h, 0, s));
                }
            });
            snprintf(v, sizeof v, "%-8s m=%d old silu_mul + gemv", d.name, m);
            play_line(v, t_old / FZ_LAYERS, bytes, 2.0 * m * d.n * (double)d.h, &pk);
            float t_new = play_time(s, 2, 10, [&](int) {
                for (int l = 0; l < FZ_LAYERS; l++)
                    PLAY_OK(kern_cuda_gemv_silu(y, gu, w, m, d.n, d.h, 0, s));
            });
            snprintf(v, sizeof v, "%-8s m=%d new gemv_silu (%.2fx)", d.name, m, t_old / t_new);
            play_line(v, t_new / FZ_LAYERS, bytes, 2.0 * m * d.n * (double)d.h, &pk);
        }
        cudaFree(w), cudaFree(gu), cudaFree(hid), cudaFree(y);
    }

    // ---- residual add + RMSNorm + projection
    struct {
        const char *name;
        int n, k, bias;
    } norms[] = {{"7b norm+qkv", 4608, 3584, 1},
                 {"7b norm+gate_up", 37888, 3584, 0},
                 {"8b norm+qkv", 6144, 4096, 0}};
    for (auto &d : norms) {
        // Weights rotate among copies when they would fit in L2 (the qkv matrices).
        int n_w = (size_t)d.n * d.k * 2 < (96u << 20) ? 3 : 1;
        bf16 *w[3];
        for (int i = 0; i < n_w; i++) {
            w[i] = (bf16 *)play_dev((size_t)d.n * d.k * 2);
            play_fill(w[i], (size_t)d.n * d.k, 0.05f, 40 + i);
        }
        size_t mk = (size_t)8 * d.k;
        bf16 *res = (bf16 *)play_dev(mk * 2), *res2 = (bf16 *)play_dev(mk * 2),
             *delta = (bf16 *)play_dev(mk * 2), *xn = (bf16 *)play_dev(mk * 2),
             *nw = (bf16 *)play_dev(d.k * 2), *bias = (bf16 *)play_dev(d.n * 2),
             *y = (bf16 *)play_dev((size_t)8 * d.n * 2);
        play_fill(res, mk, 2.0f, 45);
        play_fill(delta, mk, 0.01f, 46);
        play_fill(nw, d.k, 1.0f, 47);
        play_fill(bias, d.n, 0.5f, 48);
        const bf16 *b = d.bias ? bias : NULL;
        for (int m = 1; m <= 8; m *= 2) {
            double bytes = (double)d.n * d.k * 2 + 4.0 * m * d.k * 2 + (double)m * d.n * 2;
            char v[96];
            // The old path updates the residual in place; the new one writes res2 (the forward
            // pass ping-pongs). Either way the data stays finite over the repeats (delta is small).
            float t_old = play_time(s, 2, 10, [&](int i) {
                for (int l = 0; l < FZ_LAYERS; l++) {
                    PLAY_OK(kern_cuda_add_rmsnorm(xn, res, delta, nw, m, d.k, 1e-6f, s));
                    PLAY_OK(kern_cuda_gemv(y, 0, xn, w[(i + l) % n_w], b, m, d.n, d.k, 0, s));
                }
            });
            snprintf(v, sizeof v, "%-15s m=%d old add_rmsnorm + gemv", d.name, m);
            play_line(v, t_old / FZ_LAYERS, bytes, 2.0 * m * d.n * (double)d.k, &pk);
            float t_new = play_time(s, 2, 10, [&](int i) {
                for (int l = 0; l < FZ_LAYERS; l++)
                    PLAY_OK(kern_cuda_gemv_add_rmsnorm(y, res2, res, delta, nw, w[(i + l) % n_w], b,
                                                       m, d.n, d.k, 1e-6f, 0, s));
            });
            snprintf(v, sizeof v, "%-15s m=%d new fused (%.2fx)", d.name, m, t_old / t_new);
            play_line(v, t_new / FZ_LAYERS, bytes, 2.0 * m * d.n * (double)d.k, &pk);
        }
        for (int i = 0; i < n_w; i++)
            cudaFree(w[i]);
        cudaFree(res), cudaFree(res2), cudaFree(delta), cudaFree(xn), cudaFree(nw);
        cudaFree(bias), cudaFree(y);
    }

    // ---- qk_norm + rope + kv_write
    struct {
        const char *name;
        int nh, nkv, norm;
    } ropes[] = {{"7b rope+kv", 28, 4, 0}, {"8b norm+rope+kv", 32, 8, 1}};
    const int hd = 128, max_n = 512;
    for (auto &r : ropes) {
        size_t row = (size_t)(r.nh + 2 * r.nkv) * hd, cache = (size_t)4096 * r.nkv * hd;
        bf16 *qkv = (bf16 *)play_dev(max_n * row * 2), *kc = (bf16 *)play_dev(cache * 2),
             *vc = (bf16 *)play_dev(cache * 2), *w = (bf16 *)play_dev(2 * hd * 2);
        play_fill(qkv, max_n * row, 2.0f, 21);
        play_fill(w, 2 * hd, 1.0f, 22);
        int32_t hpos[max_n], hslot[max_n];
        for (int i = 0; i < max_n; i++)
            hpos[i] = 1000 + i, hslot[i] = (i * 7) % 4096;
        int32_t *pos = (int32_t *)play_dev(sizeof hpos), *slot = (int32_t *)play_dev(sizeof hslot);
        PLAY_CUDA(cudaMemcpy(pos, hpos, sizeof hpos, cudaMemcpyHostToDevice));
        PLAY_CUDA(cudaMemcpy(slot, hslot, sizeof hslot, cudaMemcpyHostToDevice));
        const bf16 *qw = r.norm ? w : NULL, *kw = r.norm ? w + hd : NULL;
        int ns[] = {1, 8, 512};
        for (int n : ns) {
            double bytes = (double)n * (row + 2 * (r.nh + r.nkv) * hd + 2 * r.nkv * hd) * 2;
            char v[96];
            float t_old = play_time(s, 2, 10, [&](int) {
                for (int l = 0; l < FZ_LAYERS; l++) {
                    if (r.norm)
                        PLAY_OK(kern_cuda_qk_norm(qkv, qw, kw, n, r.nh, r.nkv, hd, 1e-6f, s));
                    PLAY_OK(kern_cuda_rope(qkv, pos, n, r.nh, r.nkv, hd, 1e6f, s));
                    PLAY_OK(kern_cuda_kv_write(kc, vc, qkv, slot, n, r.nh, r.nkv, hd, s));
                }
            });
            snprintf(v, sizeof v, "%-15s n=%-3d old", r.name, n);
            play_line(v, t_old / FZ_LAYERS, bytes, 0, &pk);
            float t_new = play_time(s, 2, 10, [&](int) {
                for (int l = 0; l < FZ_LAYERS; l++)
                    PLAY_OK(kern_cuda_qk_rope_kv(qkv, kc, vc, qw, kw, pos, slot, n, r.nh, r.nkv, hd,
                                                 1e-6f, 1e6f, s));
            });
            snprintf(v, sizeof v, "%-15s n=%-3d new fused (%.2fx)", r.name, n, t_old / t_new);
            play_line(v, t_new / FZ_LAYERS, bytes, 0, &pk);
        }
        cudaFree(qkv), cudaFree(kc), cudaFree(vc), cudaFree(w), cudaFree(pos), cudaFree(slot);
    }

    // ---- decode attention at batch 1: split plan vs one slice
    {
        const int nh = 28, nkv = 4, bs = 16, max_ctx = 4096, n_sm = 132;
        int nb = max_ctx / bs;
        size_t row = (size_t)(nh + 2 * nkv) * hd, cache = (size_t)nb * bs * nkv * hd;
        bf16 *qkv = (bf16 *)play_dev(row * 2), *kc = (bf16 *)play_dev(cache * 2),
             *vc = (bf16 *)play_dev(cache * 2), *out = (bf16 *)play_dev((size_t)nh * hd * 2);
        play_fill(qkv, row, 2.0f, 31);
        play_fill(kc, cache, 1.0f, 32);
        play_fill(vc, cache, 1.0f, 33);
        size_t scratch_bytes = 16u << 20;
        void *scratch = play_dev(scratch_bytes);
        int32_t htab[max_ctx / bs];
        for (int i = 0; i < nb; i++)
            htab[i] = nb - 1 - i;
        int32_t *tab = (int32_t *)play_dev(sizeof htab), *qs = (int32_t *)play_dev(8),
                *len = (int32_t *)play_dev(4);
        PLAY_CUDA(cudaMemcpy(tab, htab, sizeof htab, cudaMemcpyHostToDevice));
        int32_t hqs[2] = {0, 1};
        PLAY_CUDA(cudaMemcpy(qs, hqs, sizeof hqs, cudaMemcpyHostToDevice));
        int saved = kern_cuda__attention_dec_min_split_ctx();
        for (int ctx = 128; ctx <= max_ctx; ctx *= 2) {
            PLAY_CUDA(cudaMemcpy(len, &ctx, 4, cudaMemcpyHostToDevice));
            struct kern_attn_batch b = {1, 1, qs, len, tab, nb, 1, ctx};
            double bytes = 2.0 * ctx * nkv * hd * 2;
            // v 0: split + combine kernel (before), 1: split, fused combine, 2: one slice
            float t[3];
            int saved_fused = kern_cuda__attention_dec_fused_combine();
            for (int v = 0; v < 3; v++) {
                kern_cuda__attention_dec_set_min_split_ctx(v == 2 ? ctx : 0);
                kern_cuda__attention_dec_set_fused_combine(v != 0);
                t[v] = play_time(s, 2, 10, [&](int) {
                    for (int l = 0; l < FZ_LAYERS; l++)
                        PLAY_OK(kern_cuda__attention_dec(out, qkv, kc, vc, &b, nh, nkv, hd, bs,
                                                         0.088f, scratch, scratch_bytes, n_sm, s));
                });
            }
            kern_cuda__attention_dec_set_fused_combine(saved_fused);
            int split_len, n = kern_cuda_dec_splits(nkv, ctx, (size_t)nh * (hd + 2) * 4,
                                                    scratch_bytes, n_sm, &split_len);
            int dflt = ctx <= saved ? 2 : (n > 1 && saved_fused ? 1 : 0);
            const char *names[3] = {"split+combine", "split fused", "1 slice"};
            for (int v = 0; v < 3; v++) {
                char line[96];
                snprintf(line, sizeof line, "attn h=28/4 ctx=%-5d %-13s", ctx, names[v]);
                if (v < 2) snprintf(line + strlen(line), sizeof line - strlen(line), " %2d sl", n);
                if (v == dflt)
                    snprintf(line + strlen(line), sizeof line - strlen(line), " default");
                if (v)
                    snprintf(line + strlen(line), sizeof line - strlen(line), " (%.2fx)",
                             t[0] / t[v]);
                play_line(line, t[v] / FZ_LAYERS, bytes, 0, &pk);
            }
        }
        kern_cuda__attention_dec_set_min_split_ctx(saved);
        cudaFree(qkv), cudaFree(kc), cudaFree(vc), cudaFree(out), cudaFree(scratch);
        cudaFree(tab), cudaFree(qs), cudaFree(len);
    }
    return 0;
}
