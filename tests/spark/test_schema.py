"""The Spark schema agrees with the event contract: its committed JSON Schema, and the bytes the
worker writes (every recorded event survives the trip through Spark's JSON reader)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
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
from spark.transforms import parse_events
from tests.realdata import CURRENT, LEGACY_BATCH, LEGACY_FIXTURES, LEGACY_SINGLE, lines
from tests.spark.helpers import encode, typed_events


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


def _as_plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1_000_000)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def test_every_recorded_event_survives_the_typed_topic(spark: SparkSession) -> None:
    received = datetime(2026, 6, 21, tzinfo=UTC)
    events = typed_events(
        [
            *lines(CURRENT),
            *lines(LEGACY_BATCH)[:500],
            *lines(LEGACY_FIXTURES),
            *lines(LEGACY_SINGLE),
        ],
        received_at=received,
    )
    records = spark.createDataFrame([(encode(e),) for e in events], "value binary")
    timestamps = [f.name for f in EVENT_SCHEMA.fields if f.dataType == TimestampType()]
    # Timestamps as epoch microseconds: collected TimestampType values are naive local times.
    parsed = parse_events(records).select(
        *(
            F.unix_micros(F.col(name)).alias(name) if name in timestamps else F.col(name)
            for name in EVENT_SCHEMA.fieldNames()
        )
    )

    def order(row: dict[str, Any]) -> tuple[str, str]:
        return row["event_id"], row["comment"] or ""  # one fixture repeats an id

    rows = sorted((row.asDict() for row in parsed.collect()), key=order)
    expected = sorted(
        ({name: _as_plain(value) for name, value in e.model_dump().items()} for e in events),
        key=order,
    )
    assert len(rows) == len(events)
    assert rows == expected
