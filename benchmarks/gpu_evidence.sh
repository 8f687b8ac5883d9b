#!/usr/bin/env bash
# The GPU measurements behind the fast path's defaults: tests and benchmark, a full run's wall time, a precision
# study; three parts that run separately (see docs/fast-path.md):
#
#   bash benchmarks/gpu_evidence.sh bench     OUT   # CUDA tests of fast_path.py; bench.py, default and variants
#   bash benchmarks/gpu_evidence.sh full_run  OUT   # train.py, 180 epochs of CIFAR-shaped data (45k/5k/10k): wall time
#   bash benchmarks/gpu_evidence.sh precision OUT   # paired seeds on Fashion-MNIST: fp32 eager against the fast variants
#
# Each part writes at most four files into OUT (its log, and JSON/Markdown results).
# Environment knobs (defaults in brackets):
#   PYTHON [python3]
#   FULL_RUN_FLAGS  extra train.py flags of full_run, e.g. '--precision bf16 --channels_last' []
#   FULL_RUN_SIZE   '--fake_size 50000 --num_epochs 180'
#   TRAIN_FLAGS     data flags of precision ['--dataset fashionmnist --data_dir .data']
#                   (.data/FashionMNIST/raw/*.gz, copied from /usr/share/datasets/fashion-mnist)
#   SEEDS [1-5]  EPOCHS [10]  RUNS_PER_GPU [3]
#   CONFIGS [fp32_eager fp32_graph bf16_graph fp16_graph]
set -euo pipefail
usage='usage: bash benchmarks/gpu_evidence.sh bench|full_run|precision OUT'
part=${1:?$usage}
out=${2:?$usage}
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."  # the repository: its scripts and tests
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1

case $part in
bench)
    log=$out/bench.log
    "$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.cuda.is_available())' | tee "$log"
    "$python" -m pytest -q tests/test_fast_path.py 2>&1 | tee -a "$log"
    "$python" bench.py --json "$out/bench.json" 2>&1 | tee -a "$log"
    for variant in '--precision bf16 --channels_last' '--precision fp16 --channels_last' '--channels_last' \
                   '--no_cuda_graph' '--precision bf16 --channels_last --no_cuda_graph' '--cudnn_benchmark' \
                   '--precision bf16 --channels_last --cudnn_benchmark' '--precision bf16 --channels_last --batch_size 512'; do
        # shellcheck disable=SC2086  # the variant is a list of flags
        "$python" bench.py --skip_usual $variant 2>&1 | grep -v '^resnet' | tee -a "$log"
    done
    ;;
full_run)
    log=$out/full_run.log
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    "$python" train.py --dataset fake ${FULL_RUN_SIZE:---fake_size 50000 --num_epochs 180} --path "$work" \
        --name full_run ${FULL_RUN_FLAGS:-} 2>&1 | tee "$log"
    end=$(date +%s%N)
    echo "wall time of the whole train.py run, start-up included: $(( (end - start) / 1000000 )) ms" | tee -a "$log"
    cp "$work"/fake/results/full_run.json "$out/full_run.json"
    ;;
precision)
    log=$out/precision.log
    # shellcheck disable=SC2086
    "$python" sweep.py --path "$work" --seeds "${SEEDS:-1-5}" --runs_per_gpu "${RUNS_PER_GPU:-3}" \
        --baseline fp32_eager --configs ${CONFIGS:-fp32_eager fp32_graph bf16_graph fp16_graph} \
        --config 'fp32_eager=--precision fp32 --no_cuda_graph' --config 'fp32_graph=--precision fp32' \
        --config 'bf16_graph=--precision bf16 --channels_last' \
        --config 'fp16_graph=--precision fp16 --channels_last' \
        -- ${TRAIN_FLAGS:---dataset fashionmnist --data_dir .data} --num_epochs "${EPOCHS:-10}" 2>&1 | tee "$log"
    report=$(dirname "$(find "$work" -name report.md | head -n 1)")
    cp "$report/report.md" "$report/report.csv" "$out/"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
