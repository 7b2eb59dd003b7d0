"""The sandbox's parts that need no cluster: node shapes, binary lookup, versions, processes."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voicefleet.constants import (
    NODE_LABEL_EKS_CAPACITY_TYPE,
    NODE_LABEL_GPU_COUNT,
    NODE_LABEL_GPU_MEMORY,
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    RESOURCE_GPU,
    CapacityType,
)
from voicefleet.sandbox import binaries, build, nodes, processes
from voicefleet.sandbox.versions import KUBERNETES_VERSION, staging_version
from voicefleet.testing.polling import poll

POD_NETWORK = "127.77.0.0/16"


def test_default_nodes_are_two_on_demand_four_spot_and_a_cpu_node() -> None:
    planned = nodes.plan_nodes(nodes.DEFAULT_NODES, POD_NETWORK)
    names = [node.name for node in planned]
    assert names == [
        "h100-on-demand-0",
        "h100-on-demand-1",
        "h100-spot-0",
        "h100-spot-1",
        "h100-spot-2",
        "h100-spot-3",
        "cpu-on-demand-0",
    ]
    cidrs = [ipaddress.IPv4Network(node.pod_cidr) for node in planned]
    assert len(set(cidrs)) == len(cidrs)
    network = ipaddress.IPv4Network(POD_NETWORK)
    # The first /24 is kwok's fallback range and no node's.
    assert all(c.subnet_of(network) and c != next(network.subnets(new_prefix=24)) for c in cidrs)


def test_gpu_node_manifest_carries_gpu_feature_discovery_and_capacity_labels() -> None:
    spot = nodes.plan_nodes(
        [nodes.NodeGroup(count=1, capacity_type=CapacityType.SPOT)], POD_NETWORK
    )
    manifest = nodes.node_manifest(spot[0])
    labels = manifest["metadata"]["labels"]
    assert labels[NODE_LABEL_GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"
    assert labels[NODE_LABEL_GPU_MEMORY] == "81559"
    assert labels[NODE_LABEL_GPU_COUNT] == "8"
    assert labels[NODE_LABEL_KARPENTER_CAPACITY_TYPE] == CapacityType.SPOT
    assert labels[NODE_LABEL_EKS_CAPACITY_TYPE] == "SPOT"
    assert manifest["status"]["capacity"][RESOURCE_GPU] == "8"
    assert manifest["metadata"]["annotations"][nodes.KWOK_NODE_ANNOTATION] == "fake"


def test_cpu_node_has_no_gpu() -> None:
    cpu = nodes.plan_nodes([nodes.NodeGroup(count=1, gpus=0)], POD_NETWORK)
    manifest = nodes.node_manifest(cpu[0])
    assert RESOURCE_GPU not in manifest["status"]["capacity"]
    assert NODE_LABEL_GPU_PRODUCT not in manifest["metadata"]["labels"]
    assert manifest["metadata"]["labels"][NODE_LABEL_EKS_CAPACITY_TYPE] == "ON_DEMAND"


def test_parse_group_reads_every_key() -> None:
    group = nodes.parse_group("count=3, capacity=spot, gpus=4, product=NVIDIA-L40S, cpu=64")
    assert group == nodes.NodeGroup(
        count=3, capacity_type=CapacityType.SPOT, gpus=4, product="NVIDIA-L40S", cpu=64
    )
    assert group.prefix == "l40s-spot"
    assert group.gpu_memory_mib == nodes.GPU_MEMORY_MIB["NVIDIA-L40S"]
    unknown = nodes.parse_group("count=1,product=NVIDIA-B200,memory=183359")
    assert unknown.gpu_memory_mib == 183359
    assert nodes.parse_group("count=2").capacity_type == CapacityType.ON_DEMAND


@pytest.mark.parametrize(
    "text",
    ["capacity=spot", "count=1,capacity=preemptible", "count=1,colour=red", "count=0", "count"],
)
def test_parse_group_refuses_bad_specs(text: str) -> None:
    with pytest.raises(ValueError):
        nodes.parse_group(text)


def test_staging_modules_follow_the_release() -> None:
    assert staging_version("v1.34.4") == "v0.34.4"
    assert staging_version(KUBERNETES_VERSION).startswith("v0.")


def test_explicit_and_kubebuilder_assets_win_over_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "etcd").write_text("")
    explicit = tmp_path / "my-apiserver"
    explicit.write_text("")
    monkeypatch.setenv(binaries.ENV_ASSETS_DIR, str(assets))
    monkeypatch.setenv("TEST_ASSET_KUBE_APISERVER", str(explicit))
    monkeypatch.setenv(build.ENV_CACHE_DIR, str(tmp_path / "empty-cache"))
    assert binaries.preset("etcd") == assets / "etcd"
    assert binaries.preset("kube-apiserver") == explicit
    assert binaries.preset("kwok") is None
    assert binaries.cached("kwok") is None
    monkeypatch.setenv("TEST_ASSET_KWOK", str(tmp_path / "missing"))
    with pytest.raises(binaries.BinaryNotFound):
        binaries.preset("kwok")


def test_cache_counts_only_binaries_stamped_with_the_pinned_version(tmp_path: Path) -> None:
    target = build.target_by_name("kwok")
    binary = build.bin_dir(tmp_path) / "kwok"
    binary.parent.mkdir()
    binary.write_text("")
    assert not build.is_cached(target, tmp_path)
    binary.with_name("kwok.version").write_text("v0.0.1\n")
    assert not build.is_cached(target, tmp_path)
    binary.with_name("kwok.version").write_text(target.version + "\n")
    assert build.is_cached(target, tmp_path)


def test_processes_are_found_by_pid_and_stopped(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = processes.start("sleeper", argv, tmp_path / "sleeper.log")
    assert processes.is_running(process)
    assert processes.rss_kib(process.pid) > 0
    # The same pid with a command line naming another binary is not ours (pid reuse).
    impostor = processes.Process("impostor", process.pid, "/bin/false", process.log)
    assert not processes.is_running(impostor)
    processes.stop(process, grace=5)
    assert not processes.is_running(process)


def test_a_tied_process_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # A stand-in for a test runner that starts a sandbox and is then killed (SIGKILL).
    starter = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from voicefleet.sandbox import processes
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = processes.start("c", sleeper, Path({str(tmp_path / "c.log")!r}), tie_to_parent=True)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    pid = int(runner.stdout.readline())
    child = processes.Process("c", pid, sys.executable, tmp_path / "c.log")
    assert processes.is_running(child)
    runner.kill()
    runner.wait()
    assert poll(lambda: not processes.is_running(child), 10, 0.05)
