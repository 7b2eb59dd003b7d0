"""The runtime pod's preStop hook still drains the runtime under the pod's restricted
security context: run as the image's user, with no capabilities and no way to gain
privileges (``setpriv`` does to the process what the container runtime would)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.runtime.conftest import TOKEN
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import builders
from voicefleet.operator.planner import plan
from voicefleet.testing.runtime_process import start_server

pytestmark = pytest.mark.runtime

POOL = builders.PoolRef(name="support-en", namespace="voice", uid="uid-1")


def prestop_command() -> list[str]:
    spec = VoiceAgentPoolSpec.model_validate({"sessions": {"target": 40}})
    pod = builders.build_pod_template(
        POOL, spec, plan(spec, catalog.builtin()), constants.CapacityType.SPOT, None
    )
    (container,) = pod["spec"]["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsUser"] == constants.RUNTIME_UID
    command: list[str] = container["lifecycle"]["preStop"]["exec"]["command"]
    return command


def test_the_prestop_hook_drains_as_the_unprivileged_runtime_user(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    _python, flag, script, deadline = prestop_command()
    server = start_server(tmp_path, max_sessions=1, max_session_seconds=60, token=TOKEN)
    try:
        # The hook calls the pod's own port; this server listens on a free one.
        script = script.replace(str(constants.RUNTIME_PORT), str(server.port))
        uid = str(constants.RUNTIME_UID)
        restricted = [
            setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]
        # The system Python: the test's virtual environment lives where that user may not read.
        hook = subprocess.run(
            [*restricted, "/usr/bin/python3", flag, script, deadline],
            env={constants.ENV_POOL_TOKEN: TOKEN},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert hook.returncode == 0, hook.stderr
        assert server.status()["draining"] is True
    finally:
        server.stop()
