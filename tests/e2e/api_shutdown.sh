#!/usr/bin/env bash
# Start-up and shutdown of `keel serve`: --help, config-file errors that name the key, the
# example config, a port already in use (exit 2), and SIGTERM/SIGINT draining: in-flight
# requests finish within shutdown_grace_s or are cancelled, new connections are refused, exit 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/serve.sh

# ---- --help and configuration errors
"$KEEL" serve --help > "$TMP/help" || fail "--help exited non-zero"
for flag in --model --config --host --port --api-key --gpu-memory-utilization --device --devices \
    --max-model-len --max-num-seqs --max-num-batched-tokens --block-size --num-kv-blocks \
    --served-model-name --load-format --seed --cpu-memory --max-body-bytes --max-header-bytes \
    --max-queue --idle-timeout-s --header-timeout-s --request-timeout-s --shutdown-grace-s \
    --max-connections --cors-allow-origin --log-requests --log-level; do
  grep -q -- "$flag " "$TMP/help" || fail "--help does not list $flag"
done
grep -q 'default: 8000' "$TMP/help" || fail "--help does not show defaults"
ok "--help lists every setting with its default"

echo '{"port": 8000, "max_modle_len": 5}' > "$TMP/bad.json"
set +e
"$KEEL" serve --config "$TMP/bad.json" > "$TMP/out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "max_modle_len" "$TMP/out" || fail "unknown config key: rc $rc, $(cat "$TMP/out")"
ok "unknown key in the config file: exit 2 naming it"
echo '{"limits": {"max_queue": "many"}}' > "$TMP/bad.json"
set +e
"$KEEL" serve --config "$TMP/bad.json" > "$TMP/out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "max_queue" "$TMP/out" || fail "wrong type in config: rc $rc, $(cat "$TMP/out")"
ok "wrong type in the config file: exit 2 naming the key"
set +e
"$KEEL" serve --port 99999 > "$TMP/out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "port" "$TMP/out" || fail "bad --port: rc $rc"
ok "out-of-range flag: exit 2"

# ---- the example config starts a server; flags override it
start_server --config keel.example.json --served-model-name from-flag --request-timeout-s 2
req GET /v1/models
expect 200 'b.data[0].id === "from-flag"' "keel.example.json serves, a flag overrides it"

# ---- request_timeout_s: a request that runs too long is cancelled with 504
req POST /v1/completions '{"prompt": "forever", "max_tokens": 4000, "ignore_eos": true}'
expect_error 504 "" "request_timeout_s" "a request past request_timeout_s gets 504"

# ---- a port in use
set +e
"$KEEL" serve --model "$MODEL" --load-format dummy --device cpu --port "$PORT" > "$TMP/out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "address already in use" "$TMP/out" || fail "port in use: rc $rc, $(tail -n 3 "$TMP/out")"
ok "a port in use: exit 2 with a clear message"

# ---- SIGTERM with a short request in flight: it finishes, then exit 0
curl -sN -m 60 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "drain", "max_tokens": 10, "ignore_eos": true, "stream": true}' > "$TMP/stream1" &
cpid=$!
for _ in $(seq 1 200); do [ -s "$TMP/stream1" ] && break; sleep 0.02; done
stop_server TERM
wait $cpid || true
[ "$STOP_RC" = 0 ] || fail "exit $STOP_RC after SIGTERM"
grep -q '"finish_reason":"length"' "$TMP/stream1" && tail -c 20 "$TMP/stream1" | grep -q 'data: \[DONE\]' ||
  fail "in-flight stream did not finish: $(tail -c 300 "$TMP/stream1")"
ok "SIGTERM: the in-flight request finishes, exit 0"

# ---- SIGINT with a long request and a short grace: it is cancelled, exit 0, new connections refused
start_server --shutdown-grace-s 0.3
curl -sN -m 60 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "cancel", "max_tokens": 3000, "ignore_eos": true, "stream": true}' > "$TMP/stream2" &
cpid=$!
for _ in $(seq 1 200); do [ -s "$TMP/stream2" ] && break; sleep 0.02; done
kill -INT "$PID"
sleep 0.1
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health" || true)
[ "$code" != 200 ] || fail "a new request was served during the drain"
ok "during the drain new connections are refused (got '$code')"
start=$(date +%s.%N)
stop_server INT
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e-s}')
wait $cpid || true
[ "$STOP_RC" = 0 ] || fail "exit $STOP_RC after SIGINT"
grep -q '"finish_reason":"abort"' "$TMP/stream2" && tail -c 20 "$TMP/stream2" | grep -q 'data: \[DONE\]' ||
  fail "the cancelled stream did not end cleanly: $(tail -c 300 "$TMP/stream2")"
ok "SIGINT past the grace period: the request is cancelled (abort, [DONE]), exit 0 after ${secs}s"
echo "$N_OK checks passed"
