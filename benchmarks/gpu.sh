#!/usr/bin/env bash
# One prepared GPU check, < 8 minutes in all (each step has its own timeout):
#   1. fgvc's training step vs a plain timm-style loop, ResNet-50 at 224 and 448 px, bf16,
#      channels_last, without and with torch.compile (benchmarks/gpu_train.py);
#   2. the input pipeline's ceiling with the machine's CPU workers (benchmarks/input_pipeline.py);
#   3. a one-GPU torchrun (NCCL) smoke run of the quickstart, shortened.
# Usage, from the repository root: bash benchmarks/gpu.sh
# The GPU machine has no internet: it must find a ready environment, either PY=/path/to/python
# or a venv carried with the working tree at .venv (the `run` tool's carry: [".venv"]). Only
# when neither exists does it try to create one from the package registry (needs network).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PY:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
  echo "no python at $PY: creating .venv from the registry (needs network)" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet -e .
  PY=.venv/bin/python
fi
OUT="${OUT:-$(mktemp -d)}"
FAILED=0
step() {  # step SECONDS COMMAND...: run with a time limit; a failure is reported, not fatal
  local limit=$1; shift
  timeout "$limit" "$@" || { echo "!! failed or timed out (rc $?): $*" >&2; FAILED=1; }
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== 1. training images/s, fgvc vs timm-style loop =="
for res in 224 448; do
  batch=$([[ $res == 224 ]] && echo 128 || echo 32)
  step 45 "$PY" benchmarks/gpu_train.py --resolution "$res" --batch "$batch" --steps 20
  step 100 "$PY" benchmarks/gpu_train.py --resolution "$res" --batch "$batch" --steps 20 --compile
done

echo "== 2. input pipeline ceiling, $(nproc) workers =="
step 120 "$PY" benchmarks/input_pipeline.py --workers "$(nproc)" --images 1000 --repeats 3 \
  --data "$OUT/jpegs"

echo "== 3. torchrun, 1 GPU, NCCL =="
step 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m fgvc.cli run \
  recipes/quickstart.yaml --set device=cuda --set output_root="$OUT/runs" \
  --set dataset.root="$OUT/synthetic" --set submission.path="$OUT/q.csv" \
  --set stages.train.epochs=1 --set stages.adapt.epochs=1
grep -h "processes\|top-1" "$OUT"/runs/quickstart/log.txt | head -5 || true
echo "gpu.sh done$([[ $FAILED == 0 ]] || echo ', with failures')"
exit "$FAILED"
