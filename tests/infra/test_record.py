"""``record``: the stream to NDJSON, byte for byte, resumed after drops, stopped on request.

Each test serves events of our own (the synthetic stream, or payloads written here) from the
local replay server and points ``record`` at it through ``INGESTION_WIKIMEDIA_URL``, the key the
worker follows. What was served is the expectation: the file must hold exactly those payloads,
one per line.
"""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pytest

from app.config import ENV_ALIASES, ENV_VARS
from infra import cli
from infra.replay import cli as replay_cli
from infra.replay.server import ReplayOptions, ReplayServer
from infra.replay.sources import SyntheticEvents
from tests.events import stream, synthetic
from tests.harness import WIKIPULSE, ReplayThread, clean_environ

CONTACT = "record-test@example.org"
START = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

# Payloads that test the "byte for byte" promise, in the schema's shape and our own words.
NON_ASCII = (
    '{"$schema":"/mediawiki/recentchange/1.0.0","meta":{"id":"a3e7c1d0-0000-4000-8000-'
    '000000000001","dt":"2024-05-01T10:00:01Z","domain":"el.wikipedia.org","stream":'
    '"mediawiki.recentchange"},"type":"edit","namespace":0,"title":"Δοκιμαστική σελίδα — '
    '試験 🧪","user":"Χρήστης Δοκιμής","bot":false,"wiki":"elwiki","server_name":'
    '"el.wikipedia.org"}'
).encode()
CARRIAGE_RETURN = (
    b'{"$schema":"/mediawiki/recentchange/1.0.0","type":"edit",\r"title":"A carriage return '
    b'between two tokens","wiki":"testwiki","meta":{"id":"a3e7c1d0-0000-4000-8000-'
    b'000000000002","dt":"2024-05-01T10:00:02Z"}}'
)
INVALID_UTF8 = (
    b'{"$schema":"/mediawiki/recentchange/1.0.0","type":"log","title":"A stray byte \xff\xfe '
    b'here","wiki":"testwiki","meta":{"id":"a3e7c1d0-0000-4000-8000-000000000003",'
    b'"dt":"2024-05-01T10:00:03Z"}}'
)
ESCAPES = (
    b'{"type":"edit","title":"Escaped \\n newline, \\u00e9 and \\"quotes\\"","wiki":"testwiki",'
    b'"meta":{"id":"a3e7c1d0-0000-4000-8000-000000000004","dt":"2024-05-01T10:00:04Z"}}'
)
LEADING_SPACE = b' {"type":"categorize","title":"A payload that starts with a space"}'
MULTI_LINE = b'{"type":"edit",\n"title":"Two lines: no NDJSON line can hold it"}'


