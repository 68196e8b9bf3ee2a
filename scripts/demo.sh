#!/usr/bin/env bash
# Set everything up, then run the main job: start SGLang with the plugin on the
# embedded default model (CPU when there is no GPU), send the same prompts with
# several methods through an unchanged OpenAI client, print a table, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sglang-ilsi demo "$@"
