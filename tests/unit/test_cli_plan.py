"""`voicefleet plan` and `voicefleet crd` through a real subprocess, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-en.yaml"


def example_pool() -> dict[str, Any]:
    """The VoiceAgentPool document of the example (the file also holds its price ConfigMap)."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    (pool,) = [d for d in docs if d["kind"] == "VoiceAgentPool"]
    return dict(pool)


def voicefleet(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefleet", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_plan_json_has_the_design_keys_and_the_measured_density() -> None:
    done = voicefleet("plan", "-f", str(EXAMPLE), "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    design_keys = {
        "sessionsPerPod", "limitedBy", "replicas", "onDemandReplicas", "spotReplicas",
        "sessionCapacity", "costPerHour", "costPerSessionHour", "perSessionGiB", "weightsGiB",
        "frameMsAtCapacity",
    }  # fmt: skip
    assert design_keys <= set(result)
    assert result["sessionsPerPod"] == 40
    assert result["limitedBy"] == "memory"
    assert (result["replicas"], result["onDemandReplicas"], result["spotReplicas"]) == (6, 2, 4)


def test_plan_table_compare_shows_both_density_models() -> None:
    done = voicefleet("plan", "-f", str(EXAMPLE), "--compare")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["POOL", "DENSITY"]
    rows = {line.split()[1]: line.split() for line in lines[1:3]}
    assert int(rows["batched"][4]) == 40
    assert 3 <= int(rows["replicated"][4]) <= 4


def test_plan_yaml_of_several_pools_skips_other_kinds(tmp_path: Path) -> None:
    pool = example_pool()
    second = {**pool, "metadata": {"name": "short-calls"}}
    second["spec"] = {**pool["spec"], "sessions": {"target": 100, "maxSessionSeconds": 120}}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump_all([pool, other, second]))
    done = voicefleet("plan", "-f", str(path), "-o", "yaml")
    assert done.returncode == 0, done.stderr
    plans = yaml.safe_load(done.stdout)
    assert set(plans) == {"support-en", "short-calls"}
    assert plans["short-calls"]["sessionsPerPod"] == 80


def test_plan_uses_the_price_configmap_of_the_same_file() -> None:
    done = voicefleet("plan", "-f", str(EXAMPLE), "-o", "json")
    assert done.returncode == 0, done.stderr
    # examples/support-en.yaml prices H100s at 2.49 on-demand and 0.85 spot.
    assert json.loads(done.stdout)["costPerHour"] == pytest.approx(2 * 2.49 + 4 * 0.85)


