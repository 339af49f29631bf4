"""Kafka record headers written by the worker."""

from __future__ import annotations

HEADER_SSE_ID = "sse-id"  # raw: the SSE event id (Wikimedia's resume position)
HEADER_RECEIVED_AT = "received-at"  # raw: when the worker received the event, epoch ms
HEADER_RESUME_ID = "resume-id"  # raw: the sender's gap-free resume point (empty: none yet)
HEADER_RESUME_TIME = "resume-time"  # raw: when that point's record was sent, epoch ms
HEADER_TRUNCATED_FROM = "truncated-from"  # raw: the event's size in bytes, when cut to fit
HEADER_SCHEMA = "schema"  # typed: the contract's name, wikipulse/recentchange/<version>
HEADER_SCHEMA_VERSION = "schema-version"  # typed: the contract's version as text
HEADER_ORIGIN_TOPIC = "origin-topic"  # typed, dead letter: the raw record's topic,
HEADER_ORIGIN_PARTITION = "origin-partition"  # partition
HEADER_ORIGIN_OFFSET = "origin-offset"  # and offset
HEADER_REASON = "reason"  # dead letter: why, in words
HEADER_REASON_CODE = "reason-code"  # dead letter: RejectCode
HEADER_REASON_FIELD = "reason-field"  # dead letter: the field at fault, or empty
