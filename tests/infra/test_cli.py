"""./infra/wikipulse as a user runs it: its errors, and the parts of `up --replay` that need no
running stack (options, the replay server, its port, the state it keeps).

The whole lifecycle (up --replay, up again, status and its freshness line, psql, logs, a killed
worker or broker brought back, down --purge) runs in tests/test_end_to_end.py, on the one extra
Kafka and PostgreSQL of the suite, together with the end-to-end checks of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import load_settings
from infra import cli
from infra.processes import InfraError, free_port
from infra.replay_server import DEFAULT_FILE, LocalReplay, ReplayMode, load_mode, save_mode
from infra.stack import Stack, format_age
from tests.conftest import make_home, stack_environment
from tests.harness import clean_environ, cli_environment, run_cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LINES = 384


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    home = make_home("wikipulse-cli-")
    env = cli_environment(home)
    yield env
    run_cli(env, "down", "--purge", timeout=120)
    shutil.rmtree(home, ignore_errors=True)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args)


@pytest.mark.integration
@pytest.mark.slow
def test_port_in_use_is_a_clear_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(cli_env["POSTGRES_PORT"])))
        squatter.listen()
        result = run(cli_env, "up")
    assert result.returncode == 1
    assert "already in use" in result.stderr and "POSTGRES_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_missing_java_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    # A PATH with what the wrapper needs but no java.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "cksum", "dirname", "env", "python3", "tail"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**cli_env, "PATH": str(bin_dir)}
    result = run(env, "up")
    assert result.returncode == 1
    assert "Java is needed" in result.stderr and "Traceback" not in result.stderr


# ---- up --replay without a running stack ---------------------------------------------------


@pytest.fixture
def home_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The configuration of a stack that does not run (nothing is started): for the command's
    checks, run in this process."""
    env = stack_environment(tmp_path / "home")
    for name in set(os.environ) - set(clean_environ()):  # the developer's configuration
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed", "2"], "--speed: only with --replay"),
        (["--once", "--replay-option=--drop-every=3"], "--once, --replay-option: only with"),
        (["--replay", "/nonexistent.ndjson"], "no replay file /nonexistent.ndjson"),
        (["--replay", str(ROOT / "README.md")], "does not look like NDJSON"),
        (["--replay", "--speed", "max"], "--speed max needs --once"),
        (["--replay", "--speed", "0"], "--speed must be a positive number or `max`"),
        (["--replay", "--replay-option=--port=1"], "expected OPTION=N with OPTION one of"),
        (["--replay", "--replay-option=--drop-every=x"], "'x' is not a whole number"),
    ],
)
def test_up_checks_its_replay_options_before_starting_anything(
    home_env: dict[str, str], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["up", *args]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert not Path(home_env["WIKIPULSE_HOME"]).exists(), "nothing was started or recorded"


def test_replay_and_live_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["up", "--replay", "--live"])
    assert exit_info.value.code == 2
    assert "not allowed with argument --replay" in capsys.readouterr().err


def test_the_replay_request_resolves_the_file_and_keeps_the_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(DEFAULT_FILE.parent)
    args = cli.build_parser().parse_args(
        ["up", "--replay", DEFAULT_FILE.name, "--once", "--speed", "max",
         "--replay-option=--drop-every=25", "--replay-option=--fail-first=2"]
    )  # fmt: skip
    mode = cli.replay_request(args)
    assert mode == ReplayMode(
        DEFAULT_FILE, None, False, ("--drop-every=25", "--fail-first=2"), events=SAMPLE_LINES
    )
    default = cli.replay_request(cli.build_parser().parse_args(["up", "--replay"]))
    assert default == ReplayMode(DEFAULT_FILE, 1.0, True, (), events=SAMPLE_LINES)
    assert default.describe() == (
        f"infra/replay/recentchange-sample.ndjson ({SAMPLE_LINES} events), "
        "looping at the recorded pace"
    )
    assert mode.describe().endswith(
        "once as fast as possible, then silent; --drop-every=25 --fail-first=2"
    )
    assert cli.replay_request(cli.build_parser().parse_args(["up"])) is None


def test_the_default_sample_is_the_documented_real_recording() -> None:
    readme = (DEFAULT_FILE.parent / "README.md").read_text()
    digest = hashlib.sha256(DEFAULT_FILE.read_bytes()).hexdigest()
    assert digest in readme
    sample = [line for line in DEFAULT_FILE.read_bytes().split(b"\n") if line.strip()]
    assert len(sample) == SAMPLE_LINES
    assert all(json.loads(line)["meta"]["stream"] == "mediawiki.recentchange" for line in sample)
    prefix = (ROOT / "tests" / "data" / "recentchange-sample.ndjson").read_bytes()
    assert DEFAULT_FILE.read_bytes().startswith(prefix)


def test_the_replay_mode_is_kept_in_the_home(tmp_path: Path) -> None:
    home = Stack(load_settings(environ=stack_environment(tmp_path))).home
    assert load_mode(home) is None
    mode = ReplayMode(DEFAULT_FILE, 2.5, False, ("--drop-every=7",), port=4321, events=5)
    save_mode(home, mode)
    assert load_mode(home) == mode
    (tmp_path / "replay.json").write_text("{not json")
    with pytest.raises(InfraError, match="is damaged"):
        load_mode(home)


def test_the_replay_server_moves_to_a_free_port_when_its_own_is_taken(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    port = free_port()
    save_mode(stack.home, ReplayMode(DEFAULT_FILE, 1.0, True, port=port, events=SAMPLE_LINES))
    said: list[str] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        mode = stack._start_replay(load_mode(stack.home) or pytest.fail("no mode"), said.append)
    try:
        assert mode.port != port
        assert said[0] == f"replay: port {port} is taken by another process, moving to {mode.port}"
        assert said[1].startswith("replay: started (pid ") and mode.url in said[1]
        assert load_mode(stack.home) == mode, "the new port is recorded"
        replay = LocalReplay(stack.home)
        assert replay.pid() is not None and replay.healthy(mode.port)
        state = next(s for s in stack.status() if s.name == "replay")
        assert state.healthy and state.address == f"http://127.0.0.1:{mode.port}"
        assert state.detail.startswith("serving infra/replay/recentchange-sample.ndjson (384")
        assert "replaying 384 events at" in stack.log_path("replay").read_text()
    finally:
        assert LocalReplay(stack.home).stop()
    assert LocalReplay(stack.home).pid() is None
    state = next(s for s in stack.status() if s.name == "replay")
    assert not state.healthy and state.detail.startswith("not running (to serve ")


def test_a_bad_replay_file_is_reported_with_the_servers_log(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    events = tmp_path / "events.ndjson"
    events.write_text('{"meta": {}}\n')
    mode = ReplayMode.for_file(events, speed=1.0)
    events.unlink()  # gone by the time the server reads it
    with pytest.raises(InfraError, match="the replay server exited during start-up"):
        stack._start_replay(mode, lambda _: None)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-3, "0 s"), (14.4, "14 s"), (99, "99 s"), (300, "5 min"), (3 * 3600, "3 h"),
     (161 * 86400, "161 days")],
)  # fmt: skip
def test_ages_read_like_a_person_says_them(seconds: float, shown: str) -> None:
    assert format_age(seconds) == shown


def test_logs_of_a_replay_that_never_ran(
    home_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["logs", "replay", "--no-follow"]) == 1
    assert "no log for replay yet" in capsys.readouterr().err
