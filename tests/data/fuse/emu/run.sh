#!/bin/sh
# Host SIMT emulation of the fused kernels (no GPU needed): kernels/cuda/gemv.cu's kc_gemv in its
# input modes (plain, silu, norm, normp) and outputs (y, rope, res) and
# kernels/cuda/fused_qk_rope_kv.cu, one pthread per CUDA thread, warp shuffles and mma.m16n8k16
# emulated from the PTX fragment layouts (emu.cpp says what is compared with what).
# Usage, from the repository root: tests/data/fuse/emu/run.sh
set -e
dir=$(mktemp -d)
python3 tests/data/fuse/emu/extract.py . "$dir/kernel_body.inc"
g++ -O2 -std=c++17 -I. -I"$dir" -Wno-unknown-pragmas -o "$dir/emu" tests/data/fuse/emu/emu.cpp -lpthread
"$dir/emu"
rm -rf "$dir"
