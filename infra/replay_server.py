"""The replay server as a background process, for ``up --replay [FILE]``: ``python -m
infra.replay serve`` of the synthetic stream (infra/replay/synthetic.py), or of a recording.

Replay mode is recorded in ``$WIKIPULSE_HOME/replay.json`` (the file or the synthetic stream's
seed and origin, the pace, the port, …): a later plain ``up`` (after a crash, after ``down``)
brings the same replay back on the same port, so the worker it points at finds it again. The
synthetic stream goes on where it was: same seed, same event time at position 0, so a worker
resuming with ``Last-Event-ID`` gets the events it missed, then the live pace. ``up --live``
ends the mode; ``down --purge`` deletes it with the rest of the state.
"""

from __future__ import annotations

import json
import math
import random
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from infra.component import ComponentState, Progress, SpawnedComponent
from infra.home import PROJECT_ROOT, Home
from infra.processes import InfraError, free_port, port_open
from infra.replay.sources import SyntheticEvents
from infra.replay.wire import STREAM_PATH

HOST = "127.0.0.1"
#: × the event-time pace: the synthetic stream's 40 events/s, or a recording's own pace.
DEFAULT_SPEED = 1.0
#: The options of ``python -m infra.replay serve`` that ``--replay-option`` may pass on: faults,
#: to see the worker cope with a misbehaving stream. The stream, host, port and pace are ``up``'s.
FAULT_OPTIONS = (
    "--drop-every",
    "--malformed-every",
    "--fail-first",
    "--fail-status",
    "--retry-after",
    "--retry-ms",
)
#: The most history ``up --replay --history`` serves (EventStreams keeps a few days).
MAX_HISTORY = timedelta(days=1)
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
    """What the replay server serves, and where: a recording (``file``) or, without one, the
    synthetic stream of ``seed`` whose position 0 falls at ``origin``."""

    file: Path | None
    speed: float | None = DEFAULT_SPEED  # None: as fast as possible
    loop: bool = True
    options: tuple[str, ...] = ()
    port: int = 0  # 0: not chosen yet
    events: int = 0  # in the file
    seed: int | None = None  # the synthetic stream's
    origin: datetime | None = None  # the synthetic stream's start (event time of position 0)
    #: Seconds of event time the synthetic stream had behind it when ``up`` began it: the worker
    #: starts at its origin and gets that history at once, then the live pace.
    history: float = 0.0

    def __post_init__(self) -> None:
        if self.file is None and (self.seed is None or self.origin is None):
            raise ValueError("the synthetic stream needs a seed and an origin")
        if self.origin is not None and self.origin.tzinfo is None:
            raise ValueError("origin must carry a time zone")
        if self.history and self.file is not None:
            raise ValueError("a history is the synthetic stream's: a recording has its own times")

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
        _check_pace(speed, loop)
        return cls(path, speed, loop, options, events=count_events(path))

    @classmethod
    def synthetic(
        cls,
        *,
        speed: float | None = DEFAULT_SPEED,
        options: tuple[str, ...] = (),
        seed: int | None = None,
        origin: datetime | None = None,
        history: timedelta = timedelta(0),
    ) -> ReplayMode:
        """A new synthetic stream, endless: a random seed (fresh ids) starting now, unless
        given; with ``history``, starting that long ago (event time, on a whole minute), its past
        served at once."""
        _check_pace(speed, loop=True)
        if history < timedelta(0) or history > MAX_HISTORY:
            most, asked = MAX_HISTORY / timedelta(hours=1), history / timedelta(hours=1)
            raise InfraError(f"--history: at most {most:g} hours, not {asked:g}")
        if history and origin is not None:
            raise ValueError("give an origin or a history, not both")
        if origin is None:
            origin = datetime.now(UTC) - history
            if history:  # a burst's "at=10" is then a whole minute of the aggregates
                origin = origin.replace(second=0, microsecond=0)
        return cls(
            None,
            speed,
            True,
            options,
            seed=random.SystemRandom().randrange(1 << 31) if seed is None else seed,
            origin=origin,
            history=history.total_seconds(),
        )

    @property
    def live(self) -> bool:
        """Whether each event is sent when its event time comes: the synthetic stream at 1×,
        unless a ``--rate`` option (a load test's) spaces the events evenly instead."""
        paced = not any(option.startswith("--rate=") for option in self.options)
        return self.file is None and self.speed == 1 and paced

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{STREAM_PATH}"

    @property
    def address(self) -> str:
        return f"http://{HOST}:{self.port}"

    def same_stream(self, other: ReplayMode) -> bool:
        """Whether both serve the same kind of events the same way (the port, and a synthetic
        stream's seed and origin, aside: a running synthetic stream is kept)."""
        return (self.file, self.speed, self.loop, self.options, self.history) == (
            other.file,
            other.speed,
            other.loop,
            other.options,
            other.history,
        )

    @property
    def since(self) -> str | None:
        """Where a worker with nothing in its raw topic starts (``ingestion.since``): at the
        synthetic stream's origin, so that it gets the stream's history; None for a recording
        (served from its beginning anyway). The origin's whole second: an event's ``meta.dt``
        is cut to milliseconds (to seconds in the legacy envelope), so position 0's can be
        earlier than the origin itself, and ``since`` the origin would skip it."""
        return None if self.origin is None else self.origin.replace(microsecond=0).isoformat()

    def describe(self) -> str:
        faults = f"; {' '.join(self.options)}" if self.options else ""
        if self.file is None:
            if self.live:
                pace = "live pace"
            elif self.speed == 1:
                pace = "evenly spaced"  # a --rate option says how fast
            else:
                pace = f"{self.speed:g}× the live pace"
            if self.history:
                history = _minutes(self.history)
                pace = (f"{history} of history at once, then the live pace" if self.live
                        else f"{pace} from {history} back")  # fmt: skip
            return f"synthetic stream (seed {self.seed}), {pace}{faults}"
        if self.speed is None:
            pace = "as fast as possible"
        elif self.speed == 1:
            pace = "at the recorded pace"
        else:
            pace = f"at {self.speed:g}× the recorded pace"
        how = f"looping {pace}" if self.loop else f"once {pace}, then silent"
        return f"{shown_path(self.file)} ({self.events} events), {how}{faults}"

    def argv(self) -> list[str]:
        command = [sys.executable, "-m", "infra.replay", "serve"]
        where = ["--host", HOST, "--port", str(self.port)]
        if self.file is None:
            assert self.origin is not None  # __post_init__
            # The recorded seed and origin: a restarted server goes on with the same stream.
            stream = ["--seed", str(self.seed), "--start", self.origin.isoformat()]
            if self.history:  # the usual backlog beyond the history: it stays servable
                backlog = SyntheticEvents.BACKLOG.total_seconds() + self.history
                stream += ["--backlog", f"{backlog / 60:g}"]
            pace = ["--live"] if self.live else ["--speed", f"{self.speed:g}"]
            return [*command, *where, *stream, *pace, *self.options]
        pace = ["--fast"] if self.speed is None else ["--speed", f"{self.speed:g}"]
        return [
            *command, str(self.file), *where, *pace,
            "--loop" if self.loop else "--hold", *self.options,
        ]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = None if self.file is None else str(self.file)
        data["options"] = list(self.options)
        data["origin"] = None if self.origin is None else self.origin.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayMode:
        origin = data.get("origin")
        return cls(
            file=None if data["file"] is None else Path(data["file"]),
            speed=None if data["speed"] is None else float(data["speed"]),
            loop=bool(data["loop"]),
            options=tuple(str(option) for option in data["options"]),
            port=int(data["port"]),
            events=int(data.get("events", 0)),
            seed=None if data.get("seed") is None else int(data["seed"]),
            origin=None if origin is None else datetime.fromisoformat(origin),
            history=float(data.get("history", 0.0)),
        )


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} minute" + ("" if minutes == 1 else "s")


