#!/usr/bin/env bash
# Every endpoint of `keel serve` through curl on the CPU backend (tiny default model, dummy
# weights): response shapes as OpenAI/vLLM clients expect, streaming, logprobs, echo, several
# prompts and choices, tokenize/detokenize round trip, metrics (promtool when installed), memory.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/serve.sh

start_server --max-model-len 512

req GET /health
expect 200 'b.status === "ok"' "GET /health is 200 while serving"

req GET /v1/models
expect 200 'b.object === "list" && b.data.length === 1 && b.data[0].id === "keel-default" && b.data[0].object === "model" && b.data[0].max_model_len === 512' "GET /v1/models lists the served model"

# ---- completions
req POST /v1/completions '{"model": "keel-default", "prompt": "The capital of France is", "max_tokens": 5, "ignore_eos": true, "temperature": 0}'
expect 200 'b.object === "text_completion" && b.id.startsWith("cmpl-") && b.model === "keel-default" && b.choices.length === 1 && typeof b.choices[0].text === "string" && b.choices[0].finish_reason === "length" && b.usage.completion_tokens === 5 && b.usage.prompt_tokens === 5 && b.usage.total_tokens === 10' "completion of a string prompt"
first_text=$(js 'b.choices[0].text')
req POST /v1/completions '{"prompt": "The capital of France is", "max_tokens": 5, "ignore_eos": true, "temperature": 0}'
expect 200 "b.choices[0].text === $(node -e 'process.stdout.write(JSON.stringify(process.argv[1]))' "$first_text")" "greedy completion is deterministic (model field optional)"

req POST /v1/completions '{"prompt": ["one", "two three"], "n": 2, "max_tokens": 3, "ignore_eos": true, "seed": 7}'
expect 200 'b.choices.length === 4 && b.choices.map(c => c.index).join() === "0,1,2,3" && b.usage.completion_tokens === 12 && b.usage.prompt_tokens === 3' "list of prompts x n gives prompts*n choices, usage summed"

req POST /v1/completions '{"prompt": [9707, 1879, 11], "max_tokens": 2, "ignore_eos": true}'
expect 200 'b.usage.prompt_tokens === 3 && b.usage.completion_tokens === 2' "prompt as token ids"

req POST /v1/completions '{"prompt": [[9707], [1879, 11]], "max_tokens": 1, "ignore_eos": true}'
expect 200 'b.choices.length === 2 && b.usage.prompt_tokens === 3' "prompt as a list of token id lists"

req POST /v1/completions '{"prompt": "Echo me", "max_tokens": 2, "echo": true, "ignore_eos": true}'
expect 200 'b.choices[0].text.startsWith("Echo me")' "echo puts the prompt in front of the text"

req POST /v1/completions '{"prompt": "Hello", "max_tokens": 4, "logprobs": 2, "ignore_eos": true}'
expect 200 '(l => l.tokens.length === 4 && l.token_logprobs.length === 4 && l.token_logprobs.every(x => x <= 0) && l.top_logprobs.length === 4 && l.top_logprobs.every(t => Object.keys(t).length >= 1 && Object.keys(t).length <= 2) && l.text_offset[0] === 0 && l.tokens.join("") === b.choices[0].text)(b.choices[0].logprobs)' "completion logprobs: tokens, token_logprobs, top_logprobs, text_offset"

req POST /v1/completions '{"prompt": "Hi", "max_tokens": 3, "ignore_eos": true, "some_client_field": [1, 2], "user": "me"}'
expect 200 'b.choices.length === 1' "unknown request fields are ignored"

