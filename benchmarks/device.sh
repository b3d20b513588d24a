#!/usr/bin/env bash
# GPU check of ctbench (issue 16); run it whenever a GPU is available and record its output in
# benchmarks/README.md ("GPU"). At most 555 s: the parts' caps (150 + 180 + 60 + 105 + 35 + 25 s) fit one
# 10-minute device call (tests/test_benchmarks_smoke.py checks the sum). bounds.py gets the most, since it
# prints its table only at the end (cold Triton compiles in its warm-up); grid_cost logs each cell group.
#   bash benchmarks/device.sh [OUT_DIR]          # from the repository root; OUT_DIR default: $OUT or ./device-out
# 1. CUDA correctness: tests/test_cuda.py (bound engine and training steps on cuda vs CPU float64);
# 2. bound-engine speed on the GPU: benchmarks/bounds.py --device cuda (CNN7, CIFAR shapes, batch 128);
# 3. training speed: CNN7 IBP on the embedded mnist_mini (6,000 images) for 2 epochs, seconds per epoch
#    (x10 for full MNIST), the end-to-end check of the projection below;
# 4. projected GPU-hours of the paper grid (config/config.yaml) per setting and stage: benchmarks/grid_cost.py
#    measures every method's training step per setting (train) and the certify/attack per-sample costs.
# Needs torch with CUDA, and ctbench's pure-Python dependencies (pyyaml, jsonschema, h5py, pandas, tqdm, ...).
# On a machine without internet, fetch missing wheels here first (benchmarks/device-wheels.sh puts them in
# .whl/) and carry that folder: this script installs them into /tmp/site when it finds it.
set -uo pipefail
out=${1:-${OUT:-device-out}}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CTBENCH_PROGRESS_INTERVAL=10
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} 2>&1 | tee "$out/machine.txt"
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "device.sh: no CUDA device"; exit 2; }
status=0
echo "== 1. CUDA tests"
timeout 150 $py -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.txt" || status=1
echo "== 2. bounds.py --device cuda"
timeout 180 $py benchmarks/bounds.py --device cuda --repeats 5 2>&1 | tee "$out/bounds-cuda.txt" || status=1
echo "== 3. CNN7 IBP, mnist_mini, 2 epochs on cuda"
rm -rf /tmp/ctbench-device-train
timeout 60 $py -m ctbench train --dataset mnist_mini --eps 0.1 --method ibp --model cnn7 --device cuda \
  --set epochs=2 --set eps_end_epoch=1 --set lr_milestones=[] --no-select --out /tmp/ctbench-device-train \
  2>&1 | tee "$out/train-cnn7-ibp.txt" || status=1
cp /tmp/ctbench-device-train/train/history.csv "$out/train-history.csv" 2>/dev/null || true
echo "== 4. grid_cost.py --device cuda (paper grid, projected GPU-hours)"
timeout 105 $py benchmarks/grid_cost.py --device cuda --stages train --repeats 3 --json > "$out/grid-cost-train.json" \
  2> >(tee "$out/grid-cost-train.log" >&2) || status=1
# the cheap certify stages and the attack first (per setting, logged as each finishes), then full CROWN and
# alpha-CROWN (every intermediate neuron back-substituted: the costly stages, which may not finish in time)
timeout 35 $py benchmarks/grid_cost.py --device cuda --stages certify,attack --methods ibp --cert-batch 8 --repeats 1 \
  --cert-stages IBP,CROWN-IBP,PGD 2>&1 | tee "$out/grid-cost-certify.txt" || status=1
timeout 25 $py benchmarks/grid_cost.py --device cuda --stages certify --methods ibp --cert-batch 2 --repeats 1 \
  --cert-stages CROWN,alpha-CROWN 2>&1 | tee "$out/grid-cost-certify-crown.txt" || status=1
echo "device.sh: done (status $status); outputs in $out"
exit $status
