#!/usr/bin/env bash
# keel-bench against a real `keel serve` on the CPU backend with the tiny default model (dummy
# weights): a short run where every request must succeed and the token counts must equal what
# was asked for (token-id prompts of known length; --ignore-eos makes every output exactly
# --output-len long), on both endpoints. Skips (exit 0) while `keel serve` is not built yet.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${KEEL_BUILD:-build}
keel=$build/keel
bench=$build/keel-bench
[ -x "$bench" ] || { echo "FAIL: $bench is not built"; exit 1; }
[ -x "$keel" ] || { echo "FAIL: $keel is not built"; exit 1; }
help=$("$keel" serve --help 2>&1 || true)
if grep -q "not built yet" <<<"$help"; then
  echo "skipped: keel serve is not built yet"
  exit 0
fi
[ -d .cache/keel-default ] || { echo "FAIL: .cache/keel-default is missing (run make setup)"; exit 1; }

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(node -e "const s = require('net').createServer(); s.listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
"$keel" serve --model .cache/keel-default --load-format dummy --device cpu --host 127.0.0.1 \
  --port "$port" >"$tmp/server.log" 2>&1 &
server_pid=$!
url=http://127.0.0.1:$port
for _ in $(seq 300); do
  if node -e "fetch('$url/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL: keel serve exited before it was healthy:"; tail -n 30 "$tmp/server.log"; exit 1
  fi
  sleep 0.2
done

# Runs the checks in JavaScript on a result file, as in bench_pace.sh.
check() {
  local file=$1 name=$2 js=$3
  node - "$file" "$name" <<EOF
const r = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const name = process.argv[3];
const errors = [];
const eq = (what, got, want) => {
  const ok = JSON.stringify(got) === JSON.stringify(want);
  console.log(\`  \${name}: \${what} = \${JSON.stringify(got)} (want \${JSON.stringify(want)}) \${ok ? 'ok' : 'FAIL'}\`);
  if (!ok) errors.push(what);
};
const pos = (what, got) => {
  const ok = got > 0;
  console.log(\`  \${name}: \${what} = \${got} (want > 0) \${ok ? 'ok' : 'FAIL'}\`);
  if (!ok) errors.push(what);
};
$js
if (errors.length) { console.log(\`FAIL \${name}: \${errors.join(', ')}\`); process.exit(1); }
EOF
}

fail_with_log() { echo "FAIL: $1"; cat "$tmp/$2.txt"; echo "--- server log:"; tail -n 30 "$tmp/server.log"; exit 1; }

# Completions with token-id prompts: input and output counts are known exactly.
"$bench" --base-url "$url" --num-prompts 8 --max-concurrency 4 --input-len 16 --output-len 8 \
  --ignore-eos --warmup 1 --json "$tmp/a.json" --no-progress >"$tmp/a.txt" || fail_with_log "completions run" a
cat "$tmp/a.txt"
check "$tmp/a.json" completions "
eq('completed', r.completed, 8); eq('failed', r.failed, 0);
eq('errors', [...new Set(r.errors)], ['']);
eq('usage present', r.missing_usage, 0);
eq('input_lens (usage) = prompt ids', [...new Set(r.input_lens)], [16]);
eq('output_lens (usage) = --output-len', [...new Set(r.output_lens)], [8]);
eq('total_output_tokens', r.total_output_tokens, 64);
pos('mean_ttft_ms', r.mean_ttft_ms); pos('mean_tpot_ms', r.mean_tpot_ms);
pos('output_throughput', r.output_throughput);
eq('peak concurrency within the limit', r.max_concurrent_requests <= 4, true);
"

# Chat with text prompts: every request succeeds and outputs are exactly --output-len long.
# Until the chat template lands, its placeholder answers "not yet"; skip this part then.
chat_probe=$(node -e "fetch('$url/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
  body: JSON.stringify({messages: [{role: 'user', content: 'hi'}], max_tokens: 1})})
  .then(r => r.text()).then(t => console.log(t), e => console.log(String(e)))")
if grep -q '"message": *"not yet"' <<<"$chat_probe"; then
  echo "chat: skipped (the chat template is not built yet)"
  echo "bench_keel: all checks passed"
  exit 0
fi
"$bench" --base-url "$url" --endpoint chat --num-prompts 4 --max-concurrency 2 --input-len 12 \
  --output-len 6 --ignore-eos --json "$tmp/b.json" --no-progress >"$tmp/b.txt" || fail_with_log "chat run" b
check "$tmp/b.json" chat "
eq('completed', r.completed, 4); eq('failed', r.failed, 0);
eq('usage present', r.missing_usage, 0);
eq('output_lens (usage) = --output-len', [...new Set(r.output_lens)], [6]);
eq('prompt tokens counted by the server', r.input_lens.every(n => n >= 12), true);
"
echo "bench_keel: all checks passed"