# Streaming: SSE events, the usage chunk, then [DONE].
curl -sN -m 30 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Stream this", "max_tokens": 6, "stream": true, "ignore_eos": true, "stream_options": {"include_usage": true}}' > "$TMP/body"
expect_stream() {
  node -e '
    const t = require("fs").readFileSync(process.argv[1], "utf8");
    const events = t.split("\n\n").filter(s => s.length).map(s => s.replace(/^data: /, ""));
    if (events[events.length - 1] !== "[DONE]") throw new Error("last event is not [DONE]: " + events.slice(-1));
    const chunks = events.slice(0, -1).map(JSON.parse);
    const usage = chunks[chunks.length - 1];
    const body = chunks.slice(0, -1);
    const cond = eval(process.argv[2]);
    if (!cond) throw new Error("condition failed; events:\n" + events.join("\n"));
  ' "$TMP/body" "$1" || fail "$2"
  ok "$2"
}
expect_stream 'usage.choices.length === 0 && usage.usage.completion_tokens === 6 && body.every(c => c.object === "text_completion") && body[body.length - 1].choices[0].finish_reason === "length" && body.map(c => c.choices[0].text).join("").length > 0' "streamed completion: chunks, finish_reason, usage chunk, [DONE]"

# ---- chat
req POST /v1/chat/completions '{"model": "keel-default", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}], "max_tokens": 4, "ignore_eos": true, "logprobs": true, "top_logprobs": 2}'
expect 200 'b.object === "chat.completion" && b.id.startsWith("chatcmpl-") && b.choices[0].message.role === "assistant" && typeof b.choices[0].message.content === "string" && b.choices[0].logprobs.content.length === 4 && b.choices[0].logprobs.content.every(x => x.top_logprobs.length === 2 && Array.isArray(x.bytes)) && b.usage.completion_tokens === 4 && b.usage.prompt_tokens > 10' "chat completion with logprobs and top_logprobs"

curl -sN -m 30 "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 5, "stream": true, "ignore_eos": true, "stream_options": {"include_usage": true}}' > "$TMP/body"
expect_stream 'body[0].choices[0].delta.role === "assistant" && body.every(c => c.object === "chat.completion.chunk") && body[body.length - 1].choices[0].finish_reason === "length" && usage.usage.completion_tokens === 5' "streamed chat: role first, chunks, finish, usage, [DONE]"

# ---- tokenize / detokenize
req POST /tokenize '{"prompt": "Hello world, keel!"}'
expect 200 'b.count === b.tokens.length && b.count > 2 && b.max_model_len === 512' "POST /tokenize a prompt"
ids=$(js 'JSON.stringify(b.tokens)')
req POST /detokenize "{\"tokens\": $ids}"
expect 200 'b.prompt === "Hello world, keel!"' "POST /detokenize round-trips /tokenize"
req POST /tokenize '{"messages": [{"role": "user", "content": "Hello world, keel!"}]}'
expect 200 "b.count > ${#ids} / 10 && b.tokens.length === b.count" "POST /tokenize messages through the chat template"
req POST /detokenize '{"tokens": [1, -5]}'
expect_error 400 tokens "tokens[1]" "POST /detokenize rejects a negative id"

# ---- metrics and memory
req GET /metrics
expect 200 't.includes("# TYPE keel_num_requests_running gauge") && /keel_prompt_tokens_total\{[^}]*\} [1-9]/.test(t) && /keel_generation_tokens_total\{[^}]*\} [1-9]/.test(t) && /keel_time_to_first_token_seconds_count\{[^}]*\} [1-9]/.test(t) && t.includes("keel_e2e_request_latency_seconds_bucket") && t.includes("keel_inter_token_latency_seconds_bucket") && t.includes("keel_kv_cache_usage_perc") && t.includes("keel_num_preemptions_total")' "GET /metrics has vLLM-named series with counts"
if command -v promtool >/dev/null 2>&1; then
  promtool check metrics < "$TMP/body" || fail "promtool check metrics rejected /metrics"
  ok "promtool check metrics accepts /metrics"
else
  echo "skip promtool check metrics (promtool not installed)"
fi

req GET /v1/memory
expect 200 'b.plan.num_kv_blocks > 0 && b.kv_pool.n_blocks === b.plan.num_kv_blocks && b.kv_pool.n_free === b.kv_pool.n_blocks && b.plan.arena_bytes > 0 && b.requests.running === 0' "GET /v1/memory: the plan and a full pool when idle"

stop_server TERM
[ "$STOP_RC" = 0 ] || fail "keel serve exited $STOP_RC after SIGTERM, want 0"
ok "SIGTERM when idle: exit 0"
echo "$N_OK checks passed"
