#!/usr/bin/env bash
# One measuring pass on the GPU machine (docs/PERF.md): copy bandwidth and cuBLAS bf16 GEMM rate
# (torch), keel single-stream decode and prefill on Qwen2.5-7B and Qwen3-8B shapes (dummy
# weights) with the step profiler, Hugging Face transformers generate at batch 1/32/128, and a
# short keel serve + keel-bench throughput run. Builds nothing: run from the repo root with
#   X=.xfer-perf scripts/perf_run.sh   (X holds keel, keel-bench, libcjson.so.1, models/*)
# Everything goes to $OUT; a summary table is printed last.
# PERF_PARTS (default "peaks keel hf serve") picks the parts.
set -u
X=${X:-.xfer-perf}
OUT=${OUT:-/tmp/perf-out}
PARTS=${PERF_PARTS:-peaks keel serve hf}
mkdir -p "$OUT"
S="$OUT/summary.txt"
: >"$S"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
note() { echo "$*" | tee -a "$S"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"

# ---- ceilings
if has peaks; then
PYTHONUNBUFFERED=1 python3 - <<'PY' 2>&1 | tee "$OUT/peaks.txt" | grep '^peak' >>"$S"
import torch
torch.manual_seed(0)
n = 1 << 30
a = torch.randn(n // 2, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
s, e = torch.cuda.Event(True), torch.cuda.Event(True)
ts = []
for _ in range(10):
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
ts.sort(); t = ts[len(ts) // 2] * 1e-3
print(f"peak copy {2 * a.numel() * 2 / t / 1e9:.0f} GB/s (read+write), read-only view {a.numel() * 2 / t / 1e9:.0f} GB/s")
del a, b
for m in (8192, 4096):
    x = torch.randn(m, m, device="cuda", dtype=torch.bfloat16); y = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    for _ in range(3): x @ y
    ts = []
    for _ in range(10):
        s.record(); x @ y; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); t = ts[len(ts) // 2] * 1e-3
    print(f"peak gemm bf16 {m}^3 {2 * m ** 3 / t / 1e12:.0f} TFLOP/s")
PY
fi

# ---- keel generate: decode (steady step time) and prefill, profiler on
ids() { python3 -c "import random; random.seed($2); print(','.join(str(random.randrange(100, 30000)) for _ in range($1)))"; }
kgen() { # name model n_prompt max_tokens profile
    local name=$1 model=$2 np=$3 mt=$4 prof=$5
    echo "== $name" >>"$OUT/keel.log"
    KEEL_PROFILE=$prof timeout 150 "$X/keel" generate --model "$model" --load-format dummy --device cuda \
        --prompt-ids "$(ids "$np" 1)" --max-tokens "$mt" --ignore-eos >"$OUT/$name.out" 2>"$OUT/$name.err"
    echo "rc=$?" >>"$OUT/$name.err"
    cat "$OUT/$name.err" >>"$OUT/keel.log"
    note "-- $name ($model, prompt $np, generate $mt, KEEL_PROFILE=$prof)"
    grep -E '^\| (decode|prefill) +\|' "$OUT/$name.err" | tee -a "$S"
    grep -E 'load .* s,|rc=' "$OUT/$name.err" | tail -2 | tee -a "$S"
}
if has keel; then
M7=Qwen2.5-7B-Instruct
kgen "${M7}_decode" "$X/models/$M7" 64 256 steps
kgen "${M7}_prefill4k" "$X/models/$M7" 4096 8 steps
kgen "${M7}_ops" "$X/models/$M7" 1024 32 1
kgen "Qwen3-8B_p4k_decode" "$X/models/Qwen3-8B" 4096 128 steps
grep -A40 'per op' "$OUT/Qwen2.5-7B-Instruct_ops.err" | head -40 >>"$S"
fi

# ---- keel serve + keel-bench (short)
if has serve; then
M="$X/models/Qwen2.5-7B-Instruct"
KEEL_PROFILE=steps timeout 200 "$X/keel" serve --model "$M" --load-format dummy --device cuda --port 8077 \
    --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048 >"$OUT/serve.log" 2>&1 &
SP=$!
t0=$(date +%s.%N)
for i in $(seq 1 120); do curl -sf http://127.0.0.1:8077/health >/dev/null 2>&1 && break; sleep 0.5; done
note "serve ready after $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s"
for spec in "200 1024 256 256" "200 256 256 256"; do
    set -- $spec
    timeout 90 "$X/keel-bench" --base-url http://127.0.0.1:8077 --num-prompts $1 --input-len $2 \
        --output-len $3 --ignore-eos --max-concurrency $4 --no-progress >"$OUT/bench_$2_$3.txt" 2>&1
    note "-- keel-bench $1 prompts $2/$3 conc $4 (rc $?)"
    grep -E 'Successful|Failed|duration|Total Token|Output token thr|Median TTFT|P99 TTFT|Median TPOT|P99 TPOT' "$OUT/bench_$2_$3.txt" >>"$S"
done
kill $SP; wait $SP 2>/dev/null
grep -E '^\| (decode|prefill) +\|' "$OUT/serve.log" >>"$S"
tail -5 "$OUT/serve.log" >>"$S"
fi

# ---- Hugging Face transformers generate, random 7B weights
if has hf; then
PYTHONUNBUFFERED=1 timeout 170 python3 - "$X/models/Qwen2.5-7B-Instruct" <<'PY' 2>&1 | tee "$OUT/hf.txt" | grep '^hf' >>"$S"
import sys, time, torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM
cfg = AutoConfig.from_pretrained(sys.argv[1])
cfg._attn_implementation = "sdpa"
t0 = time.time()
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
model.eval()
print(f"hf init {time.time() - t0:.1f} s, transformers {transformers.__version__}, torch {torch.__version__}")
for bs, new in ((1, 32), (32, 16), (128, 16)):
    ids = torch.randint(100, 30000, (bs, 128), device="cuda")
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **dict(kw, max_new_tokens=2, min_new_tokens=2))
        torch.cuda.synchronize(); t = time.time()
        model.generate(ids, **kw)
        torch.cuda.synchronize(); dt = time.time() - t
    print(f"hf generate batch {bs}: prompt 128, {new} new tokens, {dt:.2f} s, {bs * new / dt:.1f} generated tok/s")
PY
fi

echo; echo "======== summary"; cat "$S"
