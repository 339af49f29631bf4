"""Alerts through the whole pipeline, as a user meets them.

``./infra/wikipulse up --replay --history "140 minutes" --seed … --burst … --burst …`` on a
stack of its own, watching two wikis (``ingestion.wikimedia.filters.wikis``), with a webhook
receiver on loopback in ``alerts.webhooks.urls`` and every alert knob at its default. The
synthetic stream begins 140 minutes ago: the worker gets that history at once, then the live
pace. Into it go a surge (dewiki at 5× its rate for 4 minutes from minute 100) and a page edited
12 times by 5 people over 5 minutes (frwiki, from minute 133).

The history is what the defaults need: a page can alert once 2 hours of stream lie behind its
15-minute horizon (minute 135), and a deployment's first evaluation reaches back one wiki
baseline (60 minutes) before the newest closed minute, which the surge lies within.

Then ``alerts`` holds those two episodes and no other, with the bursts' first minutes; the
receiver got each notification (the surge opened and closed, the page opened) exactly once,
after answering the first attempt with a 500; and the dashboard's "Now" view in Chromium lists
the trending page, linked to itself on its wiki, and the surge.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from app.alerts.payload import CLOSED, OPENED, PAGE_TRENDING, WIKI_SURGE
from app.config import load_settings
from infra.processes import wait_for
from tests.conftest import make_home
from tests.dashboards.browser import RENDERED, chromium_page
from tests.harness import ReplayStack, cli_environment, run_cli
from tests.spark.helpers import query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HISTORY = "140 minutes"
MINUTE = timedelta(minutes=1)
SURGE_WIKI, SURGE_AT, SURGE_MINUTES = "dewiki", 100, 4
PAGE_WIKI, PAGE_AT, PAGE_MINUTES = "frwiki", 133, 5
PAGE = "Éclipse solaire du 12 août 2026"
BURSTS = (
    f"wiki={SURGE_WIKI},times=5,at={SURGE_AT},minutes={SURGE_MINUTES}",
    f"wiki={PAGE_WIKI},page={PAGE.replace(' ', '_')},editors=5,edits=12,at={PAGE_AT},"
    f"minutes={PAGE_MINUTES}",
)


@dataclass
class Receiver:
    """A webhook receiver on loopback: answers 500 to the first request, 200 after; keeps each
    request's ``Idempotency-Key`` header, body and answer."""

    url: str = ""
    requests: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, key: str, body: dict[str, Any]) -> int:
        with self.lock:
            status = 500 if not self.requests else 200
            self.requests.append((key, body, status))
            return status

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body, status in self.requests if status == 200]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server calls it by this name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = hook.answer(self.headers["Idempotency-Key"], body)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def alerts_stack(receiver: Receiver) -> Iterator[ReplayStack]:
    home = make_home("wikipulse-alerts-")
    env = cli_environment(
        home,
        INGESTION_WIKIMEDIA_FILTERS_WIKIS=json.dumps([SURGE_WIKI, PAGE_WIKI]),
        SPARK_TRIGGER_PROCESSING_TIME="5 seconds",
        ALERTS_WEBHOOKS_URLS=json.dumps([receiver.url]),
        ALERTS_WEBHOOKS_POLL_INTERVAL="1 second",
        ALERTS_WEBHOOKS_BACKOFF_INITIAL="1 second",
    )
    try:
        bursts = [f"--burst={burst}" for burst in BURSTS]
        first = run_cli(env, "up", "--replay", "--history", HISTORY, "--seed", "5", *bursts)
        assert first.returncode == 0, first.stdout + first.stderr
        yield ReplayStack(env, home, load_settings(environ=env), first.stdout)
    finally:
        run_cli(env, "down", "--purge", timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def origin(stack: ReplayStack) -> datetime:
    """The synthetic stream's start: minute 0 of the bursts."""
    mode = json.loads((stack.home / "replay.json").read_text())
    return datetime.fromisoformat(mode["origin"])


def episodes(stack: ReplayStack) -> list[tuple[Any, ...]]:
    return query(
        stack.settings,
        "SELECT kind, wiki, title, window_start, closed_at IS NOT NULL FROM alerts "
        "ORDER BY window_start",
    )


def expected_episodes(stack: ReplayStack) -> list[tuple[Any, ...]]:
    start = origin(stack)
    return [
        (WIKI_SURGE, SURGE_WIKI, None, start + SURGE_AT * MINUTE, True),  # over at minute 104
        (PAGE_TRENDING, PAGE_WIKI, PAGE, start + PAGE_AT * MINUTE, False),  # in its horizon
    ]


def settled(stack: ReplayStack, receiver: Receiver) -> bool:
    """Both episodes in ``alerts`` and every notification delivered."""
    if [row[:4] for row in episodes(stack)] != [row[:4] for row in expected_episodes(stack)]:
        return False
    [(pending,)] = query(stack.settings, "SELECT count(*) FROM alert_deliveries "
                                         "WHERE delivered_at IS NULL")  # fmt: skip
    return pending == 0 and len(receiver.delivered()) >= 3


def test_the_bursts_alert_once_each_and_each_alert_reaches_the_webhook_once(
    alerts_stack: ReplayStack, receiver: Receiver
) -> None:
    assert f"{HISTORY} of history at once, then the live pace" in alerts_stack.first_up
    if not wait_for(lambda: settled(alerts_stack, receiver), timeout=300, interval=2):
        logs = alerts_stack.run("logs", "spark", "--no-follow", "-n", "30")[1]
        raise AssertionError(f"alerts: {episodes(alerts_stack)}; spark's log:\n{logs}")
    assert episodes(alerts_stack) == expected_episodes(alerts_stack)

    delivered = receiver.delivered()
    start = origin(alerts_stack)
    assert sorted((body["kind"], body["event"], body["window_start"]) for body in delivered) == [
        (PAGE_TRENDING, OPENED, (start + PAGE_AT * MINUTE).isoformat()),
        (WIKI_SURGE, CLOSED, (start + SURGE_AT * MINUTE).isoformat()),
        (WIKI_SURGE, OPENED, (start + SURGE_AT * MINUTE).isoformat()),
    ]
    keys = Counter(body["idempotency_key"] for body in delivered)
    assert set(keys.values()) == {1}, keys
    # The first attempt got a 500: it was retried with the same key, and delivered once.
    (failed_key, failed_body, status), *later = receiver.requests
    assert status == 500 and failed_body["idempotency_key"] == failed_key
    assert [key for key, _, status in later if status == 200].count(failed_key) == 1
    assert all(key == body["idempotency_key"] for key, body, _ in receiver.requests)
    page = next(body for body in delivered if body["kind"] == PAGE_TRENDING)
    assert page["url"] == "https://fr.wikipedia.org/wiki/%C3%89clipse_solaire_du_12_ao%C3%BBt_2026"

    code, out, _ = alerts_stack.run("status")
    assert code == 0, out
    assert "alerts: 1 open (1 page_trending)" in out, out
    assert "webhooks: 3 delivered, 0 pending, 0 failing" in out, out


def test_the_now_view_shows_the_trending_page_and_the_surge(
    alerts_stack: ReplayStack, receiver: Receiver
) -> None:
    assert wait_for(lambda: settled(alerts_stack, receiver), timeout=300, interval=2)
    dashboard = f"http://127.0.0.1:{alerts_stack.env['DASHBOARD_PORT']}"
    with chromium_page() as page:
        page.goto(f"{dashboard}/?range=1h")
        page.wait_for_function(RENDERED, timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0

        def column(panel: str, number: int) -> list[str]:
            cells = page.locator(f".st-key-{panel} [data-testid^=glide-cell-{number}-]")
            cells.first.wait_for(state="attached", timeout=30_000)  # the grid's cells are hidden
            return cells.all_inner_texts()

        link = "https://fr.wikipedia.org/wiki/%C3%89clipse_solaire_du_12_ao%C3%BBt_2026"
        assert f"{link}#{quote(PAGE, safe='')}" in column("trending", 0)
        alerts = list(zip(column("alerts_panel", 0), column("alerts_panel", 1), strict=True))
        assert alerts == [("trending", PAGE_WIKI), ("surge", SURGE_WIKI)], alerts
