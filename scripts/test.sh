#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit + end-to-end with real
# SGLang servers on CPU). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check sglang_ilsi lab tests plugins examples benchmarks scripts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
