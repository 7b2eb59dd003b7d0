"""A conversation's state as it leaves one slot and enters another: :class:`SlotState`, and
its bytes on the wire.

The bytes are ``MAGIC``, a format version (u16, little-endian), the SHA-256 of the body, then
the body: a safetensors file (named arrays plus a JSON header in its metadata). The digest
makes any corruption in transit a clear error before a single array is read; the version and
the header's ``kind`` and ``model`` make a state from another format, another architecture or
other weights one too. Arrays are numpy, so this module needs neither torch nor a GPU.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

MAGIC = b"VFSLOT\n"
FORMAT_VERSION = 1
_VERSION = struct.Struct("<H")
_DIGEST_BYTES = 32
_HEADER_KEY = "voicefleet"

Array = np.ndarray[Any, np.dtype[Any]]
Scalar = str | int | float | bool


class SlotStateError(ValueError):
    """A state that cannot be imported here (corrupt, another model, another format, too
    long); the message says which and what to do. Nothing was changed by the attempt."""


@dataclass(frozen=True)
class SlotState:
    """One slot's conversation. ``kind`` names the backend family that wrote it ("moshi");
    ``model`` identifies the architecture and weights it is only valid for; ``meta`` holds a
    backend's scalars (steps, offsets, sampling); ``arrays`` its tensors, on the host."""

    kind: str
    model: dict[str, Scalar]
    meta: dict[str, Scalar]
    arrays: dict[str, Array] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def nbytes(self) -> int:
        return sum(int(array.nbytes) for array in self.arrays.values())

    def to_bytes(self) -> bytes:
        header = {"kind": self.kind, "model": self.model, "meta": self.meta}
        arrays = {name: np.ascontiguousarray(value) for name, value in self.arrays.items()}
        body = save_arrays(arrays, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
        return MAGIC + _VERSION.pack(self.version) + hashlib.sha256(body).digest() + body

    @classmethod
    def from_bytes(cls, data: bytes) -> SlotState:
        fixed = len(MAGIC) + _VERSION.size + _DIGEST_BYTES
        if len(data) < fixed or not data.startswith(MAGIC):
            raise SlotStateError(
                "not a voicefleet slot state (wrong magic bytes): send the body that the "
                "export endpoint returned, unchanged"
            )
        (version,) = _VERSION.unpack_from(data, len(MAGIC))
        if version != FORMAT_VERSION:
            raise SlotStateError(
                f"slot state format {version}, this runtime reads format {FORMAT_VERSION}: "
                "move conversations only between pods of the same runtime version"
            )
        digest = data[len(MAGIC) + _VERSION.size : fixed]
        body = data[fixed:]
        if hashlib.sha256(body).digest() != digest:
            raise SlotStateError(
                f"slot state corrupt: its {len(body)}-byte body does not match its digest "
                "(truncated or altered in transit); export it again"
            )
        try:
            header = _header(body)
            arrays = load_arrays(body)
        except (SafetensorError, ValueError, KeyError) as exc:
            raise SlotStateError(f"slot state unreadable: {exc}") from exc
        return cls(
            kind=str(header["kind"]),
            model=dict(header["model"]),
            meta=dict(header["meta"]),
            arrays=dict(arrays),
            version=version,
        )


def _header(body: bytes) -> dict[str, Any]:
    """The JSON header inside a safetensors body (its metadata)."""
    (length,) = struct.unpack_from("<Q", body, 0)
    outer = json.loads(body[8 : 8 + length])
    header: dict[str, Any] = json.loads(outer["__metadata__"][_HEADER_KEY])
    return header


def require_same_model(expected: dict[str, Scalar], state: SlotState, kind: str) -> None:
    """Refuse a state written by another backend family or for another model."""
    if state.kind != kind:
        raise SlotStateError(
            f"slot state of a {state.kind!r} backend cannot be imported into a {kind!r} one"
        )
    differ = sorted(
        key for key in set(expected) | set(state.model) if expected.get(key) != state.model.get(key)
    )
    if differ:
        details = ", ".join(
            f"{key}: {state.model.get(key)!r} here {expected.get(key)!r}" for key in differ
        )
        raise SlotStateError(
            f"slot state was made by another model ({details}); move conversations only "
            "between pods of one pool (same model, variant and weights)"
        )


def require_arrays(
    expected: dict[str, tuple[tuple[int, ...], np.dtype[Any]]], state: SlotState
) -> None:
    """Refuse a state whose arrays are not exactly the names, shapes and dtypes expected."""
    missing = sorted(set(expected) - set(state.arrays))
    extra = sorted(set(state.arrays) - set(expected))
    if missing or extra:
        raise SlotStateError(
            f"slot state arrays do not match this model: missing {missing}, unexpected {extra}"
        )
    for name, (shape, dtype) in expected.items():
        array = state.arrays[name]
        if tuple(array.shape) != shape or array.dtype != dtype:
            raise SlotStateError(
                f"slot state array {name} is {array.dtype}{list(array.shape)}, this model "
                f"needs {dtype}{list(shape)}"
            )
