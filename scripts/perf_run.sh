#!/usr/bin/env bash
# One measuring pass on the GPU machine (docs/PERF.md): copy bandwidth and cuBLAS bf16 GEMM rate
# (torch), keel single-stream decode and prefill on Qwen2.5-7B and Qwen3-8B shapes (dummy
# weights) with the step profiler, Hugging Face transformers generate at batch 1/32/128, and a
# short keel serve + keel-bench throughput run. Builds nothing: run from the repo root with
#   X=.xfer-perf scripts/perf_run.sh   (X holds keel, keel-bench, libcjson.so.1, models/*)
# Everything goes to $OUT; a summary table is printed last.
# PERF_PARTS (default "peaks keel hf serve") picks the parts; also prefill, graphs, full, serve_ops.
set -u
X=${X:-.xfer-perf}
OUT=${OUT:-/tmp/perf-out}
PARTS=${PERF_PARTS:-peaks keel graphs serve hf}   # also: full (1000 prompts + sweep), serve_ops
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
kgen() { # name model n_prompt max_tokens profile [graphs]
    local name=$1 model=$2 np=$3 mt=$4 prof=$5 gr=${6:-1}
    echo "== $name" >>"$OUT/keel.log"
    KEEL_CUDA_GRAPHS=$gr KEEL_PROFILE=$prof timeout 150 "$X/keel" generate --model "$model" --load-format dummy --device cuda \
        --prompt-ids "$(ids "$np" 1)" --max-tokens "$mt" --ignore-eos --json >"$OUT/$name.out" 2>"$OUT/$name.err"
    echo "rc=$?" >>"$OUT/$name.err"
    cat "$OUT/$name.err" >>"$OUT/keel.log"
    note "-- $name ($model, prompt $np, generate $mt, KEEL_PROFILE=$prof, KEEL_CUDA_GRAPHS=$gr)"
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

# ---- prefill: one 4k prompt in one step, and a 32k prompt (8k chunks as keel serve takes them,
# and in one step), 7B and Qwen3-8B; PREFILL_AB_ENV (e.g. KEEL_ATTN_PREFILL=old) repeats the 32k
# runs with that set. Ids 10..99 keep a 32k-id argument under Linux's 128 KiB per argument.
kpre() { # name model n_prompt chunk [env...]
    local name=$1 model=$2 np=$3 ch=$4; shift 4
    env "$@" KEEL_PROFILE=steps timeout 300 "$X/keel" generate --model "$model" --load-format dummy \
        --device cuda --prompt-ids "$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(10, 100)) for _ in range($np)))")" \
        --max-tokens 4 --ignore-eos --prefill-chunk "$ch" --json >"$OUT/$name.out" 2>"$OUT/$name.err"
    echo "rc=$?" >>"$OUT/$name.err"
    note "-- $name ($model, prompt $np, prefill chunk $ch${*:+, $*})"
    grep -E '^\| prefill +\|' "$OUT/$name.err" | tee -a "$S"
    grep -E 'rc=' "$OUT/$name.err" | tail -1 | tee -a "$S"
}
if has prefill; then
M7="$X/models/Qwen2.5-7B-Instruct"; M8="$X/models/Qwen3-8B"
kpre pre_7b_4k_1step "$M7" 4096 4096
kpre pre_8b_4k_1step "$M8" 4096 4096
kpre pre_7b_32k_8k "$M7" 32700 8192
kpre pre_7b_32k_1step "$M7" 32700 32768
kpre pre_8b_32k_8k "$M8" 32700 8192
if [ -n "${PREFILL_AB_ENV:-}" ]; then
  kpre pre_7b_4k_1step_ab "$M7" 4096 4096 $PREFILL_AB_ENV
  kpre pre_7b_32k_8k_ab "$M7" 32700 8192 $PREFILL_AB_ENV
fi
fi

# ---- CUDA graphs for decode steps: on vs off, same runs; greedy ids compared
if has graphs; then
same() { python3 -c "import sys, json; a=json.load(open(sys.argv[1]))['ids']; b=json.load(open(sys.argv[2]))['ids']; n=next((i for i,(x,y) in enumerate(zip(a,b)) if x!=y), min(len(a),len(b))); print(f'ids equal for the first {n} of {len(a)} tokens')" "$1" "$2"; }
for spec in "Qwen2.5-7B-Instruct 64 256" "Qwen2.5-7B-Instruct 1000 100" "Qwen3-8B 64 256"; do
    set -- $spec
    kgen "g1_$1_$2" "$X/models/$1" $2 $3 steps 1
    kgen "g0_$1_$2" "$X/models/$1" $2 $3 steps 0
    note "graphs on vs off, $1 prompt $2: $(same "$OUT/g1_$1_$2.out" "$OUT/g0_$1_$2.out")"
done
kgen "ops_short_7b" "$X/models/Qwen2.5-7B-Instruct" 64 32 1
grep -A16 'decode  op' "$OUT/ops_short_7b.err" >>"$S"
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

# ---- keel serve, longer: the issue's 1000-prompt run, a concurrency sweep, and a per-op
# breakdown of the server's large decode and prefill steps (KEEL_PROFILE=1, separate server)
serve_up() { # log profile
    KEEL_PROFILE=$2 timeout 400 "$X/keel" serve --model "$X/models/Qwen2.5-7B-Instruct" --load-format dummy \
        --device cuda --port 8077 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048 >"$OUT/$1" 2>&1 &
    SP=$!
    local t0=$(date +%s.%N)
    for i in $(seq 1 120); do curl -sf http://127.0.0.1:8077/health >/dev/null 2>&1 && break; sleep 0.25; done
    note "serve ($1) ready after $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s"
}
bench() { # name prompts in out conc
    timeout 150 "$X/keel-bench" --base-url http://127.0.0.1:8077 --num-prompts $2 --input-len $3 \
        --output-len $4 --ignore-eos --max-concurrency $5 --no-progress >"$OUT/bench_$1.txt" 2>&1
    note "-- keel-bench $1: $2 prompts $3/$4 conc $5 (rc $?)"
    grep -E 'Failed|duration|Total Token|Output token thr|Median TTFT|P99 TTFT|Median TPOT|P99 TPOT' "$OUT/bench_$1.txt" | tr -s ' ' | paste -sd';' >>"$S"
}
if has serve_ops; then
serve_up serve_ops.log 1
bench ops 96 1024 128 256
kill $SP; wait $SP 2>/dev/null
grep -A34 'per op' "$OUT/serve_ops.log" >>"$S"
fi
if has full; then
serve_up serve_full.log steps
bench full_1024_256 1000 1024 256 256
for c in 1 16 64 512; do p=$((c * 2)); [ $p -lt 4 ] && p=4; [ $p -gt 512 ] && p=512; bench sweep_c$c $p 1024 128 $c; done
kill $SP; wait $SP 2>/dev/null
grep -E '^\| (decode|prefill) +\|' "$OUT/serve_full.log" | tail -2 >>"$S"
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
