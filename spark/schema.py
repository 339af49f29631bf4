"""The Spark schema of the typed topic's value, derived from :class:`app.contract.RecentChange`.

The typed value is ``orjson.dumps(event.model_dump())``: one JSON object whose keys are the
model's fields, datetimes as RFC 3339 strings (``2026-06-20T15:49:47+00:00``), enums as their
string values. The schema is computed from the pydantic fields, never written by hand: a field
added to the contract appears here, and a type this module cannot map fails loudly at import.
"""

from __future__ import annotations

import types
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AwareDatetime, BaseModel
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from app.contract import RecentChange, contract

__all__ = ["EVENT_SCHEMA", "event_schema", "spark_schema", "spark_type"]


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        nullable = len(members) < len(get_args(annotation))
        if len(members) != 1:
            raise TypeError(f"cannot map the union {annotation!r} to one Spark type")
        inner, inner_nullable = _strip_optional(members[0])
        return inner, nullable or inner_nullable
    if get_origin(annotation) is Annotated:
        return _strip_optional(get_args(annotation)[0])
    return annotation, False


def spark_type(annotation: Any) -> DataType:
    """The Spark type of one (non-optional) pydantic field annotation."""
    if get_origin(annotation) is Literal:
        kinds = {type(value) for value in get_args(annotation)}
        if len(kinds) != 1:
            raise TypeError(f"cannot map {annotation!r}: its values have different types")
        return spark_type(kinds.pop())
    if not isinstance(annotation, type):
        raise TypeError(f"cannot map the field type {annotation!r} to a Spark type")
    # Order matters: bool is an int, a StrEnum is a str.
    if issubclass(annotation, Enum):
        values = {type(member.value) for member in annotation}
        if values != {str}:
            raise TypeError(f"cannot map {annotation!r}: only string enums are supported")
        return StringType()
    if issubclass(annotation, bool):
        return BooleanType()
    if issubclass(annotation, int):
        return LongType()  # revision ids are past 2**31 already
    if issubclass(annotation, float):
        return DoubleType()
    if issubclass(annotation, str):
        return StringType()
    if annotation is AwareDatetime or issubclass(annotation, datetime):
        return TimestampType()  # an instant; the JSON carries its UTC offset
    if issubclass(annotation, BaseModel):
        return spark_schema(annotation)
    raise TypeError(f"cannot map the field type {annotation!r} to a Spark type")


def spark_schema(model: type[BaseModel]) -> StructType:
    """One StructField per model field, in the model's order; nullable iff ``None`` is allowed."""
    fields = []
    for name, field in model.model_fields.items():
        annotation, nullable = _strip_optional(field.annotation)
        try:
            data_type = spark_type(annotation)
        except TypeError as error:
            raise TypeError(f"{model.__name__}.{name}: {error}") from None
        fields.append(StructField(name, data_type, nullable))
    return StructType(fields)


#: The schema of the typed topic's value, version 1 (RecentChange).
EVENT_SCHEMA: StructType = spark_schema(RecentChange)


def event_schema(version: int) -> StructType:
    """The schema of the value of one version's typed topic."""
    return spark_schema(contract(version).model)
