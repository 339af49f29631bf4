"""Synthetic events conform to Wikimedia's official recentchange schemas, read at run time.

The schemas are not ours to copy: they are read from ``WIKIPULSE_SCHEMAS`` (else
``../shared/data/schemas``), and the test is not run without them. Each event is validated
against the version it names (``$schema``, or the legacy ``meta.schema_uri``), formats included.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml
from jsonschema import Draft4Validator, Draft7Validator, FormatChecker
from jsonschema.protocols import Validator

from infra.replay.bursts import Burst, BurstKind
from infra.replay.synthetic import StreamOptions, SyntheticStream
from tests.recordings import DEFAULT_SCHEMAS_DIR, SCHEMAS_ENV, schemas_dir

CURRENT = "schemas-event-primary/jsonschema/mediawiki/recentchange"
LEGACY = "mediawiki-event-schemas/jsonschema/mediawiki/recentchange"
#: The version an event names -> its schema file under the schemas' directory.
SCHEMA_FILES = {
    "/mediawiki/recentchange/1.0.0": f"{CURRENT}/1.0.0.json",
    "/mediawiki/recentchange/1.0.1": f"{CURRENT}/1.0.1.json",
    "mediawiki/recentchange/1": f"{LEGACY}/1.yaml",
    "mediawiki/recentchange/2": f"{LEGACY}/2.yaml",
}
#: The JSON Schema draft each declares in its $schema.
DRAFTS: dict[str, type[Validator]] = {"draft-07": Draft7Validator, "draft-04": Draft4Validator}
#: What the live stream sends beyond the current schemas' properties (none beyond the legacy).
UNDECLARED = {"title_url", "notify_url"}
UNDECLARED_META = {"topic", "partition", "offset"}

# jsonschema checks date-time and uri only with optional packages: these checks are ours.
FORMATS = FormatChecker()
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.I)


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value)  # raises on a day or hour that does not exist
    return True


def _uri_characters(value: str) -> bool:
    """RFC 3986 allows printable ASCII only (others percent-encoded); no spaces or quotes."""
    return value.isascii() and not re.search(r'[\s"<>\\^`{|}]', value)


def _uri_reference(value: object) -> bool:
    return not isinstance(value, str) or _uri_characters(value)


def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return _uri_characters(value) and bool(parts.scheme) and bool(parts.netloc)


FORMATS.checks("date-time", raises=ValueError)(_date_time)
FORMATS.checks("uri-reference")(_uri_reference)
FORMATS.checks("uri")(_uri)


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    schema = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    assert isinstance(schema, dict), path
    return schema


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    directory = schemas_dir()
    if directory is None:
        pytest.skip(
            f"no official schemas at {DEFAULT_SCHEMAS_DIR}: set {SCHEMAS_ENV} to a directory "
            "holding Wikimedia's schemas-event-primary/ and mediawiki-event-schemas/"
        )
    return {version: _load(directory / file) for version, file in SCHEMA_FILES.items()}


@pytest.fixture(scope="module")
def validators(schemas: dict[str, dict[str, Any]]) -> dict[str, Validator]:
    made = {}
    for version, schema in schemas.items():
        (cls,) = [cls for draft, cls in DRAFTS.items() if draft in schema["$schema"]]
        cls.check_schema(schema)
        made[version] = cls(schema, format_checker=FORMATS)
    return made


def synthetic_events() -> list[dict[str, Any]]:
    """Both envelopes, every version, canaries, repeats, and a page burst's title."""
    burst = Burst(
        BurstKind.PAGE, "frwiki", timedelta(seconds=20), timedelta(seconds=30),
        title="Festival d'été « Köln »", editors=4, edits=60,
    )  # fmt: skip
    options = StreamOptions(
        seed=21,
        start=datetime(2023, 11, 2, 8, 30, tzinfo=UTC),
        legacy_share=0.4,
        schema_101_share=0.3,
        canary_interval=timedelta(seconds=15),
        bursts=(burst,),
    )
    return [orjson.loads(data) for data in SyntheticStream(options).events(4000)]


def version(event: dict[str, Any]) -> str:
    return str(event.get("$schema") or event["meta"]["schema_uri"])


def test_every_synthetic_event_validates_against_its_schema(
    validators: dict[str, Validator],
) -> None:
    events = synthetic_events()
    used = Counter(version(event) for event in events)
    assert set(used) == set(SCHEMA_FILES), used
    for position, event in enumerate(events):
        errors = [error.message for error in validators[version(event)].iter_errors(event)]
        assert not errors, (position, version(event), errors)


def test_synthetic_events_carry_only_declared_fields(
    schemas: dict[str, dict[str, Any]],
) -> None:
    for event in synthetic_events():
        schema = schemas[version(event)]
        legacy = "$schema" not in event
        undeclared = set(event) - set(schema["properties"])
        meta = set(event["meta"]) - set(schema["properties"]["meta"]["properties"])
        assert undeclared <= (set() if legacy else UNDECLARED), (version(event), undeclared)
        assert meta <= (set() if legacy else UNDECLARED_META), (version(event), meta)


def test_the_format_checks_reject_what_they_should() -> None:
    """Our format checks are not vacuous."""
    assert not FORMATS.conforms("2024-05-01 12:00:00", "date-time")
    assert not FORMATS.conforms("2024-02-30T12:00:00Z", "date-time")
    assert FORMATS.conforms("2024-05-01T12:00:00.123Z", "date-time")
    assert FORMATS.conforms("2018-03-07T16:16:17+00:00", "date-time")
    assert not FORMATS.conforms("https://de.wikipedia.org/wiki/Köln", "uri")
    assert not FORMATS.conforms("/wiki/Some page", "uri-reference")
    assert not FORMATS.conforms("/wiki/Page", "uri")
    assert FORMATS.conforms("https://de.wikipedia.org/wiki/K%C3%B6ln", "uri")
