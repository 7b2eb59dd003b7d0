"""Network namespaces of the sandbox's own: make, enter, remove.

The real node's pod network lives in a network namespace the sandbox creates (``ip netns
add``): its bridge, its pods' interfaces and kube-proxy's rules never touch the host's
network. Processes are put into it by ``setns(2)`` before they exec (``enter``), and only
into its network namespace, so they still share the host's mounts (the kubelet's volume
mounts must be seen by containerd and runc).

A thread can enter it too (``inside``): a socket belongs to the namespace its creating
thread was in, which is how tests reach pod addresses without any route on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

NETNS_DIR: Final = Path("/run/netns")
CLONE_NEWNET: Final = 0x40000000  # from <sched.h>


class NetnsError(RuntimeError):
    """A namespace could not be made or entered."""


def path(name: str) -> Path:
    return NETNS_DIR / name


def create(name: str) -> Path:
    """``ip netns add NAME`` with its loopback up; an existing one is reused."""
    if not path(name).exists():
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    return path(name)


def delete(name: str) -> None:
    """Remove the namespace; interfaces in it (bridge, veths) go with it."""
    if path(name).exists():
        _ip("netns", "delete", name)


def exists(name: str) -> bool:
    return path(name).exists()


def ip(name: str, *args: str) -> str:
    """``ip -n NAME ARGS``."""
    return _ip("-n", name, *args)


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(error)}")


def enter(name: str) -> None:
    """Move the calling thread into the namespace (for a child before exec)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """The calling thread is in the namespace until the block ends; sockets made meanwhile
    stay in it."""
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
