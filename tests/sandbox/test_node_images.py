"""The real node's image store: a real containerd (no kubelet, no network namespace) fed the
OCI layouts that build-images writes, as `sandbox up --real-node` does."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicefleet.images import REPOSITORY
from voicefleet.sandbox import node, node_host, node_images, oci

TAG = "0.1.0"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[node.NodeLayout]:
    missing = node_host.missing_tools()
    if missing:
        pytest.fail(f"the real node needs {', '.join(missing)}", pytrace=False)
    layout = node.layout_for(tmp_path / "state", tmp_path / "images")
    layout.state.mkdir(parents=True)
    cni_bin = node_host.cni_bin_dir()
    assert cni_bin is not None
    layout.containerd_config.write_text(node.containerd_config(layout, cni_bin))
    log = (tmp_path / "containerd.log").open("wb")
    process = subprocess.Popen(
        [str(shutil.which("containerd")), f"--config={layout.containerd_config}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        node_host.wait_for(
            lambda: node_images.answers(layout),
            60,
            "containerd did not answer",
            tmp_path / "containerd.log",
        )
        yield layout
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        node_host.unmount_under(tmp_path)


def build(out: Path, name: str, content: bytes) -> str:
    """An OCI layout named like build-images' (out/NAME), one file; returns its digest."""
    work = out / f".{name}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    (work / "file").write_bytes(content)
    oci.write_single_binary_image(work / "file", "/file", work / "image.tar", tag=TAG)
    shutil.rmtree(out / name, ignore_errors=True)
    with tarfile.open(work / "image.tar") as archive:
        archive.extractall(out / name, filter="data")
    shutil.rmtree(work)
    ((_oci, _tag, digest),) = [
        found for found in node_images.layout_images(out) if found[0].name == name
    ]
    return digest


def test_rebuilding_one_image_keeps_the_others(containerd: node.NodeLayout, tmp_path: Path) -> None:
    out = tmp_path / "oci"
    first = {name: build(out, name, name.encode()) for name in ("operator", "runtime")}
    refs = node_images.load_images(containerd, out, log=lambda _line: None)
    assert {ref: node_images.image_digests(containerd)[ref] for ref in refs} == {
        f"{REPOSITORY}/{name}:{TAG}": digest for name, digest in first.items()
    }

    # A new operator build (sorted first): the runtime is current and must stay.
    rebuilt = build(out, "operator", b"operator, rebuilt")
    imported: list[str] = []
    node_images.load_images(containerd, out, log=imported.append)
    held = node_images.image_digests(containerd)
    assert held[f"{REPOSITORY}/operator:{TAG}"] == rebuilt
    assert held[f"{REPOSITORY}/runtime:{TAG}"] == first["runtime"]
    assert len(imported) == 1 and "operator" in imported[0]  # the runtime was not re-imported
