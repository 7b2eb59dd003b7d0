"""Build the sandbox's binaries from Go modules into a cache directory.

``go install module@version`` refuses modules whose go.mod has replace directives, and
k8s.io/kubernetes (its staging repositories) and etcd's server module (its sibling modules)
both have them. So each tool group gets a tiny wrapper module of our own that requires the
pinned version and, for Kubernetes, replaces every staging module ``k8s.io/<name>`` with its
published ``v0.<minor>.<patch>``; then ``go build`` builds the commands out of it.

Order of work, and why:
1. Each binary is stamped with the version it was built from; a binary whose stamp matches
   is never rebuilt, so a warm cache costs nothing.
2. One build at a time, under ``nice``, behind a file lock: the machines have two cores and
   other work runs beside us, and a second caller (CI and a developer's shell) waits for the
   first instead of building the same thing twice.
3. Each binary is written to a temporary name and renamed, so an interrupted build never
   leaves a truncated binary that looks cached.

Run as ``python -m voicefleet.sandbox.build`` (what ``e2e/build-sandbox.sh`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from voicefleet.sandbox.versions import (
    ETCD_VERSION,
    HELM_VERSION,
    KUBE_SCORE_VERSION,
    KUBECONFORM_VERSION,
    KUBERNETES_VERSION,
    KWOK_VERSION,
    staging_version,
)

ENV_CACHE_DIR: Final = "VOICEFLEET_K8S_CACHE"
KUBERNETES_MODULE: Final = "k8s.io/kubernetes"
COMPONENT_VERSION_PACKAGES: Final = (
    "k8s.io/component-base/version",
    "k8s.io/client-go/pkg/version",
)
STAMP_SUFFIX: Final = ".version"
HELM_TARGET: Final = "helm"
HELM_VERSION_PACKAGE: Final = "helm.sh/helm/v3/internal/version"
# Where helm keeps the Kubernetes version it assumes without a cluster (`helm template`,
# `helm lint`): unstamped it is v1.20, which a chart's `kubeVersion: >=1.30` rejects.
HELM_KUBE_VERSION_PACKAGE: Final = "helm.sh/helm/v3/pkg/chartutil"
HEARTBEAT_SECONDS: Final = 60.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """One binary: the Go package it is built from and the wrapper module that builds it."""

    name: str
    group: str
    module: str
    version: str
    package: str


@dataclass(frozen=True)
class Group:
    """A wrapper module: what it requires and how its binaries are stamped."""

    name: str
    module: str
    version: str
    targets: tuple[Target, ...] = field(default_factory=tuple)


def _kubernetes_target(name: str, cmd: str) -> Target:
    return Target(
        name=name,
        group="kubernetes",
        module=KUBERNETES_MODULE,
        version=KUBERNETES_VERSION,
        package=f"{KUBERNETES_MODULE}/cmd/{cmd}",
    )


# In the order they are built: the control plane first, so a developer waiting on a cold
# build sees the slow, shared Kubernetes packages compiled once and reused by the others.
TARGETS: Final[tuple[Target, ...]] = (
    Target("etcd", "etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, "go.etcd.io/etcd/server/v3"),
    _kubernetes_target("kube-apiserver", "kube-apiserver"),
    _kubernetes_target("kube-controller-manager", "kube-controller-manager"),
    _kubernetes_target("kube-scheduler", "kube-scheduler"),
    _kubernetes_target("kubectl", "kubectl"),
    # The real node (opt-in, voicefleet/sandbox/node.py): a kubelet and a kube-proxy of the
    # same release, so Services and the `kubernetes` Service work from its pods.
    _kubernetes_target("kubelet", "kubelet"),
    _kubernetes_target("kube-proxy", "kube-proxy"),
    Target("kwok", "kwok", "sigs.k8s.io/kwok", KWOK_VERSION, "sigs.k8s.io/kwok/cmd/kwok"),
    Target(HELM_TARGET, "helm", "helm.sh/helm/v3", HELM_VERSION, "helm.sh/helm/v3/cmd/helm"),
    # Linters of the manifests (the chart's and every object the operator creates).
    Target(
        "kubeconform",
        "kubeconform",
        "github.com/yannh/kubeconform",
        KUBECONFORM_VERSION,
        "github.com/yannh/kubeconform/cmd/kubeconform",
    ),
    Target(
        "kube-score",
        "kube-score",
        "github.com/zegl/kube-score",
        KUBE_SCORE_VERSION,
        "github.com/zegl/kube-score/cmd/kube-score",
    ),
)
TARGET_NAMES: Final = tuple(target.name for target in TARGETS)


def default_cache_dir() -> Path:
    """``$VOICEFLEET_K8S_CACHE`` or ``~/.cache/voicefleet/k8s-<version>``."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "voicefleet" / f"k8s-{KUBERNETES_VERSION}"


