"""Find the sandbox's binaries, building the missing ones.

Where each binary comes from, first match wins:
1. an explicit path in ``TEST_ASSET_<NAME>`` (envtest's convention, e.g.
   ``TEST_ASSET_KUBE_APISERVER``);
2. ``$KUBEBUILDER_ASSETS/<name>`` (envtest's asset directory, as ``setup-envtest`` makes);
3. the build cache (``build.default_cache_dir()``), built from Go modules when absent.

Binaries from 1 and 2 are used as they are: whoever put them there chose their version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from voicefleet.sandbox import build

ENV_ASSETS_DIR: Final = "KUBEBUILDER_ASSETS"
ASSET_ENV_PREFIX: Final = "TEST_ASSET_"
CONTROL_PLANE: Final = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
# The real node's (opt-in): built like the control plane, from the same release.
REAL_NODE: Final = ("kubelet", "kube-proxy")


class BinaryNotFound(RuntimeError):
    """A binary named by the environment does not exist."""


def asset_env(name: str) -> str:
    """``kube-apiserver`` -> ``TEST_ASSET_KUBE_APISERVER``."""
    return ASSET_ENV_PREFIX + name.upper().replace("-", "_")


def preset(name: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The binary the environment names for ``name``, if any."""
    explicit = environ.get(asset_env(name))
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise BinaryNotFound(f"{asset_env(name)}={explicit} is not a file")
        return path
    assets = environ.get(ENV_ASSETS_DIR)
    if assets:
        candidate = Path(assets).expanduser() / name
        if candidate.is_file():
            return candidate
    return None


def resolve(
    names: Sequence[str] = CONTROL_PLANE,
    *,
    cache_dir: Path | None = None,
    log: build.Progress = print,
) -> dict[str, Path]:
    """Paths of ``names``: preset ones as they are, the rest from the cache (built if needed)."""
    found: dict[str, Path] = {}
    to_build: list[str] = []
    for name in names:
        path = preset(name)
        if path is None:
            to_build.append(name)
        else:
            found[name] = path
    if to_build:
        found.update(build.build(to_build, cache_dir, log=log))
    return {name: found[name] for name in names}


def cached(name: str, cache_dir: Path | None = None) -> Path | None:
    """The binary if the environment or the cache already has it; never builds."""
    path = preset(name)
    if path is not None:
        return path
    cache = cache_dir or build.default_cache_dir()
    target = build.target_by_name(name)
    return build.bin_dir(cache) / name if build.is_cached(target, cache) else None
