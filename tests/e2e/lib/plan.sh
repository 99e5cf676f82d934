# Shared by the `keel plan` end-to-end scripts (tests/e2e/plan_cli.sh, plan_tp_cli.sh): the run
# and check helpers. Source from the repository root. Their pinned numbers are computed without
# the decode graphs' reservation, so KEEL_CUDA_GRAPHS=0 (a check may turn it back on).
keel=${KEEL_BUILD:-build}/keel
cfg=tests/data/configs
fails=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
export KEEL_CUDA_GRAPHS=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# run WANT_RC ARGS...: runs keel plan (stdout in $out, stderr in $err), checks the exit status.
run() {
  local want=$1; shift
  "$keel" plan "$@" >"$out" 2>"$err"
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "keel plan $*: exit $rc, want $want"
    sed 's/^/  | /' "$out" "$err" | head -20
  fi
}
# has FILE TEXT: the last run's stdout or stderr holds TEXT.
has() { grep -qF -- "$2" "$1" || fail "'$2' not in $(basename "$1") of the last run: $(head -c 600 "$1")"; }
# json_is KEY VALUE: the first "KEY":VALUE of the last run's JSON.
json_is() {
  local got
  got=$(grep -o "\"$1\":[^,}]*" "$out" | head -1 | cut -d: -f2-)
  [ "$got" = "$2" ] || fail "JSON $1 = '$got', want '$2'"
}
