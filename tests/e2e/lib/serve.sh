# Shared by the API end-to-end scripts (tests/e2e/api_*.sh): start `keel serve` on the tiny
# default model (CPU, dummy weights) on a free port, make requests with curl, check JSON with
# node, and stop the server. Every wait is bounded; only loopback is used.
KEEL=${KEEL_BUILD:-build}/keel
MODEL=.cache/keel-default
PID=""
PORT=""
LOG=""
TMP=$(mktemp -d)
N_OK=0

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -n "$LOG" ] && [ -f "$LOG" ]; then echo "--- server log (last 30 lines)" >&2; tail -n 30 "$LOG" >&2; fi
  exit 1
}

ok() { N_OK=$((N_OK + 1)); echo "ok   $*"; }

# start_server [flags...]: port 0, then the port is read from the server's log line.
start_server() {
  LOG=$TMP/server.log
  "$KEEL" serve --model "$MODEL" --load-format dummy --device cpu --port 0 "$@" >"$LOG" 2>&1 &
  PID=$!
  PORT=""
  for _ in $(seq 1 300); do
    PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$LOG" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$PORT" ] && break
    kill -0 "$PID" 2>/dev/null || fail "keel serve exited during start-up"
    sleep 0.05
  done
  [ -n "$PORT" ] || fail "keel serve did not start listening within 15 s"
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return 0
    sleep 0.05
  done
  fail "/health never answered 200"
}

# stop_server [signal]: sends the signal (TERM) and waits at most 20 s; sets STOP_RC.
stop_server() {
  kill -"${1:-TERM}" "$PID"
  for _ in $(seq 1 400); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$PID" 2>/dev/null && fail "keel serve did not exit within 20 s of SIG${1:-TERM}"
  STOP_RC=0
  wait "$PID" || STOP_RC=$?
  PID=""
}

# req METHOD PATH [BODY] [curl args...]: sets STATUS, and the body is in $TMP/body.
req() {
  local method=$1 path=$2 body=${3:-}
  shift 3 2>/dev/null || shift $#
  if [ -n "$body" ]; then
    STATUS=$(curl -s -m 30 -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" \
      -H 'Content-Type: application/json' --data-binary "$body" "$@" "http://127.0.0.1:$PORT$path")
  else
    STATUS=$(curl -s -m 30 -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" "$@" \
      "http://127.0.0.1:$PORT$path")
  fi
}

# js EXPR: evaluates EXPR with `b` = the parsed JSON body (or `t` = the raw text); prints it.
js() {
  node -e 'const fs=require("fs");const t=fs.readFileSync(process.argv[1],"utf8");let b=null;try{b=JSON.parse(t)}catch(e){};const v=eval(process.argv[2]);process.stdout.write(typeof v==="string"?v:JSON.stringify(v))' "$TMP/body" "$1"
}

# expect STATUS [JS-CONDITION] NAME: the last request's status and a condition on its body.
expect() {
  local want=$1 cond=$2 name=$3
  [ "$STATUS" = "$want" ] || fail "$name: status $STATUS, want $want; body: $(head -c 600 "$TMP/body")"
  if [ -n "$cond" ]; then
    [ "$(js "!!($cond)")" = "true" ] || fail "$name: condition ($cond) false; body: $(head -c 800 "$TMP/body")"
  fi
  ok "$name"
}

# expect_error STATUS PARAM WORDS NAME: an OpenAI-style error with that status, param and message words.
expect_error() {
  local want=$1 param=$2 words=$3 name=$4
  local pcond="b.error.param === null"
  [ -n "$param" ] && pcond="b.error.param === \"$param\""
  expect "$want" "b && b.error && typeof b.error.message === 'string' && b.error.code === $want && typeof b.error.type === 'string' && $pcond && b.error.message.includes(\"$words\")" "$name"
}
