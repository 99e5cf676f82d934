#!/usr/bin/env bash
# `keel plan` over several GPUs (tensor parallelism) end to end: the per-GPU table and JSON of
# real Qwen configs (numbers pinned by hand in tests/unit/test_plan_tp.c), refusals naming the
# GPU, and bad usage. Needs no GPU: --device-memory stands in for the GPUs.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib/plan.sh

# Qwen2.5-14B: one 24 GiB GPU cannot hold it (exit 3), two can: 4216 blocks on each.
run 3 --model "$cfg/Qwen2.5-14B-Instruct" --device-memory 24GiB
has "$err" "more GPUs (--tensor-parallel-size)"
run 0 --model "$cfg/Qwen2.5-14B-Instruct" --device-memory 24GiB --tensor-parallel-size 2
has "$out" "tensor parallel over 2 GPUs"
has "$out" "GPU 1 (index 1)"
has "$out" "4216 blocks on every GPU"
has "$out" "--device-memory 24GiB on every GPU"
run 0 --model "$cfg/Qwen2.5-14B-Instruct" --device-memory 24GiB --tensor-parallel-size 2 --json
json_is tensor_parallel_size 2
json_is num_kv_blocks 4216
json_is weights_bytes 14770540544
json_is fits true
has "$out" '"total":{'

# Qwen2.5-32B on two 80 GiB GPUs (the default size): 20225 blocks.
run 0 --model "$cfg/Qwen2.5-32B-Instruct" --tensor-parallel-size 2 --json
json_is num_kv_blocks 20225
json_is weights_bytes 32764547072
has "$out" "assumed 2 GPUs of 80 GiB"

# Mixed sizes: the 20 GiB GPU limits the pool, and the refusal names it with its index.
run 3 --model "$cfg/Qwen2.5-14B-Instruct" --devices 2,5 --device-memory 80GiB,20GiB
has "$out" "GPU 0 (index 2)"
has "$out" "1759 blocks on every GPU"
has "$err" "GPU 1 (index 5): the KV pool cannot hold one sequence"
has "$err" "lower --max-model-len to 28144"
run 0 --model "$cfg/Qwen2.5-14B-Instruct" --devices 2,5 --device-memory 80GiB,20GiB --max-model-len 28144
run 3 --model "$cfg/Qwen2.5-14B-Instruct" --devices 2,5 --device-memory 80GiB,20GiB --json
json_is fits false
has "$out" '"error":"GPU 1 (index 5): '

# Bad usage exits 2 and names the problem.
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --tensor-parallel-size 3
has "$err" "does not divide the model's n_heads (num_attention_heads) = 40"
run 2 --model "$cfg/Qwen2.5-7B-Instruct" --tensor-parallel-size 8
has "$err" "n_heads (num_attention_heads) = 28"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --tensor-parallel-size 9
has "$err" "more than 8 GPUs"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --devices 0,1 --tensor-parallel-size 4
has "$err" "disagree"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --devices 1,1
has "$err" "device 1 is listed twice"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --devices 0,-1
has "$err" "--devices"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --tensor-parallel-size 2 --device-memory 24GiB,24GiB,24GiB
has "$err" "more sizes than the 2 GPUs"
run 2 --model "$cfg/Qwen2.5-14B-Instruct" --tensor-parallel-size 4 --device-memory 24GiB,24GiB
has "$err" "2 sizes for 4 GPUs"

# --tensor-parallel-size 1 is the single-GPU plan, byte for byte.
"$keel" plan --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --json >"$out.a" 2>&1
"$keel" plan --model "$cfg/Qwen2.5-7B-Instruct" --device-memory 80GiB --json \
  --tensor-parallel-size 1 >"$out.b" 2>&1
cmp -s "$out.a" "$out.b" || fail "--tensor-parallel-size 1 changed the plan"
rm -f "$out.a" "$out.b"

if [ "$fails" -ne 0 ]; then
  echo "plan_tp_cli: $fails check(s) failed"
  exit 1
fi
echo "plan_tp_cli: all checks passed"
