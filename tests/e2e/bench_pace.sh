#!/usr/bin/env bash
# keel-bench against a server whose timing is known (tests/e2e/pace_server.mjs: first token
# after FIRST ms, then one every ITL ms): the reported TTFT, TPOT, ITL, E2EL and throughputs
# must match that timing within 15%, the token counts must equal the server's usage, the
# concurrency limit must hold, connections must be reused, and failures (503s, dropped
# connections, timeouts, no server) must be counted with their reasons.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${KEEL_BUILD:-build}
bench=$build/keel-bench
[ -x "$bench" ] || { echo "FAIL: $bench is not built"; exit 1; }
command -v node >/dev/null || { echo "FAIL: node is needed for the pace server"; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a pace server with the given options; sets $port.
start_pace() {
  local out="$tmp/pace.${#pids[@]}.out"
  : >"$out" # the background job creates it only once it runs
  node tests/e2e/pace_server.mjs serve "$@" >"$out" 2>&1 &
  pids+=($!)
  port=""
  for _ in $(seq 100); do
    port=$(awk '/^listening/{print $2}' "$out")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  echo "FAIL: the pace server did not start"; cat "$out"; exit 1
}

# Runs the checks in JavaScript on a result file: check FILE 'js expression returning errors'.
check() {
  local file=$1 name=$2 js=$3
  node - "$file" "$name" <<EOF
const fs = require('fs');
const r = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const name = process.argv[3];
const errors = [];
const near = (what, got, want, tol = 0.15) => {
  const ok = Math.abs(got - want) <= tol * Math.abs(want);
  console.log(\`  \${name}: \${what} = \${Number(got).toFixed(3)} (want \${want} +-\${tol * 100}%) \${ok ? 'ok' : 'FAIL'}\`);
  if (!ok) errors.push(what);
};
const eq = (what, got, want) => {
  const ok = JSON.stringify(got) === JSON.stringify(want);
  console.log(\`  \${name}: \${what} = \${JSON.stringify(got)} (want \${JSON.stringify(want)}) \${ok ? 'ok' : 'FAIL'}\`);
  if (!ok) errors.push(what);
};
$js
if (errors.length) { console.log(\`FAIL \${name}: \${errors.join(', ')}\`); process.exit(1); }
EOF
}

# Gaps large enough that scheduling noise on a busy 2-core CI machine stays well inside 15%.
FIRST=300
ITL=30
start_pace --first-ms $FIRST --itl-ms $ITL
url=http://127.0.0.1:$port

# ---- 1. completions, token-id prompts, 16 requests 4 at a time, 12 tokens each.
"$bench" --base-url "$url" --num-prompts 16 --max-concurrency 4 --input-len 32 --output-len 12 \
  --ignore-eos --json "$tmp/a.json" --no-progress >"$tmp/a.txt"
for line in "============ Serving Benchmark Result ============" \
            "Successful requests:                     16        " \
            "Failed requests:                         0         " \
            "Maximum request concurrency:             4         " \
            "Total input tokens:                      512       " \
            "Total generated tokens:                  192       " \
            "Peak concurrent requests:                4.00      " \
            "-----Time per Output Token (excl. 1st token)------" \
            "=================================================="; do
  grep -qxF -- "$line" "$tmp/a.txt" || { echo "FAIL: no line '$line' in:"; cat "$tmp/a.txt"; exit 1; }
done
node -e "fetch('$url/stats').then(r => r.json()).then(s => console.log(JSON.stringify(s)))" >"$tmp/stats.json"
e2el=$((FIRST + 11 * ITL))
check "$tmp/a.json" completions "
eq('completed', r.completed, 16); eq('failed', r.failed, 0);
eq('model asked from /v1/models', r.model_id, 'pace-model');
eq('total_input_tokens (usage)', r.total_input_tokens, 512);
eq('total_output_tokens (usage)', r.total_output_tokens, 192);
eq('output_lens', [...new Set(r.output_lens)], [12]);
eq('ITL samples per request', [...new Set(r.itls.map(x => x.length))], [11]);
near('median_ttft_ms', r.median_ttft_ms, $FIRST);
near('median_itl_ms', r.median_itl_ms, $ITL);
near('mean_tpot_ms', r.mean_tpot_ms, $ITL);
near('median_e2el_ms', r.median_e2el_ms, $e2el);
near('duration (4 waves)', r.duration, 4 * $e2el / 1000);
near('request_throughput', r.request_throughput, 16 / (4 * $e2el / 1000));
near('output_throughput', r.output_throughput, 192 / (4 * $e2el / 1000));
eq('max_concurrent_requests', r.max_concurrent_requests, 4);
const s = JSON.parse(fs.readFileSync('$tmp/stats.json', 'utf8'));
eq('server saw at most 4 in flight', s.peak_in_flight <= 4, true);
// 4 streams + the model list + this stats request: keep-alive reused the rest.
eq('connections reused (<= 6 for 17 requests)', s.connections <= 6, true);
"

# ---- 2. chat: a role-only chunk comes at once and must not start the first-token clock.
"$bench" --base-url "$url/v1" --endpoint chat --model pace-model --num-prompts 8 \
  --input-len 32 --output-len 8 --json "$tmp/b.json" --no-progress >"$tmp/b.txt"
check "$tmp/b.json" chat "
eq('completed', r.completed, 8); eq('endpoint', r.endpoint, '/v1/chat/completions');
eq('total_input_tokens (32 words each)', r.total_input_tokens, 256);
eq('total_output_tokens', r.total_output_tokens, 64);
near('median_ttft_ms', r.median_ttft_ms, $FIRST);
near('mean_tpot_ms', r.mean_tpot_ms, $ITL);
near('median_e2el_ms', r.median_e2el_ms, $FIRST + 7 * $ITL);
eq('max_concurrent_requests', r.max_concurrent_requests, 8);
"

# ---- 2b. a JSON Lines prompt file: each prompt's own output length, words as input tokens.
printf '%s\n' '{"prompt": "one two three", "output_len": 2}' '' \
  '{"prompt": "four five", "max_tokens": 4}' >"$tmp/p.jsonl"
"$bench" --base-url "$url" --model pace-model --dataset "$tmp/p.jsonl" --num-prompts 6 \
  --json "$tmp/p.json" --no-progress >"$tmp/p.txt"
check "$tmp/p.json" jsonl "
eq('completed', r.completed, 6);
eq('output_lens', [...r.output_lens].sort(), [2, 2, 2, 4, 4, 4]);
eq('total_input_tokens', r.total_input_tokens, 15);
"

# ---- 3. Poisson arrivals at 20 req/s: the last of 20 requests goes out at 1.0 s.
"$bench" --base-url "$url" --model pace-model --num-prompts 20 --request-rate 20 --seed 5 \
  --input-len 8 --output-len 3 --json "$tmp/c.json" --no-progress >"$tmp/c.txt"
grep -qxF "Request rate configured (RPS):           20.00     " "$tmp/c.txt" ||
  { echo "FAIL: no rate line"; cat "$tmp/c.txt"; exit 1; }
check "$tmp/c.json" poisson "
eq('completed', r.completed, 20);
near('last start time', Math.max(...r.start_times), 1.0, 0.1);
eq('start times spread out', new Set(r.start_times.map(t => Math.round(t * 10))).size >= 5, true);
near('duration', r.duration, 1.0 + ($FIRST + 2 * $ITL) / 1000);
"

# ---- 4. a sweep over concurrency 1, 2, 4 writes the CSV and the SVG.
"$bench" --base-url "$url" --model pace-model --num-prompts 8 --input-len 8 --output-len 4 \
  --sweep 1,2,4 --sweep-csv "$tmp/s.csv" --sweep-svg "$tmp/s.svg" --json "$tmp/s.json" \
  --no-progress >"$tmp/s.txt"
[ "$(grep -c "Serving Benchmark Result" "$tmp/s.txt")" -eq 3 ] || { echo "FAIL: 3 blocks"; exit 1; }
[ "$(wc -l <"$tmp/s.csv")" -eq 4 ] || { echo "FAIL: CSV rows"; cat "$tmp/s.csv"; exit 1; }
grep -q "<svg" "$tmp/s.svg" && [ "$(grep -c "<circle" "$tmp/s.svg")" -eq 6 ] ||
  { echo "FAIL: SVG"; exit 1; }
check "$tmp/s.json" sweep "
eq('three runs', r.length, 3);
eq('concurrencies', r.map(x => x.max_concurrency), [1, 2, 4]);
const e = ($FIRST + 3 * $ITL) / 1000;
r.forEach((x, i) => near('c=' + x.max_concurrency + ' request_throughput', x.request_throughput, x.max_concurrency / e));
"
echo "  sweep CSV: $(head -c 120 "$tmp/s.csv")..."

# ---- 4b. Ctrl-C: the run stops, what finished is still reported and saved, exit status 130.
"$bench" --base-url "$url" --model pace-model --num-prompts 20 --max-concurrency 2 --input-len 8 \
  --output-len 12 --json "$tmp/i.json" --no-progress >"$tmp/i.txt" 2>&1 &
bench_pid=$!
sleep 1.5
kill -INT "$bench_pid"
rc=0
wait "$bench_pid" || rc=$?
[ $rc -eq 130 ] || { echo "FAIL: interrupted run exited $rc, want 130"; cat "$tmp/i.txt"; exit 1; }
check "$tmp/i.json" interrupt "
eq('some finished', r.completed >= 1 && r.completed <= 4, true);
eq('the rest failed', r.failed, 20 - r.completed);
eq('reasons', [...new Set(r.errors.filter(Boolean))].sort(), ['interrupted', 'not sent: interrupted']);
"

# ---- 5. failures: every 4th request gets a 503, every 5th is cut after two tokens.
# The server wants an API key, so a run without it is refused first (every request a 401).
start_pace --first-ms 20 --itl-ms 10 --fail-every 4 --drop-every 5 --api-key sesame
rc=0
"$bench" --base-url "http://127.0.0.1:$port" --model pace-model --num-prompts 3 --input-len 8 \
  --output-len 5 --json "$tmp/k.json" --no-progress >"$tmp/k.txt" || rc=$?
[ $rc -eq 1 ] || { echo "FAIL: keyless run exited $rc, want 1"; exit 1; }
check "$tmp/k.json" keyless "eq('reasons', [...new Set(r.errors)], ['HTTP 401: pace server: bad api key']);"
"$bench" --base-url "http://127.0.0.1:$port" --api-key sesame --num-prompts 16 \
  --max-concurrency 2 --input-len 8 --output-len 5 --json "$tmp/d.json" --no-progress >"$tmp/d.txt"
grep -q "^Error 0: " "$tmp/d.txt" || { echo "FAIL: no failure lines"; cat "$tmp/d.txt"; exit 1; }
check "$tmp/d.json" failures "
eq('model listed with the key', r.model_id, 'pace-model');
eq('completed', r.completed, 9); eq('failed', r.failed, 7);
eq('503 reasons', r.errors.filter(e => e === 'HTTP 503: pace server: overloaded').length, 4);
eq('cut-connection reasons', r.errors.filter(e => e === 'connection closed by the server after 2 token chunks').length, 3);
if (r.failed !== 7) console.log(r.errors);
eq('total_output_tokens (successes only)', r.total_output_tokens, 45);
"

# ---- 6. a server slower than --timeout: every request fails, exit status 1.
start_pace --first-ms 5000 --itl-ms 10
rc=0
"$bench" --base-url "http://127.0.0.1:$port" --model pace-model --num-prompts 3 --input-len 8 \
  --output-len 2 --timeout 0.3 --json "$tmp/e.json" --no-progress >"$tmp/e.txt" || rc=$?
[ $rc -eq 1 ] || { echo "FAIL: timeout run exited $rc, want 1"; exit 1; }
check "$tmp/e.json" timeout "
eq('failed', r.failed, 3);
eq('reason', [...new Set(r.errors)], ['timed out after 0.3 s']);
near('duration', r.duration, 0.3, 0.5);
"

# ---- 7. no server at all (options spelled --name=value too), and bad options.
rc=0
"$bench" --base-url=http://127.0.0.1:1 --model=m --num-prompts 2 --input-len=4 --output-len 2 \
  --no-progress >"$tmp/f.txt" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "connect: connection refused (2 requests)" "$tmp/f.txt" ||
  { echo "FAIL: no-server run (rc $rc)"; cat "$tmp/f.txt"; exit 1; }
for bad in "--request-rate 0" "--burstiness -1" "--range-ratio 1" "--endpoint embeddings" \
           "--base-url https://x" "--num-prompts x" "--bogus 1" "--dataset /nonexistent.jsonl"; do
  rc=0
  # shellcheck disable=SC2086
  "$bench" --model m $bad >"$tmp/g.txt" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { echo "FAIL: '$bad' exited $rc, want 2"; cat "$tmp/g.txt"; exit 1; }
done
echo "bench_pace: all checks passed"
