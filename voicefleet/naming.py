"""Wire names: snake_case in Python, camelCase in YAML and JSON, with units spelled as
Kubernetes users read them (``memoryMiB``, ``weightsGiB``, ``bandwidthGBps``)."""

from __future__ import annotations

import re

from pydantic.alias_generators import to_camel

_UNITS = (("Gib", "GiB"), ("Mib", "MiB"), ("Gbps", "GBps"))


def camel(name: str) -> str:
    """``weights_gib`` -> ``weightsGiB``; ``max_session_seconds`` -> ``maxSessionSeconds``."""
    out = to_camel(name)
    for plain, unit in _UNITS:
        out = re.sub(rf"{plain}(?=[A-Z]|$)", unit, out)
    return out
