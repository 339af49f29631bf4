"""Rollups for the dashboard: hourly and daily sums, per-user totals, editor sketches

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The dashboard answers every panel for any range up to the retention (30 days) in a few
milliseconds by reading coarse buckets for the whole hours and days inside a range and the base
tables only for the minutes at its edges. The rollups are kept in step with the base tables by
statement-level triggers (transition tables), so the Spark job needs no change: whatever writes
``user_edit_counts`` or ``wiki_activity`` (the job's upserts, the retention's deletes, a manual
fix) updates them in the same transaction, and a replayed batch that changes nothing touches
nothing.

- ``activity_totals``: the counters of ``wiki_activity`` summed over all wikis, per minute, hour
  and day (``grain``).
- ``wiki_activity_rollup``: the same per wiki, per hour and day.
- ``user_edit_rollup``: ``edit_count`` per user, per hour and day.
  Indexed per bucket by edits, for the top contributors of a range (the threshold algorithm:
  the best users of each bucket, their exact sums, a bound on everyone else), and per user, for
  one user's history.
- ``editor_sketches``: a HyperLogLog sketch (2^12 one-byte registers, 64-bit hash of the user
  name) of the users active per ten minutes, hour and day: the number of distinct editors of a
  long range within about 2 %. A sketch cannot forget a user: the retention's deletes drop the
  buckets that no retained window starts in.

Buckets are aligned in UTC (``date_trunc(grain, window_start, 'UTC')``; ten minutes from the
hour) and hold the windows that *start* in them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "edits",
    "new_pages",
    "bot_edits",
    "anonymous_edits",
    "bytes_added",
    "bytes_removed",
    "events",
)
#: 2^SKETCH_BITS registers per sketch (standard error 1.04 / sqrt(4096) = 1.6 %).
SKETCH_BITS = 12
SKETCH_SIZE = 1 << SKETCH_BITS

_GRAINS_CHECK = "grain IN ('minute', 'hour', 'day')"
_ROLLUP_GRAINS_CHECK = "grain IN ('hour', 'day')"
_SKETCH_GRAINS_CHECK = "grain IN ('ten_minutes', 'hour', 'day')"
#: A sketch bucket's start: ten minutes (aligned on the hour), an hour or a day, in UTC.
_SKETCH_BUCKET = (
    "CASE WHEN g.grain = 'ten_minutes' "
    "THEN date_bin('10 minutes', n.window_start, TIMESTAMPTZ '2000-01-01 00:00+00') "
    "ELSE date_trunc(g.grain, n.window_start, 'UTC') END"
)


def _counter_columns() -> str:
    return ",\n".join(f"    {name} BIGINT NOT NULL" for name in COUNTERS)


def _sums(prefix: str = "") -> str:
    return ", ".join(f"sum({prefix}{name})" for name in COUNTERS)


def _add_excluded(alias: str) -> str:
    return ", ".join(f"{name} = {alias}.{name} + EXCLUDED.{name}" for name in COUNTERS)


# ---- what a statement changed: rows with a sign ------------------------------------------------

#: For each trigger operation: the changed rows of user_edit_counts as (window_start, window_end,
#: user_name, delta), and whether rows can disappear (then emptied rollup rows are deleted).
_USER_DELTAS = {
    "insert": "SELECT window_start, window_end, user_name, edit_count AS delta FROM new_rows",
    "update": "SELECT window_start, window_end, user_name, edit_count AS delta FROM new_rows "
    "UNION ALL "
    "SELECT window_start, window_end, user_name, -edit_count FROM old_rows",
    "delete": "SELECT window_start, window_end, user_name, -edit_count AS delta FROM old_rows",
}
_WIKI_DELTAS = {
    "insert": f"SELECT window_start, wiki, {', '.join(COUNTERS)} FROM new_rows",
    "update": f"SELECT window_start, wiki, {', '.join(COUNTERS)} FROM new_rows "
    "UNION ALL "
    f"SELECT window_start, wiki, {', '.join('-' + c for c in COUNTERS)} FROM old_rows",
    "delete": f"SELECT window_start, wiki, {', '.join('-' + c + ' AS ' + c for c in COUNTERS)} "
    "FROM old_rows",
}


def _user_function(operation: str) -> str:
    delta = _USER_DELTAS[operation]
    statements = [
        f"""
    INSERT INTO user_edit_rollup AS r (grain, bucket, user_name, edits)
    SELECT g.grain, date_trunc(g.grain, d.window_start, 'UTC'), d.user_name, sum(d.delta)
    FROM ({delta}) AS d CROSS JOIN (VALUES ('hour'), ('day')) AS g (grain)
    GROUP BY 1, 2, 3
    HAVING sum(d.delta) <> 0
    ORDER BY 1, 2, 3
    ON CONFLICT (grain, bucket, user_name) DO UPDATE SET edits = r.edits + EXCLUDED.edits;""",
    ]
    if operation == "insert":
        statements.append(_add_to_sketches("new_rows") + ";")
    elif operation == "update":
        # The sink's upserts keep the key (window, user): only a changed key adds a user.
        statements.append(
            _add_to_sketches(
                "(SELECT n.window_start, n.user_name FROM new_rows AS n "
                "LEFT JOIN old_rows AS o USING (window_start, user_name) "
                "WHERE o.user_name IS NULL)"
            )
            + ";"
        )
    if operation in ("update", "delete"):
        statements.append(
            f"""
    DELETE FROM user_edit_rollup AS r
    USING (
        SELECT g.grain, date_trunc(g.grain, d.window_start, 'UTC') AS bucket, d.user_name
        FROM ({delta}) AS d CROSS JOIN (VALUES ('hour'), ('day')) AS g (grain)
        GROUP BY 1, 2, 3 HAVING sum(d.delta) < 0
    ) AS k
    WHERE r.grain = k.grain AND r.bucket = k.bucket AND r.user_name = k.user_name
      AND r.edits <= 0;"""
        )
    if operation == "delete":
        statements.append(
            """
    -- A sketch cannot forget a user: drop the buckets that no retained window starts in.
    SELECT coalesce(min(window_start), 'infinity') INTO oldest FROM user_edit_counts;
    DELETE FROM editor_sketches
    WHERE grain = 'ten_minutes' AND bucket <= oldest - interval '10 minutes';
    DELETE FROM editor_sketches
    WHERE grain = 'hour' AND bucket <= oldest - interval '1 hour';
    DELETE FROM editor_sketches
    WHERE grain = 'day' AND bucket <= oldest - interval '1 day';"""
        )
    body = "".join(statements)
    return f"""
