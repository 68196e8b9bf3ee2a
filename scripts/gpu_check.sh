#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): each logits method on CUDA equals its CPU
# result, the logits stage's cost per step at batch 64/256 x vocab 128k, and a
# server on the GPU serving three method families where SGLang imports.
#
# Needs only PyTorch (with NumPy): nothing is installed, the repository goes on
# PYTHONPATH. SGLang's pure-Python wheels, if brought along in a folder named by
# ILSI_WHEELS (default: wheels/ beside this repository's root, if present), are
# put on PYTHONPATH as they are (Python imports pure-Python wheels from the zip).
# Without CUDA it prints "no CUDA: CPU fallback", runs the CPU part and exits 0.
#
#   bash scripts/gpu_check.sh [--out FILE] [--methods a,b] [--no-server] ...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="python3"; fi
fi
path="$root:$root/lab"
wheels="${ILSI_WHEELS:-$root/wheels}"
if [ -d "$wheels" ]; then
  for whl in "$wheels"/*.whl; do
    [ -e "$whl" ] && path="$path:$whl"
  done
fi
if ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "gpu_check: $py cannot import torch and numpy; nothing to check" >&2
  exit 2
fi
if ! "$py" -c "import requests" 2>/dev/null; then
  # The package imports requests at module level in two places (HTTP clients this
  # check never uses): a stub that fails only when used.
  stub="$(mktemp -d)"
  mkdir -p "$stub/requests"
  printf '%s\n' '"""Stub (scripts/gpu_check.sh): requests is not installed here."""' \
    'def __getattr__(name):' \
    '    raise ImportError("requests is not installed (scripts/gpu_check.sh stub)")' \
    > "$stub/requests/__init__.py"
  path="$path:$stub"
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/scripts/gpu_check.py" "$@"
