"""The wikipulse dashboard — layout only: ``streamlit run dashboards/wikipulse_dashboard.py``.

Streamlit puts this file's folder first on ``sys.path``, so its name must shadow no package (as
``app.py`` hid ``app``). The filters live in the URL's query string (``?range=all&bots=false``).
Each panel is a fragment that refreshes itself every ``dashboard.refresh_interval``, its data
from :mod:`dashboards.cache`, its charts from :mod:`dashboards.charts`, its spans and formats
from :mod:`dashboards.view`.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from dashboards import cache, charts, lookup, now, view
from dashboards.database import DashboardError, SchemaMissing
from dashboards.messages import problem_message
from dashboards.view import Filters, Span

st.set_page_config(page_title="wikipulse", page_icon="📈", layout="wide")

try:
    settings = cache.settings()
except SystemExit:
    # The log (standard error) has the message; the page names each offending key too.
    st.error(
        "**The configuration is invalid.** Fix these keys and restart the dashboard:\n\n"
        + "\n".join(f"- `{problem}`" for problem in cache.configuration_problems())
    )
    st.stop()

REFRESH = settings.dashboard.refresh_interval
STALE_AFTER = settings.dashboard.stale_after


# ---- filters: the sidebar, every value bound to the URL ----------------------------------------

with st.sidebar:
    st.header("Filters")
    chosen_range = st.segmented_control(
        "Time range",
        view.RANGES,
        default=view.DEFAULT_RANGE,
        required=True,
        key="range",
        bind="query-params",
        help="15 minutes, 1 hour, 24 hours, 7 days, everything retained, or whole days (UTC)",
    )
    custom_from = custom_to = None
    if chosen_range == view.CUSTOM:
        today = view.utcnow().date()
        custom_from = st.date_input(
            "From (UTC)", value=today - timedelta(days=1), key="from", bind="query-params"
        )
        custom_to = st.date_input("To (UTC)", value=today, key="to", bind="query-params")
    try:
        known_wikis = cache.wikis()
    except DashboardError:
        known_wikis = []
    chosen_wikis = st.multiselect(
        "Wikis",
        known_wikis,
        key="wiki",
        bind="query-params",
        accept_new_options=True,
        placeholder="All wikis",
        help="Database names, e.g. enwiki, wikidatawiki",
    )
    include_bots = st.toggle(
        "Include bots",
        value=True,
        key="bots",
        bind="query-params",
        help="Edits with the bot flag; per-user panels hide accounts named like bots",
    )
    shown_alerts = st.segmented_control(
        "Alerts",
        now.ALERT_VIEWS,
        default=now.ALERTS_IN_RANGE,
        required=True,
        key="alerts",
        bind="query-params",
        help="The alerts open now, or those of the selected range too",
    )
    st.caption("The address of this page holds the filters: copy it to share this view.")

filters = Filters(
    range=chosen_range or view.DEFAULT_RANGE,
    wikis=tuple(sorted(set(chosen_wikis))),
    bots=include_bots,
    custom_from=custom_from if isinstance(custom_from, date) else None,
    custom_to=custom_to if isinstance(custom_to, date) else None,
)

st.title("wikipulse")
st.caption("Edits on every Wikimedia wiki, live from the recentchange stream. Times in UTC.")


# ---- no database, no data: say so, and come back by itself -------------------------------------


@st.fragment(run_every=REFRESH)
def wait_for_data() -> None:
    """Re-checks every refresh interval; reloads the page once there is data to show."""
    try:
        if not cache.bounds().empty:
            st.rerun(scope="app")
    except DashboardError:
        pass
    st.caption(f"Checking again every {view.format_duration(REFRESH)}…")


try:
    bounds = cache.bounds()
except DashboardError as problem:
    headline = "is not ready" if isinstance(problem, SchemaMissing) else "is not available"
    st.error(f"**The database {headline}.** {view.plain(str(problem))}")
    st.info("`./infra/wikipulse up` starts and migrates it; this page recovers by itself.")
    wait_for_data()
    st.stop()

if bounds.empty:
    st.info(
        "**No data yet.** The dashboard shows the aggregates that the Spark job writes to "
        "PostgreSQL; start the pipeline with `./infra/wikipulse up` and the first minute "
        "appears here within a minute or two."
    )
    wait_for_data()
    st.stop()


def current_span() -> tuple[Span, bool]:
    """The span the filters select now, and whether it is compared with the one before."""
    span = view.resolve(filters, now=view.utcnow(), oldest=cache.bounds().oldest)
    if span is None:  # the data was deleted meanwhile
        span = view.resolve(Filters(), now=view.utcnow(), oldest=None)
        assert span is not None
    return span, view.comparable(filters)


# ---- pipeline health --------------------------------------------------------------------------


@st.fragment(run_every=REFRESH)
def health_panel() -> None:
    try:
        span, _ = current_span()
        newest_end = cache.bounds().newest_end
        health = cache.pipeline_health(span)
    except DashboardError as problem:
        problem_message(problem)
        return
    now = view.utcnow()
    age = max(timedelta(0), now - newest_end) if newest_end else None
    if age is not None and age > STALE_AFTER:
        st.error(
            f"**Stale data:** the newest minute ended {view.format_duration(age)} ago "
            f"(more than {view.format_duration(STALE_AFTER)}). Is the pipeline running? "
            "See `./infra/wikipulse status`."
        )
    heartbeat = cache.worker_heartbeat()
    with st.container(horizontal=True, key="health"):
        st.metric(
            "Data freshness",
            "up to date" if age is not None and age < timedelta(minutes=1) else
            (view.format_duration(age) + " old" if age is not None else "—"),
            help="Now minus the end of the newest aggregated minute",
            border=True,
        )  # fmt: skip
        batch = health.last_batch
        if batch is None:
            st.metric("Last Spark batch", "none yet", border=True)
        else:
            st.metric(
                "Last Spark batch",
                f"#{batch.batch_id}, {view.format_duration(now - batch.committed_at)} ago",
                help=f"{batch.query_name}: {batch.rows_written:,} rows written",
                border=True,
            )
            st.metric(
                "Batch duration",
                f"{batch.duration_ms:,} ms" if batch.duration_ms is not None else "—",
                help=f"{batch.input_rows or 0:,} input rows",
                border=True,
            )
        st.metric(
            "Rows dropped as late",
            view.format_count(health.dropped_in_span),
            help=(
                f"Dropped by the watermark in the {health.batches_in_span:,} batches of the "
                "selected range: events that arrived after their minute was final"
            ),
            border=True,
        )
        if health.unknown_in_span:
            st.warning(
                f"{health.unknown_in_span:,} typed records of a schema version the Spark job "
                "does not read were skipped in the selected range: a producer writes another "
                "version of the contract (see spark/README.md, schema versions)."
            )
        if heartbeat is None:
            st.metric("Worker", "unreachable", help="Its /health did not answer", border=True)
        else:
            st.metric(
                "Worker",
                "healthy" if heartbeat.get("healthy") else "unhealthy",
                help=(
                    f"connected: {heartbeat.get('connected')}, last event: "
                    f"{heartbeat.get('last_event_time') or '—'}, last canary: "
                    f"{heartbeat.get('last_canary') or '—'}"
                ),
                border=True,
            )
    stream_error = view.stream_error(heartbeat) if heartbeat is not None else None
    if stream_error is not None:  # why no new data is coming, when the worker knows
        st.warning(
            f"**The worker is not connected to the stream.** {view.plain(stream_error)} "
            "See `./infra/wikipulse status`."
        )


# ---- KPIs -------------------------------------------------------------------------------------


@st.fragment(run_every=REFRESH)
def kpi_panel() -> None:
    try:
        span, compare = current_span()
        minute = view.last_complete_minute(span, view.utcnow())
        now_sums = cache.activity(span, filters.wikis)
        last_minute = cache.activity(minute, filters.wikis)
        minute_before = cache.activity(minute.previous(), filters.wikis)
        editors = cache.active_editors(span)
        before = cache.activity(span.previous(), filters.wikis) if compare else None
        editors_before = cache.active_editors(span.previous()) if compare else None
    except DashboardError as problem:
        problem_message(problem)
        return
    bots = filters.bots

    def change(current: int, previous: int | None) -> str | None:
        return None if previous is None else view.format_change(current, previous)

    with st.container(horizontal=True, key="kpis"):
        st.metric(
            "Edits in the last complete minute",
            view.format_count(last_minute.counted_edits(bots=bots)),
            change(last_minute.counted_edits(bots=bots), minute_before.counted_edits(bots=bots)),
            help=f"{view.describe_span(minute)}, against the minute before",
            border=True,
        )
        st.metric(
            "Active editors",
            ("≈ " if editors.estimated else "") + view.format_count(editors.count),
            change(editors.count, editors_before.count if editors_before else None),
            help="Distinct user names with an edit (every wiki, bots included)"
            + ("; an estimate within about 2 %" if editors.estimated else ""),
            border=True,
        )
        share = now_sums.bot_share if bots else None
        share_before = before.bot_share if before is not None else None
        st.metric(
            "Bot share",
            view.format_share(share) if bots else "excluded",
            f"{(share - share_before) * 100:+.1f} pp"
            if share is not None and share_before is not None
            else None,
            delta_color="off",
            help="Edits with the bot flag, of all edits",
            border=True,
        )
        st.metric(
            "New pages",
            view.format_count(now_sums.new_pages),
            change(now_sums.new_pages, before.new_pages if before else None),
            help="Bots included: the aggregates do not split new pages by the bot flag",
            border=True,
        )
        st.metric(
            "Bytes added",
            view.format_count(now_sums.bytes_added),
            change(now_sums.bytes_added, before.bytes_added if before else None),
            help="Bots included (not split by the bot flag in the aggregates)",
            border=True,
        )
    comparison = "against the previous period of the same length" if compare else ""
    st.caption(f"{view.describe_span(span)} {comparison}")


# ---- timeline ---------------------------------------------------------------------------------


@st.fragment(run_every=REFRESH)
def timeline_panel() -> None:
    st.subheader("Edits per minute")
    try:
        span, _ = current_span()
        frame = cache.timeline(span, filters.wikis)
        episodes = cache.alerts(span, filters.wikis)
    except DashboardError as problem:
        problem_message(problem)
        return
    st.altair_chart(
        charts.timeline_chart(
            frame, include_bots=filters.bots, per=view.resolution(span), episodes=episodes
        ),
        width="stretch",
        alt="Edits per minute by bots, registered humans and anonymous editors",
        key="timeline",
    )
    if view.resolution(span) == "hour":
        st.caption("Each point is an hour's average per minute.")


# ---- now: what is happening on the wikis (dashboards/now.py) --------------------------------


@st.fragment(run_every=REFRESH)
def trending_panel() -> None:
    now.trending_panel(filters.wikis)


@st.fragment(run_every=REFRESH)
def alerts_panel() -> None:
    try:
        span, _ = current_span()
    except DashboardError as problem:
        problem_message(problem)
        return
    now.alerts_panel(span, filters.wikis, shown_alerts or now.ALERTS_IN_RANGE)


# ---- top contributors, top wikis --------------------------------------------------------------


@st.fragment(run_every=REFRESH)
def contributors_panel() -> None:
    st.subheader("Top contributors")
    try:
        span, _ = current_span()
        top = cache.top_contributors(span, filters.bots)
        total = cache.activity(span, ()).edits
    except DashboardError as problem:
        problem_message(problem)
        return
    if top.empty:
        st.info("No named editor in this range.")
        return
    leader = top.iloc[0]
    with st.container(key="top_contributor"):
        st.markdown(
            f"Most edits: **{view.plain(str(leader['user_name']))}** "
            f"({view.format_count(int(leader['edits']))})"
        )
    table = pd.DataFrame(
        {
            "user": [view.linked_name(str(name)) for name in top["user_name"]],
            "edits": top["edits"],
            "share": 100 * top["edits"] / total if total else 0.0,
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        key="contributors",
        column_config={
            "user": st.column_config.LinkColumn(
                "user",
                display_text=view.LINK_DISPLAY,
                help="Opens the account's edits on every wiki (Meta-Wiki)",
                width="medium",
            ),
            "edits": st.column_config.NumberColumn("edits", format="localized", width="small"),
            "share": st.column_config.NumberColumn(
                "share",
                format="%.1f%%",
                help="Of all edits in the range, every wiki",
                width="small",
            ),
        },
    )
    notes = []
    if filters.wikis:
        notes.append("per-user counts carry no wiki: the wiki filter does not apply here")
    if not filters.bots:
        notes.append("accounts named like bots (…bot) are hidden")
    if notes:
        st.caption("; ".join(notes).capitalize() + ".")


@st.fragment(run_every=REFRESH)
def wikis_panel() -> None:
    st.subheader("Top wikis")
    try:
        span, _ = current_span()
        top = cache.top_wikis(span, filters.wikis, filters.bots)
    except DashboardError as problem:
        problem_message(problem)
        return
    if top.empty:
        st.info("No activity on these wikis in this range.")
        return
    st.altair_chart(
        charts.top_wikis_chart(top),
        width="stretch",
        alt="Wikis with the most edits in the range",
        key="top_wikis_chart",
    )
    with st.expander("As a table"):
        st.dataframe(
            top[["wiki", "edits", "new_pages", "bytes_added"]],
            hide_index=True,
            key="wikis",
            column_config={
                "edits": st.column_config.NumberColumn(format="localized"),
                "new_pages": st.column_config.NumberColumn("new pages", format="localized"),
                "bytes_added": st.column_config.NumberColumn("bytes added", format="localized"),
            },
        )


# ---- user lookup (dashboards/lookup.py) ------------------------------------------------------


@st.fragment(run_every=REFRESH)
def user_panel() -> None:
    lookup.user_panel(current_span)


# ---- the page ---------------------------------------------------------------------------------

health_panel()
kpi_panel()
timeline_panel()
trending_panel()
alerts_panel()
left, right = st.columns(2, gap="large")
with left:
    contributors_panel()
with right:
    wikis_panel()
user_panel()
