"""What the user looks at: the filters, the time span they select, and how a span splits into
the buckets the rollups hold. Pure: no Streamlit, no database.

Time: every instant is timezone-aware UTC. The aggregates are one-minute windows; a window
belongs to a span when its *start* lies in ``[start, end)`` (the seed's views use the same
rule). A live range ("last hour") ends after the current, still growing minute, so its bounds
are whole minutes and stay the same for a minute (good cache keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from app.contract.pages import page_url

MINUTE = timedelta(minutes=1)
TEN_MINUTES = timedelta(minutes=10)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Grain = Literal["minute", "hour", "day"]
GRAIN_LENGTH: dict[Grain, timedelta] = {"minute": MINUTE, "hour": HOUR, "day": DAY}

#: The ranges the user picks from, as they appear in the URL (``?range=24h``).
LIVE_RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": HOUR,
    "24h": DAY,
    "7d": timedelta(days=7),
}
ALL = "all"
CUSTOM = "custom"
RANGES: tuple[str, ...] = (*LIVE_RANGES, ALL, CUSTOM)
DEFAULT_RANGE = "1h"

#: Spans up to this long are charted per minute, longer ones per hour.
MINUTE_RESOLUTION_LIMIT = DAY


def utcnow() -> datetime:
    """The clock (a function, so that tests can freeze it)."""
    return datetime.now(UTC)


def floor(moment: datetime, grain: Grain) -> datetime:
    """The start of the UTC bucket of ``grain`` that holds ``moment``."""
    moment = moment.astimezone(UTC)
    if grain == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def ceil(moment: datetime, grain: Grain) -> datetime:
    start = floor(moment, grain)
    return start if start == moment else start + GRAIN_LENGTH[grain]


@dataclass(frozen=True)
class Span:
    """The windows that start in ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a span's bounds must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"a span cannot end ({self.end}) before it starts ({self.start})")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def previous(self) -> Span:
        """The span of the same length right before this one."""
        return Span(self.start - self.length, self.start)


@dataclass(frozen=True)
class Filters:
    """The view: range, wikis, bots. It lives in the URL's query string."""

    range: str = DEFAULT_RANGE
    wikis: tuple[str, ...] = ()
    bots: bool = True
    custom_from: date | None = None
    custom_to: date | None = None


def live_end(now: datetime) -> datetime:
    """The end of live ranges: after the minute that is still running."""
    return floor(now, "minute") + MINUTE


def resolve(filters: Filters, *, now: datetime, oldest: datetime | None) -> Span | None:
    """The span the filters select; ``None`` for "all" when there is no data at all.

    ``oldest``: the start of the oldest window in the database.
    """
    end = live_end(now)
    if filters.range in LIVE_RANGES:
        return Span(end - LIVE_RANGES[filters.range], end)
    if filters.range == CUSTOM:
        today = end.date()
        first = filters.custom_from or today
        last = filters.custom_to or first
        first, last = min(first, last), max(first, last)
        start = datetime.combine(first, time(), UTC)
        return Span(start, datetime.combine(last, time(), UTC) + DAY)
    # "all" (and anything unknown: the URL is user input)
    if oldest is None:
        return None
    return Span(min(floor(oldest, "minute"), end), end)


def comparable(filters: Filters) -> bool:
    """Whether a change against the previous period means anything ("all" has none)."""
    return filters.range != ALL


def last_complete_minute(span: Span, now: datetime) -> Span:
    """The newest whole minute of the span that is over by the clock."""
    end = min(span.end, floor(now, "minute"))
    return Span(end - MINUTE, end)


def resolution(span: Span) -> Grain:
    """The bucket of the timeline and the user history: minutes for a day or less."""
    return "minute" if span.length <= MINUTE_RESOLUTION_LIMIT else "hour"


# ---- a span as rollup buckets ------------------------------------------------------------------


