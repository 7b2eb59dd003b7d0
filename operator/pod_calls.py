"""What every call from the operator to a pod shares: its base URL, its timeout, and one
connection pool for the operator's life."""

from __future__ import annotations

from typing import Final

import aiohttp

from voicefleet import constants

# A pod that does not answer in a second is reported unreachable, and the reconcile carries
# on with what it knows.
DEFAULT_TIMEOUT_SECONDS: Final = 1.0


def base_url(pod_ip: str, port: int = constants.RUNTIME_PORT) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


class PodHttp:
    """The HTTP session of a pod client (runtime or gateway), made at first use."""

    def __init__(
        self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, port: int = constants.RUNTIME_PORT
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=timeout_seconds)
        self.port = port
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No proxy from the environment: pod IPs are reached directly.
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
