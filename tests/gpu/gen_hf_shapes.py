#!/usr/bin/env python3
"""Random checkpoints in the real shapes of Qwen2.5-0.5B and Qwen3-0.6B (every dimension, the
layer count and the 151936-token vocabulary as released; configs from tests/data/configs/), and
what Hugging Face transformers computes on them, for tests/gpu/test_model.c.

Run on the GPU machine (torch, transformers, safetensors; the models run on the GPU):
    python3 tests/gpu/gen_hf_shapes.py OUT_DIR [NAME...]
It writes OUT_DIR/NAME/{config.json, generation_config.json, model.safetensors, golden.json}.
The outputs are about 1.2 GB per model and are not committed: make the GPU run generate them.

golden.json has the layout of tests/data/tiny-qwen*/golden.json, so one checker reads both: per
prompt the ids, teacher-forced float32 logits of the last 4 positions and the bfloat16 run's,
16 greedy ids of the float32 run with their top-1/top-2 margins. Weights are seeded, rounded to
bfloat16 and saved as bf16; the float32 reference runs on exactly those values. Init scales keep
activations O(1) and logits peaked (std of several units) so greedy ids are stable under bf16
rounding; prompts are kept only when the float32 and bfloat16 runs pick the same 16 ids and the
smallest margin is at least MIN_MARGIN.
"""
import json
import os
import platform
import sys

import safetensors
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.environ.get("KEEL_CONFIGS", os.path.join(HERE, "..", "data", "configs"))
NAMES = ["Qwen2.5-0.5B-Instruct", "Qwen3-0.6B"]
N_GREEDY = 16
N_LAST = 4
PROMPT_LENS = [11, 57]
MIN_MARGIN = 0.25
DEV = "cuda"

TOLERANCE = {
    "logits_abs": "max |keel - hf_fp32| <= 3e-2 * max |hf_fp32| per position (as the tiny "
                  "goldens: keel keeps bf16 activations between ops, like the bf16 run)",
    "greedy": "ids equal exactly (prompts kept only with min top-1/top-2 margin >= %.2f and fp32 "
              "greedy == bf16 greedy)" % MIN_MARGIN,
}


def init_weights(model, tied, seed):
    """Seeded values of useful scale for every parameter, rounded to bf16."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            shape = p.shape
            if name.endswith("embed_tokens.weight"):
                v = torch.randn(shape, generator=g, device=DEV) * (0.5 if tied else 1.0)
            elif name.endswith("lm_head.weight"):
                v = torch.randn(shape, generator=g, device=DEV) * 0.5
            elif name.endswith("norm.weight"):
                v = 1.0 + 0.2 * torch.randn(shape, generator=g, device=DEV)
            elif name.endswith(".bias"):
                v = 0.3 * torch.randn(shape, generator=g, device=DEV)
            elif p.dim() == 2:
                v = torch.randn(shape, generator=g, device=DEV) / (shape[1] ** 0.5)
            else:
                raise SystemExit("unexpected parameter %s %s" % (name, tuple(shape)))
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def load(d, dtype):
    try:
        m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=dtype, attn_implementation="eager")
    return m.to(DEV).eval()


@torch.no_grad()
def logits_all(model, ids):
    return model(torch.tensor([ids], dtype=torch.long, device=DEV)).logits[0].float().cpu()


@torch.no_grad()
def greedy(model, ids, n):
    seq, got, margins = list(ids), [], []
    for _ in range(n):
        top = torch.topk(logits_all(model, seq)[-1], 2)
        got.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(got[-1])
    return got, margins


def rnd(xs):
    return [float("%.6g" % x) for x in xs]


def build(name, out_dir, seed):
    with open(os.path.join(CONFIGS, name, "config.json")) as f:
        cfg = json.load(f)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg.get("bos_token_id"), "eos_token_id": cfg.get("eos_token_id"),
                   "do_sample": False}, f, indent=2)
    tied = bool(cfg.get("tie_word_embeddings", False))
    hf_cfg = AutoConfig.from_pretrained(d)
    with torch.device(DEV):
        model = AutoModelForCausalLM.from_config(hf_cfg, torch_dtype=torch.float32)
    init_weights(model, tied, seed)
    sd = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    del model, sd
    torch.cuda.empty_cache()

    m32, m16 = load(d, torch.float32), load(d, torch.bfloat16)
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(seed + 1000)
    prompts = []
    for n in PROMPT_LENS:
        for attempt in range(20):
            ids = [int(x) for x in torch.randint(0, V, (n,), generator=g)]
            want, margins = greedy(m32, ids, N_GREEDY)
            got16, _ = greedy(m16, ids, N_GREEDY)
            if want == got16 and min(margins) >= MIN_MARGIN:
                break
            print("%s: prompt of %d rejected (bf16 greedy equal: %s, min margin %.3f)"
                  % (name, n, want == got16, min(margins)))
        else:
            raise SystemExit("%s: no stable prompt of length %d" % (name, n))
        l32, l16 = logits_all(m32, ids), logits_all(m16, ids)
        pos = list(range(max(0, n - N_LAST), n))
        prompts.append({
            "ids": ids, "positions": pos,
            "logits_fp32": [rnd(l32[p].tolist()) for p in pos],
            "logits_bf16": [rnd(l16[p].tolist()) for p in pos],
            "max_abs_diff_fp32_bf16": float((l32[pos] - l16[pos]).abs().max()),
            "greedy": want, "margins": rnd(margins),
        })
        print("%s: prompt %d ok, greedy %s, min margin %.3f, |fp32-bf16| %.4f, max |logit| %.2f"
              % (name, n, want[:6], min(margins), prompts[-1]["max_abs_diff_fp32_bf16"],
                 float(l32[pos].abs().max())))
    golden = {
        "model": name, "seed": seed, "attn_implementation": "eager",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "tolerance": TOLERANCE, "n_greedy": N_GREEDY, "prompts": prompts,
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f)
    del m32, m16
    torch.cuda.empty_cache()


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    names = sys.argv[2:] or NAMES
    for i, name in enumerate(names):
        build(name, sys.argv[1], 20261122 + i)


if __name__ == "__main__":
    main()
