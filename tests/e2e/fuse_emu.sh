#!/usr/bin/env bash
# The fused kernels (gemv.cu's input and output modes, fused_qk_rope_kv.cu) under the host SIMT
# emulation (tests/data/fuse/emu): index and rounding mistakes show without a GPU. About 6 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v g++ >/dev/null || { echo "skip: no g++"; exit 0; }
tests/data/fuse/emu/run.sh
