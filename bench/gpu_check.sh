#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): CUDA tests, the speed table against the seed's code path, peak memory and an
# out-of-memory split; writes gpu_check.json and gpu_check.md under $OUT (default /tmp/gpu_check).
#
#   bash bench/gpu_check.sh              # on a machine with a CUDA GPU, from a bare checkout (<= 8 minutes)
#   bash bench/gpu_check.sh --rehearse   # every size shrunk, on the CPU
#
# "Installs what it needs" without a network: it uses the python3 that holds torch (CUDA) and transformers (the
# device image has both, with tokenizers, accelerate, numpy, tqdm, pytest) and puts this checkout on PYTHONPATH
# instead of pip-installing it. Wheels in $W2S_WHEELS (a folder of .whl files, e.g. a newer transformers carried
# along) are installed first into a private folder with pip --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ -n "${W2S_WHEELS:-}" ] && ls "$W2S_WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/w2s_site \
    "$W2S_WHEELS"/*.whl
  export PYTHONPATH="/tmp/w2s_site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, transformers, tokenizers, accelerate, tqdm, numpy, pytest" || {
  echo "gpu_check: $PY lacks a package above; carry its wheel in \$W2S_WHEELS" >&2; exit 2; }
set -o pipefail
"$PY" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
