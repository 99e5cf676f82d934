#!/usr/bin/env bash
# Leak check: `keel serve` built with AddressSanitizer + LeakSanitizer (make asan builds
# build/asan/keel) serves a few thousand mixed requests (tests/e2e/lib/rel_load.mjs: every
# endpoint, streams read to the end and streams dropped mid-way, 400/404/413), then SIGTERM: it
# must exit 0 with no sanitizer report. Skips when there is no ASan build.
#   make asan                      # builds build/asan and runs the suite, this script included
#   tests/e2e/rel_leaks.sh         # alone, after make asan; KEEL_REL_LEAK_REQUESTS=N to change N
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/rel_serve.sh
case "${KEEL_BUILD:-build}" in
  *asan*) asan_build=${KEEL_BUILD} ;;
  *) asan_build=${KEEL_ASAN_BUILD:-build/asan} ;;
esac
KEEL=$asan_build/keel
[ -x "$KEEL" ] || { echo "skip: no ASan build ($KEEL); run make asan"; exit 0; }
grep -q __asan_init "$KEEL" || { echo "skip: $KEEL is not built with AddressSanitizer"; exit 0; }
rel_have_serve "$KEEL" || { echo "skip: keel serve is not built yet"; exit 0; }
command -v node >/dev/null || { echo "skip: node not installed"; exit 0; }
N=${KEEL_REL_LEAK_REQUESTS:-3000}

TMP=$(mktemp -d)
trap 'rel_kill_leftover; rm -rf "$TMP"' EXIT
# Reports go to stderr (the server log); leak checking runs at exit. abort_on_error=0 so a report
# still ends in a non-zero exit code rather than a core dump.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
rel_start "$KEEL" "$TMP/server.log" --max-body-bytes 65536
echo "keel serve (ASan) on port $REL_PORT; $N requests"
node tests/e2e/lib/rel_load.mjs "$REL_PORT" "$N" | tee "$TMP/load.json"
load_rc=${PIPESTATUS[0]}
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$REL_PID/status" 2>/dev/null || echo "?")
rel_stop TERM 60
echo "exit code $REL_RC after SIGTERM; resident memory before it ${rss_kb} kB"
if grep -Eq 'ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:' "$TMP/server.log"; then
  grep -E -A 25 'ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:' "$TMP/server.log" | head -n 60
  rel_fail "sanitizer report in the server log"
fi
[ "$load_rc" -eq 0 ] || rel_fail "unexpected answers under load"
[ "$REL_RC" -eq 0 ] || rel_fail "keel serve exited $REL_RC after SIGTERM (23 = a sanitizer report)"
echo "ok   no leak, no ASan/UBSan report after $N requests and SIGTERM"
