"""The bad-input corpus: at least 25 kinds of broken events, each with its documented outcome.

Every item is one of our hand-written events (tests/app/examples.py) with one change, or a
payload no event could be. Used by the normalizer's tests, the agent's tests and the
pipeline tests. app/README.md, "Bad input", lists the same outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tests.app.examples import BOT_USER, current_edit, encoded, legacy_edit


@dataclass(frozen=True)
class BadInput:
    name: str
    data: bytes
    code: str  # the dead-letter reason code
    field: str | None = None


def _current() -> dict:
    return current_edit()


def _legacy() -> dict:
    return legacy_edit()


def _with(event: dict, path: str, value: object) -> bytes:
    target = event
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    return orjson.dumps(event)


def _without(event: dict, path: str) -> bytes:
    target = event
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    del target[last]
    return orjson.dumps(event)


def corpus() -> list[BadInput]:
    edit = encoded(current_edit())
    deep = (
        b'{"meta": {"id": "x", "dt": "2026-06-20T15:49:48Z"}, "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}"
    )
    big = _current()
    big["comment"] = "x" * (5 * 1024 * 1024)
    name = BOT_USER.encode()
    invalid_utf8 = edit.replace(name, name[:4] + b"\xff\xfe" + name[4:])
    return [
        BadInput("not JSON", b"this is not json", "invalid_json"),
        BadInput("empty payload", b"", "invalid_json"),
        BadInput("truncated", edit[: len(edit) // 2], "invalid_json"),
        BadInput("invalid UTF-8", invalid_utf8, "invalid_json"),
        # pydantic's JSON parser reads NaN; no field of ours accepts it.
        BadInput(
            "NaN", edit.replace(b'"namespace":6', b'"namespace":NaN'), "invalid_field", "namespace"
        ),
        BadInput("deep nesting", deep, "invalid_json"),
        BadInput("5 MB payload", orjson.dumps(big), "too_large"),
        BadInput("a JSON array", b"[1, 2, 3]", "not_an_object"),
        BadInput("a JSON string", b'"edit"', "not_an_object"),
        BadInput("JSON null", b"null", "not_an_object"),
        BadInput("no meta", _without(_current(), "meta"), "missing_field", "meta"),
        BadInput("meta is a string", _with(_current(), "meta", "x"), "invalid_field", "meta"),
        BadInput(
            "unknown schema major",
            _with(_current(), "$schema", "/mediawiki/recentchange/2.0.0"),
            "unsupported_schema",
            "$schema",
        ),
        BadInput(
            "another stream's schema",
            _with(_current(), "$schema", "/mediawiki/revision/create/1.1.0"),
            "unsupported_schema",
            "$schema",
        ),
        BadInput(
            "unknown legacy schema",
            _with(_legacy(), "meta.schema_uri", "mediawiki/recentchange/3"),
            "unsupported_schema",
            "meta.schema_uri",
        ),
        BadInput(
            "no schema at all",
            _without(_legacy(), "meta.schema_uri"),
            "unsupported_schema",
            "$schema",
        ),
        BadInput(
            "no meta.stream", _without(_current(), "meta.stream"), "missing_field", "meta.stream"
        ),
        BadInput("no meta.id", _without(_current(), "meta.id"), "missing_field", "meta.id"),
        BadInput("no meta.dt", _without(_current(), "meta.dt"), "missing_field", "meta.dt"),
        BadInput(
            "meta.dt not a time",
            _with(_current(), "meta.dt", "yesterday"),
            "invalid_field",
            "meta.dt",
        ),
        BadInput(
            "meta.dt without zone",
            _with(_current(), "meta.dt", "2026-06-20T15:49:48"),
            "invalid_field",
            "meta.dt",
        ),
        BadInput("unknown type", _with(_current(), "type", "delete"), "invalid_field", "type"),
        BadInput("no type", _without(_current(), "type"), "missing_field", "type"),
        BadInput(
            "namespace as text", _with(_current(), "namespace", "6"), "invalid_field", "namespace"
        ),
        BadInput(
            "negative namespace", _with(_current(), "namespace", -7), "invalid_field", "namespace"
        ),
        BadInput("bot as text", _with(_current(), "bot", "true"), "invalid_field", "bot"),
        BadInput("user as number", _with(_current(), "user", 42), "invalid_field", "user"),
        BadInput(
            "negative length", _with(_current(), "length.new", -5), "invalid_field", "length.new"
        ),
        BadInput("length as text", _with(_current(), "length", "big"), "invalid_field", "length"),
        BadInput(
            "timestamp as text",
            _with(_current(), "timestamp", "soon"),
            "invalid_field",
            "timestamp",
        ),
        BadInput(
            "far-future timestamp",
            _with(_current(), "timestamp", 7258118400),  # 2200-01-01
            "out_of_range",
            "timestamp",
        ),
        BadInput(
            "ancient timestamp",
            _with(_current(), "timestamp", 631152000),
            "out_of_range",
            "timestamp",
        ),
        BadInput(
            "timestamp beyond any calendar",
            _with(_current(), "timestamp", 10**18),
            "out_of_range",
            "timestamp",
        ),
        BadInput(
            "emission time before year 1 in UTC",
            _with(_current(), "meta.dt", "0001-01-01T00:00:00+01:00"),
            "out_of_range",
            "meta.dt",
        ),
        BadInput("no wiki", _without(_current(), "wiki"), "missing_field", "wiki"),
        BadInput("empty title", _with(_current(), "title", ""), "missing_field", "title"),
    ]


#: Odd but valid: kept verbatim, never rejected.
def odd_but_valid() -> dict[str, bytes]:
    return {
        "right-to-left name": _with(_current(), "user", "המתמרד\u200f"),
        "zero-width name": _with(_current(), "user", "Zero\u200bWidth\u200d"),
        "SQL-looking name": _with(_current(), "user", "Robert'); DROP TABLE user_edit_counts;--"),
        "percent and underscore": _with(_current(), "user", "100%_real_user"),
        "quotes": _with(_current(), "user", 'O\'Brien "the" editor'),
    }
