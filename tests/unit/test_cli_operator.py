"""`voicefleet operator run` refuses a bad catalog override or bad leader election timings
before it touches a cluster, naming what to change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_operator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefleet", "operator", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/nonexistent"},
    )


def test_missing_price_file_is_refused_with_its_path(tmp_path: Path) -> None:
    done = run_operator("--prices", str(tmp_path / "prices.yaml"))
    assert done.returncode == 2
    assert "prices.yaml: cannot read price file" in done.stderr


def test_bad_gpu_catalog_is_refused_naming_the_field(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text("NVIDIA-B200:\n  shortName: B200\n  memoryMiB: 183359\n")
    done = run_operator("--gpu-catalog", str(gpus))
    assert done.returncode == 2
    assert "bandwidthGBps" in done.stderr


def test_a_renew_deadline_not_below_the_lease_duration_is_refused() -> None:
    # The leader must stop acting before a standby may start: the gap is the safety margin.
    done = run_operator("--leader-elect-lease-duration=10", "--leader-elect-renew-deadline=10")
    assert done.returncode == 2
    assert (
        "--leader-elect-lease-duration (10 s) must be longer than "
        "--leader-elect-renew-deadline (10 s)"
    ) in done.stderr


def test_a_retry_period_not_below_the_renew_deadline_is_refused() -> None:
    done = run_operator("--leader-elect-retry-period=3", "--leader-elect-renew-deadline=2")
    assert done.returncode == 2
    assert "--leader-elect-renew-deadline (2 s) must be longer than" in done.stderr


def test_kopf_peering_flags_are_gone() -> None:
    done = run_operator("--peering=voicefleet-operator")
    assert done.returncode == 2
    assert "unrecognized arguments: --peering" in done.stderr
