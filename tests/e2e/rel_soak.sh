#!/usr/bin/env bash
# Soak: `keel serve` under a steady mixed load (tests/e2e/lib/rel_load.mjs, rounds of N requests)
# for KEEL_REL_SOAK_S seconds, sampling resident memory (and device memory with nvidia-smi) every
# round. Passes when resident memory after the first fifth of the run grows by less than 10% (and
# 64 MiB), device memory does not move, and the last round's p99 is within 2x the first steady
# round's. Off by default (it is long): set KEEL_REL_SOAK_S=1800 on the GPU machine, with
# KEEL_REL_SOAK_FLAGS for the model (default: the tiny CPU model) and KEEL_REL_SOAK_CONNS (64).
#   KEEL_REL_SOAK_S=1800 KEEL_REL_SOAK_FLAGS="--model /models/Qwen3-8B --device cuda" tests/e2e/rel_soak.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/rel_serve.sh
SECS=${KEEL_REL_SOAK_S:-0}
[ "$SECS" -gt 0 ] 2>/dev/null || { echo "skip: soak is off (set KEEL_REL_SOAK_S=1800 to run it)"; exit 0; }
KEEL=${KEEL_BUILD:-build}/keel
[ -x "$KEEL" ] || { echo "skip: $KEEL not built"; exit 0; }
rel_have_serve "$KEEL" || { echo "skip: keel serve is not built yet"; exit 0; }
CONNS=${KEEL_REL_SOAK_CONNS:-64}
ROUND=${KEEL_REL_SOAK_ROUND:-2000}
TMP=$(mktemp -d)
trap 'rel_kill_leftover; rm -rf "$TMP"' EXIT
if [ -n "${KEEL_REL_SOAK_FLAGS:-}" ]; then
  # A real model: replace the helper's defaults (later flags win in keel's parser).
  # shellcheck disable=SC2086
  rel_start "$KEEL" "$TMP/server.log" --max-body-bytes 65536 --load-format auto $KEEL_REL_SOAK_FLAGS
else
  rel_start "$KEEL" "$TMP/server.log" --max-body-bytes 65536
fi
gpu_mem() { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n 1 || echo -; }
echo "round seconds rss_kib gpu_mib req_per_s p50_ms p99_ms" | tee "$TMP/rounds"
end=$(( $(date +%s) + SECS ))
r=0
while [ "$(date +%s)" -lt "$end" ]; do
  r=$((r + 1))
  out=$(node tests/e2e/lib/rel_load.mjs "$REL_PORT" "$ROUND" "$CONNS") || rel_fail "round $r: unexpected answers: $out"
  rss=$(awk '/VmRSS/{print $2}' "/proc/$REL_PID/status")
  line=$(node -e 'const o = JSON.parse(process.argv[1]); console.log(o.seconds, process.argv[2], process.argv[3], o.per_s, o.p50_ms, o.p99_ms)' "$out" "$rss" "$(gpu_mem)")
  echo "$r $line" | tee -a "$TMP/rounds"
done
rel_stop TERM 60
[ "$REL_RC" -eq 0 ] || rel_fail "exit $REL_RC after SIGTERM"
[ "$r" -ge 5 ] || rel_fail "only $r rounds: make KEEL_REL_SOAK_S longer or KEEL_REL_SOAK_ROUND smaller"
awk -v n="$r" 'NR == 1 {next}
  { round = $1; rss[round] = $3; gpu[round] = $4; p99[round] = $7 }
  END {
    base = int(n / 5); if (base < 2) base = 2
    grow = rss[n] - rss[base]
    printf "resident memory: round %d %d KiB -> round %d %d KiB (%+d KiB)\n", base, rss[base], n, rss[n], grow
    printf "device memory: round %d %s MiB -> round %d %s MiB\n", base, gpu[base], n, gpu[n]
    printf "p99: round %d %d ms -> round %d %d ms\n", base, p99[base], n, p99[n]
    bad = 0
    if (grow > rss[base] / 10 && grow > 65536) { print "FAIL: resident memory grew"; bad = 1 }
    if (gpu[base] != "-" && gpu[n] != gpu[base]) { print "FAIL: device memory moved"; bad = 1 }
    if (p99[n] > 2 * p99[base] && p99[n] > 50) { print "FAIL: p99 latency drifted"; bad = 1 }
    exit bad
  }' "$TMP/rounds" || rel_fail "soak drifted (rounds above)"
echo "ok   soak: $r rounds over $SECS s, memory flat, p99 steady, exit 0 after SIGTERM"
