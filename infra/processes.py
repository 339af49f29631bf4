"""Background processes that survive the command that started them, tracked by pid files."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar


class InfraError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


T = TypeVar("T")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] == "Z":
            return False
    return True


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def read_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and its command line contains ``marker``.

    The marker (e.g. the state directory) guards against a recycled pid.
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    # A process that has just started can show an empty command line for a moment: it is ours
    # (a recycled pid would show its own command line).
    line = cmdline(pid)
    return pid if not line or marker in line else None


def spawn(
    argv: Sequence[str],
    *,
    pidfile: Path,
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``logfile``; record its pid."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    pidfile.write_text(f"{process.pid}\n")
    return process.pid


def stop_recorded(pid: int | None, pidfile: Path, *, timeout: float) -> bool:
    """Stop a component ``up`` started (its pid read from ``pidfile``) and forget its pid;
    False when it was not running."""
    if pid is None:
        return False
    terminate(pid, timeout=timeout)
    pidfile.unlink(missing_ok=True)
    return True


def terminate(pid: int, *, timeout: float = 30.0, group: bool = True) -> None:
    """SIGTERM the process (and its group), then SIGKILL what is left after ``timeout``."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    if wait_for(lambda: not pid_alive(pid), timeout=timeout):
        return
    send(signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), timeout=10)


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_started(
    spawned: Mapping[T, int], ready: Callable[[], bool], *, timeout: float, interval: float = 0.2
) -> T | None:
    """Wait until ``ready()`` or one of the ``spawned`` processes (key -> pid) exits; the key of
    the first that exited, None when all run (ready, or out of time: the caller checks which)."""

    def exited() -> T | None:
        return next((key for key, pid in spawned.items() if not pid_alive(pid)), None)

    wait_for(lambda: exited() is not None or ready(), timeout=timeout, interval=interval)
    return exited()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: Where free_port looks: below the kernel's ephemeral range (Linux's default starts at 32768).
#: A port the kernel hands out for ``bind(0)`` is one it also hands to outgoing connections, so a
#: server started a minute later could find it taken by a client's socket (a dashboard once did,
#: beside three brokers and a Spark cluster).
LISTEN_PORTS = range(20000, 32768)


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in LISTEN_PORTS if p not in ephemeral]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: any port
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, *, needed_by: str, fix: str) -> None:
    """Fail with a clear message when something else already listens on ``port``."""
    if port_open(host, port):
        raise InfraError(
            f"port {port} on {host}, needed by {needed_by}, is already in use by another "
            f"process: stop that process, or {fix}"
        )


def tail(path: Path, lines: int = 20) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])
