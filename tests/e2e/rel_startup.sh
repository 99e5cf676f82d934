#!/usr/bin/env bash
# Start-up failures of `keel serve`: each case must exit with the code server/cli.h promises
# (2 usage/config, 3 does not fit, 4 model files) and print one message that says what is wrong
# (checked, the test fails without it) and how to fix it (checked too; a message that names the
# problem but gives no fix is reported as "weak" and fails only with KEEL_REL_STRICT=1, because
# the messages belong to other modules). Every case runs on the CPU backend, no GPU needed.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/rel_serve.sh
KEEL=${KEEL_BUILD:-build}/keel
[ -x "$KEEL" ] || { echo "skip: $KEEL not built"; exit 0; }
rel_have_serve "$KEEL" || { echo "skip: keel serve is not built yet"; exit 0; }
command -v python3 >/dev/null || { echo "skip: python3 needed to write broken files"; exit 0; }

TMP=$(mktemp -d)
HOLDER=""
trap 'rel_kill_leftover; [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null; rm -rf "$TMP"' EXIT
N_OK=0
N_WEAK=0
STRICT=${KEEL_REL_STRICT:-0}

# expect NAME CODE WHAT_REGEX FIX_REGEX -- ARGS...: runs `keel serve ARGS` (bounded), checks the
# exit code, that stderr matches WHAT_REGEX, and (softly) FIX_REGEX.
expect() {
  local name=$1 want=$2 what=$3 fix=$4
  shift 5
  local out=$TMP/$name.out rc
  timeout 60 "$KEEL" serve --device cpu "$@" >"$out" 2>&1 </dev/null
  rc=$?
  local msg
  # The message: the command's own lines and errors, not the plan's info lines.
  msg=$(grep -E '^keel|ERROR|error' "$out" | head -n 3)
  [ -n "$msg" ] || msg=$(tail -n 2 "$out")
  # Under `make asan` every failing start-up is also a leak check of its error path.
  if grep -Eq 'ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:' "$out"; then
    echo "FAIL $name: sanitizer report"; grep -E -A 20 'Sanitizer|runtime error' "$out" | head -n 40; exit 1
  fi
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL $name: exit code $rc, expected $want"; sed 's/^/     | /' "$out" | tail -n 15; exit 1
  fi
  # Checked on the message lines only (the plan's INFO lines could match by chance).
  local text
  text=$(grep -Ev '^[0-9T:.-]+Z (INFO|DEBUG) ' "$out")
  if ! grep -Eiq -- "$what" <<<"$text"; then
    echo "FAIL $name: exit $rc as expected, but the output does not say /$what/:"
    sed 's/^/     | /' "$out" | tail -n 15; exit 1
  fi
  if [ -n "$fix" ] && ! grep -Eiq -- "$fix" <<<"$text"; then
    N_WEAK=$((N_WEAK + 1))
    echo "weak $name (exit $rc): says what is wrong but not how to fix it (/$fix/): $msg"
    [ "$STRICT" = 1 ] && exit 1
  else
    echo "ok   $name (exit $rc): $msg"
  fi
  N_OK=$((N_OK + 1))
}