CREATE FUNCTION user_edit_counts_rollup_{operation}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    oldest TIMESTAMPTZ;
BEGIN{body}
    RETURN NULL;
END;
$$"""


def _wiki_function(operation: str) -> str:
    delta = _WIKI_DELTAS[operation]
    statements = [
        f"""
    INSERT INTO activity_totals AS r (grain, bucket, {", ".join(COUNTERS)})
    SELECT g.grain, date_trunc(g.grain, d.window_start, 'UTC'), {_sums("d.")}
    FROM ({delta}) AS d CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g (grain)
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (grain, bucket) DO UPDATE SET {_add_excluded("r")};""",
        f"""
    INSERT INTO wiki_activity_rollup AS r (grain, bucket, wiki, {", ".join(COUNTERS)})
    SELECT g.grain, date_trunc(g.grain, d.window_start, 'UTC'), d.wiki, {_sums("d.")}
    FROM ({delta}) AS d CROSS JOIN (VALUES ('hour'), ('day')) AS g (grain)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (grain, bucket, wiki) DO UPDATE SET {_add_excluded("r")};""",
    ]
    if operation in ("update", "delete"):
        # Rows whose windows shrank to nothing (the retention's deletes) disappear.
        for table, grains, key in (
            ("activity_totals", "('minute'), ('hour'), ('day')", ""),
            ("wiki_activity_rollup", "('hour'), ('day')", ", d.wiki"),
        ):
            join_key = " AND r.wiki = k.wiki" if key else ""
            statements.append(
                f"""
    DELETE FROM {table} AS r
    USING (
        SELECT g.grain, date_trunc(g.grain, d.window_start, 'UTC') AS bucket{key}
        FROM ({delta}) AS d CROSS JOIN (VALUES {grains}) AS g (grain)
        GROUP BY 1, 2{", 3" if key else ""} HAVING sum(d.events) < 0
    ) AS k
    WHERE r.grain = k.grain AND r.bucket = k.bucket{join_key}
      AND r.events <= 0 AND r.edits <= 0;"""
            )
    body = "".join(statements)
    return f"""
CREATE FUNCTION wiki_activity_rollup_{operation}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{body}
    RETURN NULL;
