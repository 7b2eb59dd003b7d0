"""The operator image runs the pools' gateways, and carries only the runtime modules that need
no torch: the ones its Dockerfile copies must be every runtime module the gateway imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "operator" / "Dockerfile"
GATEWAY_ENTRY = ("voicefleet.cli.gateway", "voicefleet.gateway.server", "voicefleet.runtime.config")


def test_the_operator_image_has_every_runtime_module_the_gateway_imports() -> None:
    # A fresh interpreter: this test process may have imported the whole runtime already.
    code = (
        "import importlib, json, sys\n"
        f"for name in {GATEWAY_ENTRY!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('voicefleet.runtime.'))))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    needed = {name.rsplit(".", 1)[1] + ".py" for name in loaded}
    copied = set(re.findall(r"runtime/(\w+\.py)", DOCKERFILE.read_text()))
    assert needed, loaded
    assert needed <= copied, f"add to operator/Dockerfile's COPY: {sorted(needed - copied)}"
