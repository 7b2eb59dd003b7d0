"""Events as client-go's recorder posts them: the same event again is one Event counted.

An operator that says the same thing about the same object every few seconds (a drain
refused on every poll, say) must not fill etcd with copies. Like client-go's
``EventCorrelator``, an event whose object, reason, message and type match one posted in the
last ten minutes bumps that Event's ``count`` and ``lastTimestamp`` instead of adding
another; the cache of recent events is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from voicefleet import constants
from voicefleet.operator.api_protocols import KubeApi
from voicefleet.operator.kube import KubeError
from voicefleet.rfc3339 import format_time

# client-go aggregates within ten minutes and keeps 4096 recent events.
WINDOW_SECONDS: Final = 600.0
CACHE_SIZE: Final = 4096
MESSAGE_LIMIT: Final = 1000

Key = tuple[str, str, str, str, str]  # (namespace, object, reason, message, type)


@dataclass
class _Posted:
    name: str
    count: int
    first: float


class EventRecorder:
    """Posts Events, aggregating repeats (see the module docstring)."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._recent: OrderedDict[Key, _Posted] = OrderedDict()

    async def record(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        meta = involved["metadata"]
        namespace = str(meta["namespace"])
        key: Key = (
            namespace,
            str(meta.get("uid") or meta["name"]),
            reason,
            message,
            "Warning" if warning else "Normal",
        )
        now = time.monotonic()
        posted = self._recent.get(key)
        if posted is not None and now - posted.first < WINDOW_SECONDS:
            self._recent.move_to_end(key)
            posted.count += 1
            patch = {"count": posted.count, "lastTimestamp": format_time()}
            try:
                if await self.kube.merge_patch("Event", namespace, posted.name, patch):
                    return
            except KubeError:
                pass  # expired or refused: post a fresh one below
        created = await self.kube.create(_event(involved, reason, message, warning=warning))
        if created is None:  # a generated name cannot clash; nothing to aggregate onto
            return
        self._recent[key] = _Posted(str(created["metadata"]["name"]), 1, now)
        self._recent.move_to_end(key)
        while len(self._recent) > CACHE_SIZE:
            self._recent.popitem(last=False)


def _event(
    involved: Mapping[str, Any], reason: str, message: str, *, warning: bool
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (a body with apiVersion, kind, metadata)."""
    meta = involved["metadata"]
    stamp = format_time()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", ""),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "type": "Warning" if warning else "Normal",
        "source": {"component": constants.OPERATOR_NAME},
        "reportingComponent": constants.OPERATOR_NAME,
        "reportingInstance": constants.OPERATOR_NAME,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
