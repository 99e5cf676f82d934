#!/usr/bin/env python3
"""Builds the tiny random Qwen2 and Qwen3 checkpoints under tests/data/tiny-qwen{2,3}/ and records
what Hugging Face transformers computes on them (golden.json), for tests/unit/test_forward.c.

Run where torch, transformers and safetensors are installed (the GPU machine; everything here runs
on its CPU, in float32 and in bfloat16):
    python3 tests/gen/gen_tiny_models.py OUT_DIR
and copy OUT_DIR/tiny-qwen2 and OUT_DIR/tiny-qwen3 to tests/data/.

The two models cover what the forward pass chooses between:
- tiny-qwen2: QKV bias, untied LM head, head_dim == dim / n_heads, GQA (4 heads, 2 kv heads).
- tiny-qwen3: q/k RMSNorm, tied embeddings, head_dim 32 != dim / n_heads = 16, GQA, 3 layers.

Weights are drawn with a fixed seed, rounded to bfloat16 and saved as bf16 safetensors; the float32
run uses exactly those rounded values. Init scales are chosen so activations stay O(1) and logits
are peaked (std of a few units), so greedy decoding is stable under bf16 activation rounding:
prompts are kept only when the float32 and bfloat16 runs agree on all greedy tokens and the
smallest top-1/top-2 margin is clear. golden.json records, per prompt: the ids, teacher-forced
float32 logits of the last (up to) 4 positions and the bfloat16 run's, the 16 greedy ids, and the
per-step top-1/top-2 margins; plus library versions and the tolerance the C test applies.
"""
import json
import os
import platform
import sys

import torch
import transformers
import safetensors
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 512
EOS = 511
BOS = 510
N_GREEDY = 16
N_LAST = 4
PROMPT_LENS = [3, 9, 24, 40]
MIN_MARGIN = 0.25  # logit units; logits have std ~ 4

TOLERANCE = {
    "logits_abs": "max |keel - hf_fp32| <= 3e-2 * max |hf_fp32| per position "
                  "(keel keeps bf16 activations between ops, as the bf16 run does; transformers' "
                  "own bf16 run differs from its fp32 run by 1-1.5% of max |logit| here)",
    "greedy": "ids equal exactly (prompts were kept only with min top-1/top-2 margin >= %.2f and "
              "fp32 greedy == bf16 greedy)" % MIN_MARGIN,
}

CONFIGS = {
    "tiny-qwen2": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 2,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "torch_dtype": "bfloat16",
    },
    "tiny-qwen3": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 3,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "torch_dtype": "bfloat16",
    },
}


