"""raw -> typed | dead letter.

- :mod:`app.normalize.event`: bytes -> typed event, a pure function (:func:`normalize`), and the
  configured :class:`Filters`; its names are exported here
  (``from app.normalize import normalize, Rejected``);
- :mod:`app.normalize.batch`: what one batch of raw records becomes (:func:`plan_batch`), and
  the dedup state; no I/O;
- :mod:`app.normalize.service`: the Kafka loop (:class:`~app.normalize.service.Normalizer`), one
  transaction per partition and batch.

Importing this package imports only :mod:`app.normalize.event` (pydantic), not aiokafka.
"""

from app.normalize.event import (
    CURRENT_SCHEMA,
    EARLIEST_EVENT_TIME,
    FUTURE_TOLERANCE,
    LEGACY_SCHEMAS,
    MAX_EVENT_BYTES,
    TEMPORARY_ACCOUNT,
    Filters,
    RejectCode,
    Rejected,
    normalize,
    user_kind,
)

__all__ = [
    "CURRENT_SCHEMA",
    "EARLIEST_EVENT_TIME",
    "FUTURE_TOLERANCE",
    "LEGACY_SCHEMAS",
    "MAX_EVENT_BYTES",
    "TEMPORARY_ACCOUNT",
    "Filters",
    "RejectCode",
    "Rejected",
    "normalize",
    "user_kind",
]
