#!/usr/bin/env bash
# Every client error of the API through curl: OpenAI-style bodies ({"error": {message, type,
# param, code}}) with the right status. Also bearer auth (401), limits (413, 405, 404), a prompt
# too long for the context (400 with both numbers) and overload (503 with Retry-After).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/serve.sh

start_server --max-model-len 64 --max-body-bytes 4096 --api-key sk-test-key --max-queue 2 \
  --max-num-seqs 1 --max-num-batched-tokens 64
AUTH=(-H "Authorization: Bearer sk-test-key")

# ---- auth
req GET /v1/models ""
expect_error 401 "" "API key" "no API key: 401"
req GET /v1/models "" -H "Authorization: Bearer sk-test-kez"
expect_error 401 "" "API key" "wrong API key: 401"
req GET /v1/models "" -H "Authorization: Bearer sk-test-key-longer"
expect_error 401 "" "API key" "API key with a matching prefix: 401"
grep -qi '^WWW-Authenticate: Bearer' "$TMP/headers" || fail "401 without WWW-Authenticate"
req GET /v1/models "" "${AUTH[@]}"
expect 200 'b.data[0].id === "keel-default"' "right API key: 200"
req GET /health
expect 200 'b.status === "ok"' "/health needs no key"

C=/v1/completions
H=/v1/chat/completions
# ---- malformed bodies and types
req POST $C '{"prompt": "x", ' "${AUTH[@]}"
expect_error 400 "" "not valid JSON" "malformed JSON"
req POST $C '"just a string"' "${AUTH[@]}"
expect_error 400 "" "must be a JSON object" "JSON that is not an object"
req POST $C '{"prompt": "x", "max_tokens": "ten"}' "${AUTH[@]}"
expect_error 400 max_tokens "must be an integer" "wrong type: max_tokens as a string"
req POST $C '{"prompt": 42}' "${AUTH[@]}"
expect_error 400 prompt "must be a string" "wrong type: prompt as a number"
req POST $C '{"prompt": "x", "stream": "yes"}' "${AUTH[@]}"
expect_error 400 stream "must be a boolean" "wrong type: stream as a string"
req POST $H '{"messages": "hello"}' "${AUTH[@]}"
expect_error 400 messages "must be an array" "wrong type: messages as a string"
req POST $C '{"prompt": "x", "temperature": -1}' "${AUTH[@]}"
expect_error 400 temperature "got -1" "out of range: temperature"
req POST $C '{"prompt": "x", "top_p": 1.5}' "${AUTH[@]}"
expect_error 400 top_p "got 1.5" "out of range: top_p"
req POST $C '{"prompt": "x", "n": 0}' "${AUTH[@]}"
expect_error 400 n "must be in [1, 128]" "out of range: n"
req POST $C '{"prompt": "x", "logprobs": 50}' "${AUTH[@]}"
expect_error 400 logprobs "[0, 20]" "out of range: logprobs"
req POST $C '{"prompt": [1, 99999999]}' "${AUTH[@]}"
expect_error 400 prompt "outside the vocabulary" "token id outside the vocabulary"
req POST $H '{"messages": []}' "${AUTH[@]}"
expect_error 400 messages "must not be empty" "empty messages"
req POST $H '{"messages": [{"role": "user"}]}' "${AUTH[@]}"
expect_error 400 messages "content' is required" "message without content"
req POST $H '{"messages": [{"role": "robot", "content": "x"}]}' "${AUTH[@]}"
expect_error 400 messages "allowed: system" "message with an unknown role"
req POST $C $'{"prompt": "bad \xff\xfe bytes"}' "${AUTH[@]}"
expect_error 400 "" "not valid UTF-8" "invalid UTF-8 in the prompt"
req POST $H $'{"messages": [{"role": "user", "content": "\xc3\x28"}]}' "${AUTH[@]}"
expect_error 400 "" "not valid UTF-8" "invalid UTF-8 in a message"

# ---- model, lengths
req POST $C '{"model": "gpt-4o", "prompt": "x"}' "${AUTH[@]}"
expect_error 404 model "gpt-4o" "unknown model name: 404"
long=$(printf 'word %.0s' $(seq 1 100))
req POST $C "{\"prompt\": \"$long\"}" "${AUTH[@]}"
expect_error 400 prompt "maximum context length is 64 tokens" "prompt too long for max_model_len"
js 'b.error.message' | grep -Eq 'prompt has (9[0-9]|1[0-9][0-9]) tokens' || fail "the message does not give the prompt length: $(js 'b.error.message')"
ok "the too-long message gives the prompt's length"
req POST $H "{\"messages\": [{\"role\": \"user\", \"content\": \"$long\"}]}" "${AUTH[@]}"
expect_error 400 messages "maximum context length is 64 tokens" "chat prompt too long for max_model_len"
req POST $C '{"prompt": "short", "max_tokens": 100}' "${AUTH[@]}"
expect_error 400 prompt "for the completion" "prompt plus max_tokens beyond max_model_len"

# ---- HTTP-level limits and routes
big=$(head -c 5000 /dev/zero | tr '\0' 'a')
req POST $C "{\"prompt\": \"$big\"}" "${AUTH[@]}"
expect_error 413 "" "max_body_bytes (4096)" "body over max_body_bytes: 413"
req GET /v1/nothing-here "" "${AUTH[@]}"
expect_error 404 "" "no route" "unknown path: 404"
req GET $C "" "${AUTH[@]}"
expect_error 405 "" "use POST" "GET on a POST endpoint: 405"
grep -qi '^Allow: POST' "$TMP/headers" || fail "405 without Allow"

# ---- overload: one sequence at a time, two may wait; the rest get 503 + Retry-After.
cpids=()
for i in $(seq 1 10); do
  curl -s -m 60 -o "$TMP/ov_body_$i" -D "$TMP/ov_head_$i" -w '%{http_code}\n' "${AUTH[@]}" \
    -H 'Content-Type: application/json' "http://127.0.0.1:$PORT$C" \
    -d '{"prompt": "load", "max_tokens": 40, "ignore_eos": true}' > "$TMP/ov_status_$i" &
  cpids+=($!)
done
wait "${cpids[@]}"
n200=$(cat "$TMP"/ov_status_* | grep -c '^200$' || true)
n503=$(cat "$TMP"/ov_status_* | grep -c '^503$' || true)
[ "$n200" -ge 1 ] && [ "$n503" -ge 1 ] && [ $((n200 + n503)) -eq 10 ] ||
  fail "overload: $n200 x 200 and $n503 x 503 of 10 (want both, nothing else)"
for i in $(seq 1 10); do
  if grep -q '^503$' "$TMP/ov_status_$i"; then
    grep -qi '^Retry-After: ' "$TMP/ov_head_$i" || fail "503 without Retry-After"
    grep -q '"code":503' "$TMP/ov_body_$i" || fail "503 without an OpenAI-style error body"
  fi
done
ok "overload: $n200 served, $n503 refused with 503 + Retry-After"

req GET /metrics
expect 200 '/keel_http_responses_total\{code="4xx"\} [1-9]/.test(t) && /keel_http_responses_total\{code="5xx"\} [1-9]/.test(t)' "errors are counted in /metrics"
stop_server TERM
[ "$STOP_RC" = 0 ] || fail "exit $STOP_RC after SIGTERM"
echo "$N_OK checks passed"
