#!/usr/bin/env bash
# Host SIMT emulation of the sample kernel (kernels/cuda/sample.cu + sample_fast.cuh): each block
# runs as 1024 pthreads, __syncthreads and every warp collective as barriers (prelude.h). Runs all
# three variants (KEEL_SAMPLE_RADIX 0/1/2) on random rows (ties, -inf, peaks, top_k 1..3000,
# top_p 0.01..0.999, min_p) and fails on any difference from variant 0 beyond what the summation
# order allows (rows without top_p: bit for bit for variant 1, same token for 2) or any change the
# probability cache makes. Slow (about 2 s per block on 2 cores), so not part of tests/run; use it
# before a GPU run when changing the kernel. Usage: run.sh [VOCAB [ROWS]] (default 4097 25).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$root/kernels/cuda/sample.cu
a=$(grep -n '^#define KC_SAMPLE_THREADS' "$src" | cut -d: -f1)
b=$(grep -n '^// ---- launchers' "$src" | cut -d: -f1)
sed -n "${a},$((b - 1))p" "$src" >"$tmp/body.inc"
cp "$here/prelude.h" "$here/main.cpp" "$tmp/"
g++ -O1 -std=c++17 -ffp-contract=off -I"$root" -o "$tmp/emu" "$tmp/main.cpp" -lpthread -lm
"$tmp/emu" "${1:-4097}" "${2:-25}"
