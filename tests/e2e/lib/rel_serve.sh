# Shared by the reliability scripts (tests/e2e/rel_*.sh): start `keel serve` on the tiny default
# model (CPU, dummy weights) on a free port, wait for /health, stop it and collect its exit code.
# Every wait is bounded; only loopback is used. Source it after `cd` to the repository root.
#
#   rel_have_serve BIN        -> 0 when BIN's `serve` exists (a placeholder prints "not built yet")
#   rel_start BIN LOG [flags] -> sets REL_PID, REL_PORT, REL_URL; fails the script if no /health
#   rel_stop [SIGNAL] [SECS]  -> sends SIGNAL (TERM), waits up to SECS (20); sets REL_RC
#   rel_fail MESSAGE          -> prints MESSAGE and the server log's tail, exits 1
REL_MODEL=${REL_MODEL:-.cache/keel-default}
# The backend (cpu here and in CI; KEEL_REL_DEVICE=cuda on the GPU machine).
REL_DEVICE=${KEEL_REL_DEVICE:-cpu}
REL_PID=""
REL_PORT=""
REL_URL=""
REL_LOG=""
REL_RC=""

rel_fail() {
  echo "FAIL: $*" >&2
  if [ -n "$REL_LOG" ] && [ -f "$REL_LOG" ]; then
    echo "--- server log (last 30 lines): $REL_LOG" >&2
    tail -n 30 "$REL_LOG" >&2
  fi
  exit 1
}

# Kills a server this script started and left running (use in an EXIT trap).
rel_kill_leftover() {
  if [ -n "$REL_PID" ] && kill -0 "$REL_PID" 2>/dev/null; then kill -KILL "$REL_PID" 2>/dev/null; fi
}

rel_have_serve() {
  local out
  out=$("$1" serve --help 2>&1) || return 1
  ! grep -q "not built yet" <<<"$out"
}

rel_start() {
  local bin=$1
  REL_LOG=$2
  shift 2
  "$bin" serve --model "$REL_MODEL" --load-format dummy --device "$REL_DEVICE" --port 0 "$@" >"$REL_LOG" 2>&1 &
  REL_PID=$!
  REL_PORT=""
  local i
  for i in $(seq 1 600); do
    REL_PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$REL_LOG" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$REL_PORT" ] && break
    kill -0 "$REL_PID" 2>/dev/null || rel_fail "keel serve exited during start-up"
    sleep 0.1
  done
  [ -n "$REL_PORT" ] || rel_fail "keel serve did not start listening within 60 s"
  REL_URL="http://127.0.0.1:$REL_PORT"
  for i in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$REL_URL/health")" = 200 ] && return 0
    sleep 0.1
  done
  rel_fail "/health never answered 200"
}

rel_stop() {
  local sig=${1:-TERM} secs=${2:-20} i
  kill -"$sig" "$REL_PID" 2>/dev/null
  for i in $(seq 1 $((secs * 10))); do
    kill -0 "$REL_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$REL_PID" 2>/dev/null; then
    kill -KILL "$REL_PID"
    wait "$REL_PID" 2>/dev/null
    rel_fail "keel serve did not exit within $secs s of SIG$sig"
  fi
  wait "$REL_PID"
  REL_RC=$?
}
