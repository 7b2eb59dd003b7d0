"""Argo CD's health check for VoiceAgentPool (examples/gitops/argocd-health.lua), evaluated
the way Argo CD does it: a Lua VM with the object as the global ``obj``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "gitops" / "argocd-health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the health check for one VoiceAgentPool object."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"])
