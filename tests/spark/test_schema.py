"""The Spark schema agrees with the event contract: its committed JSON Schema, and the bytes the
worker writes (every event, current and legacy envelope, survives the trip through Spark's JSON
reader; tests/recorded/test_spark_recorded.py does the same over real recordings)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    BooleanType,
    DataType,
    LongType,
    StringType,
    StructType,
    TimestampType,
)

from app.contract import RecentChange, json_schema
from spark.schema import EVENT_SCHEMA, spark_schema
from tests.events import synthetic
from tests.spark.helpers import assert_survives_the_typed_topic, typed_events


def _json_schema_type(schema: dict[str, Any], node: dict[str, Any]) -> tuple[DataType, bool]:
    """(the Spark type a JSON Schema property needs, whether it may be null)."""
    members = node.get("anyOf", [node])
    nullable = any(member.get("type") == "null" for member in members)
    kinds = set()
    for member in members:
        if "$ref" in member:
            member = schema["$defs"][member["$ref"].rsplit("/", 1)[-1]]
        kind = member.get("type")
        if kind == "null":
            continue
        if kind == "string" and member.get("format") == "date-time":
            kinds.add("timestamp")
        else:
            kinds.add(kind)
    assert len(kinds) == 1, node
    spark_types = {
        "string": StringType(),
        "integer": LongType(),
        "boolean": BooleanType(),
        "timestamp": TimestampType(),
    }
    return spark_types[kinds.pop()], nullable


def test_the_schema_has_the_contracts_fields_in_order() -> None:
    assert EVENT_SCHEMA.fieldNames() == list(RecentChange.model_fields)


def test_the_schema_agrees_with_the_committed_json_schema() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == set(EVENT_SCHEMA.fieldNames())
    for field in EVENT_SCHEMA.fields:
        expected_type, nullable = _json_schema_type(schema, schema["properties"][field.name])
        assert field.dataType == expected_type, field.name
        assert field.nullable == nullable, field.name
        if not nullable and field.name != "schema_version":  # it has a default
            assert field.name in schema["required"], field.name


def test_a_type_without_a_spark_equivalent_fails_loudly() -> None:
    class Odd(BaseModel):
        tags: list[str]

    with pytest.raises(TypeError, match=r"Odd\.tags"):
        spark_schema(Odd)


def test_nested_models_and_optional_fields_map() -> None:
    class Inner(BaseModel):
        at: datetime | None = None

    class Outer(BaseModel):
        inner: Inner
        count: int

    assert spark_schema(Outer) == StructType.fromJson(
        {
            "type": "struct",
            "fields": [
                {
                    "name": "inner",
                    "type": {
                        "type": "struct",
                        "fields": [
                            {"name": "at", "type": "timestamp", "nullable": True, "metadata": {}}
                        ],
                    },
                    "nullable": False,
                    "metadata": {},
                },
                {"name": "count", "type": "long", "nullable": False, "metadata": {}},
            ],
        }
    )


def test_every_event_survives_the_typed_topic(spark: SparkSession) -> None:
    received = datetime(2026, 6, 21, tzinfo=UTC)
    # A quarter in the legacy envelopes (schema_uri /1 and /2), the rest $schema 1.0.0 and 1.0.1:
    # every type, editor kind (hidden: no user), absent and null lengths, revisions and rc ids.
    raw = synthetic(
        900, seed=1900, start=datetime(2026, 6, 20, 15, 0, tzinfo=UTC), legacy_share=0.25
    )
    envelopes = [json.loads(line) for line in raw]
    sources = {event.get("$schema") or event["meta"]["schema_uri"] for event in envelopes}
    assert sources == {
        "/mediawiki/recentchange/1.0.0",
        "/mediawiki/recentchange/1.0.1",
        "mediawiki/recentchange/1",
        "mediawiki/recentchange/2",
    }
    assert_survives_the_typed_topic(spark, typed_events(raw, received_at=received))
