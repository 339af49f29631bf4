"""What every component of the local stack is to :class:`infra.stack.Stack`: one protocol
(:class:`Component`), and the spawn / wait until healthy / report the log's tail of those that
run as a background process with a pid file (:class:`SpawnedComponent`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from app.config import Settings
from infra.home import Home
from infra.processes import InfraError, pid_alive, read_pid, spawn, stop_recorded, tail, wait_for

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ComponentState:
    """One line of ``status``."""

    name: str
    managed: bool  # started and stopped by this command (else external)
    required: bool
    healthy: bool
    pid: int | None
    address: str
    detail: str
    #: More to say, each shown on a line of its own under the component's.
    notes: tuple[str, ...] = ()


def format_age(seconds: float) -> str:
    """A duration as a person says it: 14 s, 5 min, 3 h, 161 days."""
    seconds = max(0.0, seconds)
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 100 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


@dataclass(frozen=True)
class Component(ABC):
    """A part of the local stack: started by ``up`` (:meth:`up`), stopped by ``down``
    (:meth:`down`), shown by ``status`` (:meth:`state`) and ``logs`` (:attr:`logfile`)."""

    settings: Settings
    home: Home

    #: What the user calls it: ``down NAME``, ``logs NAME``, the lines of ``up`` and ``status``.
    name: ClassVar[str]
    #: Started only with the pipeline (the tests' session stack runs the services alone).
    pipeline: ClassVar[bool] = True

    @property
    def logfile(self) -> Path:
        """What ``logs NAME`` shows."""
        return self.home.logfile(self.name)

    @abstractmethod
    def pid(self) -> int | None:
        """The pid of the running process this home started, None when it does not run."""

    @abstractmethod
    def start(self) -> int:
        """Start it unless it runs; its pid, once it is ready."""

    @abstractmethod
    def stop(self) -> bool:
        """Stop it; False when it was not running."""

    @abstractmethod
    def healthy(self) -> bool:
        """The health check: whether it does its job now."""

    @abstractmethod
    def state(self) -> ComponentState | None:
        """Its line of ``status``; None when it has no part in this stack (a replay server
        outside replay mode)."""

    def prepare(self, progress: Progress) -> None:
        """What ``up`` must have in place even when it starts only the services."""
        return None  # most components need nothing

    def announce(self, progress: Progress) -> None:
        """Say what is about to take a while, before a start."""
        return None  # most starts take a moment only

    def where(self) -> str:
        """What ``up`` says after the pid (the dashboard: its address)."""
        return ""

    def up(self, progress: Progress) -> None:
        """Start it unless it runs, and say which."""
        running = self.pid() is not None
        if not running:
            self.announce(progress)
        pid = self.start()
        progress(f"{self.name}: {'running' if running else 'started'} (pid {pid}){self.where()}")

    def down(self) -> list[str]:
        """Stop what this home runs of it; the names of what was stopped."""
        return [self.name] if self.stop() else []


@dataclass(frozen=True)
class SpawnedComponent(Component):
    """A component that runs as a background process of ours, its pid in ``run/<stem>.pid`` and
    its output in ``logs/<stem>.log``."""

    #: "the dashboard": how messages name it.
    title: ClassVar[str]
    #: What has not happened when it is not ready in time ("the dashboard did not answer").
    not_ready: ClassVar[str]
    stop_timeout: ClassVar[float] = 30.0

    @property
    def stem(self) -> str:
        """The name of its pid and log files."""
        return self.name

    @property
    def pidfile(self) -> Path:
        return self.home.pidfile(self.stem)

    @property
    def output(self) -> Path:
        """Where its standard output and error go."""
        return self.home.logfile(self.stem)

    @property
    def logfile(self) -> Path:
        return self.output

    @property
    @abstractmethod
    def marker(self) -> str:
        """A string in its command line (guards against a recycled pid)."""

    def pid(self) -> int | None:
        return read_pid(self.pidfile, self.marker)

    def stop(self) -> bool:
        return stop_recorded(self.pid(), self.pidfile, timeout=self.stop_timeout)

    def exit_hint(self) -> str:
        """More to say when it exits during start-up."""
        return ""

    def spawn_and_wait(
        self,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        timeout: float,
        interval: float = 0.2,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Spawn ``argv``; its pid once ``ready()``. InfraError with the end of its output when it
        exits first, or when it is not ready within ``timeout`` seconds."""
        pid = spawn(argv, pidfile=self.pidfile, logfile=self.output, env=env, cwd=cwd)
        # The spawned pid itself, not the marker check: until the child has exec'd, its command
        # line is still its parent's.
        wait_for(lambda: not pid_alive(pid) or ready(), timeout=timeout, interval=interval)
        if not pid_alive(pid):
            raise InfraError(
                f"{self.title} exited during start-up ({self.output}):\n"
                f"{tail(self.output, 30)}{self.exit_hint()}"
            )
        if not ready():
            raise InfraError(f"{self.not_ready} within {timeout:.0f} s")
        return pid
