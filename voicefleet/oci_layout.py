"""OCI image layouts as files: the blobs an index reaches, a manifest by its tag, the
layout as one archive, a file's content digest. Stdlib only (``images`` runs before any
virtual environment exists)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any, Final

OCI_INDEX: Final = "index.json"

OCI_REF_NAME: Final = "org.opencontainers.image.ref.name"


class LayoutError(RuntimeError):
    """A layout lacks what was asked of it; the message names the layout."""


def blobs(layout: Path) -> set[str]:
    """Every blob the layout's index reaches (manifests, configs, layers)."""
    index = json.loads((layout / OCI_INDEX).read_text())
    used: set[str] = set()
    pending = list(index.get("manifests", []))
    while pending:
        descriptor = pending.pop()
        digest = descriptor["digest"]
        used.add(digest)
        document = json.loads(blob_path(layout, digest).read_text())
        pending.extend(document.get("manifests", []))
        if "config" in document:
            used.add(document["config"]["digest"])
        used.update(layer["digest"] for layer in document.get("layers", []))
    return used


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def manifest(layout: Path, tag: str) -> tuple[str, dict[str, Any]]:
    """(digest, manifest) of ``tag`` in the layout."""
    index = json.loads((layout / OCI_INDEX).read_text())
    for descriptor in index.get("manifests", []):
        if descriptor.get("annotations", {}).get(OCI_REF_NAME) == tag:
            digest = str(descriptor["digest"])
            return digest, json.loads(blob_path(layout, digest).read_text())
    raise LayoutError(f"no image tagged {tag} in {layout}")


def write_archive(layout: Path, archive: Path, mtime: int) -> Path:
    """The layout as one OCI archive, its entries in a fixed order, every one dated
    ``mtime`` (the build's fixed time: one layout, one archive)."""
    partial = archive.with_name(archive.name + ".partial")

    def normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
        return info

    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False, filter=normal)
    partial.replace(archive)
    return archive


def content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