def bin_dir(cache_dir: Path) -> Path:
    return cache_dir / "bin"


def target_by_name(name: str) -> Target:
    for target in TARGETS:
        if target.name == name:
            return target
    raise KeyError(f"unknown sandbox binary {name!r}; known: {', '.join(TARGET_NAMES)}")


def stamp(target: Target) -> str:
    """What the cache records a binary was built as; a change rebuilds it."""
    if target.name == HELM_TARGET:
        # helm also carries the Kubernetes version it defaults to (see _ldflags).
        return f"{target.version} kubernetes-{KUBERNETES_VERSION}"
    return target.version


def is_cached(target: Target, cache_dir: Path) -> bool:
    """The binary exists and was built from the pinned version."""
    binary = bin_dir(cache_dir) / target.name
    recorded = binary.with_name(binary.name + STAMP_SUFFIX)
    return binary.is_file() and recorded.is_file() and recorded.read_text().strip() == stamp(target)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            # Never download another toolchain: the Go module proxy serves modules only,
            # and the installed Go (1.26) is new enough for every pinned module.
            "GOTOOLCHAIN": "local",
            # Pure-Go binaries, as Kubernetes releases its server components.
            "CGO_ENABLED": "0",
            "GOWORK": "off",
            "GOFLAGS": "-mod=mod -buildvcs=false",
        }
    )
    return env


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], label: str, log: Progress) -> None:
    """Run one Go command under ``nice``, saying every minute that it is still going."""
    started = time.monotonic()
    log_path = cwd / "build.log"
    with log_path.open("ab") as log_file:
        log_file.write(f"$ {' '.join(cmd)}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            ["nice", "-n", "10", *cmd], cwd=cwd, env=env, stdout=log_file, stderr=log_file
        )
        while True:
            try:
                code = process.wait(timeout=HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                log(f"  ... {label}: {elapsed / 60:.0f} min so far")
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise BuildError(f"{label} failed (exit {code}); log {log_path}:\n" + "\n".join(tail))


class BuildError(RuntimeError):
    """A Go command failed; the message carries the tail of its log."""


def _go_json(args: Sequence[str], cwd: Path, env: dict[str, str]) -> Any:
    """Run a ``go`` command that prints JSON (module metadata; downloads only go.mod files)."""
    result = subprocess.run(
        ["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _wrapper_go_mod(target: Target, cwd: Path, env: dict[str, str]) -> str:
    """The go.mod text of the wrapper module that builds ``target``'s group.

    The go and godebug lines are copied from the required module: its build settings are
    only honoured when they are the main module's.
    """
    info = _go_json(["list", "-m", "-json", f"{target.module}@{target.version}"], cwd, env)
    upstream = _go_json(["mod", "edit", "-json", info["GoMod"]], cwd, env)
    lines = [f"module voicefleet.dev/sandbox-build/{target.group}", ""]
    lines.append(f"go {upstream['Go']}")
    for entry in upstream.get("GoDebug") or []:
        lines.append(f"godebug {entry['Key']}={entry['Value']}")
    lines.append("")
    lines.append(f"require {target.module} {target.version}")
    if target.module == KUBERNETES_MODULE:
        staging = staging_version(target.version)
        replaced = sorted(
            entry["Old"]["Path"]
            for entry in upstream.get("Replace") or []
            if str(entry["New"]["Path"]).startswith("./staging/")
        )
        if not replaced:
            raise BuildError(f"{target.module} {target.version} has no staging replaces")
        lines.append("")
        lines.append("replace (")
        lines.extend(f"\t{path} => {path} {staging}" for path in replaced)
        lines.append(")")
    return "\n".join(lines) + "\n"


def _ldflags(target: Target) -> str:
    """Linker flags: strip symbols, and for Kubernetes stamp the real version.

    Kubernetes' own ``hack/lib/version.sh`` sets these variables; without them the
    binaries say ``v0.0.0-master`` and clients that check the server version misjudge it.
    """
    flags = ["-s", "-w"]
    if target.name == HELM_TARGET:
        # Helm's Makefile stamps the version the same way; unstamped it says only "v3.19".
        flags.extend(
            f"-X {HELM_VERSION_PACKAGE}.{key}={value}"
            for key, value in (("version", target.version), ("gitTreeState", "clean"))
        )
        kube_major, kube_minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
        flags.extend(
            f"-X {HELM_KUBE_VERSION_PACKAGE}.{key}={value}"
            for key, value in (("k8sVersionMajor", kube_major), ("k8sVersionMinor", kube_minor))
        )
        return " ".join(flags)
    if target.module != KUBERNETES_MODULE:
        return " ".join(flags)
    major, minor, _patch = target.version.lstrip("v").split(".")
    values = {
        "gitVersion": target.version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for package in COMPONENT_VERSION_PACKAGES:
        flags.extend(f"-X {package}.{key}={value}" for key, value in values.items())
    return " ".join(flags)


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_target(target: Target, cache_dir: Path, log: Progress) -> Path:
    """Build one binary into the cache (no-op when cached); returns its path."""
    binary = bin_dir(cache_dir) / target.name
    if is_cached(target, cache_dir):
        return binary
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain (`go`) is not on PATH; install Go 1.24 or newer")
    env = _go_env()
    work = cache_dir / "src" / target.group
    work.mkdir(parents=True, exist_ok=True)
    # `go get` adds the resolved requirements to go.mod, so the text we generated is kept
    # beside it: only when the pins change is the wrapper started afresh (and go.sum too).
    go_mod, generated = work / "go.mod", work / "go.mod.in"
    text = _wrapper_go_mod(target, cache_dir, env)
    if not go_mod.is_file() or not generated.is_file() or generated.read_text() != text:
        go_mod.write_text(text)
        generated.write_text(text)
        (work / "go.sum").unlink(missing_ok=True)
    started = time.monotonic()
    log(f"building {target.name} ({target.module} {target.version}) ...")
    # Resolve and download every package the command needs; go.sum follows.
    _run(["go", "get", f"{target.package}@{target.version}"], work, env, target.name, log)
    bin_dir(cache_dir).mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f".{target.name}.partial")
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            _ldflags(target),
            "-o",
            str(partial),
            target.package,
        ],
        work,
        env,
        target.name,
        log,
    )
    partial.replace(binary)
    binary.with_name(binary.name + STAMP_SUFFIX).write_text(stamp(target) + "\n")
    log(f"built {target.name} in {time.monotonic() - started:.0f} s -> {binary}")
    return binary


def build(
    names: Sequence[str] = TARGET_NAMES,
    cache_dir: Path | None = None,
    log: Progress = print,
) -> dict[str, Path]:
    """Build (or reuse) the named binaries; returns name -> path."""
    cache = cache_dir or default_cache_dir()
    targets = [target_by_name(name) for name in names]
    missing = [target for target in targets if not is_cached(target, cache)]
    if not missing:
        # Warm cache: no lock, so a long build of other binaries elsewhere never blocks us.
        return {target.name: bin_dir(cache) / target.name for target in targets}
    log(
        f"sandbox binaries: building {', '.join(t.name for t in missing)} into {cache} "
        "(the first build takes a while; later runs reuse it)"
    )
    started = time.monotonic()
    with _locked(cache):
        # build_target skips what another process built while we waited for the lock.
        paths = {target.name: build_target(target, cache, log) for target in targets}
    log(f"sandbox binaries ready in {time.monotonic() - started:.0f} s")
    return paths


def main(argv: Sequence[str] | None = None, prog: str = "e2e/build-sandbox.sh") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: {' '.join(TARGET_NAMES)}"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: ${ENV_CACHE_DIR}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(TARGET_NAMES))
    if unknown:
        parser.error(f"unknown binaries {unknown}; choose from {', '.join(TARGET_NAMES)}")
    try:
        paths = build(
            args.names or TARGET_NAMES, args.cache_dir, log=lambda line: print(line, flush=True)
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
