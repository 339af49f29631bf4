"""Bad input through the running pipeline: the ingestion bad-input corpus (tests/app/bad_input.py),
a repeated event, a canary and the replay server's own malformed frames, among 384 synthetic
events.

Every bad item must be in the dead-letter topic with its reason, the worker's counters must
reconcile (received = valid + filtered + duplicate + canary + dead_letter), and the aggregates
must equal the golden values of the good events alone. The worker follows a replay server of
the test's own (``up --live`` on its URL): an NDJSON file cannot carry the empty payload. The
good events go at their event-time pace; each other item right after the good event before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

import orjson
import pytest

from infra.processes import wait_for
from infra.replay.server import ReplayOptions, ReplayServer
from infra.replay.sources import RecordedEvents
from infra.replay.wire import event_time
from tests.app.bad_input import corpus
from tests.faults.pipeline import OUTCOMES, PACE, SAMPLE, FaultStack, header, rss_mb
from tests.faults.results import Figures
from tests.harness import ReplayThread

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

#: One bad item after every this many good events.
BAD_EVERY = 10
#: The replay server's own malformed frames (truncated JSON, invalid UTF-8), one in this many.
MALFORMED_EVERY = 50


class PacedByTheGoodEvents(RecordedEvents):
    """The feed, paced by the good events' times alone: the bad items carry times of their own
    (from 2018, June, the year 1, none) and the canary and the repeat an earlier event's, so each
    item other than a good event takes the time of the good event before it: it goes right after
    that one, and the good events keep their gaps."""

    def __init__(self, feed: Sequence[bytes], times: Sequence[datetime]) -> None:
        super().__init__(feed)
        self.times = list(times)


def embedded_id(data: bytes) -> str | None:
    try:
        return str(orjson.loads(data)["meta"]["id"])
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


def test_bad_input_is_dead_lettered_and_leaves_the_aggregates_alone(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    figures = record("8")
    good = faults.fresh_events(SAMPLE)
    bad = corpus()
    canary = orjson.loads(good[0])
    canary["meta"].update(domain="canary", id="faults-canary-1")
    feed: list[bytes] = []
    pace: list[datetime] = []  # the time each item of the feed is sent at (scaled by PACE)

    def add(item: bytes, at: datetime) -> None:
        feed.append(item)
        pace.append(at)

    pending = list(bad)
    for index, event in enumerate(good):
        sent_at = event_time(event)
        assert sent_at is not None
        add(event, sent_at)
        if index % BAD_EVERY == BAD_EVERY - 1 and pending:
            add(pending.pop(0).data, sent_at)
        if index == 100:
            add(orjson.dumps(canary), sent_at)
        if index == 200:
            add(good[5], sent_at)  # Wikimedia's replays repeat events
    assert not pending
    end = len(feed) + len(feed) // (MALFORMED_EVERY - 1)  # the server's positions
    malformed = sum(1 for p in range(end) if (p + 1) % MALFORMED_EVERY == 0)
    sent = len(feed) + malformed
    figures["events_in"] = sent
    options = ReplayOptions(speed=PACE, malformed_every=MALFORMED_EVERY, hold_open=True)
    server = ReplayServer(PacedByTheGoodEvents(feed, pace), options)
    with ReplayThread(feed, server=server) as replay:
        run = faults.start("bad-input", good, live_url=replay.url)
        figures["recovery_seconds"] = None  # no outage: nothing to recover from
        faults.wait_caught_up(run, 0.0)
        wait_for(lambda: faults.outcomes(run)["received"] >= sent, timeout=60)
        assert wait_for(
            lambda: sum(faults.outcomes(run)[o] for o in OUTCOMES) >= sent, timeout=120
        ), faults.outcomes(run)
    outcomes = faults.outcomes(run)
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    letters = faults.dead_letters(run)
    typed = faults.typed_ids()
    pids = faults.pids(run)
    figures.detail("corpus items", len(bad))
    figures.detail("malformed frames", malformed)
    figures.detail("worker outcomes", outcomes)
    figures.detail(
        "dead letters by reason", dict(Counter(header(r, "reason-code").decode() for r in letters))
    )
    figures.detail("worker RSS after (MiB)", rss_mb([pids["worker"]]))

    # Each corpus item once, with its documented reason; what is left is the malformed frames.
    left = list(letters)
    for item in bad:
        match = next((r for r in left if r.value == item.data), None)
        assert match is not None, f"{item.name}: not dead-lettered"
        reason = (header(match, "reason-code"), header(match, "reason-field") or b"")
        assert reason == (item.code.encode(), (item.field or "").encode()), (item.name, reason)
        left.remove(match)
    assert len(left) == malformed, [r.value[:80] for r in left]
    limit = run.settings.ingestion.max_event_bytes
    for letter in left:
        code = b"too_large" if len(letter.value) > limit else b"invalid_json"
        assert header(letter, "reason-code") == code, letter.value[:80]

    # The counters reconcile, and match what was sent.
    assert outcomes["received"] == sent
    assert outcomes["received"] == sum(outcomes[o] for o in OUTCOMES), outcomes
    assert outcomes["valid"] == len(good)
    assert (outcomes["duplicate"], outcomes["canary"], outcomes["filtered"]) == (1, 1, 0)
    assert outcomes["dead_letter"] == len(bad) + malformed == delivery.dead_lettered

    # Nothing bad reached the typed topic; the good events did, once each.
    smuggled = {embedded_id(item.data) for item in bad} - {None}
    assert not smuggled & set(typed), smuggled & set(typed)
    assert typed["faults-canary-1"] == 0
    assert (delivery.lost, delivery.doubled) == (0, 0), delivery
    assert delivery.typed_out == len(good)
    assert faults.aggregates(run) == run.expected()
