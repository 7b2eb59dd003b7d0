"""The few API calls the sandbox itself makes, over plain HTTPS with the admin certificate.

Bringing the sandbox up must not need the operator's dependencies (kubernetes, kopf):
``voicefleet sandbox up`` is a developer tool that works with the core install plus
``cryptography``. So health checks and node creation speak JSON over ``urllib``.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REQUEST_TIMEOUT: Final = 5.0


class ApiError(RuntimeError):
    """An API call answered with an HTTP error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca: Path
    cert: Path
    key: Path


def tls_context(credentials: Credentials) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(credentials.ca))
    context.load_cert_chain(str(credentials.cert), str(credentials.key))
    return context


def unverified_context() -> ssl.SSLContext:
    """For the health endpoints of the controller manager and scheduler only.

    They serve on loopback with certificates they make up themselves at start; there is
    no CA to check them against, and the endpoints carry nothing secret.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def get_text(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    """GET ``url``; (status, body), with status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT, context=context) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


class Client:
    """JSON requests to the API server as the sandbox's admin."""

    def __init__(self, credentials: Credentials) -> None:
        self.server = credentials.server.rstrip("/")
        self.context = tls_context(credentials)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=REQUEST_TIMEOUT, context=self.context
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from exc

    def healthy(self, path: str = "/readyz") -> bool:
        status, _body = get_text(self.server + path, self.context)
        return status == 200
