#!/usr/bin/env bash
# Every GPU check a session lent a GPU runs, in one command (each case in its own process),
# most wanted first: the runtime's measured memory, the -m gpu tests, then the traces the
# simulation's calibration still lacks.
#
#   bash packages/model-bench/scripts/gpu_calibration.sh OUT_DIR [BUDGET_SECONDS]
#
# On the GPU machine of ../shared/gpu/README.md: `bash .gpu/install.sh`, then
# `PYTHON="python3" PYTHONPATH=.gpu/site bash packages/model-bench/scripts/gpu_calibration.sh $OUT 440`
# (it takes about the budget, plus a minute of imports). Here (no GPU) `PYTHON="uv run python" ... OUT 0` checks the
# cases parse and writes skipped records.
# What each file is for, once it is back:
#   runtime.json       model-runtime's benchmarks/gpu_matrix.py (55% of the budget): eager and
#                      optimize()'s executors (auto first, then reorder, arena, program) on the main
#                      training steps with both allocator settings, auto and arena over the zoo, step
#                      times; `gpu_matrix.py render runtime.json` prints the tables of
#                      model-runtime's docs/measured-gpu.md;
#                      auto with the default allocator on alexnet b32 and bert-base b1 records the
#                      allocator's events of the whole run (the largest training misses of
#                      runtime_backtest.py, which then checks the runs of this file).
#   pytest-gpu.txt     the -m gpu tests (allocator replays, runtime on CUDA; at most 25% of the budget).
#   eval-traces.json   eager eval steps at batch 32 with the allocator's events of the whole run
#                      (--trace-all): the default allocator's eval misses (vgg16 -26%, resnet18
#                      -21%, resnet50 +32%, ...) were never traced.
#   train-traces.json  eager train steps whose convolutions the workspace table lacks (batch 1, and
#                      the CNNs first traced here); regenerate the table with
#                      conv_workspaces_from_traces.py R/h200-...-eager-traces.json train-traces.json,
#                      then re-run the suite and simulated_vs_measured.py with both files.
#   lean.json          eager train with the lean loop (the output released) and both allocators, to
#                      replace the runs marked ‡ in the simulated-vs-measured table.
#   amp.json           eager train under bf16 autocast (--autocast bf16), last step traced: CUDA's
#                      autocast policy as the capture emulates it, flash attention's backward
#                      temporaries (gpt2) and the efficient kernel's at bf16 (bert-base), never traced;
#                      compare with `model-opt bench --autocast bf16` and traces_vs_simulation.py.
# Every traced run (runtime.json's TRACED, eval-traces.json, train-traces.json) is read with
# traces_vs_simulation.py FILE...: does the simulated allocator fed the recorded requests reserve
# what was measured, and which requests the simulation lacks or has in excess.
set -u
out=${1:?usage: gpu_calibration.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-440}
python=${PYTHON:-python3}
script="$(dirname "$0")/eager_on_gpu.py"
matrix="$(dirname "$0")/../../model-runtime/benchmarks/gpu_matrix.py"
mkdir -p "$out"
share=$((budget / 20))  # each of the four trace sets: 20% of the budget in all

# shellcheck disable=SC2086  # PYTHON may be a command with arguments ("uv run python")
$python "$matrix" run "$out/runtime.json" --budget $((budget * 55 / 100)) > "$out/runtime.txt" 2>&1
if [ "$budget" -gt 0 ]; then
    # shellcheck disable=SC2086
    timeout $((budget / 4)) $python -m pytest -m gpu -q -p no:cacheprovider tests/model_place tests/model_runtime tests/model_ir \
        > "$out/pytest-gpu.txt" 2>&1
fi

# shellcheck disable=SC2086  # PYTHON may be a command with arguments ("uv run python")
$python "$script" "$out/eval-traces.json" --trace-all --budget "$share" \
    vgg16:eval:32:default vgg19:eval:32:default vgg11:eval:32:default resnet18:eval:32:default \
    resnet50:eval:32:default r3d_18:eval:32:default mobilenet_v2:eval:32:default \
    efficientnet_b0:eval:32:default mnasnet0_5:eval:32:default googlenet:eval:32:default \
    inception_v3:eval:32:default
# shellcheck disable=SC2086
$python "$script" "$out/train-traces.json" --trace --budget "$share" \
    resnet50:train:32:default mobilenet_v2:train:32:default efficientnet_b0:train:32:default \
    mnasnet0_5:train:32:default googlenet:train:32:default inception_v3:train:32:default \
    alexnet:train:32:default mobilenet_v2:train:1:default r3d_18:train:1:default resnet18:train:1:default \
    squeezenet1_0:train:32:expandable
# shellcheck disable=SC2086
$python "$script" "$out/lean.json" --budget "$share" \
    alexnet:train:32:default alexnet:train:32:expandable bert-base:train:1:default bert-base:train:1:expandable \
    bert-base:train:32:default bert-base:train:32:expandable gpt2:train:1:default gpt2:train:1:expandable \
    gpt2:train:32:default gpt2:train:32:expandable vit_b_16:train:1:default vit_b_16:train:1:expandable
# shellcheck disable=SC2086
$python "$script" "$out/amp.json" --trace --autocast bf16 --budget "$share" \
    gpt2:train:1:default gpt2:train:32:default bert-base:train:1:default bert-base:train:32:default \
    vit_b_16:train:1:default vit_b_16:train:32:expandable
echo "gpu_calibration: wrote $(ls "$out" | tr '\n' ' ')"
