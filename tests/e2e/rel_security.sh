#!/usr/bin/env bash
# Security defaults of `keel serve`: it binds loopback unless told otherwise; with --api-key every
# /v1/* route needs "Authorization: Bearer KEY" (401 without it, with a wrong key, with the key as
# a prefix, or with the key plus one byte), while /health stays open for probes; a request never
# names a file (a model name is only compared with the served one); prompts and outputs reach the
# log only with --log-requests.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/rel_serve.sh
KEEL=${KEEL_BUILD:-build}/keel
[ -x "$KEEL" ] || { echo "skip: $KEEL not built"; exit 0; }
rel_have_serve "$KEEL" || { echo "skip: keel serve is not built yet"; exit 0; }
TMP=$(mktemp -d)
trap 'rel_kill_leftover; rm -rf "$TMP"' EXIT
ok() { echo "ok   $*"; }

KEY=sk-rel-$RANDOM$RANDOM
MARK=secret-prompt-$RANDOM$RANDOM
rel_start "$KEEL" "$TMP/a.log" --api-key "$KEY"
grep -q "listening on http://127.0.0.1:" "$TMP/a.log" || rel_fail "the default bind address is not 127.0.0.1"
ok "default bind address is loopback (127.0.0.1)"

code() { curl -s -m 10 -o "$TMP/body" -w '%{http_code}' "$@"; }
[ "$(code "$REL_URL/v1/models")" = 401 ] || rel_fail "/v1/models without a key is not 401"
grep -q '"error"' "$TMP/body" || rel_fail "the 401 has no OpenAI error body"
for bad in "Bearer wrong" "Bearer ${KEY%?}" "Bearer ${KEY}x" "Basic $KEY" "Bearer" "$KEY"; do
  c=$(code -H "Authorization: $bad" "$REL_URL/v1/models")
  [ "$c" = 401 ] || rel_fail "Authorization '$bad' answered $c, expected 401"
done
ok "missing, wrong, truncated, extended and non-Bearer keys get 401"
[ "$(code -H "Authorization: Bearer $KEY" "$REL_URL/v1/models")" = 200 ] || rel_fail "the right key is refused"
[ "$(code -H "Authorization: bearer $KEY" "$REL_URL/v1/models")" = 200 ] || rel_fail "'bearer' (lower case) is refused"
c=$(code -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$REL_URL/v1/completions" \
  -d "{\"prompt\": \"$MARK\", \"max_tokens\": 3}")
[ "$c" = 200 ] || rel_fail "a completion with the right key answered $c"
[ "$(code "$REL_URL/health")" = 200 ] || rel_fail "/health needs the key (probes cannot use it)"
ok "the right key is accepted; /health stays open"
# Outside /v1/ the key is not asked for (as in vLLM): reported, not enforced here.
echo "note: without a key: POST /tokenize $(code -d '{"prompt": "x"}' "$REL_URL/tokenize")," \
  "POST /detokenize $(code -d '{"tokens": [1]}' "$REL_URL/detokenize"), GET /metrics $(code "$REL_URL/metrics")"

# A model "name" that looks like a path is a 404 for an unknown model, never a file access.
for m in ../../etc/passwd /etc/passwd .cache/keel-default "$PWD/.cache/keel-default"; do
  c=$(code -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$REL_URL/v1/completions" \
    -d "{\"model\": \"$m\", \"prompt\": \"x\", \"max_tokens\": 1}")
  [ "$c" = 404 ] || rel_fail "model '$m' answered $c, expected 404"
done
ok "path-like model names are 404 (no file is opened on a request's word)"

grep -q "$MARK" "$TMP/a.log" && rel_fail "the prompt appears in the log without --log-requests"
grep -q "$KEY" "$TMP/a.log" && rel_fail "the API key appears in the log"
ok "no prompt and no API key in the log by default"
rel_stop TERM 20
[ "$REL_RC" -eq 0 ] || rel_fail "exit $REL_RC after SIGTERM"

rel_start "$KEEL" "$TMP/b.log" --log-requests true
c=$(code -H 'Content-Type: application/json' "$REL_URL/v1/completions" -d "{\"prompt\": \"$MARK\", \"max_tokens\": 3}")
[ "$c" = 200 ] || rel_fail "completion answered $c"
sleep 0.2
grep -q "$MARK" "$TMP/b.log" || rel_fail "--log-requests true does not log the prompt"
ok "--log-requests true logs the prompt (opt-in only)"
rel_stop TERM 20
[ "$REL_RC" -eq 0 ] || rel_fail "exit $REL_RC after SIGTERM"