END;
$$"""


def _triggers(table: str, prefix: str) -> list[str]:
    return [
        f"CREATE TRIGGER {prefix}_insert AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {prefix}_insert()",
        f"CREATE TRIGGER {prefix}_update AFTER UPDATE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {prefix}_update()",
        f"CREATE TRIGGER {prefix}_delete AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {prefix}_delete()",
        f"CREATE TRIGGER {prefix}_truncate AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_truncate()",
    ]


def _add_to_sketches(source: str) -> str:
    """Add the users of ``source``'s rows to the sketches of their hours and days: a sketch of
    the new rows per bucket, merged (register by register, the maximum) into the stored one."""
    return f"""
    WITH fresh AS MATERIALIZED (
        SELECT g.grain, {_SKETCH_BUCKET} AS bucket,
               editor_sketch_register(n.user_name) AS register,
               max(editor_sketch_rho(n.user_name)) AS rho
        FROM {source} AS n
        CROSS JOIN (VALUES ('ten_minutes'), ('hour'), ('day')) AS g (grain)
        GROUP BY 1, 2, 3
    )
    -- Each bucket's registers in order, the gaps between them as zero bytes.
    INSERT INTO editor_sketches AS s (grain, bucket, registers)
    SELECT f.grain, f.bucket,
           string_agg(
               decode(repeat('00', f.register - f.previous - 1), 'hex')
                   || set_byte('\\x00'::BYTEA, 0, f.rho),
               ''::BYTEA ORDER BY f.register)
           || decode(repeat('00', {SKETCH_SIZE - 1} - max(f.register)), 'hex')
    FROM (
        SELECT grain, bucket, register, rho,
               lag(register, 1, -1) OVER (PARTITION BY grain, bucket ORDER BY register)
                   AS previous
        FROM fresh
    ) AS f
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (grain, bucket) DO UPDATE
    SET registers = editor_sketch_merge(s.registers, EXCLUDED.registers)"""


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE activity_totals (
            grain TEXT NOT NULL CHECK ({_GRAINS_CHECK}),
            bucket TIMESTAMPTZ NOT NULL,
        {_counter_columns()},
            CONSTRAINT activity_totals_pkey PRIMARY KEY (grain, bucket)
        )"""
    )
    op.execute(
        f"""
        CREATE TABLE wiki_activity_rollup (
            grain TEXT NOT NULL CHECK ({_ROLLUP_GRAINS_CHECK}),
            bucket TIMESTAMPTZ NOT NULL,
            wiki TEXT NOT NULL,
        {_counter_columns()},
            CONSTRAINT wiki_activity_rollup_pkey PRIMARY KEY (grain, bucket, wiki)
        )"""
    )
    # Some wikis' history (the wiki filter).
    op.execute(
        "CREATE INDEX ix_wiki_activity_rollup_wiki ON wiki_activity_rollup (wiki, grain, bucket)"
    )
    op.execute(
        f"""
        CREATE TABLE user_edit_rollup (
            grain TEXT NOT NULL CHECK ({_ROLLUP_GRAINS_CHECK}),
            bucket TIMESTAMPTZ NOT NULL,
            user_name VARCHAR(255) NOT NULL,
            edits BIGINT NOT NULL,
            CONSTRAINT user_edit_rollup_pkey PRIMARY KEY (grain, bucket, user_name)
        )"""
    )
    # The best users of a bucket (top contributors), and one user's buckets (their exact sums,
    # the lookup).
    op.execute(
        "CREATE INDEX ix_user_edit_rollup_top ON user_edit_rollup "
        "(grain, bucket, edits DESC) INCLUDE (user_name)"
    )
    op.execute(
        "CREATE INDEX ix_user_edit_rollup_user_name ON user_edit_rollup "
        "(user_name, grain, bucket) INCLUDE (edits)"
    )
    op.execute(
        f"""
        CREATE TABLE editor_sketches (
            grain TEXT NOT NULL CHECK ({_SKETCH_GRAINS_CHECK}),
            bucket TIMESTAMPTZ NOT NULL,
            registers BYTEA NOT NULL CHECK (length(registers) = {SKETCH_SIZE}),
            CONSTRAINT editor_sketches_pkey PRIMARY KEY (grain, bucket)
        )"""
    )
    # A user's minutes in a range, from the index alone (the lookup, the edges of a range).
    op.execute(
        "CREATE INDEX ix_user_edit_counts_user_name_window_start ON user_edit_counts "
        "(user_name, window_start) INCLUDE (edit_count)"
    )

    # HyperLogLog: the low SKETCH_BITS bits of a 64-bit hash pick the register; its value (rho)
    # is one more than the number of trailing zero bits of the other bits. One-expression SQL
    # functions, so that the planner inlines them.
    rest_bits = 64 - SKETCH_BITS
    rest = f"((hashtextextended(name, 0) >> {SKETCH_BITS}) & {(1 << rest_bits) - 1})"
    op.execute(
        f"""
        CREATE FUNCTION editor_sketch_register(name TEXT) RETURNS INTEGER
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN (hashtextextended(name, 0) & {SKETCH_SIZE - 1})::INTEGER"""
    )
    op.execute(
        f"""
        CREATE FUNCTION editor_sketch_rho(name TEXT) RETURNS INTEGER
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN least(bit_count((({rest} & -{rest}) - 1)::BIT(64)) + 1, {rest_bits + 1})::INTEGER"""
    )
    op.execute(
        """
        CREATE FUNCTION editor_sketch_merge(a BYTEA, b BYTEA) RETURNS BYTEA
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN  -- PL/pgSQL: its plan is cached for the session (the sink's connection)
            RETURN (
                SELECT string_agg(
                           set_byte('\\x00'::BYTEA, 0, greatest(get_byte(a, i), get_byte(b, i))),
                           ''::BYTEA ORDER BY i)
                FROM generate_series(0, length(a) - 1) AS i);
        END;
        $$"""
    )

    for operation in ("insert", "update", "delete"):
        op.execute(_user_function(operation))
        op.execute(_wiki_function(operation))
    op.execute(
        """
        CREATE FUNCTION user_edit_counts_rollup_truncate() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE user_edit_rollup, editor_sketches;
            RETURN NULL;
        END;
        $$"""
    )
    op.execute(
        """
        CREATE FUNCTION wiki_activity_rollup_truncate() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE activity_totals, wiki_activity_rollup;
            RETURN NULL;
        END;
        $$"""
    )
    # Creating the triggers locks both tables until the end of this transaction: no write can
    # slip in between the backfill below and the triggers taking over.
    for statement in (
        *_triggers("user_edit_counts", "user_edit_counts_rollup"),
        *_triggers("wiki_activity", "wiki_activity_rollup"),
    ):
        op.execute(statement)

    # Backfill from what is there already, in bucket order (as the triggers would have).
    op.execute(
        """
        INSERT INTO user_edit_rollup (grain, bucket, user_name, edits)
        SELECT g.grain, date_trunc(g.grain, u.window_start, 'UTC'), u.user_name,
               sum(u.edit_count)
        FROM user_edit_counts AS u CROSS JOIN (VALUES ('hour'), ('day')) AS g (grain)
        GROUP BY 1, 2, 3
        HAVING sum(u.edit_count) > 0
        ORDER BY 1, 2, 3"""
    )
    op.execute(_add_to_sketches("user_edit_counts"))
    op.execute(
        f"""
        INSERT INTO activity_totals (grain, bucket, {", ".join(COUNTERS)})
        SELECT g.grain, date_trunc(g.grain, w.window_start, 'UTC'), {_sums("w.")}
        FROM wiki_activity AS w
        CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g (grain)
        GROUP BY 1, 2
        ORDER BY 1, 2"""
    )
    op.execute(
        f"""
        INSERT INTO wiki_activity_rollup (grain, bucket, wiki, {", ".join(COUNTERS)})
        SELECT g.grain, date_trunc(g.grain, w.window_start, 'UTC'), w.wiki, {_sums("w.")}
        FROM wiki_activity AS w CROSS JOIN (VALUES ('hour'), ('day')) AS g (grain)
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3"""
    )
    for table in ROLLUP_TABLES:
        op.execute(f"ANALYZE {table}")


ROLLUP_TABLES = (
    "activity_totals",
    "wiki_activity_rollup",
    "user_edit_rollup",
    "editor_sketches",
)


def downgrade() -> None:
    for table, prefix in (
        ("wiki_activity", "wiki_activity_rollup"),
        ("user_edit_counts", "user_edit_counts_rollup"),
    ):
        for operation in ("truncate", "delete", "update", "insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {prefix}_{operation} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {prefix}_{operation}()")
    op.execute("DROP FUNCTION IF EXISTS editor_sketch_merge(BYTEA, BYTEA)")
    op.execute("DROP FUNCTION IF EXISTS editor_sketch_rho(TEXT)")
    op.execute("DROP FUNCTION IF EXISTS editor_sketch_register(TEXT)")
    op.execute("DROP INDEX IF EXISTS ix_user_edit_counts_user_name_window_start")
    for table in reversed(ROLLUP_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}")
