"""The dashboard in a real browser: ``streamlit run dashboards/wikipulse_dashboard.py`` on a free
loopback port, configured for a scratch database seeded around the real clock, opened by
headless Chromium (Debian's ``chromium`` package, driven by Playwright; no browser download).

The screenshot is saved as ``dashboard.png`` in the test's temporary directory and, when
``WIKIPULSE_TEST_ARTIFACTS`` is set, copied into that directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.dashboard import APP_FILE
from infra.processes import free_port, wait_for
from infra.stack import Stack
from tests.dashboards import seed
from tests.dashboards.browser import FINISHED, chromium_page
from tests.dashboards.conftest import OURS, scratch_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def seed_around(now: datetime) -> tuple[list, list]:
    """Windows 1 to 30 minutes old: the default view (the last hour) shows them all."""
    recent = now.replace(second=0, microsecond=0)

    def ago(minutes: int) -> datetime:
        return recent - timedelta(minutes=minutes)

    users = [
        (ago(2), "BobBot", 7), (ago(3), "BobBot", 5), (ago(2), "Alice", 6), (ago(4), "Alice", 4),
        (ago(10), seed.HOSTILE, 3), (ago(20), seed.RTL, 2), (ago(25), "Zoë", 1),
    ]  # fmt: skip
    wikis = [
        (ago(minutes), wiki, edits, 1, edits // 3, edits // 4, edits * 90, edits * 10, edits + 2)
        for minutes in range(1, 31)
        for wiki, edits in (("enwiki", 20 + minutes % 7), ("wikidatawiki", 12), ("dewiki", 5))
    ]
    return users, wikis


@pytest.fixture
def served(stack: Stack, stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The dashboard served by `streamlit run` for a seeded scratch database: its URL."""
    with scratch_database(stack, stack_env) as (settings, environ):
        users, wikis = seed_around(datetime.now(UTC))
        seed.insert(settings, users=users, wikis=wikis, batches=[])
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in OURS}
        env.update(environ)
        log = tmp_path / "streamlit.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
                 "--server.headless=true", "--server.address=127.0.0.1",
                 f"--server.port={port}", "--browser.gatherUsageStats=false",
                 "--server.fileWatcherType=none"],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    return bool(response.read() == b"ok")
            except OSError:
                return process.poll() is not None  # exited: stop waiting

        try:
            assert wait_for(healthy, timeout=60), f"streamlit did not start:\n{log.read_text()}"
            assert process.poll() is None, f"streamlit exited:\n{log.read_text()}"
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def save_artifact(source: Path) -> None:
    target = os.environ.get("WIKIPULSE_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, Path(target) / source.name)


def test_the_dashboard_renders_in_chromium(served: str, tmp_path: Path) -> None:
    with chromium_page() as page:
        page.goto(f"{served}/?range=1h")
        page.wait_for_function(FINISHED, timeout=60_000)

        assert page.locator("[data-testid=stException]").count() == 0
        assert "Most edits: BobBot (12)" in page.locator(".st-key-top_contributor").inner_text()
        # The first cell of the contributors' table (the trending table's comes before it).
        first = page.locator("[data-testid=glide-cell-0-0]", has_text="Special:CentralAuth")
        assert first.inner_text().endswith("/Special:CentralAuth/BobBot#BobBot")
        # Trending now: the seed's pages in event time (June 2026), whatever the clock.
        trending = page.locator(".st-key-trending [data-testid=glide-cell-0-0]")
        trending.wait_for(state="attached", timeout=30_000)  # the grid's cells are hidden
        assert trending.inner_text() == "https://fr.wikipedia.org/wiki/Mont_Blanc#Mont%20Blanc"
        # Alerts: the open one (Mont Blanc trending, June 2026), whatever the range; the
        # seed's closed ones are months before this data (AppTest checks them).
        alert = page.locator(".st-key-alerts_panel [data-testid=glide-cell-0-0]")
        alert.wait_for(state="attached", timeout=30_000)
        assert alert.inner_text() == "trending"
        assert page.locator("[data-testid=stVegaLiteChart]").count() == 2
        labels = page.locator("[data-testid=stMetricLabel]").all_inner_texts()
        assert "Edits in the last complete minute" in labels
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        save_artifact(screenshot)
        print(f"screenshot: {screenshot}")

        # the query string selects the view: without bots, Alice leads
        page.goto(f"{served}/?range=24h&bots=false&user=Alice")
        page.wait_for_function(FINISHED, timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
        assert "Most edits: Alice (10)" in page.locator(".st-key-top_contributor").inner_text()
        assert page.get_by_text("Edits in the range").count() == 1
