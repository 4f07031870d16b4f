#!/usr/bin/env bash
# One GPU session in one device call: the checks and the benchmark the lean-step work waits for, sized to
# end inside a 600 s call (about 9 minutes), every log kept under $OUT.
#
#   make gpu-wheels                 # here, once, with pip's network: the packages a bare GPU box lacks -> .whl/
#   bash launch/gpu_session.sh      # there (the device tool: carry [".whl"], timeout_s 600)
#
# 1. the machine: GPU, driver, torch/CUDA/accelerate versions;
# 2. launch/gpu_check.py --only sync syncbn cuda_graph resume (no host sync in the step under CUDA's sync
#    debug mode, distgen's SyncBatchNorm on NCCL, captured == eager weights for six families, exact resume);
# 3. make gpu-bench with a smaller budget (GPU_BUDGET_S, default 240 s; the Makefile's own is 420 s):
#    the harness against the hand-written loop, eager / captured / compile, one JSON line.
# A failed check does not stop the benchmark. Each stage has a wall-clock cap, so a hang costs minutes,
# not the session. The machine's own python3 (with its torch) runs everything; no venv is needed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/distgen-gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import webdataset, torch_fidelity" 2>/dev/null \
    || { echo "webdataset or torch-fidelity is missing: run 'make gpu-wheels' here and carry .whl"; exit 1; }
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'accelerate', accelerate.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
start=$SECONDS
timeout "${GPU_CHECK_S:-240}" python3 launch/gpu_check.py --only sync syncbn cuda_graph resume --jobs 8 2>&1 \
    | tee "$OUT/gpu_check.log"
echo "gpu_check: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
start=$SECONDS
timeout "${GPU_BENCH_S:-330}" make --no-print-directory gpu-bench GPU_PY=python3 GPU_BUDGET_S="${GPU_BUDGET_S:-240}" 2>&1 \
    | tee "$OUT/gpu_bench.log"
echo "gpu-bench: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
