"""./infra/wikipulse as a user runs it: its errors, and the parts of `up --replay` that need no
running stack (options, the replay server, its port, the state it keeps).

The whole lifecycle (up --replay, up again, status and its freshness line, psql, logs, a killed
worker or broker brought back, down --purge) runs in tests/test_end_to_end.py, on the one extra
Kafka and PostgreSQL of the suite, together with the end-to-end checks of the data.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.config import load_settings
from infra import cli
from infra.component import format_age
from infra.home import Home
from infra.layout import record_layout, settings_for
from infra.processes import InfraError, free_port
from infra.replay import cli as replay_cli
from infra.replay.synthetic import StreamOptions, SyntheticStream
from infra.replay_server import ReplayMode, load_mode, save_mode
from infra.stack import Stack
from tests.conftest import make_home, stack_environment
from tests.events import synthetic
from tests.harness import clean_environ, cli_environment, run_cli

ROOT = Path(__file__).resolve().parents[2]


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
        (["--replay", "--once"], "--once needs a FILE: the synthetic stream has no end"),
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


def write_events(path: Path, count: int) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in synthetic(count, seed=3)))
    return path


def test_the_replay_request_resolves_the_file_and_keeps_the_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = write_events(tmp_path / "events.ndjson", 37)
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["up", "--replay", "events.ndjson", "--once", "--speed", "max",
         "--replay-option=--drop-every=25", "--replay-option=--fail-first=2"]
    )  # fmt: skip
    mode = cli.replay_request(args)
    assert mode == ReplayMode(events, None, False, ("--drop-every=25", "--fail-first=2"), events=37)
    assert mode.describe() == (
        f"{events} (37 events), once as fast as possible, then silent; "
        "--drop-every=25 --fail-first=2"
    )
    looping = cli.replay_request(cli.build_parser().parse_args(["up", "--replay", str(events)]))
    assert looping == ReplayMode(events, 1.0, True, (), events=37)
    assert looping.describe() == f"{events} (37 events), looping at the recorded pace"
    assert cli.replay_request(cli.build_parser().parse_args(["up"])) is None


def test_replay_without_a_file_is_a_new_synthetic_stream_at_the_live_pace() -> None:
    before = datetime.now(UTC)
    default = cli.replay_request(cli.build_parser().parse_args(["up", "--replay"]))
    after = datetime.now(UTC)
    assert default is not None and default.seed is not None and default.origin is not None
    assert default == ReplayMode(None, 1.0, True, (), seed=default.seed, origin=default.origin)
    assert before <= default.origin <= after, "the stream starts now"
    assert default.describe() == f"synthetic stream (seed {default.seed}), live pace"
    again = cli.replay_request(cli.build_parser().parse_args(["up", "--replay"]))
    assert again is not None and again.seed != default.seed, "a new stream has fresh ids"
    assert again.same_stream(default), "the same kind of stream: a running one is kept"

    faster = cli.replay_request(
        cli.build_parser().parse_args(
            ["up", "--replay", "--speed", "2.5", "--replay-option=--drop-every=9"]
        )
    )
    assert faster is not None and (faster.file, faster.speed, faster.loop) == (None, 2.5, True)
    assert faster.describe() == (
        f"synthetic stream (seed {faster.seed}), 2.5× the live pace; --drop-every=9"
    )
    assert not faster.same_stream(default)


def test_a_synthetic_stream_with_history_and_bursts_begins_in_the_past() -> None:
    before = datetime.now(UTC)
    mode = cli.replay_request(
        cli.build_parser().parse_args(
            ["up", "--replay", "--history", "90 minutes", "--seed", "12",
             "--burst", "wiki=dewiki,times=5,at=30,minutes=4",
             "--burst", "wiki=frwiki,page=Col_du_Galibier,editors=4,edits=9,at=50,minutes=5"]
        )
    )  # fmt: skip
    after = datetime.now(UTC)
    assert mode is not None and mode.origin is not None
    earliest = (before - timedelta(minutes=90)).replace(second=0, microsecond=0)
    assert earliest <= mode.origin <= after - timedelta(minutes=90)
    assert mode.origin.second == mode.origin.microsecond == 0, "burst minutes are whole minutes"
    assert (mode.seed, mode.history, mode.speed) == (12, 5400.0, 1.0)
    assert mode.options == (
        "--burst=wiki=dewiki,times=5,at=30,minutes=4",
        "--burst=wiki=frwiki,page=Col_du_Galibier,editors=4,edits=9,at=50,minutes=5",
    )
    assert mode.describe().startswith(
        "synthetic stream (seed 12), 90 minutes of history at once, then the live pace; --burst="
    )
    # The worker starts at the origin; the server keeps the history and an hour beyond it.
    assert mode.since == mode.origin.isoformat()
    argv = mode.argv()
    assert argv[argv.index("--start") + 1] == mode.origin.isoformat()
    assert argv[argv.index("--backlog") + 1] == "150"
    assert "--live" in argv and "--burst=wiki=dewiki,times=5,at=30,minutes=4" in argv
    now = cli.replay_request(cli.build_parser().parse_args(["up", "--replay"]))
    assert now is not None and not now.same_stream(mode) and "--backlog" not in now.argv()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--history", "2 hours"], "--history: only with --replay"),
        (["--replay", "{file}", "--burst", "wiki=dewiki,times=5,minutes=3"],
         "--burst: only for the synthetic stream (without FILE)"),
        (["--replay", "--history", "ninety minutes"], "--history 'ninety minutes': not a "
         "positive duration"),
        (["--replay", "--history", "2 days"], "--history: at most 24 hours, not 48"),
        (["--replay", "--burst", "wiki=dewiki,times=5"], "'minutes' is missing"),
        (["--replay", "--burst", "wiki=xxwiki,times=5,minutes=3"], "unknown wiki 'xxwiki'"),
    ],
)  # fmt: skip
def test_bad_history_or_burst_options_fail_before_anything_starts(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    events = write_events(tmp_path / "events.ndjson", 3)
    args = cli.build_parser().parse_args(
        ["up", *(argument.format(file=events) for argument in arguments)]
    )
    with pytest.raises(InfraError) as error:
        cli.replay_request(args)
    assert message in str(error.value)


def test_the_replay_mode_is_kept_in_the_home(tmp_path: Path) -> None:
    home = Stack(load_settings(environ=stack_environment(tmp_path))).home
    assert load_mode(home) is None
    mode = ReplayMode(tmp_path / "events.ndjson", 2.5, False, ("--drop-every=7",), port=4321,
                      events=5)  # fmt: skip
    save_mode(home, mode)
    assert load_mode(home) == mode
    origin = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    stream = ReplayMode(None, 1.0, True, ("--fail-first=1",), port=4322, seed=99, origin=origin)
    save_mode(home, stream)
    assert load_mode(home) == stream
    recorded = json.loads((tmp_path / "replay.json").read_text())
    assert (recorded["file"], recorded["seed"]) == (None, 99)
    assert datetime.fromisoformat(recorded["origin"]) == origin
    (tmp_path / "replay.json").write_text(json.dumps({**recorded, "seed": None}))
    with pytest.raises(InfraError, match="is damaged"):
        load_mode(home)
    (tmp_path / "replay.json").write_text("{not json")
    with pytest.raises(InfraError, match="is damaged"):
        load_mode(home)


def test_replay_again_keeps_the_synthetic_stream_unless_asked_for_another(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    running = replace(ReplayMode.synthetic(seed=8, origin=datetime(2026, 5, 1, tzinfo=UTC)),
                      port=4323)  # fmt: skip
    save_mode(stack.home, running)
    said: list[str] = []
    again = stack._choose_mode(ReplayMode.synthetic(), False, said.append)
    assert again == running and load_mode(stack.home) == running, "the same stream goes on"
    faster = stack._choose_mode(ReplayMode.synthetic(speed=3.0), False, said.append)
    assert faster is not None and (faster.speed, faster.port) == (3.0, 4323)
    assert (faster.seed, faster.origin) != (8, running.origin), "another stream: a new one"
    assert load_mode(stack.home) == faster
    assert said == []  # no replay server ran, none was stopped


def test_the_replay_server_moves_to_a_free_port_when_its_own_is_taken(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    port = free_port()
    save_mode(stack.home, replace(ReplayMode.synthetic(seed=1234), port=port))
    said: list[str] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        mode = stack.replay.serve(load_mode(stack.home) or pytest.fail("no mode"), said.append)
    try:
        assert mode.port != port
        assert said[0] == f"replay: port {port} is taken by another process, moving to {mode.port}"
        assert said[1].startswith("replay: started (pid ") and mode.url in said[1]
        assert load_mode(stack.home) == mode, "the new port is recorded"
        assert stack.replay.pid() is not None and stack.replay.answers(mode.port)
        assert stack.replay.healthy()
        state = next(s for s in stack.status() if s.name == "replay")
        assert state.healthy and state.address == f"http://127.0.0.1:{mode.port}"
        assert state.detail == "serving synthetic stream (seed 1234), live pace"
        log = stack.log_path("replay").read_text()
        assert mode.origin is not None
        assert f"synthetic stream: seed 1234, position 0 at {mode.origin.isoformat()}, live" in log
        assert f"serving without end at {mode.url}" in log
    finally:
        assert stack.replay.stop()
    assert stack.replay.pid() is None
    state = next(s for s in stack.status() if s.name == "replay")
    assert not state.healthy and state.detail.startswith("not running (to serve synthetic stream")


# ---- the synthetic stream across restarts ----------------------------------------------------


def read_frames(url: str, count: int, last_event_id: str | None = None) -> list[tuple[str, bytes]]:
    """The first ``count`` (id, data) frames of an SSE stream."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    frames: list[tuple[str, bytes]] = []
    frame_id, data = "", b""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as body:
        for line in body:
            if line.startswith(b"id: "):
                frame_id = line[4:].strip().decode()
            elif line.startswith(b"data: "):
                data = line[6:].rstrip(b"\n")
            elif line == b"\n" and frame_id:
                frames.append((frame_id, data))
                if len(frames) == count:
                    return frames
                frame_id, data = "", b""
    raise AssertionError(f"the stream ended after {len(frames)} frames")


