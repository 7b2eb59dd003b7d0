"""An OCI image archive of one static binary as its entrypoint, written without a build
tool (the real node's pause image: no registry is reachable)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from voicefleet.oci_layout import OCI_REF_NAME


def write_single_binary_image(binary: Path, target: str, archive: Path, *, tag: str) -> None:
    """An OCI archive of one static binary as the entrypoint (user 65535)."""

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        info = layer_tar.gettarinfo(str(binary), arcname=target.lstrip("/"))
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o755
        with binary.open("rb") as stream:
            layer_tar.addfile(info, stream)
    diff_id, _ = blob(raw.getvalue())
    layer_digest, layer = blob(gzip.compress(raw.getvalue(), mtime=0))
    config_digest, config = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [target], "User": "65535:65535"},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
    )
    manifest_digest, manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {OCI_REF_NAME: tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    entries = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{
            f"blobs/sha256/{digest.split(':')[1]}": data
            for digest, data in (
                (layer_digest, layer),
                (config_digest, config),
                (manifest_digest, manifest),
            )
        },
    }
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
