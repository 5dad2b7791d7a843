#!/usr/bin/env bash
# The GPU checks left open by issues 13 and 14, as one prepared run for a lent GPU (device time is short: 15 minutes
# per task, start-up included), most wanted first, each under its own time limit so one slow step cannot eat the rest:
#
#   1. bench/judge_throughput.py: Llama Guard 3 8B's shape, random weights, bf16 (issue 14's >= 5x target);
#   2. bench/derta_fused.py: naive vs fused DeRTa on Llama-3-8B's shape, 4-bit base + LoRA (issue 13);
#   3. bench/qlora_gpu.py: the Llama-3-8B DeRTa recipe's QLoRA memory and tokens/s, 4 layers scaled to 32.
#
# Results go to bench/results/ and, when the device tool's $OUT is set, are copied there to come back.
#   bash bench/gpu_checks.sh [WHEELS_DIR]          # on the GPU machine (wheels: see bench/gpu_setup.sh)
#   GPU_CHECKS_SMOKE=1 bash bench/gpu_checks.sh    # here, on CPU at tiny sizes: checks the commands, not the GPU
set -uo pipefail
cd "$(dirname "$0")/.."
smoke="${GPU_CHECKS_SMOKE:-}"
results="${GPU_CHECKS_RESULTS:-bench/results}"
mkdir -p "$results"
failed=0

step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, logs to $results/gpu_checks_NAME.log
    local name="$1" seconds="$2"
    shift 2
    echo "== $name (limit ${seconds}s): $*"
    if timeout "$seconds" "$@" >"$results/gpu_checks_$name.log" 2>&1; then
        tail -n 3 "$results/gpu_checks_$name.log"
    else
        echo "!! $name failed or ran out of time (exit $?): see $results/gpu_checks_$name.log"
        tail -n 20 "$results/gpu_checks_$name.log"
        failed=1
    fi
}

if [ -n "$smoke" ]; then
    judge=(--device cpu --inputs 6 --rounds 1 --warmup-rounds 0 --batch-size 3 --hidden-size 32 --layers 1)
    derta=(--device cpu --steps 1 --rounds 1 --warmup-rounds 0 --layers 1 --hidden-size 32 --no-memory)
    qlora=(--cpu --tiny --models llama3-8b --steps 1 --warmup-steps 0 --in-process)
else
    step setup 180 bash bench/gpu_setup.sh "${1:-wheels}" || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    judge=(--device cuda --shape-true --batch-size 32 --inputs 100 --rounds 2)
    derta=(--device cuda --model-config recipes/configs/meta-llama--Meta-Llama-3-8B-Instruct --load-in-4bit)
    qlora=(--models llama3-8b --num-layers 4)
fi
step judge 240 python bench/judge_throughput.py "${judge[@]}" --output "$results/judge_throughput_lg3_8b_shape.json"
step derta 240 python bench/derta_fused.py "${derta[@]}" --output "$results/derta_fused_cuda.json"
step qlora 200 python bench/qlora_gpu.py "${qlora[@]}" --output "$results/qlora_gpu_checks.json"

if [ -n "${OUT:-}" ]; then
    cp "$results"/judge_throughput_lg3_8b_shape.json "$results"/derta_fused_cuda.json \
        "$results"/qlora_gpu_checks.json "$results"/gpu_checks_*.log "$OUT"/ 2>/dev/null || true
fi
exit "$failed"