def position(frame_id: str) -> int:
    """The stream position an EventStreams-shaped id names (its eqiad offset)."""
    return int(next(e["offset"] for e in json.loads(frame_id) if e["topic"].startswith("eqiad.")))


def frame_time(data: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(data)["meta"]["dt"])


def test_a_restarted_synthetic_server_goes_on_with_the_same_stream(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    origin = datetime.now(UTC) - timedelta(minutes=3)
    save_mode(stack.home, ReplayMode.synthetic(seed=4242, origin=origin))
    # What the stream must be: the generator's events of that seed from that origin, with the
    # serve command's defaults (repeats, canaries), which are StreamOptions' own.
    expected = SyntheticStream(StreamOptions(seed=4242, start=origin))
    mode = stack.replay.serve(load_mode(stack.home) or pytest.fail("no mode"), lambda _: None)
    try:
        connected = datetime.now(UTC)
        first = read_frames(mode.url, 3)
    finally:
        assert stack.replay.stop()
    now = position(first[0][0])
    assert [position(i) for i, _ in first] == [now, now + 1, now + 2]
    assert [data for _, data in first] == list(expected.events(3, first=now))
    assert expected.time(now) >= connected, "a new client starts now, not at the origin"

    # `up` after a restart: the recorded mode, the same stream; a client two minutes behind
    # resumes right after its last event, gets the backlog at once, then the live events.
    restarted = stack.replay.serve(load_mode(stack.home) or pytest.fail("no mode"), lambda _: None)
    assert (restarted.seed, restarted.origin) == (4242, origin)
    behind = expected.position_at(origin + timedelta(minutes=1))
    last_seen = json.dumps([{"topic": "eqiad.mediawiki.recentchange", "partition": 0,
                             "offset": behind}])  # fmt: skip
    resumed_at = datetime.now(UTC)
    live = expected.position_at(resumed_at)  # the first event not yet due on reconnecting
    try:
        frames = read_frames(restarted.url, live - behind, last_event_id=last_seen)
    finally:
        assert stack.replay.stop()
    assert [position(i) for i, _ in frames] == list(range(behind + 1, live + 1))
    assert [data for _, data in frames] == list(expected.events(live - behind, first=behind + 1))
    assert frame_time(frames[0][1]) < resumed_at <= expected.time(live), "backlog, then live"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--live", "--fast"], "--live paces by the clock: not with --fast, --rate or --speed"),
        (["--live", "--rate", "5"], "--live paces by the clock"),
        (["--live", "--speed", "2"], "--live paces by the clock"),
        (["--live", str(ROOT / "pyproject.toml")], "--live is for the synthetic stream"),
    ],
)
def test_live_pace_is_only_for_the_synthetic_stream_at_its_own_pace(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        replay_cli.main(["serve", "--port", "0", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_synthetic_stream_at_another_speed_starts_at_its_origin(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    origin = datetime.now(UTC) - timedelta(minutes=30)
    save_mode(stack.home, ReplayMode.synthetic(speed=50.0, seed=77, origin=origin))
    mode = stack.replay.serve(load_mode(stack.home) or pytest.fail("no mode"), lambda _: None)
    try:
        frames = read_frames(mode.url, 5)
    finally:
        assert stack.replay.stop()
    expected = SyntheticStream(StreamOptions(seed=77, start=origin))
    assert [position(i) for i, _ in frames] == [0, 1, 2, 3, 4]
    assert [data for _, data in frames] == list(expected.events(5))


def test_a_bad_replay_file_is_reported_with_the_servers_log(tmp_path: Path) -> None:
    stack = Stack(load_settings(environ=stack_environment(tmp_path)))
    events = tmp_path / "events.ndjson"
    events.write_text('{"meta": {}}\n')
    mode = ReplayMode.for_file(events, speed=1.0)
    events.unlink()  # gone by the time the server reads it
    with pytest.raises(InfraError, match="the replay server exited during start-up"):
        stack.replay.serve(mode, lambda _: None)


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


# ---- the layout ------------------------------------------------------------------------------


@pytest.fixture
def three_brokers(home_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The configuration of a cluster that does not run: three broker addresses."""
    brokers = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", brokers)
    monkeypatch.setenv("KAFKA_LOCAL_CONTROLLER_PORT", "19097")
    # The command sets WIKIPULSE_LAYOUT in its environment, for the processes it starts: a
    # copy, so that it does not outlive the test.
    monkeypatch.setattr(os, "environ", os.environ.copy())
    return {**home_env, "KAFKA_BOOTSTRAP_SERVERS": brokers}


def test_the_home_keeps_the_layout_up_recorded(three_brokers: dict[str, str]) -> None:
    home = Home(Path(three_brokers["WIKIPULSE_HOME"]))
    assert settings_for().wikipulse.layout == "single"
    record_layout(home, "cluster")
    settings = settings_for()  # no flag, no variable: the recorded layout
    assert (settings.wikipulse.layout, settings.kafka.replication_factor) == ("cluster", 3)
    assert os.environ["WIKIPULSE_LAYOUT"] == "cluster"  # for the processes it starts


def test_a_home_with_kafka_data_keeps_its_layout(
    three_brokers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(Path(three_brokers["WIKIPULSE_HOME"]))
    record_layout(home, "single")
    home.kafka_data.mkdir(parents=True)
    assert cli.main(["up", "--cluster"]) == 1
    error = capsys.readouterr().err
    assert f"{home.root} runs the single layout and its Kafka holds data: it cannot move to " \
        "the cluster layout (--cluster)" in error  # fmt: skip
    assert "down --purge" in error
    assert not (home.root / "run").exists()  # nothing started


def test_logs_names_each_broker_of_the_cluster(
    three_brokers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WIKIPULSE_LAYOUT", "cluster")
    assert cli.main(["logs", "kafka-4", "--no-follow"]) == 1
    assert "no log kafka-4; choose from postgres, kafka, kafka-2, kafka-3, replay" in (
        capsys.readouterr().err
    )
    assert cli.main(["logs", "kafka-3", "--no-follow"]) == 1
    assert "no log for kafka-3 yet" in capsys.readouterr().err


# ---- test ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "parallel"),
    [
        ([], True),
        (["tests/faults", "-x", "--durations=20"], True),
        (["-k", "not-n"], True),  # an expression, not the option
        (["-n", "0"], False),
        (["-n0"], False),
        (["--numprocesses=4"], False),
        (["--dist", "load"], False),
        (["-p", "no:xdist"], False),
    ],
)
def test_the_suite_runs_workers_by_the_memory_unless_the_arguments_choose(
    args: list[str], parallel: bool
) -> None:
    for memory, workers in ((16 << 30, "3"), (12 << 30, "3"), (10 << 30, "2"), (8 << 30, "2")):
        command = cli.pytest_command(args, memory=memory)
        assert command[1:3] == ["-m", "pytest"]
        expected = ["--numprocesses", workers, "--dist", "loadgroup"] if parallel else []
        assert command[3:] == [*expected, *args], memory
    # A 4 GB machine runs the suite in one process: two stacks side by side would not fit.
    assert cli.pytest_command(args, memory=4 << 30)[3:] == args


def test_the_installed_pytest_and_xdist_keep_a_group_on_one_worker(tmp_path: Path) -> None:
    """The suite's services are started once per run only if xdist keeps each group together
    (with pytest 9.2 it silently did not: pytest-dev/pytest-xdist#1386)."""
    (tmp_path / "test_groups.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.xdist_group('shared')\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_grouped(n): pass\n\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_free(n): pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's options
    options = ["--numprocesses", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"]
    command = cli.pytest_command([*options, "test_groups.py"])
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    workers = {
        line.split()[0]
        for line in result.stdout.splitlines()
        if "PASSED" in line and "test_grouped" in line
    }
    assert len(workers) == 1, result.stdout
    assert result.stdout.count("@shared") >= 6, result.stdout