@pytest.fixture
def point_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Configure ``record`` (in this process) for a stream URL, with quick reconnections."""
    for name in (*ENV_VARS, *ENV_ALIASES, "WIKIPULSE_CONFIG_DIR", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)

    def configure(url: str) -> None:
        for name, value in environment(url, tmp_path).items():
            monkeypatch.setenv(name, value)

    return configure


def environment(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "WIKIPULSE_ENV_FILE": str(tmp_path / "no.env"),  # never a developer's .env
        "INGESTION_WIKIMEDIA_URL": url,
        "INGESTION_WIKIMEDIA_CONTACT": CONTACT,
        "INGESTION_BACKOFF_INITIAL": "50 ms",
        "INGESTION_BACKOFF_MAX": "200 ms",
    }


def ndjson(payloads: list[bytes]) -> bytes:
    return b"".join(payload + b"\n" for payload in payloads)


def record(*args: str) -> int:
    return replay_cli.main(["record", *args])


def test_the_file_holds_what_was_served_byte_for_byte(
    point_at, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = [NON_ASCII, CARRIAGE_RETURN, INVALID_UTF8, ESCAPES, LEADING_SPACE]
    events = synthetic(40, seed=21)
    served = events[:10] + odd[:2] + events[10:20] + [MULTI_LINE] + odd[2:] + events[20:]
    kept = [payload for payload in served if payload is not MULTI_LINE]
    out = tmp_path / "odd.ndjson"
    with ReplayThread(served) as replay:
        point_at(replay.url)
        assert record("--events", str(len(kept)), "--out", str(out)) == 0
    assert out.read_bytes() == ndjson(kept)
    stderr = capsys.readouterr().err
    assert f"recorded {len(kept)} events" in stderr
    assert "1 multi-line payloads left out" in stderr


def test_events_n_stops_after_n_events_into_a_file_named_by_the_time(
    point_at, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = synthetic(500, seed=22)
    monkeypatch.chdir(tmp_path)
    with ReplayThread(served) as replay:
        point_at(replay.url)
        assert record("--events", "120") == 0
    [out] = tmp_path.glob("recentchange-*.ndjson")
    assert out.read_bytes() == ndjson(served[:120])


def test_minutes_stops_the_capture(
    point_at, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endless = SyntheticEvents(stream(seed=23, start=START), count=None, live=False)
    out = tmp_path / "minutes.ndjson"
    with ReplayThread([], server=ReplayServer(endless, ReplayOptions(rate=200))) as replay:
        point_at(replay.url)
        assert record("--minutes", "0.02", "--out", str(out)) == 0
    lines = out.read_bytes().split(b"\n")
    assert lines.pop() == b""  # every line complete
    assert lines == list(stream(seed=23, start=START).events(len(lines)))
    assert "(the requested time)" in capsys.readouterr().err


def test_a_dropped_connection_resumes_without_losing_or_doubling(point_at, tmp_path: Path) -> None:
    served = synthetic(300, seed=24)
    out = tmp_path / "drops.ndjson"
    with ReplayThread(served, ReplayOptions(drop_every=25)) as replay:
        point_at(replay.url)
        assert record("--events", "300", "--out", str(out)) == 0
        requests = replay.server.requests
    assert out.read_bytes() == ndjson(served)
    assert len(requests) >= 300 // 25
    assert requests[0][0] is None
    assert all(last_event_id is not None for last_event_id, _ in requests[1:])


def test_since_starts_the_capture_at_that_time(point_at, tmp_path: Path) -> None:
    served = synthetic(100, seed=25, start=START)
    times = [datetime.fromisoformat(orjson.loads(p)["meta"]["dt"]) for p in served]
    since = times[60]
    first = next(i for i, moment in enumerate(times) if moment >= since)
    out = tmp_path / "since.ndjson"
    with ReplayThread(served) as replay:
        point_at(replay.url)
        naive = since.astimezone(UTC).replace(tzinfo=None).isoformat()  # naive means UTC
        assert record("--since", naive, "--events", str(100 - first), "--out", str(out)) == 0
        last_event_id, query = replay.server.requests[0]
    assert out.read_bytes() == ndjson(served[first:])
    assert last_event_id is None
    sent = datetime.fromisoformat(parse_qs(query)["since"][0])
    assert sent == since and sent.utcoffset() is not None


def test_an_existing_file_is_kept_unless_forced(
    point_at, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = synthetic(30, seed=26)
    out = tmp_path / "kept.ndjson"
    out.write_bytes(b"an earlier recording\n")
    with ReplayThread(served) as replay:
        point_at(replay.url)
        with pytest.raises(SystemExit) as refused:
            record("--events", "10", "--out", str(out))
        assert refused.value.code == 2
        assert "--out" in capsys.readouterr().err
        assert out.read_bytes() == b"an earlier recording\n"
        assert record("--events", "10", "--out", str(out), "--force") == 0
    assert out.read_bytes() == ndjson(served[:10])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--events", "0"], "--events"),
        (["--events", "ten"], "--events"),
        (["--minutes", "-1"], "--minutes"),
        (["--since", "last tuesday"], "--since"),
        (["--events", "5", "--minutes", "1"], "--minutes"),
        (["--seconds", "5"], "--seconds"),
    ],
)
def test_a_bad_option_exits_2_naming_it(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["record", *args])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "./infra/wikipulse record: error:" in stderr and named in stderr


def test_the_command_records_until_ctrl_c(tmp_path: Path) -> None:
    served = synthetic(60, seed=27)
    out = tmp_path / "live.ndjson"
    with ReplayThread(served) as replay:
        env = {**clean_environ(), **environment(replay.url, tmp_path)}
        process = subprocess.Popen(
            [WIKIPULSE, "record", "--out", str(out)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120  # a generous bound, not a measurement
            while process.poll() is None and time.monotonic() < deadline:
                if out.exists() and out.read_bytes().count(b"\n") >= len(served):
                    break
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)  # the Ctrl-C of a user
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        user_agents = set(replay.server.user_agents)
    assert process.returncode == 0, stderr
    assert out.read_bytes() == ndjson(served)
    assert f"recorded {len(served)} events" in stderr and "(interrupted)" in stderr
    [agent] = user_agents
    assert agent.startswith("wikipulse/") and f"({CONTACT})" in agent and "aiohttp/" in agent
