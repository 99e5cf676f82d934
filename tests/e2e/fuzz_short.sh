#!/usr/bin/env bash
# A short run of every libFuzzer target (tests/fuzz/fuzz_*.c) over its seed corpus
# (tests/fuzz/corpus/<name>/, read-only here: new inputs go to a scratch folder). The long runs
# (ten million executions each) are recorded in docs/RELIABILITY.md; `make fuzz` builds them.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang >/dev/null; then echo "skip: clang not installed"; exit 0; fi
build=${KEEL_BUILD:-build}
make --no-print-directory BUILD="$build" fuzz >/dev/null
runs_for() {
  case "$1" in
    tokenizer) echo 3000 ;;
    http) echo 5000 ;;
    *) echo 20000 ;;
  esac
}
fail=0
for bin in "$build"/fuzzers/fuzz/fuzz_*; do
  name=${bin##*/fuzz_}
  scratch=$(mktemp -d)
  seeds=tests/fuzz/corpus/$name
  [ -d "$seeds" ] || seeds=""
  if "$bin" -artifact_prefix="$scratch/" -runs="$(runs_for "$name")" -max_total_time=60 -max_len=4096 "$scratch" $seeds \
      >"$scratch.log" 2>&1; then
    echo "fuzz_$name: $(grep -E '^Done' "$scratch.log")"
  else
    echo "fuzz_$name: FAILED"; grep -E "ERROR|^    #[0-9]|SUMMARY" "$scratch.log" | head -n 30; fail=1
  fi
  rm -rf "$scratch" "$scratch.log"
done
exit $fail
