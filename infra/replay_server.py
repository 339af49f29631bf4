"""The replay server as a background process: ``python -m app.replay FILE``, for ``up --replay``.

Replay mode is recorded in ``$WIKIPULSE_HOME/replay.json`` (the file, the pace, the port, …): a
later plain ``up`` (after a crash, after ``down``) brings the same replay back on the same port,
so the worker it points at finds it again. ``up --live`` ends the mode; ``down --purge`` deletes
it with the rest of the state.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from infra.replay.server import STREAM_PATH
from infra.home import INFRA_DIR, PROJECT_ROOT, Home
from infra.processes import (
    InfraError,
    free_port,
    pid_alive,
    port_open,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_for,
)

COMPONENT = "replay"
HOST = "127.0.0.1"
#: What ``up --replay`` serves when no file is given (provenance: infra/replay/README.md).
DEFAULT_FILE = INFRA_DIR / "replay" / "recentchange-sample.ndjson"
#: × the recorded pace; the sample's recorded pace is about 38 events/s, like the live stream.
DEFAULT_SPEED = 1.0
#: The options of ``python -m app.replay`` that ``--replay-option`` may pass on: faults, to see
#: the worker cope with a misbehaving stream. The file, host, port and pace are ``up``'s.
FAULT_OPTIONS = (
    "--drop-every",
    "--malformed-every",
    "--fail-first",
    "--fail-status",
    "--retry-after",
    "--retry-ms",
)
#: The marker in the server's command line (guards against a recycled pid).
MARKER = "infra.replay"


def parse_speed(text: str) -> float | None:
    """``--speed``: a positive number (× the recorded pace), or ``max`` (as fast as possible)."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a positive number or `max`, not {text!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"--speed must be a positive number or `max`, not {text!r}")
    return speed


def parse_fault_option(text: str) -> str:
    """One ``--replay-option``: ``--drop-every=25`` and the like (see FAULT_OPTIONS)."""
    name, equals, value = text.partition("=")
    if name not in FAULT_OPTIONS or not equals:
        raise ValueError(
            f"--replay-option {text!r}: expected OPTION=N with OPTION one of "
            + ", ".join(FAULT_OPTIONS)
            + " (e.g. --replay-option=--drop-every=25)"
        )
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"--replay-option {text!r}: {value!r} is not a whole number") from None
    return f"{name}={number}"


def count_events(path: Path) -> int:
    """The events in an NDJSON file (non-empty lines); InfraError when it cannot be one."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise InfraError(f"{path} is a directory: give an NDJSON file of events") from None
    except OSError as error:
        raise InfraError(f"cannot read the replay file {path}: {error.strerror}") from None
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        raise InfraError(f"{path} holds no event (expected one JSON event per line)")
    try:
        first = orjson.loads(lines[0])
    except orjson.JSONDecodeError:
        first = None
    if not isinstance(first, dict):
        raise InfraError(
            f"{path} does not look like NDJSON: its first line is not a JSON object "
            "(expected one recentchange event per line)"
        )
    return len(lines)


def shown_path(path: Path) -> str:
    """A path as the user reads it: relative to the checkout when inside it."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class ReplayMode:
    """What the replay server serves, and where."""

    file: Path
    speed: float | None = DEFAULT_SPEED  # None: as fast as possible
    loop: bool = True
    options: tuple[str, ...] = ()
    port: int = 0  # 0: not chosen yet
    events: int = 0

    @classmethod
    def for_file(
        cls,
        file: Path | str,
        *,
        speed: float | None = DEFAULT_SPEED,
        loop: bool = True,
        options: tuple[str, ...] = (),
    ) -> ReplayMode:
        """A validated mode for ``file`` (resolved against the working directory)."""
        path = Path(file).expanduser().resolve()
        if not path.exists():
            raise InfraError(f"no replay file {path}")
        if speed is None and loop:
            raise InfraError(
                "--speed max needs --once: a replay looping as fast as possible would fill "
                "Kafka's disk"
            )
        return cls(path, speed, loop, options, events=count_events(path))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{STREAM_PATH}"

    @property
    def address(self) -> str:
        return f"http://{HOST}:{self.port}"

    def same_stream(self, other: ReplayMode) -> bool:
        """Whether both serve the same events the same way (the port aside)."""
        return (self.file, self.speed, self.loop, self.options) == (
            other.file,
            other.speed,
            other.loop,
            other.options,
        )

    def describe(self) -> str:
        if self.speed is None:
            pace = "as fast as possible"
        elif self.speed == 1:
            pace = "at the recorded pace"
        else:
            pace = f"at {self.speed:g}× the recorded pace"
        how = f"looping {pace}" if self.loop else f"once {pace}, then silent"
        faults = f"; {' '.join(self.options)}" if self.options else ""
        return f"{shown_path(self.file)} ({self.events} events), {how}{faults}"

    def argv(self) -> list[str]:
        pace = ["--fast"] if self.speed is None else ["--speed", f"{self.speed:g}"]
        return [
            sys.executable, "-m", "infra.replay", str(self.file),
            "--host", HOST, "--port", str(self.port), *pace,
            "--loop" if self.loop else "--hold", *self.options,
        ]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = str(self.file)
        data["options"] = list(self.options)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayMode:
        return cls(
            file=Path(data["file"]),
            speed=None if data["speed"] is None else float(data["speed"]),
            loop=bool(data["loop"]),
            options=tuple(str(option) for option in data["options"]),
            port=int(data["port"]),
            events=int(data.get("events", 0)),
        )


