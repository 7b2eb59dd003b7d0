"""`voicefleet operator run` refuses a bad catalog override before it touches a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_operator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefleet", "operator", "run", "--standalone", *args],
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
