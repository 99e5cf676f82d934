#!/usr/bin/env bash
# A soak at saturation on the GPU machine (issue: "a 30-minute soak at saturation with resident
# memory and device memory flat and p99 latency steady"), with the long fuzz campaigns on the
# machine's spare cores beside it (niced, so the server keeps priority).
#
# keel serve (Qwen2.5-7B shapes, --load-format dummy, gpu_memory_utilization 0.9) is driven by
# back-to-back keel-bench rounds of 1000 prompts (512 +- 25% in / 256 out, ignore_eos, 256 in
# flight, a new seed each round) for SOAK_S seconds. Every 10 s a sample records keel's resident
# memory (VmRSS), its device memory (nvidia-smi, per process), KV usage and the queue. Each round
# records its throughput and TTFT/TPOT/ITL/E2EL percentiles. At the end keel gets SIGTERM and must
# exit 0; summary.txt holds the verdict.
#
# Long-running: start it detached (setsid) and poll for $W/done; everything lands in $W.
#   X=.xfer-soak SOAK_S=1800 FUZZ="tokenizer:8 http:4 api:2" setsid bash scripts/soak.sh &
# The load runs at least SOAK_S seconds: rounds start until SOAK_S has passed (the last one ends
# up to one round, ~80 s, later).
set -u
X=${X:-.xfer-soak}
W=${W:-/tmp/soak}
SOAK_S=${SOAK_S:-1800}
FUZZ=${FUZZ:-}
PORT=8300
MODEL_CFG=${MODEL_CFG:-tests/data/configs/Qwen2.5-7B-Instruct/config.json}
PROMPTS=${PROMPTS:-1000}; IN_LEN=${IN_LEN:-512}; OUT_LEN=${OUT_LEN:-256}; UTIL=${UTIL:-0.9}
mkdir -p "$W"
S="$W/summary.txt"; : >"$S"
# The device tool re-syncs the working tree at every call and removes carried folders that a call
# does not name: the first soak lost its binaries that way after ten minutes (exit 127 for every
# new keel-bench round and fuzz job). Run from a private copy instead.
mkdir -p "$W/bin"; cp -r "$X"/. "$W/bin/"; X="$W/bin"
note() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$S"; }
export NCCL_NVLS_ENABLE=0

# ---- fuzz campaigns (fork mode: the total execution count is libFuzzer's first column)
FPIDS=()
for spec in $FUZZ; do
  name=${spec%%:*}; jobs=${spec##*:}
  mkdir -p "$W/fuzz-$name"
  KEEL_FUZZ_TOKENIZER="$X" nice -n 19 "$X/fuzz/fuzz_$name" -fork="$jobs" -max_total_time="$SOAK_S" \
    -max_len=4096 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$W/fuzz-$name-" "$W/fuzz-$name" "$X/corpus/$name" \
    >"$W/fuzz-$name.log" 2>&1 &
  FPIDS+=($!)
  note "fuzz_$name: fork=$jobs for ${SOAK_S}s (pid $!)"
done

# ---- the server
M=/tmp/soak-model; mkdir -p $M
cp "$MODEL_CFG" "$X/tokenizer.json" "$X/tokenizer_config.json" $M/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$S"
"$X/keel" serve --model $M --load-format dummy --port $PORT --gpu-memory-utilization "$UTIL" \
    --max-model-len 4096 --max-queue 4096 >"$W/serve.log" 2>&1 &
SP=$!
for _ in $(seq 240); do curl -sf localhost:$PORT/health >/dev/null && break; sleep 0.5; done
note "keel serve pid $SP healthy"

# ---- the sampler: every 10 s, one CSV row
metric() { grep -E "^$1(\{[^}]*\})? " "$W/m.txt" | head -1 | awk '{print $NF}'; }
(
  echo "t_s,rss_kib,dev_mib,kv_usage,running,waiting,preemptions" >"$W/samples.csv"
  t0=$(date +%s)
  while kill -0 $SP 2>/dev/null; do
    rss=$(awk '/^VmRSS/{print $2}' /proc/$SP/status 2>/dev/null)
    dev=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null |
          awk -F', ' -v p=$SP '$1==p{print $2}')
    # In a container the PIDs nvidia-smi reports may be another namespace's: the device's total.
    [ -n "$dev" ] || dev=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
    curl -s -m 5 localhost:$PORT/metrics >"$W/m.txt"
    echo "$(( $(date +%s) - t0 )),$rss,$dev,$(metric keel_kv_cache_usage_perc),$(metric keel_num_requests_running),$(metric keel_num_requests_waiting),$(metric keel_num_preemptions_total)" >>"$W/samples.csv"
    sleep 10
  done
) &
MON=$!

