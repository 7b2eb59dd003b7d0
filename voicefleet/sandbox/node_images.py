"""The real node's images in containerd: the pause image built here, every image that
build-images wrote imported when its digest changed, older imports of ours forgotten."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from voicefleet.oci_layout import OCI_REF_NAME
from voicefleet.sandbox.node import PAUSE_IMAGE, Log, NodeError, NodeLayout
from voicefleet.sandbox.oci import write_single_binary_image

K8S_NAMESPACE: Final = "k8s.io"  # containerd's namespace of the CRI plugin

# The pause process of every pod: sleeps until signalled. Built here because the real one
# comes from a registry; Go is already needed for the control plane.
PAUSE_SOURCE: Final = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
"""


def ctr(layout: NodeLayout, *args: str, stdin: IO[bytes] | None = None) -> str:
    argv = ["ctr", f"--address={layout.socket}", f"--namespace={K8S_NAMESPACE}", *args]
    done = subprocess.run(argv, stdin=stdin, capture_output=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise NodeError(f"ctr {' '.join(args[:3])} failed: {done.stderr.decode().strip()}")
    return done.stdout.decode()


def answers(layout: NodeLayout) -> bool:
    """containerd listens on its socket and answers."""
    if not layout.socket.exists():
        return False
    try:
        ctr(layout, "version")
    except NodeError:
        return False
    return True


def image_digests(layout: NodeLayout) -> dict[str, str]:
    """name -> manifest digest of every image containerd holds."""
    listed: dict[str, str] = {}
    for line in ctr(layout, "images", "list").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            listed[fields[0]] = fields[2]
    return listed


def layout_images(directory: Path) -> list[tuple[Path, str, str]]:
    """(layout, tag, digest) of each OCI layout under ``directory`` (build-images' output)."""
    found = []
    for index in sorted(directory.glob("*/index.json")):
        for descriptor in json.loads(index.read_text()).get("manifests", []):
            tag = descriptor.get("annotations", {}).get(OCI_REF_NAME)
            if tag:
                found.append((index.parent, tag, str(descriptor["digest"])))
    return found


def import_layout(layout: NodeLayout, oci: Path, name: str, log: Log) -> None:
    """Stream the layout into containerd as an OCI archive (blobs it has are skipped)."""
    started = time.monotonic()
    reader, writer = os.pipe()
    with os.fdopen(reader, "rb") as source:
        importer = subprocess.Popen(
            [
                "ctr",
                f"--address={layout.socket}",
                f"--namespace={K8S_NAMESPACE}",
                "images",
                "import",
                f"--base-name={name}",
                "--no-unpack=false",
                "-",
            ],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with os.fdopen(writer, "wb") as sink, tarfile.open(fileobj=sink, mode="w|") as tar:
            for path in sorted(oci.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(oci)), recursive=False)
        out, _ = importer.communicate(timeout=1800)
    if importer.returncode != 0:
        raise NodeError(f"importing {oci} into containerd failed: {out.decode().strip()}")
    log(f"imported {name} in {time.monotonic() - started:.0f} s")


def load_images(layout: NodeLayout, image_dir: Path, log: Log) -> list[str]:
    """Import every built image whose digest containerd does not have under its name."""
    held = image_digests(layout)
    found = [
        (oci, f"{_repository_of(oci)}:{tag}", digest)
        for oci, tag, digest in layout_images(image_dir)
    ]
    for oci, ref, digest in found:
        if held.get(ref) != digest:
            import_layout(layout, oci, _repository_of(oci), log)
    # Only once every image is in: a prune between two imports would forget an image that
    # is current but not yet looked at (the runtime, after a new operator build).
    names = [ref for _oci, ref, _digest in found]
    prune_images(layout, keep=set(names))
    return names


def prune_images(layout: NodeLayout, keep: set[str]) -> None:
    """Forget older imports of the project's images (containerd's garbage collector then
    frees their layers and snapshots): one copy of each image, not one per build."""
    from voicefleet.images import REPOSITORY  # noqa: PLC0415

    stale = [
        name
        for name in image_digests(layout)
        if name.startswith(f"{REPOSITORY}/") and name not in keep
    ]
    if stale:
        ctr(layout, "images", "remove", *stale)


def _repository_of(oci: Path) -> str:
    from voicefleet.images import REPOSITORY  # noqa: PLC0415  (stdlib-only module)

    return f"{REPOSITORY}/{oci.name}"


def pause_image(layout: NodeLayout, work: Path, log: Log) -> None:
    """Build and import ``PAUSE_IMAGE`` unless containerd has it."""
    if PAUSE_IMAGE in image_digests(layout):
        return
    source = work / "pause.go"
    source.write_text(PAUSE_SOURCE)
    binary = work / "pause"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
    done = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), str(source)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise NodeError(f"building the pause binary failed: {done.stderr.strip()}")
    archive = work / "pause.oci.tar"
    write_single_binary_image(binary, "/pause", archive, tag=PAUSE_IMAGE.rsplit(":", 1)[1])
    with archive.open("rb") as stream:
        ctr(
            layout,
            "images",
            "import",
            f"--base-name={PAUSE_IMAGE.rsplit(':', 1)[0]}",
            "-",
            stdin=stream,
        )
    log(f"built and imported {PAUSE_IMAGE}")


@contextlib.contextmanager
def image_store_lock(images: Path) -> Iterator[IO[str]]:
    """One real node per image store at a time: containerd's database allows one daemon."""
    images.mkdir(parents=True, exist_ok=True)
    handle = (images.parent / f".{images.name}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise NodeError(
            f"another sandbox's real node uses {images}; stop it first (`voicefleet sandbox down`)"
        ) from exc
    yield handle


def temporary_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="voicefleet-node-")


def images_in(directories: Sequence[Path]) -> list[Path]:
    return [d for d in directories if d.is_dir()]
