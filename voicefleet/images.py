"""Build the operator and runtime images reproducibly, as OCI layouts and archives.

``scripts/build-images.sh [operator|runtime ...]`` runs this with buildah (no Docker engine
needed). What it does, in order:

1. The base: ``--base official`` pulls the Dockerfiles' default (``python:3.11-slim``);
   ``--base debian`` (offline, CI) makes one from Debian packages with mmdebstrap, once, and
   keeps it in the store under ``DEBIAN_BASE``.
2. ``buildah bud`` of each Dockerfile with ``--layers`` (a code change rebuilds only the
   layers after its COPY) and a fixed ``SOURCE_DATE_EPOCH`` as both ``--timestamp`` and
   build argument: file times, image history and ``.pyc`` files are then the same in every
   build, so two builds of one commit give one digest.
3. ``buildah push`` into an OCI layout directory per image; blobs already there are not
   written again, and blobs no tag uses any more are removed. ``--archive`` also writes the
   layout as one OCI archive (a tar, what ``skopeo copy oci-archive:...`` reads).
4. Prints each image's reference, manifest digest and sizes.

pip inside the build reaches PyPI with the host's CA bundle, handed in as the build secret
``ca`` (read-only, never in a layer). One image store (``--root``) holds the cache; nothing
else keeps a copy of the multi-GB runtime layers.

Stdlib only: runs before any virtual environment exists. The store and its pruning are
``image_store``; reading and writing OCI layouts, ``oci_layout``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from voicefleet import __version__, oci_layout
from voicefleet.constants import IMAGE_REPOSITORY
from voicefleet.image_store import (
    ENV_OUT,
    ENV_STORE,
    ImageError,
    Log,
    Store,
    default_out,
    default_store,
    prune_store,
    unpacked_size,
)

REPOSITORY: Final = IMAGE_REPOSITORY
IMAGES: Final = ("operator", "runtime")
# A fixed build time (2026-01-01 00:00 UTC), not the commit's: with the commit's time every
# commit would rebuild the multi-GB dependency layer. SOURCE_DATE_EPOCH overrides it. Not
# 0: wheels are zip files, and zip has no dates before 1980.
DEFAULT_EPOCH: Final = 1767225600
OFFICIAL_BASE: Final = "docker.io/library/python:3.11-slim-bookworm"
DEBIAN_BASE: Final = "localhost/voicefleet/python:3.11-bookworm"
DEBIAN_SUITE: Final = "bookworm"
DEBIAN_MIRROR: Final = "http://deb.debian.org/debian"
DEBIAN_SECURITY: Final = "http://deb.debian.org/debian-security"
# What the Dockerfiles need from a base: Python 3.11 with venv, and CA certificates.
DEBIAN_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")


def image_ref(name: str, version: str = __version__) -> str:
    """``ghcr.io/voicefleet/<name>:<version>``: what the chart and the operator default to."""
    return f"{REPOSITORY}/{name}:{version}"


@dataclass(frozen=True)
class Built:
    """One image as written: its reference, manifest digest and sizes."""

    name: str
    ref: str
    digest: str
    layout: Path
    compressed_bytes: int
    uncompressed_bytes: int
    seconds: float
    archive: Path | None = None

    def line(self) -> str:
        archive = f" archive {self.archive}" if self.archive else ""
        return (
            f"{self.ref}@{self.digest}  {self.compressed_bytes / 2**20:.0f} MiB compressed, "
            f"{self.uncompressed_bytes / 2**20:.0f} MiB unpacked, {self.seconds:.0f} s  "
            f"layout {self.layout}{archive}"
        )


def epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH") or DEFAULT_EPOCH)


def debian_base(store: Store, log: Log, *, rebuild: bool = False) -> str:
    """``DEBIAN_BASE`` in the store, made from Debian packages with mmdebstrap if absent."""
    if store.exists(DEBIAN_BASE) and not rebuild:
        return DEBIAN_BASE
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    started = time.monotonic()
    log(f"making {DEBIAN_BASE} from Debian {DEBIAN_SUITE} packages ({', '.join(DEBIAN_PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="voicefleet-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        sources = (
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main\n"
        )
        _mmdebstrap(rootfs, sources, log)
        container = store.run("from", "scratch").strip()
        try:
            store.run("add", container, str(rootfs), "/")
            store.run(
                "config",
                "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env=LANG=C.UTF-8",
                "--cmd=python3",
                container,
            )
            store.run("commit", f"--timestamp={epoch()}", "--format=oci", container, DEBIAN_BASE)
        finally:
            store.run("rm", container)
    log(f"made {DEBIAN_BASE} in {time.monotonic() - started:.0f} s")
    return DEBIAN_BASE


def _mmdebstrap(rootfs: Path, sources: str, log: Log) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch())}
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        # Documentation and translations are not needed in a container base.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        DEBIAN_SUITE,
        str(rootfs),
        "-",
    ]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out, _ = process.communicate(sources, timeout=1800)
    if process.returncode != 0:
        raise ImageError(f"mmdebstrap failed:\n{out[-4000:]}")
    log(out.strip().splitlines()[-1] if out.strip() else "mmdebstrap done")


def build_image(
    store: Store,
    name: str,
    base: str | None,
    context: Path,
    log: Log,
    *,
    no_cache: bool = False,
    tag: str | None = None,
) -> str:
    """``buildah bud`` of ``<name>/Dockerfile``; returns the local reference it is tagged as.

    ``base`` None keeps the Dockerfile's default base (pulled when missing); a local base is
    used as it is, never pulled.
    """
    ref = tag or image_ref(name)
    when = str(epoch())
    argv = [
        "bud",
        "--layers",
        "--format=oci",
        f"--timestamp={when}",
        f"--build-arg=SOURCE_DATE_EPOCH={when}",
        # Build steps reach PyPI as the host does; the build needs no other network.
        "--network=host",
        f"--file={context / name / 'Dockerfile'}",
        f"--tag={ref}",
    ]
    if HOST_CA_BUNDLE.is_file():
        argv.append(f"--secret=id=ca,src={HOST_CA_BUNDLE}")
    if base is not None:
        argv += [f"--build-arg=BASE={base}", "--pull=never"]
    else:
        argv.append("--pull=false")  # pull the official base only when it is missing
    if no_cache:
        argv.append("--no-cache")
    store.run(*argv, str(context), log=log)
    return ref


def export(store: Store, name: str, ref: str, out: Path, *, archive: bool) -> tuple[Path, str]:
    """Push ``ref`` into a fresh OCI layout ``out/<name>`` (tag = the version), replacing
    the last one whole; returns its layout and manifest digest.

    Why fresh: a push into an existing layout keeps the earlier manifests in its index
    (untagged), and skips blobs it believes are there; a new layout holds exactly one image.
    """
    layout = out / name
    partial = out / f".{name}.partial"
    tag = ref.rsplit(":", 1)[1]
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    store.run("push", "--quiet", "--remove-signatures", ref, f"oci:{partial}:{tag}")
    digest, _manifest = oci_layout.manifest(partial, tag)
    missing = [
        d for d in oci_layout.blobs(partial) if not oci_layout.blob_path(partial, d).is_file()
    ]
    if missing:
        raise ImageError(f"the pushed layout {partial} lacks blobs {missing}")
    old = out / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if layout.exists():
        layout.rename(old)
    partial.rename(layout)
    shutil.rmtree(old, ignore_errors=True)
    if archive:
        oci_layout.write_archive(layout, out / f"{name}.oci.tar", epoch())
    return layout, digest


def build(
    names: Sequence[str] = IMAGES,
    *,
    base: str = "official",
    context: Path | None = None,
    store: Store | None = None,
    out: Path | None = None,
    archive: bool = False,
    no_cache: bool = False,
    log: Log = print,
) -> list[Built]:
    """Build, export and describe each named image."""
    context = context or Path(__file__).resolve().parents[1]
    store = store or Store(default_store())
    out = out or default_out()
    if shutil.which("buildah") is None:
        raise ImageError("buildah is not installed (apt-get install buildah)")
    base_ref = debian_base(store, log) if base == "debian" else None
    built: list[Built] = []
    for name in names:
        started = time.monotonic()
        log(f"building {image_ref(name)} (base {base_ref or 'the Dockerfile default'})")
        ref = build_image(store, name, base_ref, context, log, no_cache=no_cache)
        layout, digest = export(store, name, ref, out, archive=archive)
        _digest, document = oci_layout.manifest(layout, ref.rsplit(":", 1)[1])
        compressed = sum(int(layer["size"]) for layer in document["layers"])
        built.append(
            Built(
                name=name,
                ref=ref,
                digest=digest,
                layout=layout,
                compressed_bytes=compressed,
                uncompressed_bytes=unpacked_size(store, layout, document),
                seconds=time.monotonic() - started,
                archive=out / f"{name}.oci.tar" if archive else None,
            )
        )
        log(built[-1].line())
    return built


def main(argv: Sequence[str] | None = None, prog: str = "scripts/build-images.sh") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("names", nargs="*", metavar="IMAGE", help=f"default: {' '.join(IMAGES)}")
    parser.add_argument(
        "--base",
        choices=("official", "debian"),
        default="official",
        help="official: the Dockerfiles' python:3.11-slim base (pulled); debian: a base made "
        "from Debian packages with mmdebstrap (offline builds, CI)",
    )
    parser.add_argument("--archive", action="store_true", help="also write <out>/<image>.oci.tar")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    parser.add_argument(
        "--check-reproducible",
        action="store_true",
        help="build each image a second time without the cache and fail unless the digests match",
    )
    parser.add_argument("--prune", action="store_true", help="afterwards drop older builds' layers")
    parser.add_argument("--store", type=Path, default=None, help=f"image store (${ENV_STORE})")
    parser.add_argument("--out", type=Path, default=None, help=f"OCI layouts (${ENV_OUT})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(IMAGES))
    if unknown:
        parser.error(f"unknown images {unknown}; choose from {', '.join(IMAGES)}")
    names = args.names or list(IMAGES)
    store = Store(args.store or default_store())

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        built = build(
            names,
            base=args.base,
            store=store,
            out=args.out,
            archive=args.archive,
            no_cache=args.no_cache,
            log=log,
        )
        if args.check_reproducible:
            base_ref = DEBIAN_BASE if args.base == "debian" else None
            context = Path(__file__).resolve().parents[1]
            for image in built:
                again = f"localhost/voicefleet/{image.name}-check:{__version__}"
                build_image(store, image.name, base_ref, context, log, no_cache=True, tag=again)
                with tempfile.TemporaryDirectory(prefix="voicefleet-check-") as scratch:
                    _layout, digest = export(store, image.name, again, Path(scratch), archive=False)
                store.run("rmi", again)
                verdict = "equal" if digest == image.digest else "DIFFERENT"
                log(f"reproducible {image.name}: {image.digest} vs {digest}: {verdict}")
                if digest != image.digest:
                    return 1
        if args.prune:
            prune_store(store, log)
    except (ImageError, oci_layout.LayoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\nIMAGE DIGEST COMPRESSED UNPACKED SECONDS")
    for image in built:
        print(
            f"{image.ref} {image.digest} {image.compressed_bytes} {image.uncompressed_bytes} "
            f"{image.seconds:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