def init_weights(model, cfg, seed):
    """Overwrites every parameter with seeded values of useful scale, rounded to bf16."""
    g = torch.Generator().manual_seed(seed)
    tied = cfg["tie_word_embeddings"]
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            shape = p.shape
            if name.endswith("embed_tokens.weight"):
                std = 0.5 if tied else 1.0
                v = torch.randn(shape, generator=g) * std
            elif name.endswith("lm_head.weight"):
                v = torch.randn(shape, generator=g) * 0.5
            elif name.endswith("norm.weight"):  # input/post-attention/final/q/k norms
                v = 1.0 + 0.2 * torch.randn(shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.3 * torch.randn(shape, generator=g)
            elif p.dim() == 2:
                v = torch.randn(shape, generator=g) / (shape[1] ** 0.5)
            else:
                raise SystemExit("unexpected parameter %s %s" % (name, tuple(shape)))
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def load(dir_, dtype):
    try:
        m = AutoModelForCausalLM.from_pretrained(dir_, dtype=dtype, attn_implementation="eager")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(dir_, torch_dtype=dtype,
                                                 attn_implementation="eager")
    m.eval()
    return m


@torch.no_grad()
def logits_all(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].to(torch.float32)


@torch.no_grad()
def greedy(model, ids, n):
    """Greedy continuation by full re-forward (no KV cache); returns ids and top1-top2 margins."""
    seq = list(ids)
    got, margins = [], []
    for _ in range(n):
        last = logits_all(model, seq)[-1]
        top = torch.topk(last, 2)
        got.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(got[-1])
    return got, margins


def rnd(xs, nd=5):
    return [float("%.*g" % (nd + 1, x)) for x in xs]


def build(name, cfg, out_dir, seed):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": False}, f, indent=2)

    hf_cfg = AutoConfig.from_pretrained(d)
    try:
        model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_config(hf_cfg)
    model.to(torch.float32)
    init_weights(model, cfg, seed)

    sd = {}
    for k, v in model.state_dict().items():
        if cfg["tie_word_embeddings"] and k == "lm_head.weight":
            continue
        sd[k] = v.detach().to(torch.bfloat16).contiguous().clone()
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    print(name, "tensors:", sorted((k, tuple(v.shape)) for k, v in sd.items()))

    # Goldens come from the checkpoint as transformers loads it, so the files are what is checked.
    m32 = load(d, torch.float32)
    m16 = load(d, torch.bfloat16)
    ref = dict(model.named_parameters())
    for k, v in m32.named_parameters():
        assert torch.equal(v, ref[k]), "reloaded %s differs" % k
    rope = getattr(m32.config, "rope_parameters", None) or {}
    if rope and all(isinstance(v, dict) for v in rope.values()):  # per layer type
        rope = next(iter(rope.values()))
    theta = rope.get("rope_theta", getattr(m32.config, "rope_theta", None))
    print(name, "rope:", rope, "theta", theta)
    if theta is None or float(theta) != cfg["rope_theta"]:
        print("WARNING: %s: transformers uses rope_theta %s, config.json says %s"
              % (name, theta, cfg["rope_theta"]))

    g = torch.Generator().manual_seed(seed + 1000)
    prompts = []
    for plen in PROMPT_LENS:
        best = None
        for attempt in range(200):
            ids = torch.randint(0, EOS - 1, (plen,), generator=g).tolist()
            g32, marg = greedy(m32, ids, N_GREEDY)
            if EOS in g32:
                continue
            g16, _ = greedy(m16, ids, N_GREEDY)
            # Best so far: agreeing runs first, then the larger smallest margin.
            cand = ((g16 == g32, min(marg)), ids, g32, marg, attempt)
            if best is None or cand[0] > best[0]:
                best = cand
            if g16 == g32 and min(marg) >= MIN_MARGIN:
                break
        (agree, mm), ids, g32, marg, attempt = best
        l32 = logits_all(m32, ids)
        l16 = logits_all(m16, ids)
        first = max(0, plen - N_LAST)
        pos = list(range(first, plen))
        diff16 = float((l32[first:] - l16[first:]).abs().max())
        print("%s: prompt len %d (attempt %d) min margin %.3f fp32==bf16 greedy %s, "
              "max|logit| %.2f logit std %.2f, max|fp32-bf16| %.4f"
              % (name, plen, attempt, mm, agree, float(l32[first:].abs().max()),
                 float(l32[first:].std()), diff16))
        prompts.append({
            "ids": ids,
            "positions": pos,
            "logits_fp32": [rnd(l32[p].tolist()) for p in pos],
            "logits_bf16": [rnd(l16[p].tolist()) for p in pos],
            "max_abs_diff_fp32_bf16": diff16,
            "greedy": g32,
            "greedy_bf16_agrees": agree,
            "greedy_margins": rnd(marg, 4),
            "min_margin": mm,
        })

    golden = {
        "model": name,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
        },
        "seed": seed,
        "attn_implementation": "eager",
        "rope_theta_used": float(theta) if theta is not None else None,
        "tolerance": TOLERANCE,
        "n_greedy": N_GREEDY,
        "prompts": prompts,
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    torch.set_num_threads(4)
    torch.manual_seed(0)
    build("tiny-qwen2", CONFIGS["tiny-qwen2"], out_dir, 1234)
    build("tiny-qwen3", CONFIGS["tiny-qwen3"], out_dir, 5678)
    for name in CONFIGS:
        for fn in sorted(os.listdir(os.path.join(out_dir, name))):
            print(name, fn, os.path.getsize(os.path.join(out_dir, name, fn)))


if __name__ == "__main__":
    main()
