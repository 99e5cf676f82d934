#!/usr/bin/env bash
# The integrator's batched GPU check of a session (run from the repo root on the GPU machine, the
# binaries built here carried in $X): GPU_PARTS picks the parts.
#   tests   build/tests/gpu (whole table)          graphs  decode step per bucket, eager vs graph
#   play    kernel playgrounds (sample, attention, gemm)
#   perf    scripts/perf_run.sh PERF_PARTS ($PERF_PARTS, default "peaks keel serve")
#   ab      perf_run.sh's keel part again with AB_ENV set (A/B of switchable kernels)
#   fuzz    FUZZ_SPEC ("tokenizer:8") fork campaigns for FUZZ_S seconds, in the background
# Everything lands in $OUT; summary.txt last.
set -u
X=${X:-.xfer-final}
# The device tool re-syncs the tree at each call: run from a private copy.
mkdir -p /tmp/kf && cp -r "$X"/. /tmp/kf/ && X=/tmp/kf
PARTS=${GPU_PARTS:-tests graphs play perf}
S=$OUT/summary.txt; : >"$S"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
note() { echo "$*" | tee -a "$S"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$S"
export NCCL_NVLS_ENABLE=0

if has fuzz; then
  for spec in ${FUZZ_SPEC:-tokenizer:8}; do
    n=${spec%%:*}; j=${spec##*:}; mkdir -p /tmp/fz-$n
    KEEL_FUZZ_TOKENIZER="$X" nice -n 19 "$X/fuzz/fuzz_$n" -fork="$j" -max_total_time="${FUZZ_S:-500}" \
      -max_len=4096 -timeout=10 -rss_limit_mb=4096 -artifact_prefix=/tmp/fz-$n- /tmp/fz-$n "$X/corpus/$n" \
      >/tmp/fz-$n.log 2>&1 &
    note "fuzz_$n fork=$j for ${FUZZ_S:-500}s"
  done
fi
if has tests; then
  timeout 420 "$X/gpu" >"$OUT/test-gpu.log" 2>&1; note "test-gpu rc=$?"
  grep -E 'passed, [0-9]+ failed|rows, [0-9]+ failed|FAIL|fail' "$OUT/test-gpu.log" | head -40 | tee -a "$S"
fi
if has graphs; then
  KEEL_GRAPH_TIMING="$X/models/Qwen2.5-7B-Instruct" timeout 300 "$X/gpu" gpu_graphs_timing >"$OUT/graphs-timing.log" 2>&1
  note "graphs timing rc=$?"; grep -vE '^\s*$' "$OUT/graphs-timing.log" | tail -40 >>"$S"
fi
if has play; then
  for p in ${PLAYS:-sample attention gemm}; do [ -x "$X/play/$p" ] || continue
    timeout 120 "$X/play/$p" >"$OUT/play-$p.log" 2>&1; note "play $p rc=$?"; done
  grep -vE '^\s*$' "$OUT/play-sample.log" 2>/dev/null | head -30 >>"$S"
fi
if has ab; then
  # The same decode/prefill runs with AB_ENV set (e.g. the newest kernels switched off), for A/B.
  env ${AB_ENV:-} X=$X PERF_PARTS=keel OUT=$OUT/ab bash scripts/perf_run.sh >/dev/null 2>&1
  note "== A/B baseline (${AB_ENV:-no env})"; grep -E '^--|^\| (decode|prefill) ' $OUT/ab/summary.txt >>"$S"
  (cd $OUT && tar czf ab.tgz ab && rm -rf ab)
fi
if has perf; then
  X=$X PERF_PARTS="${PERF_PARTS:-peaks keel serve}" OUT=$OUT/perf bash scripts/perf_run.sh >/dev/null 2>&1
  note "== perf (${PERF_PARTS:-peaks keel serve})"; cat $OUT/perf/summary.txt >>"$S"
  (cd $OUT && tar czf perf.tgz perf && rm -rf perf)
fi
if has fuzz; then
  wait
  for spec in ${FUZZ_SPEC:-tokenizer:8}; do n=${spec%%:*}
    note "fuzz_$n: $(grep -E '^#[0-9]+' /tmp/fz-$n.log | tail -1 | cut -c1-150); $(grep -cE 'ERROR|runtime error' /tmp/fz-$n.log) error lines; $(ls /tmp | grep -c "^fz-$n-") artifacts; $(tail -1 /tmp/fz-$n.log)"
  done
fi
cat "$S"