# A complete small model folder to break in different ways: tiny-qwen2 (config + real shard)
# with the Qwen3 tokenizer files.
good=$TMP/good
mkdir -p "$good"
cp tests/data/tiny-qwen2/config.json tests/data/tiny-qwen2/model.safetensors "$good/"
cp .cache/qwen3-tokenizer/tokenizer.json .cache/qwen3-tokenizer/tokenizer_config.json "$good/"
clone() { mkdir -p "$TMP/$1"; cp "$good"/* "$TMP/$1/"; echo "$TMP/$1"; }

# ---- model files (exit 4)

expect missing_folder 4 "does not exist|no such" "--model|scripts/setup|download" -- \
  --model "$TMP/no-such-model"

d=$(clone no_config); rm "$d/config.json"
expect no_config_json 4 "config\.json" "download|--model|incomplete" -- --model "$d"

d=$(clone no_tokenizer); rm "$d/tokenizer.json"
expect no_tokenizer_json 4 "tokenizer\.json" "download|--model|incomplete" -- --model "$d"

d=$(clone no_shard); rm "$d/model.safetensors"
expect no_shard 4 "safetensors|no weights|shard" "download|--load-format" -- --model "$d"

d=$(clone bad_arch)
python3 - "$d/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["architectures"] = ["GPT2LMHeadModel"]; c["model_type"] = "gpt2"
json.dump(c, open(p, "w"))
PY
expect unsupported_arch 4 "GPT2LMHeadModel" "supported|Qwen2ForCausalLM|Qwen3ForCausalLM|Llama" -- --model "$d"

d=$(clone config_not_json); printf '{"architectures": ["Qwen2ForCausalLM"], ' >"$d/config.json"
expect config_not_json 4 "config" "JSON|parse" -- --model "$d"

d=$(clone cut_shard)
python3 - "$d/model.safetensors" <<'PY'
import os, sys
p = sys.argv[1]; n = os.path.getsize(p)
with open(p, "r+b") as f: f.truncate(n - n // 3)
PY
expect truncated_shard 4 "model\.safetensors" "truncat|download|incomplete|corrupt" -- --model "$d"

d=$(clone bad_header)
python3 - "$d/model.safetensors" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
b[8:16] = b"#garbage"   # the first bytes of the header JSON
open(p, "wb").write(b)
PY
expect corrupt_header 4 "model\.safetensors.*(header|JSON)" "download|corrupt|incomplete" -- --model "$d"

d=$(clone header_len)
python3 - "$d/model.safetensors" <<'PY'
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
b[0:8] = struct.pack("<Q", 1 << 60)
open(p, "wb").write(b)
PY
expect header_length 4 "model\.safetensors.*header length" "download|corrupt|incomplete" -- --model "$d"

d=$(clone wrong_shape)
python3 - "$d/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["intermediate_size"] = c["intermediate_size"] * 2
json.dump(c, open(p, "w"))
PY
expect shape_mismatch 4 "shape" "config\.json|checkpoint|download" -- --model "$d"

# ---- does not fit (exit 3)

expect kv_pool_too_small 3 "max_model_len|KV|blocks" "Fix:.*(--num-kv-blocks|--max-model-len)" -- \
  --model .cache/keel-default --load-format dummy --num-kv-blocks 4 --max-model-len 4096
expect cpu_memory_too_small 3 "memory|fit" "Fix:|--cpu-memory" -- \
  --model .cache/keel-default --load-format dummy --cpu-memory 2000000

# ---- configuration (exit 2)

expect max_model_len_past_model 2 "max-model-len|max_model_len" "max_position_embeddings" -- \
  --model .cache/keel-default --load-format dummy --max-model-len 1000000
expect unknown_flag 2 "no-such-flag" "--help" -- --no-such-flag 1
expect bad_flag_value 2 "port" "expected an? (integer|number)" -- --port banana
echo '{"max_model_len": 256, "no_such_key": 1}' >"$TMP/unknown_key.json"
expect config_unknown_key 2 "no_such_key" "--help|did you mean|valid" -- --config "$TMP/unknown_key.json"
echo '{"max_model_len": "long"}' >"$TMP/wrong_type.json"
expect config_wrong_type 2 "max_model_len" "expected an? (integer|number)" -- --config "$TMP/wrong_type.json"
printf '{"max_model_len": 256,' >"$TMP/bad.json"
expect config_bad_json 2 "bad\.json" "near byte|line [0-9]" -- --config "$TMP/bad.json"
expect config_missing 2 "nope\.json" "no such|not found|does not exist" -- --config "$TMP/nope.json"
expect bad_host 2 "not-an-address" "IPv4|IPv6|--host" -- \
  --model .cache/keel-default --load-format dummy --host not-an-address

# ---- the port is already taken (exit 2), by a listener this script holds
python3 - "$TMP/port" <<'PY' &
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(120)
PY
HOLDER=$!
for _ in $(seq 1 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
[ -s "$TMP/port" ] || { echo "FAIL: the port holder did not start"; exit 1; }
port=$(cat "$TMP/port")
expect port_in_use 2 "in use|$port" "--port" -- \
  --model .cache/keel-default --load-format dummy --port "$port"
kill "$HOLDER" 2>/dev/null; HOLDER=""

echo "$N_OK start-up failure cases behave ($N_WEAK with a message that gives no fix)"
