#!/bin/sh
# Host SIMT emulation of the decode attention kernels (no GPU needed): 128 pthreads a block, warp
# shuffles and mma.m16n8k16 emulated from the PTX fragment layouts, cp.async as an immediate copy
# (so stage-index mistakes show; real asynchrony does not). Compares against a float64 reference.
# Usage, from the repository root: tests/data/dattn/emu/run.sh   (about 30 s on 2 cores)
set -e
dir=$(mktemp -d)
python3 tests/data/dattn/emu/extract.py . "$dir/kernel_body.inc"
g++ -O2 -std=c++17 -I. -I"$dir" -Wno-unknown-pragmas -o "$dir/emu" tests/data/dattn/emu/emu.cpp -lpthread
"$dir/emu"
rm -rf "$dir"
