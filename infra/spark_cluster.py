"""The local Spark standalone cluster: a master and its workers, run from the pyspark package's
own launcher (``bin/spark-class``) when ``spark.master`` is ``spark://<loopback>:<port>`` (the
cluster layout). Under any other master it has no part in the stack.

The Spark job is submitted to it by :mod:`infra.spark_job` (``spark-submit --master spark://…``,
client mode): its executors run on the workers, its driver beside them. ``status`` reads the
cluster's state from the master's JSON page (``http://<host>:<master_ui_port>/json/``) and each
worker's (its executors).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.component import Component, ComponentState, Progress
from infra.home import Home
from infra.maven import require_java
from infra.processes import (
    InfraError,
    ensure_port_free,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_started,
)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
WORKER_STARTED = re.compile(r"Starting Spark worker \S+:(\d+) with")


def spark_class() -> Path:
    """The launcher of Spark's JVM classes that the pyspark package ships."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("pyspark is not installed: `./infra/wikipulse up` installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "spark-class"


@dataclass(frozen=True)
class SparkDaemon:
    """The master, or worker ``number`` (1, 2, …): its process, files and command line."""

    home: Home
    number: int  # 0: the master

    @property
    def name(self) -> str:
        """Its pid and log files' stem, and what ``logs`` calls it."""
        return "spark-master" if self.number == 0 else f"spark-worker-{self.number}"

    @property
    def work_dir(self) -> Path:
        """The master's state, or the worker's executors' directories and logs."""
        return self.home.spark_cluster / self.name

    @property
    def pidfile(self) -> Path:
        return self.home.pidfile(self.name)

    @property
    def output(self) -> Path:
        return self.home.logfile(self.name)

    @property
    def properties_file(self) -> Path:
        """Its ``--properties-file``: in its command line, so the marker of its pid."""
        return self.work_dir / "spark-defaults.conf"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, str(self.properties_file))


