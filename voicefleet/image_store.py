"""The buildah image store: one containers-storage directory that every build goes
through and that holds the layer cache, where it and the OCI layouts live, and pruning
what no build uses any more. Stdlib only (``images`` runs before any virtual environment
exists)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from voicefleet.oci_layout import blob_path

ENV_STORE: Final = "VOICEFLEET_IMAGE_STORE"

ENV_OUT: Final = "VOICEFLEET_IMAGE_DIR"

Log = Callable[[str], None]


class ImageError(RuntimeError):
    """A build step failed; the message says which and shows its output."""


def default_store() -> Path:
    override = os.environ.get(ENV_STORE)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "voicefleet" / "images" / "storage"


def default_out() -> Path:
    override = os.environ.get(ENV_OUT)
    if override:
        return Path(override).expanduser()
    return default_store().parent / "oci"


@dataclass(frozen=True)
class Store:
    """One containers-storage directory; every buildah call goes through it."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            f"--root={self.root}",
            f"--runroot={self.root.parent / 'run'}",
            "--storage-driver=overlay",
            *args,
        ]

    def run(self, *args: str, log: Log | None = None, timeout: float = 3600) -> str:
        return run_command(self.argv(*args), log=log, timeout=timeout)

    def exists(self, ref: str) -> bool:
        done = subprocess.run(
            self.argv("inspect", "--type=image", ref), capture_output=True, check=False
        )
        return done.returncode == 0


def run_command(argv: Sequence[str], *, log: Log | None = None, timeout: float = 3600) -> str:
    """Run a command; stream its output to ``log`` when given, else capture it."""
    if log is None:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise ImageError(f"{' '.join(argv[:4])} ... failed:\n{done.stdout}{done.stderr}")
        return done.stdout
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        tail = [*tail[-40:], line.rstrip()]
        log(line.rstrip())
    if process.wait(timeout=timeout) != 0:
        raise ImageError(f"{' '.join(argv[:4])} ... failed:\n" + "\n".join(tail))
    return "\n".join(tail)


def unpacked_size(store: Store, layout: Path, document: dict[str, Any]) -> int:
    """Bytes of the image's layers unpacked, from the store's own layer records."""
    config = json.loads(blob_path(layout, document["config"]["digest"]).read_text())
    diff_ids = set(config["rootfs"]["diff_ids"])
    layers = json.loads((store.root / "overlay-layers" / "layers.json").read_text())
    return sum(
        int(layer.get("diff-size", 0)) for layer in layers if layer.get("diff-digest") in diff_ids
    )


def stale_images(store_root: Path) -> list[str]:
    """Untagged images whose layers no tagged image builds on: older builds' tops, and
    cached steps of a dependency set that changed. The cached steps of the current images
    (untagged too) share their layers and stay: they are the layer cache."""
    images = json.loads((store_root / "overlay-images" / "images.json").read_text())
    layers = json.loads((store_root / "overlay-layers" / "layers.json").read_text())
    parent = {layer["id"]: layer.get("parent") for layer in layers}
    used: set[str] = set()
    for image in images:
        if image.get("names"):
            layer = image.get("layer")
            while layer and layer not in used:
                used.add(layer)
                layer = parent.get(layer)
    return [i["id"] for i in images if not i.get("names") and i.get("layer") not in used]


def prune_store(store: Store, log: Log = print) -> None:
    """Remove build containers and ``stale_images``; the layer cache stays."""
    store.run("rm", "--all")
    stale = stale_images(store.root)
    if stale:
        store.run("rmi", "--force", *stale)
    log(f"pruned {len(stale)} stale images from {store.root}")
