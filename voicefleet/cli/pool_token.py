"""The pool token the runtime and the gateway read: ``--token-file``, else the environment."""

from __future__ import annotations

import os
from pathlib import Path

from voicefleet import constants
from voicefleet.cli import UsageError


def pool_token(token_file: Path | None) -> str | None:
    """The pool token, or None when none is given; an unreadable file is a usage error."""
    # Imported here: the runtime's config module is light, but the CLI's parsers load first.
    from voicefleet.runtime.config import read_token  # noqa: PLC0415

    try:
        return read_token(token_file, os.environ.get(constants.ENV_POOL_TOKEN))
    except OSError as exc:
        raise UsageError(f"cannot read --token-file: {exc}") from exc
