#!/usr/bin/env bash
# The GPU machine's checks that CI cannot run, in one script (run from the repo root there, with
# the binaries built here carried in $X). Parts (GPU_PARTS): tests (make test-gpu's binary),
# hold (another process holds half the memory: keel serve must refuse, exit 3), stress (689
# concurrent prompts on Qwen2.5-7B shapes at gpu_memory_utilization 0.9, 0.5 and the smallest
# value that holds the weights: every request completes, memory stays in budget, preemptions show).
set -u
X=${X:-.xfer-final}
OUT=${OUT:-/tmp/gpu-check}
PARTS=${GPU_PARTS:-tests hold stress}
mkdir -p "$OUT"
S="$OUT/summary.txt"; : >"$S"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
note() { echo "$*" | tee -a "$S"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S"

M=/tmp/qwen25-7b; mkdir -p $M
cp tests/data/configs/Qwen2.5-7B-Instruct/config.json $M/
cp "$X/tokenizer.json" "$X/tokenizer_config.json" $M/

if has tests; then
  note "== make test-gpu (build/tests/gpu)"
  timeout 300 "$X/gpu" >"$OUT/test-gpu.log" 2>&1; note "test-gpu rc=$?"
  grep -E 'passed, [0-9]+ failed|rows, [0-9]+ failed|^FAIL' "$OUT/test-gpu.log" | tee -a "$S"
fi

if has hold; then
  note "== another process holds half the device memory"
  python3 -c "
import torch, time
free, total = torch.cuda.mem_get_info()
x = torch.empty(total // 2, dtype=torch.uint8, device='cuda')
open('/tmp/held', 'w').write(str(total // 2))
time.sleep(90)" &
  hp=$!
  for _ in $(seq 60); do [ -f /tmp/held ] && break; sleep 1; done
  timeout 60 "$X/keel" serve --model $M --load-format dummy --port 8190 >"$OUT/hold.log" 2>&1
  note "keel serve with half the memory held: exit $? (want 3)"
  grep -iE 'does not fit|fix' "$OUT/hold.log" | head -3 | cut -c1-600 | tee -a "$S"
  kill $hp; wait $hp 2>/dev/null; rm -f /tmp/held
fi

smi_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
run_stress() { # util tag timeout
  local util=$1 tag=$2 lim=$3 port=8200
  note "== 689 concurrent prompts (512 in / 64 out, ignore_eos), gpu_memory_utilization $util ($tag)"
  "$X/keel" serve --model $M --load-format dummy --port $port --max-model-len 2048 \
      --gpu-memory-utilization "$util" --max-queue 2048 >"$OUT/serve-$tag.log" 2>&1 &
  local sp=$!
  for _ in $(seq 120); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.5; done
  local base; base=$(smi_used)
  ( peak=0; while kill -0 $sp 2>/dev/null; do u=$(smi_used); [ "$u" -gt "$peak" ] && peak=$u; echo $peak >"$OUT/peak-$tag"; sleep 0.5; done ) &
  local mon=$!
  timeout "$lim" "$X/keel-bench" --base-url http://127.0.0.1:$port --num-prompts 689 \
      --max-concurrency 689 --request-rate inf --input-len 512 --output-len 64 --ignore-eos \
      --json "$OUT/bench-$tag.json" --no-progress >"$OUT/bench-$tag.txt" 2>&1
  note "keel-bench exit $?"
  grep -E 'Successful requests|Failed requests|Benchmark duration|Total Token throughput|Peak concurrent|Median TTFT|Median TPOT' "$OUT/bench-$tag.txt" | tee -a "$S"
  curl -s localhost:$port/metrics >"$OUT/metrics-$tag.txt"
  grep -E '^keel[_:](num_preemptions_total|kv_cache_usage_perc|num_requests_running|num_requests_waiting)' "$OUT/metrics-$tag.txt" | tee -a "$S"
  curl -s localhost:$port/v1/memory >"$OUT/memory-$tag.json"
  kill -TERM $sp; wait $sp; note "serve exit $?"
  kill $mon 2>/dev/null
  local total; total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  note "device memory: peak used $(cat "$OUT/peak-$tag") MiB (all processes), budget $(python3 -c "print(int($util*$total))") MiB of $total MiB"
  grep -E 'KV pool:|budget:' "$OUT/serve-$tag.log" | head -2 | tee -a "$S"
}
if has stress; then
  run_stress 0.9 u090 150
  run_stress 0.5 u050 150
  # The smallest utilization (in steps of 0.01) whose plan holds the weights and one sequence.
  umin=""
  for u in $(seq 0.15 0.01 0.40); do
    "$X/keel" plan --model $M --device 0 --max-model-len 2048 --gpu-memory-utilization "$u" --json >/dev/null 2>&1 && { umin=$u; break; }
  done
  note "smallest utilization that fits: ${umin:-none found}"
  [ -n "$umin" ] && run_stress "$umin" umin 240
fi
note "== done"
