#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs voicefleet into it.
#
# The environment lives in a cache keyed by the hash of pyproject.toml and constraints.txt,
# so the multi-GB torch install happens once per dependency change, not once per clone.
# Prints the environment's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${VOICEFLEET_CACHE:-$HOME/.cache/voicefleet}"
key=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
venv="${VOICEFLEET_VENV:-$cache/venv-py311-$key}"

if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
    echo "setup: creating $venv (first time: downloads torch, a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip "setuptools>=77" wheel >&2
    "$venv/bin/pip" install -q -c constraints.txt ".[operator,runtime,dev]" >&2
    touch "$venv/.complete"
fi
# The project itself, editable, from this checkout (cheap; the dependencies are cached).
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >&2
echo "$venv"