@dataclass(frozen=True)
class LocalSparkCluster(Component):
    """The standalone master and ``spark.local.workers`` workers of ``spark.local.worker_cores``
    cores and ``worker_memory`` each, on this machine."""

    name = "spark-cluster"
    stop_timeout = 30.0

    @property
    def applies(self) -> bool:
        return self.settings.spark.runs_local_cluster

    @property
    def master(self) -> SparkDaemon:
        return SparkDaemon(self.home, 0)

    @property
    def workers(self) -> list[SparkDaemon]:
        return [SparkDaemon(self.home, n) for n in range(1, self.settings.spark.local.workers + 1)]

    @property
    def daemons(self) -> list[SparkDaemon]:
        return [self.master, *self.workers] if self.applies else []

    @property
    def host(self) -> str:
        master = self.settings.spark.standalone_master
        assert master is not None
        return master[0]

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.settings.spark.local.master_ui_port}"

    @property
    def logfile(self) -> Path:
        return self.master.output

    def pid(self) -> int | None:
        return self.master.pid() if self.applies else None

    def cluster_state(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The master's JSON page (its workers, cores, applications); None when it does not
        answer."""
        try:
            with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=timeout) as response:
                state: dict[str, Any] = json.load(response)
                return state
        except (OSError, ValueError):
            return None

    def alive_workers(self, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        state = state if state is not None else self.cluster_state()
        if state is None:
            return []
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def healthy(self) -> bool:
        if not self.applies or any(d.pid() is None for d in self.daemons):
            return False
        return len(self.alive_workers()) >= len(self.workers)

    def announce(self, progress: Progress) -> None:
        progress("spark-cluster: starting the standalone master and workers (about 10 s)")

    def up(self, progress: Progress) -> None:
        if not self.applies:
            return
        running = {d.name for d in self.daemons if d.pid() is not None}
        if len(running) < len(self.daemons):
            self.announce(progress)
        self.start()
        for daemon in self.daemons:
            state = "running" if daemon.name in running else "started"
            where = (
                f", {self.settings.spark.master}, UI {self.ui_url}" if daemon.number == 0 else ""
            )
            progress(f"{daemon.name}: {state} (pid {daemon.pid()}){where}")

    def _command(self, daemon: SparkDaemon) -> list[str]:
        local = self.settings.spark.local
        common = ["--host", self.host, "--properties-file", str(daemon.properties_file)]
        if daemon.number == 0:
            _, port = self.settings.spark.standalone_master or ("", 0)
            args = ["--port", str(port), "--webui-port", str(local.master_ui_port)]
            return [str(spark_class()), MASTER_CLASS, *common, *args]
        args = [
            "--cores", str(local.worker_cores),
            "--memory", local.worker_memory,
            "--webui-port", "0",  # any free port: the master's page links to it
            "--work-dir", str(daemon.work_dir),
        ]  # fmt: skip
        return [str(spark_class()), WORKER_CLASS, *common, *args, self.settings.spark.master]

    def start(self, *, timeout: float = 120.0) -> int:
        """Start the daemons that do not run; the master's pid once every worker has
        registered with it."""
        if not self.applies:
            raise InfraError(f"spark.master {self.settings.spark.master!r} is not a local cluster")
        stopped = [d for d in self.daemons if d.pid() is None]
        if stopped:
            require_java()
            if self.master in stopped:
                _, port = self.settings.spark.standalone_master or ("", 0)
                for needed, number, fix in (
                    ("master", port, "set SPARK_MASTER=spark://127.0.0.1:<another port>"),
                    ("master's UI", self.settings.spark.local.master_ui_port,
                     "set SPARK_LOCAL_MASTER_UI_PORT=<another port>"),
                ):  # fmt: skip
                    ensure_port_free(
                        self.host, number, needed_by=f"the local Spark {needed}", fix=fix
                    )
            env = {
                **os.environ,
                "SPARK_LOCAL_IP": self.host,
                # The daemons' own heap; executors get spark.executor.memory.
                "SPARK_DAEMON_MEMORY": self.settings.spark.local.daemon_heap,
            }
            spawned = {}
            for daemon in stopped:
                daemon.work_dir.mkdir(parents=True, exist_ok=True)
                daemon.properties_file.write_text(_properties(daemon))
                spawned[daemon] = spawn(
                    self._command(daemon), pidfile=daemon.pidfile, logfile=daemon.output, env=env
                )
            dead = wait_started(
                spawned,
                lambda: len(self.alive_workers()) >= len(self.workers),
                timeout=timeout,
                interval=0.5,
            )
            if dead is not None:
                raise InfraError(
                    f"{dead.name} exited during start-up ({dead.output}):\n{tail(dead.output, 30)}"
                )
            alive = len(self.alive_workers())
            if alive < len(self.workers):
                raise InfraError(
                    f"{alive} of {len(self.workers)} Spark workers registered with the master "
                    f"within {timeout:.0f} s (logs: {self.home.logs}/spark-*.log)"
                )
        pid = self.master.pid()
        assert pid is not None
        return pid

    def stop(self) -> bool:
        return bool(self.down())

    def down(self) -> list[str]:
        """Stop the workers (and their executors) and the master, all at once; the names of
        those that ran."""
        running = [(d, pid) for d in self.daemons if (pid := d.pid()) is not None]
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            for daemon, pid in running:
                pool.submit(stop_recorded, pid, daemon.pidfile, timeout=self.stop_timeout)
        return [daemon.name for daemon, _ in running]

    def state(self) -> ComponentState | None:
        if not self.applies:
            return None
        state = self.cluster_state() if self.master.pid() is not None else None
        alive = self.alive_workers(state)
        by_port = {int(w["port"]): w for w in alive}
        notes = [f"master: {_pid(self.master)}, UI {self.ui_url}"]
        for daemon in self.workers:
            line = f"worker {daemon.number}: {_pid(daemon)}"
            worker = _worker_of(daemon, by_port)
            if worker is not None:
                line += (
                    f", {worker['coresused']} of {worker['cores']} core(s) used, "
                    f"executors: {', '.join(_executors(worker)) or 'none'}"
                )
            notes.append(line)
        down = [d.name for d in self.daemons if d.pid() is None]
        if state is None:
            everything = len(down) == len(self.daemons)
            detail = "not running" if everything else "the master does not answer"
        else:
            apps = [f"{a['name']} ({a['state']})" for a in state.get("activeapps", [])]
            detail = (
                f"{len(alive)} of {len(self.workers)} worker(s) alive; "
                f"applications: {', '.join(apps) or 'none'}"
            )
        if down and len(down) < len(self.daemons):
            detail += "; DOWN: " + ", ".join(down)
        healthy = not down and state is not None and len(alive) >= len(self.workers)
        return ComponentState(
            self.name,
            True,
            True,
            healthy,
            self.master.pid(),
            self.settings.spark.master,
            detail,
            tuple(notes),
        )


def _properties(daemon: SparkDaemon) -> str:
    """A daemon's Spark properties. The master keeps its workers and applications in a
    recovery directory: restarted after a crash, it recovers them, and the running job keeps its
    executors (a fresh master would not know the job, and the workers would drop its
    executors). The workers delete old applications' directories."""
    lines = ["# Written by ./infra/wikipulse up (infra/spark_cluster.py)."]
    if daemon.number == 0:
        lines += [
            "spark.deploy.recoveryMode FILESYSTEM",
            f"spark.deploy.recoveryDirectory {daemon.work_dir / 'recovery'}",
        ]
    else:
        lines.append("spark.worker.cleanup.enabled true")
    return "\n".join(lines) + "\n"


def _pid(daemon: SparkDaemon) -> str:
    pid = daemon.pid()
    return f"pid {pid}" if pid is not None else "DOWN"


def _worker_of(daemon: SparkDaemon, alive_by_port: dict[int, dict[str, Any]]) -> Any:
    """The master's entry for this worker process: by the RPC port the worker said it started
    on (its log: "Starting Spark worker 127.0.0.1:44813 with 1 cores"; the last start counts)."""
    if daemon.pid() is None:
        return None
    starts = WORKER_STARTED.findall(tail(daemon.output, 400))
    return alive_by_port.get(int(starts[-1])) if starts else None


def _executors(worker: dict[str, Any]) -> list[str]:
    """The executors a worker runs (from its own JSON page): ``<app>/<executor id>``."""
    try:
        with urllib.request.urlopen(f"{worker['webuiaddress']}/json/", timeout=2) as response:
            page = json.load(response)
    except (OSError, ValueError, KeyError):
        return ["unknown"]
    return [f"{e['appid']}/{e['id']}" for e in page.get("executors", [])]