# ---- the load: rounds until SOAK_S has passed
echo "round,start_s,duration_s,completed,failed,total_tok_s,p50_ttft_ms,p99_ttft_ms,p50_tpot_ms,p99_tpot_ms,p99_itl_ms,p99_e2el_ms" >"$W/rounds.csv"
t0=$(date +%s); r=0
while :; do
  [ $(( $(date +%s) - t0 )) -ge "$SOAK_S" ] && break
  r=$((r + 1)); rs=$(date +%s)
  timeout 300 "$X/keel-bench" --base-url http://127.0.0.1:$PORT --num-prompts "$PROMPTS" \
      --max-concurrency 256 --request-rate inf --input-len "$IN_LEN" --range-ratio 0.25 --output-len "$OUT_LEN" \
      --ignore-eos --seed $r --json "$W/round.json" --no-progress >"$W/round.txt" 2>&1
  rc=$?
  python3 - "$W/round.json" $r $((rs - t0)) $(( $(date +%s) - rs )) $rc >>"$W/rounds.csv" <<'EOF'
import json, sys
p, r, st, d, rc = sys.argv[1:]
try:
    j = json.load(open(p))
except Exception:
    print(f"{r},{st},{d},0,-1,0,0,0,0,0,0,0  # keel-bench exit {rc}, no json"); sys.exit()
g = lambda k: j.get(k, 0) or 0
print(f"{r},{st},{d},{g('completed')},{g('failed')},{g('total_token_throughput'):.0f},"
      f"{g('median_ttft_ms'):.1f},{g('p99_ttft_ms'):.1f},{g('median_tpot_ms'):.2f},{g('p99_tpot_ms'):.2f},"
      f"{g('p99_itl_ms'):.2f},{g('p99_e2el_ms'):.1f}")
EOF
  cp "$W/rounds.csv" "$W/rounds.partial.csv"
done
note "load done: $r rounds in $(( $(date +%s) - t0 )) s"
sleep 2
curl -s localhost:$PORT/metrics >"$W/metrics-end.txt"
curl -s localhost:$PORT/v1/memory >"$W/memory-end.json"
kill -TERM $SP; wait $SP; note "keel serve exit $? (want 0)"
kill $MON 2>/dev/null
for p in "${FPIDS[@]}"; do wait "$p"; done
for spec in $FUZZ; do
  name=${spec%%:*}
  note "fuzz_$name: $(grep -E '^#[0-9]+' "$W/fuzz-$name.log" | tail -1 | cut -c1-160)"
  note "fuzz_$name: $(grep -cE 'ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error' "$W/fuzz-$name.log") error lines; artifacts: $(ls "$W" | grep -c "^fuzz-$name-")"
done
python3 - "$W" >>"$S" <<'EOF'
import csv, sys, statistics as st
w = sys.argv[1]
rows = [r for r in csv.DictReader(open(f"{w}/rounds.csv")) if not r["round"].startswith("#")]
smp = [r for r in csv.DictReader(open(f"{w}/samples.csv")) if r["rss_kib"] and r["dev_mib"]]
f = lambda rs, k: [float(r[k]) for r in rs if r[k] not in ("", None)]
print(f"rounds {len(rows)}, requests ok {sum(int(r['completed']) for r in rows)}, failed {sum(int(r['failed']) for r in rows)}")
for k in ("total_tok_s", "p99_ttft_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms"):
    v = f(rows, k)
    if v: print(f"{k}: first {v[0]:.1f} last {v[-1]:.1f} min {min(v):.1f} median {st.median(v):.1f} max {max(v):.1f}")
rss = f(smp, "rss_kib"); dev = f(smp, "dev_mib")
if rss:
    warm = rss[len(rss)//10:] or rss
    print(f"RSS KiB: after 10% {warm[0]:.0f} last {rss[-1]:.0f} min {min(warm):.0f} max {max(warm):.0f} (n={len(rss)})")
if dev: print(f"device MiB (keel): min {min(dev):.0f} max {max(dev):.0f}")
EOF
touch "$W/done"
