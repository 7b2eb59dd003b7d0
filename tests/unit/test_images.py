"""The image build's and the real node's pure parts: configs, the pause image, pruning."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from voicefleet import constants, image_store, images, oci_layout
from voicefleet.sandbox import node, oci

ROOT = Path(__file__).resolve().parents[2]


def test_images_are_named_for_the_chart_and_the_operators_default() -> None:
    assert images.image_ref("runtime") == constants.DEFAULT_RUNTIME_IMAGE
    assert images.image_ref("operator").startswith(f"{constants.IMAGE_REPOSITORY}/operator:")


def test_stale_images_are_untagged_images_no_tagged_one_builds_on(tmp_path: Path) -> None:
    (tmp_path / "overlay-images").mkdir()
    (tmp_path / "overlay-layers").mkdir()
    layers = [
        {"id": "base"},
        {"id": "deps", "parent": "base"},
        {"id": "code-new", "parent": "deps"},
        {"id": "code-old", "parent": "deps"},
        {"id": "deps-old", "parent": "base"},
    ]
    found = [
        {"id": "final", "names": ["ghcr.io/voicefleet/runtime:0.1.0"], "layer": "code-new"},
        {"id": "cached-deps-step", "layer": "deps"},  # the layer cache of the current build
        {"id": "older-final", "layer": "code-old"},
        {"id": "older-deps-step", "layer": "deps-old"},
    ]
    (tmp_path / "overlay-layers" / "layers.json").write_text(json.dumps(layers))
    (tmp_path / "overlay-images" / "images.json").write_text(json.dumps(found))
    assert image_store.stale_images(tmp_path) == ["older-final", "older-deps-step"]


def test_an_archive_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "index.json").write_text("{}")
    (layout / "blobs" / "sha256" / "ab").write_bytes(b"layer")
    first = oci_layout.write_archive(layout, tmp_path / "a.tar", images.epoch()).read_bytes()
    (layout / "index.json").touch()  # a newer mtime must not matter
    assert (
        oci_layout.write_archive(layout, tmp_path / "b.tar", images.epoch()).read_bytes() == first
    )


def test_containerd_runs_runc_with_cgroupfs_and_may_not_lower_oom_scores(tmp_path: Path) -> None:
    layout = node.layout_for(tmp_path / "state", tmp_path / "images")
    text = node.containerd_config(layout, Path("/usr/lib/cni"))
    assert "restrict_oom_score_adj = true" in text
    assert "SystemdCgroup = false" in text
    assert f'sandbox_image = "{node.PAUSE_IMAGE}"' in text
    assert f'root = "{tmp_path / "images"}"' in text  # images kept between sandboxes


def test_the_kubelet_fits_this_kind_of_machine(tmp_path: Path) -> None:
    layout = node.layout_for(tmp_path / "state", tmp_path / "images")
    config = node.kubelet_config(layout, tmp_path / "ca.crt", "/voicefleet-x")
    assert config["failCgroupV1"] is False and config["failSwapOn"] is False
    assert config["cgroupDriver"] == "cgroupfs" and config["cgroupRoot"] == "/voicefleet-x"
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_the_pod_network_is_a_bridge_in_a_range_routed_nowhere(tmp_path: Path) -> None:
    layout = node.layout_for(tmp_path / "state", tmp_path / "images")
    bridge = node.cni_config(layout)["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipam"]["ranges"] == [[{"subnet": node.POD_CIDR}]]
    assert node.POD_CIDR.startswith("198.18.")  # RFC 2544's benchmarking range


def test_the_real_node_is_a_spot_gpu_node_by_its_labels() -> None:
    labels = node.node_labels()
    assert labels[constants.NODE_LABEL_GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"
    assert labels[constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE] == constants.CapacityType.SPOT
    assert node.gpu_capacity_patch(4) == {"status": {"capacity": {constants.RESOURCE_GPU: "4"}}}


def test_the_pause_image_is_one_static_binary(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF")
    archive = tmp_path / "pause.tar"
    oci.write_single_binary_image(binary, "/pause", archive, tag="3.10")
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (entry,) = index["manifests"]
        assert entry["annotations"][oci_layout.OCI_REF_NAME] == "3.10"
        manifest = json.loads(
            tar.extractfile(f"blobs/sha256/{entry['digest'].split(':')[1]}").read()  # type: ignore[union-attr]
        )
        config = json.loads(
            tar.extractfile(  # type: ignore[union-attr]
                f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"
            ).read()
        )
    assert config["config"]["Entrypoint"] == ["/pause"]
    # The same bytes in, the same archive out.
    again = tmp_path / "again.tar"
    oci.write_single_binary_image(binary, "/pause", again, tag="3.10")
    assert again.read_bytes() == archive.read_bytes()


def test_the_operator_images_package_set_runs_the_cli() -> None:
    # The operator image ships voicefleet without the model server: of runtime/ only the
    # files its Dockerfile copies. Imports outside them (and torch) fail here as they would
    # in the image, where the operator once crash-looped on `from voicefleet.runtime import
    # limits`.
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    (copy,) = [line for line in dockerfile.splitlines() if line.startswith("COPY runtime/")]
    shipped = {Path(src).stem for src in copy.split()[1:-1]} - {"__init__"}
    script = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top, _, rest = name.partition(".")
        if top == "torch" or (
            name.startswith("voicefleet.runtime.") and name.split(".")[2] not in {shipped!r}
        ):
            raise ModuleNotFoundError(f"not in the operator image: {{name}}", name=name)
        return None
sys.meta_path.insert(0, Absent())
from voicefleet import cli
for argv in (["operator", "run", "--help"], ["runtime", "serve", "--help"], ["plan", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--leader-elect" in done.stdout and "--idle-seconds" in done.stdout