def mode_file(home: Home) -> Path:
    return home.root / "replay.json"


def load_mode(home: Home) -> ReplayMode | None:
    """The recorded replay mode, or None (the live stream)."""
    path = mode_file(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return ReplayMode.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError):
        raise InfraError(
            f"{path} is damaged: run `./infra/wikipulse up --replay [FILE]` to record the replay "
            "mode again, or `./infra/wikipulse up --live` to follow the live stream"
        ) from None


def save_mode(home: Home, mode: ReplayMode) -> None:
    path = mode_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(mode.to_json(), indent=2) + "\n")
    temporary.replace(path)


def clear_mode(home: Home) -> None:
    mode_file(home).unlink(missing_ok=True)


@dataclass(frozen=True)
class LocalReplay:
    home: Home

    @property
    def logfile(self) -> Path:
        return self.home.logfile(COMPONENT)

    def pid(self) -> int | None:
        return read_pid(self.home.pidfile(COMPONENT), MARKER)

    def healthy(self, port: int) -> bool:
        """Whether an HTTP server answers on ``port``: the server has no health endpoint, and
        opening the stream would count as a client connection (``--fail-first``), so ask for
        ``/``, which it answers with 404."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=3):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP answer: the server is serving
        except OSError:
            return False

    def choose_port(self, mode: ReplayMode) -> ReplayMode:
        """``mode`` with a port nobody else listens on: its own if free, else a new one."""
        if mode.port and not port_open(HOST, mode.port):
            return mode
        return replace(mode, port=free_port(HOST))

    def start(self, mode: ReplayMode, *, timeout: float = 30.0) -> int:
        pid = self.pid()
        if pid is not None:
            return pid
        if not mode.port or port_open(HOST, mode.port):
            raise InfraError(f"port {mode.port} on {HOST}, for the replay server, is taken")
        pid = spawn(
            mode.argv(),
            pidfile=self.home.pidfile(COMPONENT),
            logfile=self.logfile,
            cwd=PROJECT_ROOT,
        )
        # The child's own pid, not the marker check: until it has exec'd, its command line is
        # still its parent's.
        wait_for(lambda: not pid_alive(pid) or self.healthy(mode.port), timeout=timeout)
        if not pid_alive(pid):
            raise InfraError(
                f"the replay server exited during start-up ({self.logfile}):\n"
                f"{tail(self.logfile, 20)}"
            )
        if not self.healthy(mode.port):
            raise InfraError(f"the replay server did not answer within {timeout:.0f} s")
        return pid

    def stop(self) -> bool:
        return stop_recorded(self.pid(), self.home.pidfile(COMPONENT), timeout=10)
