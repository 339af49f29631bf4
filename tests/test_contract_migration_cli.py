"""app/README.md's move from version 1 to version 2 of the typed event ("Evolving the
contract"), run as written: its shell blocks, in order, through ``./infra/wikipulse`` on a stack of
its own, with events arriving before, during and after the move, and back.

Only what must be the test's is changed in the commands: the CLI's path, the path of ``.env``
(the stack's configuration file) and the fixed port of step 1. Each phase serves more of one
recording (``up --replay FILE --once``: the file grows, the worker resumes after the last event
it has), then checks what a user would: every event once in each version's topic it should be
in, and the tables equal to values computed from the served events with plain Python; across
the Spark job's move, not one row rewritten.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from app.config import Settings, load_settings
from infra.processes import free_port
from tests.conftest import make_home
from tests.events import changes, synthetic
from tests.harness import ROOT, WIKIPULSE, cli_environment, read_topic, run_cli, wait_until
from tests.spark.helpers import batches, golden, snapshot, user_edit_counts, wiki_activity

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = ROOT / "app" / "README.md"
#: With repeats of earlier events (the rebuild worker must drop them too) and canaries (in no
#: typed topic).
EVENTS = synthetic(480, seed=41, start=datetime(2026, 11, 2, 8, 0, tzinfo=UTC), rate=5.0,
                   duplicate_rate=0.05, canary_interval=timedelta(seconds=20))  # fmt: skip
#: How many of EVENTS have been served after each phase.
BEFORE, DURING, AFTER, ROLLED_BACK = 160, 280, 400, 480
TABLES = ("user_edit_counts", "wiki_activity")
#: The replay pace (× event time) while a worker is replaced: the first events of the phase reach
#: the old worker, the last ones only the new one. 120 events at 5 a second of event time take
#: 24 s at this pace: more than ``down worker`` needs on a loaded two-core machine (at twice the
#: pace, 12 s, the old worker once got every event out before it stopped).
PACE = "1"


def readme_blocks() -> list[str]:
    """The shell blocks of the README's "Evolving the contract" section, in order."""
    text = README.read_text()
    section = text[text.index("### Evolving the contract") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [re.sub(r"\n\s*", "\n", block).strip() for block in blocks]


class Deployment:
    """The stack of one user: a home, its ``.env``, the events served so far."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dotenv = home / "dotenv"
        self.dotenv.touch()
        self.env = cli_environment(
            home,
            WIKIPULSE_ENV_FILE=str(self.dotenv),
            INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every event counts
            INGESTION_BACKOFF_INITIAL="100 ms",  # a new replay file is found again quickly
            INGESTION_BACKOFF_MAX="1 second",
            INGESTION_HEALTH_TIMEOUT="1 hour",  # a served file, then silence: still healthy
            SPARK_TRIGGER_PROCESSING_TIME="2 seconds",
            POSTGRES_RETENTION_DAYS="100000",  # the events are from November 2026
        )
        self.served = 0
        #: Step 1's worker's web port (6067 in the README).
        self.rebuild_port = free_port()

    def recording(self, count: int) -> Path:
        """A file per phase: ``up --replay`` keeps a server that serves the same file."""
        return self.home.parent / f"{self.home.name}-events-{count}.ndjson"

    @property
    def settings(self) -> Settings:
        """What the CLI reads now: the environment, then ``.env``."""
        return load_settings(environ=self.env)

    def cli(self, *args: str) -> str:
        result = run_cli(self.env, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def serve(self, count: int, *, speed: str = "max") -> None:
        """The recording grows to the first ``count`` events; the worker gets the new ones."""
        recording = self.recording(count)
        recording.write_bytes(b"".join(line + b"\n" for line in EVENTS[:count]))
        self.cli("up", "--replay", str(recording), "--once", "--speed", speed)
        self.served = count

    def run_block(self, block: str) -> str:
        """A README block as written, but for the CLI's path, ``.env``'s and step 1's port."""
        script = block.replace("./infra/wikipulse", WIKIPULSE)
        script = re.sub(r"(?<![\w/.])\.env\b", str(self.dotenv), script)
        script = script.replace("APP_WEB_PORT=6067", f"APP_WEB_PORT={self.rebuild_port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}{result.stderr}"
        return result.stdout

    def typed_ids(self, version: int) -> Counter[str]:
        """The event ids in version ``version``'s topic, each record under that version's
        headers."""
        topics = self.settings.kafka.topics
        topic = topics.typed if version == 1 else topics.typed_v2
        records = asyncio.run(read_topic(self.settings, topic.name, topic.partitions))
        headers = {(dict(r.headers)["schema"], dict(r.headers)["schema-version"]) for r in records}
        assert headers <= {(f"wikipulse/recentchange/{version}".encode(), str(version).encode())}
        return Counter(orjson.loads(record.value)["event_id"] for record in records)

    def ids(self, count: int) -> Counter[str]:
        """What a typed topic holds once the first ``count`` events are in: each change once,
        no canary."""
        return Counter({id_: 1 for id_ in changes(EVENTS[:count])})

    def wait_typed(self, version: int, count: int) -> None:
        wait_until(lambda: self.typed_ids(version) == self.ids(count), 180,
                   f"version {version} of the first {count} events")  # fmt: skip

    def assert_stopped_writing(self, version: int, *, between: tuple[int, int]) -> None:
        """The retired version's topic holds each event once, up to the moment its worker
        stopped: all of the first ``between[0]`` events, none of the last one served."""
        ids = self.typed_ids(version)
        done, served = between
        assert max(ids.values()) == 1, ids.most_common(3)
        assert set(self.ids(done)) <= set(ids) <= set(self.ids(served))
        assert list(changes(EVENTS[:served]))[-1] not in ids

    def tables(self) -> tuple[dict, dict]:
        return user_edit_counts(self.settings), wiki_activity(self.settings)

    def wait_aggregated(self) -> None:
        expected = golden(EVENTS[: self.served], window=self.settings.spark.windowing.duration)
        wait_until(lambda: self.tables() == expected, 180,
                   f"the tables of the first {self.served} events")  # fmt: skip


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    home = make_home("wikipulse-migration-")
    stack = Deployment(home)
    try:
        yield stack
    finally:
        run_cli(stack.env, "down", "--purge", timeout=120)
        for count in (BEFORE, DURING, AFTER, ROLLED_BACK):
            stack.recording(count).unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)


def test_the_readme_blocks_are_the_steps_this_test_runs() -> None:
    rebuild, move_spark, retire, roll_back = readme_blocks()
    assert "APP_TYPED_VERSIONS=2" in rebuild and "INGESTION_ENABLED=false" in rebuild
    assert "SPARK_SCHEMA_VERSION=2" in move_spark and "down spark" in move_spark
    assert "down worker" in retire and "APP_ID=wikipulse-worker-v2" in retire
    assert "SPARK_SCHEMA_VERSION=1" in roll_back


def test_version_1_to_2_and_back_as_the_readme_says(deployment: Deployment) -> None:
    rebuild, move_spark, retire, roll_back = readme_blocks()

    # Version 1, as every deployment starts.
    deployment.serve(BEFORE)
    deployment.wait_typed(1, BEFORE)
    deployment.wait_aggregated()

    # 1. The rebuild starts while more events arrive at the recorded pace.
    deployment.serve(DURING, speed="4")
    deployment.run_block(rebuild)
    deployment.wait_typed(1, DURING)
    deployment.wait_typed(2, DURING)  # from the raw log's beginning, then live
    # "`APP_ID=wikipulse-worker-v2 APP_WEB_PORT=6067 ./infra/wikipulse status` shows its lag"
    port = str(deployment.rebuild_port)
    status = run_cli({**deployment.env, "APP_ID": "wikipulse-worker-v2", "APP_WEB_PORT": port},
                     "status").stdout  # fmt: skip
    assert re.search(rf"^\s*up\s+worker\s.*:{port}\s", status, re.MULTILINE), status
    assert re.search(r"lag normalizer:\s+0 records behind", status), status
    deployment.wait_aggregated()
    before = {table: snapshot(deployment.settings, table) for table in TABLES}

    # 2. The Spark job moves to version 2: a new checkpoint over the whole topic, same tables.
    deployment.run_block(move_spark)
    assert deployment.settings.spark.schema_version == 2
    v2_query = "wikipulse_aggregates_v2"

    def v2_rows() -> int:
        return sum(b["input_rows"] or 0 for b in batches(deployment.settings)
                   if b["query_name"] == v2_query)  # fmt: skip

    wait_until(lambda: v2_rows() == len(changes(EVENTS[:DURING])), 180,
               "the version-2 job over every event")  # fmt: skip
    assert {table: snapshot(deployment.settings, table) for table in TABLES} == before
    assert not any(b["unknown_schema_rows"] for b in batches(deployment.settings))

    # 3. Version 1 retired while events flow: the version-2 worker takes the stream over where
    # the first one stopped.
    deployment.serve(AFTER, speed=PACE)
    deployment.run_block(retire)
    assert deployment.settings.app.id == "wikipulse-worker-v2"
    deployment.wait_typed(2, AFTER)
    deployment.wait_aggregated()
    deployment.assert_stopped_writing(1, between=(DURING, AFTER))

    # Rolling back, again while events flow: version 1's worker and job resume where they
    # stopped, and write what arrived meanwhile; nothing is lost.
    deployment.serve(ROLLED_BACK, speed=PACE)
    deployment.run_block(roll_back)
    assert deployment.settings.spark.schema_version == 1
    assert deployment.settings.app.id == "wikipulse-worker"
    deployment.wait_typed(1, ROLLED_BACK)  # the events of version 2's time too, once
    deployment.wait_aggregated()
    deployment.assert_stopped_writing(2, between=(AFTER, ROLLED_BACK))