@dataclass(frozen=True)
class Pieces:
    """A span cut into what each table serves exactly: whole days (daily rollups), whole hours
    (hourly rollups), and the minutes at both edges (the base tables). Unused pieces are empty
    spans, so that every query binds the same parameters."""

    minutes: tuple[Span, Span]
    hours: tuple[Span, Span]
    days: Span

    def params(self) -> dict[str, datetime]:
        """The pieces as bound parameters: ``m1_start``, ``m1_end``, ... ``d_end``."""
        named = {
            "m1": self.minutes[0],
            "m2": self.minutes[1],
            "h1": self.hours[0],
            "h2": self.hours[1],
            "d": self.days,
        }
        params: dict[str, datetime] = {}
        for name, span in named.items():
            params[f"{name}_start"] = span.start
            params[f"{name}_end"] = span.end
        return params


def pieces(span: Span) -> Pieces:
    start, end = span.start, span.end
    nothing = Span(start, start)
    first_hour, last_hour = ceil(start, "hour"), floor(end, "hour")
    if first_hour >= last_hour:  # no whole hour inside
        return Pieces((span, nothing), (nothing, nothing), nothing)
    minutes = (Span(start, first_hour), Span(last_hour, end))
    first_day, last_day = ceil(start, "day"), floor(end, "day")
    if first_day >= last_day:  # no whole day inside
        return Pieces(minutes, (Span(first_hour, last_hour), nothing), nothing)
    hours = (Span(first_hour, first_day), Span(last_day, last_hour))
    return Pieces(minutes, hours, Span(first_day, last_day))


def buckets(span: Span, grain: Grain) -> list[datetime]:
    """The starts of the buckets of ``grain`` that start inside ``span``."""
    step = GRAIN_LENGTH[grain]
    found = []
    moment = ceil(span.start, grain)
    while moment < span.end:
        found.append(moment)
        moment += step
    return found


SketchGrain = Literal["ten_minutes", "hour", "day"]


def _ten_minutes(moment: datetime, *, up: bool) -> datetime:
    start = floor(moment, "minute")
    start -= timedelta(minutes=start.minute % 10)
    return start + TEN_MINUTES if up and start != moment else start


def nearest_ten_minutes(moment: datetime) -> datetime:
    """The ten-minute boundary nearest to ``moment`` (halfway rounds up)."""
    down = _ten_minutes(moment, up=False)
    return down + TEN_MINUTES if moment - down >= TEN_MINUTES / 2 else down


def sketch_pieces(span: Span) -> tuple[list[tuple[SketchGrain, datetime]], list[Span]]:
    """A span as the sketches hold it: whole days, hours and ten minutes (their buckets), and
    the few minutes left at the edges (read from the base table)."""
    cut = pieces(span)
    found: list[tuple[SketchGrain, datetime]] = [("day", day) for day in buckets(cut.days, "day")]
    for hours in cut.hours:
        found.extend(("hour", hour) for hour in buckets(hours, "hour"))
    edges: list[Span] = []
    for minutes in cut.minutes:
        first, last = _ten_minutes(minutes.start, up=True), _ten_minutes(minutes.end, up=False)
        if first < last:
            moment = first
            while moment < last:
                found.append(("ten_minutes", moment))
                moment += TEN_MINUTES
            edges.extend((Span(minutes.start, first), Span(last, minutes.end)))
        else:
            edges.append(minutes)
    return found, [edge for edge in edges if not edge.empty]


def covering_buckets(span: Span) -> list[tuple[Grain, datetime]]:
    """Hourly and daily buckets that together cover the span, possibly overhanging its edges
    (the minutes at the edges count with their whole hour): an upper bound for any sum."""
    cut = pieces(span)
    covering: list[tuple[Grain, datetime]] = [("day", day) for day in buckets(cut.days, "day")]
    for hours in cut.hours:
        covering.extend(("hour", hour) for hour in buckets(hours, "hour"))
    for minutes in cut.minutes:
        hour = floor(minutes.start, "hour")
        while hour < minutes.end:
            covering.append(("hour", hour))
            hour += HOUR
    return sorted(set(covering), key=lambda item: (item[0], item[1]))


