#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs voicefleet into it.
#
# The environment lives in a cache keyed by the hash of the dependency lists (pyproject.toml)
# and constraints.txt, so the multi-GB torch install happens once per dependency change, not
# once per clone.
# Prints the environment's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${VOICEFLEET_CACHE:-$HOME/.cache/voicefleet}"
# Only the dependency lists count: a change to tool settings in pyproject.toml keeps the venv.
key=$( (python3 -c 'import tomllib, json; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True))'; cat constraints.txt) | sha256sum | cut -c1-12)
venv="${VOICEFLEET_VENV:-$cache/venv-py311-$key}"

if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
    echo "setup: creating $venv (first time: downloads torch, a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    # Environments of older dependency sets are several GB each; keep only the new one.
    find "$cache" -maxdepth 1 -name 'venv-py311-*' ! -path "$venv" -exec rm -rf {} +
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip "setuptools>=77" wheel >&2
    "$venv/bin/pip" install -q -c constraints.txt ".[operator,runtime,dev]" >&2
    touch "$venv/.complete"
fi
# The project itself, editable, from this checkout (cheap; the dependencies are cached).
# setuptools is chatty about editable installs; show its output only when it fails.
if ! log=$("$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1); then
    echo "$log" >&2
    exit 1
fi
echo "$venv"
