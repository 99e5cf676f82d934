#!/usr/bin/env bash
# `keel plan` end to end: real Qwen config folders (config.json only), the human table, the
# JSON numbers (pinned by hand in tests/unit/test_plan.c), the refusals and their exit codes.
set -uo pipefail
cd "$(dirname "$0")/../.."
# The numbers below are test_plan.c's; the last check turns graphs back on (keel serve's default
# on a GPU) and pins what they take.
. tests/e2e/lib/plan.sh

# Qwen2.5-7B on 80 GiB: every number as computed by hand in test_plan.c.
run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --json
json_is device_total_bytes 85899345920
json_is budget_bytes 77309411328
json_is weights_bytes 15231233024
json_is activation_bytes 1307020544
json_is kv_block_bytes 917504
json_is num_kv_blocks 65273

json_is kv_tokens 1044368
json_is arena_bytes 76772522240
json_is fits true

# The human table: GiB and percentages of the budget, and what the pool means.
run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB
has "$out" "14.185 GiB"
has "$out" "19.7%"
has "$out" "65273 blocks x 16 tokens = 1044368 tokens"
has "$out" "31.87 sequences"

# No device given: an 80 GiB device is assumed, and the output says so.
run 0 --model "$cfg/Qwen2.5-7B-Instruct"
has "$out" "assumed 80 GiB device"
has "$out" "65273 blocks"

# Units: GB is 10^9, plain numbers are bytes, options take --name=value too.
run 0 --model "$cfg/Qwen2.5-0.5B-Instruct" --device-memory 24GB --json
json_is device_total_bytes 24000000000
run 0 --model "$cfg/Qwen2.5-0.5B-Instruct" --device-memory=25769803776 --json
json_is num_kv_blocks 106744
run 0 --model "$cfg/Qwen3-8B" --device-memory 141GiB --json
json_is num_kv_blocks 49992
run 0 --model "$cfg/Qwen2.5-14B-Instruct" --device-memory 80GiB --json
json_is num_kv_blocks 14515

# Settings reach the plan: a smaller pool cap, block size and utilization.
run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --num-kv-blocks 4096 --json
json_is num_kv_blocks 4096
run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --block-size 32 \
  --max-num-seqs 64 --max-num-batched-tokens 2048 --max-model-len 8192 \
  --gpu-memory-utilization 0.5 --json
json_is block_size 32
json_is kv_block_bytes 1835008
json_is max_blocks_per_seq 256
json_is budget_bytes 42949672960

# Refusals exit 3 with every number and the fix.
run 3 --model "$cfg/Qwen2.5-14B-Instruct" --device-memory 24GiB
has "$err" "does not fit"
has "$err" "weights 27.51 GiB"
has "$err" "use a GPU with more memory"
run 3 --model "$cfg/Qwen3-8B" --device-memory 24GiB --max-model-len 40960
has "$err" "lower --max-model-len to 33088"
has "$err" "--gpu-memory-utilization to 0.95"
run 3 --model "$cfg/Qwen3-8B" --device-memory 24GiB --max-model-len 40960 --json
json_is fits false
json_is num_kv_blocks 2068
has "$out" '"error":"the KV pool cannot hold one sequence'

# A folder with a checkpoint: its headers are read as a cross-check. tiny-qwen3 (dim 64, hidden
# 128, 3 layers, 4 heads / 2 KV heads of 32, vocab 512, tied, q/k norms): embed 512*64 = 32768,
# per layer 64 + 256*64 + 2*32 + 64*128 + 64 + 2*128*64 + 64*128 = 49344, final norm 64:
# 32768 + 3*49344 + 64 = 180864 parameters in 1 + 3*11 + 1 = 35 tensors.
run 0 --model tests/data/tiny-qwen3 --device-memory 1GiB --max-num-seqs 4 --max-num-batched-tokens 64
has "$out" "checkpoint of 1 file, 35 tensors, 180864 parameters (BF16"
tmp=$(mktemp -d)
cp tests/data/tiny-qwen3/model.safetensors "$tmp/"
sed 's/"tie_word_embeddings": true/"tie_word_embeddings": false/' tests/data/tiny-qwen3/config.json >"$tmp/config.json"
# Untied, the config implies a separate 512*64 lm_head: 180864 + 32768 = 213632.
run 0 --model "$tmp" --device-memory 1GiB
has "$out" "WARNING: config.json implies 213632 parameters"
head -c 1000 tests/data/tiny-qwen3/model.safetensors >"$tmp/model.safetensors"
run 4 --model "$tmp" --device-memory 1GiB
has "$err" "model.safetensors"
rm -rf "$tmp"

# Bad usage exits 2 and names the problem; a missing model exits 4.
run 2 --model "$cfg/Qwen3-8B" --device-memory 24XB
has "$err" "unknown unit"
run 2 --model "$cfg/Qwen3-8B" --gpu-memory-utilization 1.5
has "$err" "--gpu-memory-utilization"
run 2 --model "$cfg/Qwen3-8B" --block-size 24
has "$err" "block_size must be one of 8, 16, 32, 64, 128"
run 2 --model "$cfg/Qwen3-8B" --max-model-len 50000
has "$err" "max_position_embeddings"
run 2 --model "$cfg/Qwen3-8B" --max-num-seqs 512 --max-num-batched-tokens 256
has "$err" "must be >= max_num_seqs"
run 2 --device-memory 80GiB
has "$err" "--model DIR is required"
run 2 --model "$cfg/Qwen3-8B" --bogus 1
has "$err" "unknown option '--bogus'"
run 2 --model "$cfg/Qwen3-8B" --device 0 --device-memory 80GiB
has "$err" "not both"
run 4 --model tests/data/configs/no-such-model
run 0 --help
has "$out" "--gpu-memory-utilization F"

# --device N reads the GPU; without one it fails cleanly (1) rather than guessing.
"$keel" plan --model "$cfg/Qwen2.5-0.5B-Instruct" --device 0 >"$out" 2>"$err"
rc=$?
if [ $rc -eq 0 ]; then has "$out" "CUDA device 0 (measured)";
elif [ $rc -ne 1 ] && [ $rc -ne 3 ]; then fail "--device 0 without a GPU: exit $rc"; fi

# Decode graphs (keel serve's default on a GPU): their reservation leaves the KV pool.
run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --json
json_is graphs_bytes 0
# With graphs on (the default), MEM_PLAN_GRAPHS_BYTES (128 MiB) leaves the pool: 65273 -
# ceil(134217728 / 917504) = 65273 - 147 = 65126 blocks, and the table says where they went.
KEEL_CUDA_GRAPHS=1 run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --json
json_is graphs_bytes 134217728
json_is num_kv_blocks 65126
KEEL_CUDA_GRAPHS=1 run 0 --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB
has "$out" "CUDA graphs"

if [ $fails -ne 0 ]; then echo "$fails failures"; exit 1; fi
echo "plan_cli: all checks passed"
