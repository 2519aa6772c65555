#!/usr/bin/env bash
# One prepared GPU check, < 10 minutes in all (each step has its own timeout, and every step
# is cut to what is left of a BUDGET of 570 s, so the whole script ends in time):
#   1. fgvc's training step vs a plain timm-style loop, ResNet-50 at 224 px (RESOLUTIONS="224
#      448" adds 448), bf16, channels_last, without and with torch.compile, each with its model
#      FLOP utilisation next to the card's dense bf16 peak (benchmarks/gpu_train.py);
#   2. the input pipeline's ceiling with the machine's CPU workers (benchmarks/input_pipeline.py);
#   3. a one-GPU torchrun (NCCL) smoke run of the quickstart, shortened;
#   4. the GPU-decode candidate (nvJPEG, augmentation on the GPU) vs timm's loader
#      (benchmarks/gpu_decode.py), with the machine's CPU workers;
#   5. training epochs with the workers kept across epochs vs a new loader per epoch
#      (benchmarks/epochs.py), with the machine's CPU workers;
#   6. batches through the workers' reused shared-memory buffers vs a new shared-memory file
#      per batch (benchmarks/batch_transfer.py), with the machine's CPU workers and pinned memory.
# Usage, from the repository root: bash benchmarks/gpu.sh   (STEPS="2 3" runs only those steps)
# The GPU machine has no internet: it must find a ready environment: PY=/path/to/python, a venv
# at .venv, or a python3 that already holds torch, torchvision and timm (a CUDA image's). Only
# when none exists does it try to create one from the package registry (needs network).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
  elif python3 -c "import torch, torchvision, timm" 2>/dev/null; then PY=python3
  else PY=.venv/bin/python
  fi
fi
if [[ ! -x "$PY" ]] && ! command -v "$PY" >/dev/null; then
  echo "no python at $PY: creating .venv from the registry (needs network)" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet -e .
  PY=.venv/bin/python
fi
OUT="${OUT:-$(mktemp -d)}"
STEPS="${STEPS:-1 2 3 4 5 6}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
FAILED=0
BUDGET="${BUDGET:-570}"  # seconds for the whole script (bash's SECONDS counts from its start)
step() {  # step SECONDS COMMAND...: run with a time limit; a failure is reported, not fatal
  local limit=$1 left=$((BUDGET - SECONDS)); shift
  if (( left < 15 )); then echo "!! skipped, out of time budget: $*" >&2; FAILED=1; return 0; fi
  (( limit > left )) && limit=$left
  timeout "$limit" "$@" || { echo "!! failed or timed out (rc $?): $*" >&2; FAILED=1; }
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())"

want 1 && echo "== 1. training images/s, fgvc vs timm-style loop =="
want 1 && for res in ${RESOLUTIONS:-224}; do
  batch=$([[ $res == 224 ]] && echo 128 || echo 32)
  step 60 "$PY" benchmarks/gpu_train.py --resolution "$res" --batch "$batch" --steps 20
  step 110 "$PY" benchmarks/gpu_train.py --resolution "$res" --batch "$batch" --steps 20 --compile
done

want 2 && echo "== 2. input pipeline ceiling, $(nproc) workers =="
want 2 && step 90 "$PY" benchmarks/input_pipeline.py --workers "$(nproc)" --images 1000 --repeats 3 \
  --data "$OUT/jpegs"

want 3 && echo "== 3. torchrun, 1 GPU, NCCL =="
want 3 && step 100 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m fgvc.cli run \
  recipes/quickstart.yaml --set device=cuda --set output_root="$OUT/runs" \
  --set dataset.root="$OUT/synthetic" --set submission.path="$OUT/q.csv" \
  --set stages.train.epochs=1 --set stages.adapt.epochs=1
want 3 && { grep -h "processes\|nccl\|top-1" "$OUT"/runs/quickstart/log.txt | head -5 || true; }
want 4 && echo "== 4. GPU decode (nvJPEG) vs timm, $(nproc) workers =="
want 4 && step 90 "$PY" benchmarks/gpu_decode.py --workers "$(nproc)" --images 1000 --repeats 3 \
  --data "$OUT/jpegs"
want 5 && echo "== 5. epochs with kept workers vs a new loader per epoch, $(nproc) workers =="
want 5 && step 45 "$PY" benchmarks/epochs.py --workers "$(nproc)" --images 1000 --epochs 5 \
  --repeats 3 --data "$OUT/jpegs"
want 6 && echo "== 6. reused batch buffers vs a new shared-memory file per batch, $(nproc) workers =="
want 6 && step 45 "$PY" benchmarks/batch_transfer.py --workers "$(nproc)" --images 1000 \
  --repeats 3 --data "$OUT/jpegs"
echo "gpu.sh done in ${SECONDS} s$([[ $FAILED == 0 ]] || echo ', with failures')"
exit "$FAILED"
