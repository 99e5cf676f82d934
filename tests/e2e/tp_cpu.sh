#!/usr/bin/env bash
# Tensor parallelism end to end on the CPU backend (ranks are threads): `keel serve --devices
# 0,1` answers greedy completions exactly as one rank does (same text, logprobs within bf16
# rounding), reports tensor_parallel_size 2 in /v1/memory, and --tensor-parallel-size 4 on a
# model with 2 KV heads is refused at start-up with the reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/serve.sh

BODY='{"prompt": ["The capital of France is", "Once upon a time"], "max_tokens": 12, "temperature": 0, "ignore_eos": true, "logprobs": 3}'

start_server --max-model-len 512
req POST /v1/completions "$BODY"
expect 200 'b.choices.length === 2' "TP=1 greedy completions"
cp "$TMP/body" "$TMP/tp1.json"
stop_server

start_server --max-model-len 512 --devices 0,1
req GET /v1/memory
expect 200 'JSON.stringify(b).includes("\"tensor_parallel_size\":2")' "/v1/memory shows the TP=2 plan"
req POST /v1/completions "$BODY"
expect 200 'b.choices.length === 2' "TP=2 greedy completions"
cp "$TMP/body" "$TMP/tp2.json"
stop_server

node -e '
const fs = require("fs");
const a = JSON.parse(fs.readFileSync(process.argv[1])), b = JSON.parse(fs.readFileSync(process.argv[2]));
let worst = 0;
for (let i = 0; i < 2; i++) {
  const x = a.choices[i], y = b.choices[i];
  if (x.text !== y.text) { console.error("choice " + i + ": TP=1 " + JSON.stringify(x.text) + " TP=2 " + JSON.stringify(y.text)); process.exit(1); }
  x.logprobs.token_logprobs.forEach((v, k) => { worst = Math.max(worst, Math.abs(v - y.logprobs.token_logprobs[k])); });
}
if (worst > 0.15) { console.error("logprobs differ by " + worst); process.exit(1); }
console.log("  TP=2 text equals TP=1, max |dlogprob| " + worst.toFixed(4));
' "$TMP/tp1.json" "$TMP/tp2.json" || fail "TP=2 does not answer as TP=1"
ok "TP=2 greedy text equals TP=1, logprobs within 0.15"

set +e
"$KEEL" serve --model "$MODEL" --load-format dummy --device cpu --port 0 --tensor-parallel-size 4 \
    >"$TMP/tp4.log" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "--tensor-parallel-size 4 exited $rc, want 2: $(tail -3 "$TMP/tp4.log")"
grep -q "num_key_value_heads (2)" "$TMP/tp4.log" || fail "refusal does not name the KV heads: $(tail -3 "$TMP/tp4.log")"
ok "--tensor-parallel-size 4 with 2 KV heads is refused (exit 2), naming num_key_value_heads"

echo "$N_OK checks passed"