def test_plan_reads_stdin_and_a_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpus:\n  NVIDIA-H100-80GB-HBM3: {onDemandPerHour: 1.0, spotPerHour: 0.5}\n")
    pool = example_pool()
    del pool["spec"]["capacity"]["pricing"]
    done = voicefleet(
        "plan", "-f", "-", "-o", "json", "--prices", str(prices), stdin=yaml.safe_dump(pool)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["costPerHour"] == pytest.approx(2 * 1.0 + 4 * 0.5)


def test_plan_of_every_example_succeeds() -> None:
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        done = voicefleet("plan", "-f", str(example), "-o", "json")
        assert done.returncode == 0, f"{example.name}: {done.stderr}"


def test_gpu_catalog_file_adds_a_product_the_catalog_lacks(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(
        "NVIDIA-B200:\n  shortName: B200\n  memoryMiB: 183359\n  bandwidthGBps: 8000\n"
        "  overheadGiB: 2.0\n"
    )
    pool = example_pool()
    pool["spec"]["gpu"] = {"product": "NVIDIA-B200"}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    without = voicefleet("plan", "-f", str(path))
    assert without.returncode == 2
    assert "not in the GPU catalog" in without.stderr
    done = voicefleet("plan", "-f", str(path), "-o", "json", "--gpu-catalog", str(gpus))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["gpu"] == "B200"
    assert result["sessionsPerPod"] > 100  # 179 GiB of memory
    assert result["estimate"]


def test_bad_gpu_catalog_file_names_the_field(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text("NVIDIA-B200:\n  shortName: B200\n  memoryMiB: -1\n")
    done = voicefleet("plan", "-f", str(EXAMPLE), "--gpu-catalog", str(gpus))
    assert done.returncode == 2
    assert "memoryMiB" in done.stderr


def test_invalid_manifest_names_the_field_and_exits_2(tmp_path: Path) -> None:
    pool = example_pool()
    pool["spec"]["capacity"]["spotPercentage"] = 150
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(pool))
    done = voicefleet("plan", "-f", str(path))
    assert done.returncode == 2
    assert "spec.capacity.spotPercentage" in done.stderr
    assert "less than or equal to 100" in done.stderr
    assert done.stdout == ""


def test_unplannable_pool_says_what_to_change(tmp_path: Path) -> None:
    pool = example_pool()
    pool["spec"]["sessions"]["maxReplicas"] = 2
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(pool))
    done = voicefleet("plan", "-f", str(path))
    assert done.returncode == 2
    assert "raise sessions.maxReplicas" in done.stderr


def test_a_file_without_a_pool_says_so() -> None:
    done = voicefleet("plan", "-f", str(ROOT / "crds" / "voicefleet.dev_voiceagentpools.yaml"))
    assert done.returncode == 2
    assert "no VoiceAgentPool" in done.stderr
    assert "CustomResourceDefinition" in done.stderr


def test_missing_file_is_a_clear_error() -> None:
    done = voicefleet("plan", "-f", "/nonexistent/pool.yaml")
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_crd_command_writes_what_is_checked_in(tmp_path: Path) -> None:
    done = voicefleet("crd", "--write", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "voicefleet.dev_voiceagentpools.yaml").read_text()
    assert written == (ROOT / "crds" / "voicefleet.dev_voiceagentpools.yaml").read_text()


def test_plan_of_a_hertz_dev_pool_matches_the_measured_density(tmp_path: Path) -> None:
    """The catalog's Hertz-dev profile against the GPU run it was calibrated from: the plan's
    sessions per H100 within one of the density the server held (240 s, 0 late frames), and
    the memory it predicts per conversation within 10% of the state the run measured."""
    results = json.loads(
        (ROOT / "bench" / "results" / "runtime_density_hertz_h100.json").read_text()
    )
    (server,) = [row for row in results["hertz"] if row["part"] == "server"]
    assert server["late_frames"] == 0 and server["gpu"] == "NVIDIA H100 80GB HBM3"
    measured_state = max(
        row["state_gib_per_session"] for row in results["hertz"] if row["part"] == "hertz-bare"
    )
    pool = example_pool()
    pool["spec"]["model"] = {"name": "hertz-dev"}
    pool["spec"]["sessions"]["maxSessionSeconds"] = server["context"] // 8  # 8 frames a second
    path = tmp_path / "hertz.yaml"
    path.write_text(yaml.safe_dump(pool))
    done = voicefleet("plan", "-f", str(path), "-o", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["gpu"] == "H100-80GB"
    assert abs(plan["sessionsPerPod"] - server["sessions"]) <= 1, plan
    assert plan["perSessionGiB"] == pytest.approx(measured_state, rel=0.10)
    assert not plan["estimate"]


def test_plan_table_shows_an_fp8_kv_cache_and_its_density(tmp_path: Path) -> None:
    pool = example_pool()
    pool["spec"]["model"] = {"name": "moshi", "kvCacheDtype": "fp8"}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    done = voicefleet("plan", "-f", str(path))
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if "kv:fp8" in line]
    assert "moshi kv:fp8" in row
    done = voicefleet("plan", "-f", str(path), "-o", "json")
    result = json.loads(done.stdout)
    assert result["kvCacheDtype"] == "fp8"
    assert result["sessionsPerPod"] >= 72
