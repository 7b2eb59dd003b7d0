"""Starting, restarting, reporting on and failing to start the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.sandbox import Cluster
from voicefleet.cli import main
from voicefleet.sandbox import binaries, manager, processes
from voicefleet.sandbox.state import Sandbox, SandboxError
from voicefleet.sandbox.versions import KUBERNETES_VERSION

pytestmark = pytest.mark.sandbox


def _owned(sandbox: Cluster) -> Sandbox:
    if sandbox.sandbox is None:
        pytest.skip("runs against an existing cluster, not a sandbox this run started")
    return sandbox.sandbox


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names ``text`` (a state directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_the_built_control_plane_reports_the_pinned_version(sandbox: Cluster) -> None:
    running = _owned(sandbox)
    if binaries.preset("kube-apiserver") is not None:
        pytest.skip("kube-apiserver comes from KUBEBUILDER_ASSETS/TEST_ASSET_*, not our build")
    # -X k8s.io/component-base/version.* at link time; unstamped it says v0.0.0-master.
    version = running.client().request("GET", "/version")
    assert version["gitVersion"] == KUBERNETES_VERSION
    assert f"v{version['major']}.{version['minor']}" in KUBERNETES_VERSION
    kubectl = sandbox.run_kubectl("version", "--client", "-o", "json")
    assert '"gitVersion": "' + KUBERNETES_VERSION + '"' in kubectl.stdout


def test_starting_twice_returns_the_running_sandbox(sandbox: Cluster) -> None:
    running = _owned(sandbox)
    again = manager.up(running.state_dir, log=lambda _line: None)
    assert [p.pid for p in again.processes] == [p.pid for p in running.processes]
    assert again.server == running.server
    assert all(processes.is_running(p) for p in again.processes)


def test_status_lists_components_and_gpu_nodes(
    sandbox: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    running = _owned(sandbox)
    assert main(["sandbox", "--state-dir", str(running.state_dir), "status"]) == 0
    out = capsys.readouterr().out
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kwok"):
        assert component in out
    assert "h100-spot-3" in out
    assert out.strip().splitlines()[-1] == f"export KUBECONFIG={running.kubeconfig}"


def test_a_failed_component_is_named_and_nothing_is_left_running(
    sandbox: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Depends on `sandbox` only so that the binaries are built before this test runs.
    _owned(sandbox)
    monkeypatch.setenv("TEST_ASSET_KWOK", "/bin/false")  # kwok "crashes" at start
    state_dir = tmp_path / "broken"
    with pytest.raises(SandboxError) as failed:
        manager.up(state_dir, log=lambda _line: None)
    message = str(failed.value)
    log = state_dir / "logs" / "kwok.log"
    assert "kwok exited during start" in message
    assert str(log) in message
    # Everything started before kwok was stopped; only the logs stay, for reading.
    assert _processes_mentioning(str(state_dir)) == []
    assert sorted(p.name for p in state_dir.iterdir()) == ["logs"]
    assert manager.load(state_dir) is None
    assert (state_dir / "logs" / "kube-apiserver.log").is_file()
