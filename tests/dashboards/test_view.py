"""dashboards.view: spans, their pieces, the formats. Pure: no database."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from dashboards import view
from dashboards.view import Filters, Span

NOW = datetime(2026, 6, 20, 12, 30, 20, tzinfo=UTC)


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("choice", "start", "end"),
    [
        ("15m", t(20, 12, 16), t(20, 12, 31)),
        ("1h", t(20, 11, 31), t(20, 12, 31)),
        ("24h", t(19, 12, 31), t(20, 12, 31)),
        ("7d", t(13, 12, 31), t(20, 12, 31)),
        ("all", t(15, 12, 0), t(20, 12, 31)),
        ("nonsense", t(15, 12, 0), t(20, 12, 31)),  # the URL is user input: like "all"
    ],
)
def test_live_ranges_end_after_the_running_minute(choice: str, start: datetime, end: datetime):
    span = view.resolve(Filters(range=choice), now=NOW, oldest=t(15, 12, 0))
    assert span == Span(start, end)


def test_custom_ranges_are_whole_utc_days_in_either_order():
    filters = Filters(range="custom", custom_from=date(2026, 6, 19), custom_to=date(2026, 6, 17))
    assert view.resolve(filters, now=NOW, oldest=None) == Span(t(17, 0), t(20, 0))
    assert view.resolve(Filters(range="custom"), now=NOW, oldest=None) == Span(t(20, 0), t(21, 0))


def test_all_without_data_is_nothing():
    assert view.resolve(Filters(range="all"), now=NOW, oldest=None) is None


def test_previous_period_and_last_complete_minute():
    span = Span(t(20, 11, 31), t(20, 12, 31))
    assert span.previous() == Span(t(20, 10, 31), t(20, 11, 31))
    assert view.last_complete_minute(span, NOW) == Span(t(20, 12, 29), t(20, 12, 30))
    past = Span(t(17, 0), t(18, 0))
    assert view.last_complete_minute(past, NOW) == Span(t(17, 23, 59), t(18, 0))


def test_spans_need_aware_ordered_bounds():
    with pytest.raises(ValueError, match="timezone-aware"):
        Span(datetime(2026, 6, 20), t(20, 1))  # noqa: DTZ001 (the point of the test)
    with pytest.raises(ValueError, match="before it starts"):
        Span(t(20, 1), t(20, 0))


@pytest.mark.parametrize(
    ("span", "minutes", "hours", "days"),
    [
        # inside one hour: minutes only
        (Span(t(20, 12, 5), t(20, 12, 31)), [(t(20, 12, 5), t(20, 12, 31))], [], None),
        # across an hour boundary, no whole hour: still minutes only
        (Span(t(20, 11, 50), t(20, 12, 10)), [(t(20, 11, 50), t(20, 12, 10))], [], None),
        # whole hours, no whole day
        (
            Span(t(20, 9, 31), t(20, 12, 31)),
            [(t(20, 9, 31), t(20, 10)), (t(20, 12), t(20, 12, 31))],
            [(t(20, 10), t(20, 12))],
            None,
        ),
        # days, hours and minutes on both sides
        (
            Span(t(13, 12, 31), t(20, 12, 31)),
            [(t(13, 12, 31), t(13, 13)), (t(20, 12), t(20, 12, 31))],
            [(t(13, 13), t(14, 0)), (t(20, 0), t(20, 12))],
            (t(14, 0), t(20, 0)),
        ),
        # aligned: days only
        (Span(t(17, 0), t(20, 0)), [], [], (t(17, 0), t(20, 0))),
    ],
)
def test_pieces_cover_the_span_exactly_once(span, minutes, hours, days):
    cut = view.pieces(span)
    nonempty = [(p.start, p.end) for p in cut.minutes if not p.empty]
    assert nonempty == minutes
    assert [(p.start, p.end) for p in cut.hours if not p.empty] == hours
    assert ((cut.days.start, cut.days.end) if not cut.days.empty else None) == days
    # every minute of the span is in exactly one piece
    covered = sorted(
        [(p.start, p.end) for p in (*cut.minutes, *cut.hours, cut.days) if not p.empty]
    )
    assert covered[0][0] == span.start and covered[-1][1] == span.end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    names = ("m1", "m2", "h1", "h2", "d")
    assert set(cut.params()) == {f"{n}_{e}" for n in names for e in ("start", "end")}


def test_covering_buckets_bound_the_span_from_outside():
    span = Span(t(18, 22, 15), t(20, 1, 5))
    covering = view.covering_buckets(span)
    assert covering == [
        ("day", t(19, 0)),
        ("hour", t(18, 22)),
        ("hour", t(18, 23)),
        ("hour", t(20, 0)),
        ("hour", t(20, 1)),
    ]
    assert view.covering_buckets(Span(t(20, 11, 50), t(20, 12, 10))) == [
        ("hour", t(20, 11)),
        ("hour", t(20, 12)),
    ]


def test_resolution():
    assert view.resolution(Span(t(19, 12, 31), t(20, 12, 31))) == "minute"
    assert view.resolution(Span(t(19, 12, 30), t(20, 12, 31))) == "hour"


@pytest.mark.parametrize(
    ("current", "previous", "text"),
    [
        (15, 8, "+7 (+87.5%)"),
        (8, 15, "-7 (-46.7%)"),
        (5, 5, "+0 (+0.0%)"),
        (2, 0, "+2 (new)"),
        (0, 0, "+0"),
        (1890, 100, "+1,790 (+1790.0%)"),
    ],
)
def test_format_change(current, previous, text):
    assert view.format_change(current, previous) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (620, "10 min 20 s"), (7500, "2 h 5 min"),
     (3 * 86400 + 4 * 3600, "3 d 4 h")],
)  # fmt: skip
def test_format_duration(seconds, text):
    assert view.format_duration(timedelta(seconds=seconds)) == text


def test_plain_escapes_markdown():
    assert view.plain("*[x](javascript:1)* `a` <b> _c_") == (
        "\\*\\[x\\]\\(javascript\\:1\\)\\* \\`a\\` \\<b\\> \\_c\\_"
    )


@pytest.mark.parametrize(
    ("user", "url"),
    [
        ("Jimbo Wales", "https://meta.wikimedia.org/wiki/Special:CentralAuth/Jimbo_Wales"),
        ("O'Brien %_\u200b",
         "https://meta.wikimedia.org/wiki/Special:CentralAuth/O'Brien_%25_%E2%80%8B"),
        ("a?b#c&d/e", "https://meta.wikimedia.org/wiki/Special:CentralAuth/a%3Fb%23c%26d%2Fe"),
        ("127.0.0.1", "https://meta.wikimedia.org/wiki/Special:GlobalContributions/127.0.0.1"),
        ("2001:db8::1",
         "https://meta.wikimedia.org/wiki/Special:GlobalContributions/2001:db8::1"),
        ("~2026-35935-22",
         "https://meta.wikimedia.org/wiki/Special:GlobalContributions/~2026-35935-22"),
    ],
)  # fmt: skip
def test_contributions_url(user, url):
    assert view.contributions_url(user) == url
    linked = view.linked_name(user)
    assert linked.startswith(url + "#")
    import re
    from urllib.parse import unquote

    # what Streamlit shows: the captured group, URL-decoded
    assert unquote(re.match(view.LINK_DISPLAY, linked).group(1)) == user


def test_sketch_pieces_leave_only_minutes_inside_ten_minutes():
    whole, edges = view.sketch_pieces(Span(t(18, 22, 17), t(20, 1, 34)))
    assert whole == [
        ("day", t(19, 0)),
        ("hour", t(18, 23)),
        ("hour", t(20, 0)),
        ("ten_minutes", t(18, 22, 20)),
        ("ten_minutes", t(18, 22, 30)),
        ("ten_minutes", t(18, 22, 40)),
        ("ten_minutes", t(18, 22, 50)),
        ("ten_minutes", t(20, 1, 0)),
        ("ten_minutes", t(20, 1, 10)),
        ("ten_minutes", t(20, 1, 20)),
    ]
    assert edges == [Span(t(18, 22, 17), t(18, 22, 20)), Span(t(20, 1, 30), t(20, 1, 34))]
    # inside ten minutes: minutes only
    assert view.sketch_pieces(Span(t(20, 1, 31), t(20, 1, 34))) == (
        [],
        [Span(t(20, 1, 31), t(20, 1, 34))],
    )
