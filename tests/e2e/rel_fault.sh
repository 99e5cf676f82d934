#!/usr/bin/env bash
# A sticky device fault at runtime (injected with KEEL_DEBUG_INJECT_FAULT=N: forward step N fails
# with ERR_CUDA_FAULT, see docs/RELIABILITY.md) must fail the requests in flight (500, or an error
# event in a stream), turn /health to 503, and end the process with exit code 1, never keep
# serving on a dead context. Skips when this keel does not honour the variable (nothing fails).
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/rel_serve.sh
KEEL=${KEEL_BUILD:-build}/keel
[ -x "$KEEL" ] || { echo "skip: $KEEL not built"; exit 0; }
rel_have_serve "$KEEL" || { echo "skip: keel serve is not built yet"; exit 0; }

TMP=$(mktemp -d)
trap 'rel_kill_leftover; rm -rf "$TMP"' EXIT
# Step 12: after the first requests have produced some tokens, while every client is in flight.
KEEL_DEBUG_INJECT_FAULT=12 rel_start "$KEEL" "$TMP/server.log"
if ! grep -q KEEL_DEBUG_INJECT_FAULT "$TMP/server.log"; then
  rel_stop TERM 20
  echo "skip: this keel does not honour KEEL_DEBUG_INJECT_FAULT (no fault injection hook yet)"
  exit 0
fi

# /health, polled every 20 ms from now until the server is gone: once it stops saying 200 it
# must never say 200 again (503 while draining, then nothing).
( for _ in $(seq 1 1500); do
    c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$REL_URL/health")
    echo "$c" >>"$TMP/health.codes"
    [ "$c" = 000 ] && break
    sleep 0.02
  done ) &
poller=$!
# Three plain completions and one stream, long enough to be running when step 12 fails.
clients=()
for i in 1 2 3; do
  curl -s -m 30 -o "$TMP/plain$i.json" -w '%{http_code}' "$REL_URL/v1/completions" \
    -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"fault $i\", \"max_tokens\": 400, \"ignore_eos\": true}" >"$TMP/plain$i.code" &
  clients+=($!)
done
curl -s -N -m 30 -o "$TMP/stream.txt" -w '%{http_code}' "$REL_URL/v1/completions" \
  -H 'Content-Type: application/json' \
  -d '{"prompt": "fault stream", "max_tokens": 400, "ignore_eos": true, "stream": true}' >"$TMP/stream.code" &
clients+=($!)
for p in "${clients[@]}"; do wait "$p"; done

n500=0
for i in 1 2 3; do
  code=$(cat "$TMP/plain$i.code")
  echo "plain $i: HTTP $code $(head -c 200 "$TMP/plain$i.json")"
  [ "$code" = 200 ] && rel_fail "a completion in flight at the fault was answered 200"
  if [ "$code" = 500 ]; then
    grep -qi 'fault' "$TMP/plain$i.json" || rel_fail "its 500 does not say what happened"
    n500=$((n500 + 1))
  fi
done
echo "stream: HTTP $(cat "$TMP/stream.code"), last lines: $(tail -c 300 "$TMP/stream.txt" | tr '\n' ' ')"
grep -q '"error"' "$TMP/stream.txt" || rel_fail "the stream in flight did not end with an error event"
grep -q 'data: \[DONE\]' "$TMP/stream.txt" && ! grep -q '"error"' "$TMP/stream.txt" && rel_fail "the stream ended normally"
[ "$n500" -ge 1 ] || rel_fail "no completion in flight got a 500"

# /health: after the fault, never 200 again.
h=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$REL_URL/health")
case "$h" in
  503|000) echo "ok   /health after the fault: $h" ;;
  *) rel_fail "/health answered $h after the fault" ;;
esac
# A new request is refused, never served on the dead context.
c=$(curl -s -m 5 -o "$TMP/after.json" -w '%{http_code}' "$REL_URL/v1/completions" \
  -H 'Content-Type: application/json' -d '{"prompt": "after", "max_tokens": 2}')
case "$c" in
  503|500|000) echo "ok   a new completion after the fault: $c" ;;
  *) rel_fail "a new completion after the fault answered $c: $(cat "$TMP/after.json")" ;;
esac
# And the process ends by itself, non-zero.
for _ in $(seq 1 300); do kill -0 "$REL_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$REL_PID" 2>/dev/null && rel_fail "keel serve still running 30 s after a device fault"
wait "$REL_PID"
rc=$?
wait "$poller"
seq=$(uniq -c "$TMP/health.codes" | awk '{printf "%s x%s, ", $2, $1}')
echo "/health over time: ${seq%, }"
awk 'seen && $1 == 200 {bad = 1} $1 != 200 {seen = 1} END {exit bad}' "$TMP/health.codes" ||
  rel_fail "/health said 200 again after it had stopped"
grep -q '^503$' "$TMP/health.codes" && echo "ok   /health said 503 while the server drained" ||
  echo "note: the server exited before a /health poll saw its 503 (nothing was left to drain)"
[ "$rc" -eq 1 ] || rel_fail "keel serve exited $rc after a device fault, expected 1"
grep -E 'ERROR' "$TMP/server.log" | head -n 3
echo "ok   device fault: $n500/3 completions in flight got 500, the stream an error event, exit $rc"