# ---- how values read on the page ---------------------------------------------------------------


def format_count(value: int | float) -> str:
    return f"{value:,.0f}"


def format_change(current: int | float, previous: int | float) -> str:
    """The change against the previous period: ``+120 (+4.5%)``; ``+3 (new)`` from zero."""
    difference = current - previous
    sign = "+" if difference >= 0 else "-"
    text = f"{sign}{abs(difference):,.0f}"
    if previous:
        return f"{text} ({difference / previous:+.1%})"
    return f"{text} (new)" if difference else text


def format_share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def format_duration(value: timedelta) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = max(0, round(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def describe_span(span: Span) -> str:
    """``2026-06-20 11:00 – 12:00 UTC``."""
    start, end = span.start.astimezone(UTC), span.end.astimezone(UTC)
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M} – {end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"


def format_instant(epoch: float) -> str:
    """``2026-06-20 12:31:05 UTC`` (epoch seconds, as the worker's /health gives them)."""
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M:%S} UTC"


def stream_error(heartbeat: dict[str, object]) -> str | None:
    """The worker's last connection error (from its /health) while it is not connected: what,
    when, and when it tries again; None when connected, a standby, or nothing failed."""
    error = heartbeat.get("last_error")
    if heartbeat.get("connected") or heartbeat.get("leader") is False:
        return None
    if not isinstance(error, dict):
        return None
    failures = int(error.get("failures") or 0)
    in_a_row = f", {failures} failures in a row" if failures > 1 else ""
    return (
        f"Last error at {format_instant(float(error['at']))} ({error['reason']}{in_a_row}): "
        f"{error['message']}. Next attempt at {format_instant(float(error['next_attempt']))}."
    )


_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~$:=\"'&")


def plain(text: str) -> str:
    """``text`` escaped for Streamlit's Markdown: shown as written, never interpreted."""
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIAL else char for char in text)


#: Global (all wikis) pages on Meta-Wiki: a registered account's edit counts per wiki, with
#: links to its contributions there; an IP address's or temporary account's contributions.
CENTRAL_AUTH = "https://meta.wikimedia.org/wiki/Special:CentralAuth/"
GLOBAL_CONTRIBUTIONS = "https://meta.wikimedia.org/wiki/Special:GlobalContributions/"


def contributions_url(user: str) -> str:
    """Where a user's contributions across the wikis are listed.

    ``user_edit_counts`` has no wiki, so the link goes to the global account (Meta-Wiki's
    Special:CentralAuth, which lists every wiki the account edited, with its contributions
    there), or, for an IP address or temporary account, Special:GlobalContributions.
    """
    from urllib.parse import quote

    from app.contract import UserKind
    from app.normalize import user_kind

    page = CENTRAL_AUTH if user_kind(user, False) == UserKind.REGISTERED else GLOBAL_CONTRIBUTIONS
    return page + quote(user.replace(" ", "_"), safe="!$'*,:;@~")


def linked_name(user: str) -> str:
    """The contributions URL with the name, percent-encoded, as its fragment: a table's link
    column shows the name (Streamlit decodes the group that ``LINK_DISPLAY`` captures) and opens
    the URL (the wiki ignores the fragment)."""
    from urllib.parse import quote

    return f"{contributions_url(user)}#{quote(user, safe='')}"


def linked_page(server_name: str, title: str) -> str:
    """:func:`app.contract.pages.page_url` with the title as its fragment, as
    :func:`linked_name` does: a table's link column shows the title and opens the page."""
    from urllib.parse import quote

    return f"{page_url(server_name, title)}#{quote(title, safe='')}"


#: LinkColumn's display_text: the fragment of :func:`linked_name` and :func:`linked_page`.
LINK_DISPLAY = r"^[^#]*#(.*)$"