def _check_pace(speed: float | None, loop: bool) -> None:
    if speed is None and loop:
        raise InfraError(
            "--speed max needs --once: a replay looping as fast as possible would fill Kafka's disk"
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
class LocalReplay(SpawnedComponent):
    """The replay server of the recorded replay mode; no part of the stack without one."""

    name = "replay"
    title = "the replay server"
    not_ready = "the replay server did not answer"
    stop_timeout = 10.0

    @property
    def marker(self) -> str:
        return MARKER

    def healthy(self) -> bool:
        mode = load_mode(self.home)
        return mode is not None and self.pid() is not None and self.answers(mode.port)

    @staticmethod
    def answers(port: int) -> bool:
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

    def start(self, mode: ReplayMode | None = None, *, timeout: float = 30.0) -> int:
        """Serve ``mode`` (default: the recorded one) unless a server runs; its pid once it
        answers."""
        pid = self.pid()
        if pid is not None:
            return pid
        mode = mode or load_mode(self.home)
        if mode is None:
            raise InfraError("no replay mode recorded: `./infra/wikipulse up --replay [FILE]`")
        port = mode.port
        if not port or port_open(HOST, port):
            raise InfraError(f"port {port} on {HOST}, for the replay server, is taken")
        return self.spawn_and_wait(
            mode.argv(), ready=lambda: self.answers(port), timeout=timeout, cwd=PROJECT_ROOT
        )

    def serve(self, mode: ReplayMode, progress: Progress) -> ReplayMode:
        """The replay server running ``mode`` (on a new free port, recorded, if its own is
        taken)."""
        pid = self.pid()
        if pid is not None:
            progress(f"replay: running (pid {pid}), {mode.describe()}, at {mode.url}")
            return mode
        chosen = self.choose_port(mode)
        if chosen.port != mode.port:
            if mode.port:
                progress(
                    f"replay: port {mode.port} is taken by another process, moving to {chosen.port}"
                )
            save_mode(self.home, chosen)
        pid = self.start(chosen)
        progress(f"replay: started (pid {pid}), {chosen.describe()}, at {chosen.url}")
        return chosen

    def up(self, progress: Progress) -> None:
        """In replay mode, serve the recorded mode; else nothing."""
        mode = load_mode(self.home)
        if mode is not None:
            self.serve(mode, progress)

    def state(self) -> ComponentState | None:
        mode = load_mode(self.home)
        if mode is None:
            return None
        pid = self.pid()
        healthy = pid is not None and self.answers(mode.port)
        if pid is None:
            detail = f"not running (to serve {mode.describe()})"
        elif not healthy:
            detail = f"not answering on port {mode.port}"
        else:
            detail = f"serving {mode.describe()}"
        return ComponentState(self.name, True, True, healthy, pid, mode.address, detail)
