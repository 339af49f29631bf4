"""The resume point moves only over events that are durable with every event before them."""

from __future__ import annotations

from app.ingest.resume import Durable, ResumePoint


def test_deliveries_completing_out_of_order_move_it_over_the_gap_free_prefix() -> None:
    point = ResumePoint(Durable("s0", 1))
    first, second, third = point.sent(), point.sent(), point.sent()
    point.delivered(second, "s2")  # another partition's delivery completes first
    assert point.id == "s0"
    point.delivered(first, "s1")
    assert point.id == "s2"
    point.delivered(third, None)  # an event without an SSE id moves nothing
    assert point.id == "s2"
    fourth = point.sent()
    point.delivered(fourth, "s4")
    assert point.id == "s4"


def test_a_failed_delivery_holds_it_before_the_event_until_the_next_connection() -> None:
    point = ResumePoint(Durable())
    first, _second, third = point.sent(), point.sent(), point.sent()
    point.delivered(first, "s1")
    error = TimeoutError("no leader")
    point.failed(error)  # the second event's delivery
    point.delivered(third, "s3")
    assert (point.id, point.failure) == ("s1", error)  # s2 is served again, s3 with it

    point.reset()  # the new connection resumes after s1
    assert point.failure is None
    again = point.sent()
    point.delivered(again, "s2")
    assert point.id == "s2"


def test_the_point_carries_the_send_time_of_its_record() -> None:
    # What a worker taking over reads the raw log back from (app.ingest.task.read_takeover).
    point = ResumePoint(Durable("s0", 1_000))
    first, second = point.sent(), point.sent()
    point.delivered(second, "s2", 1_200)
    assert point.point == Durable("s0", 1_000)
    point.delivered(first, "s1", 1_100)
    assert point.point == Durable("s2", 1_200)
