"""The workload's bookkeeping on crafted histories: how answers become outcomes, which acknowledged writes the
final reads prove lost, and the availability figures."""

from __future__ import annotations

from typing import Any

import pytest
from history_builders import FAIL, OK, UNKNOWN, op

from raftkv_harness.linearizability import Op, OpKind, Outcome
from raftkv_harness.workload import (
    OutcomeCounts,
    classify,
    lost_acknowledged_writes,
    ok_ops_between,
    per_second,
    time_to_serve_again,
)


@pytest.mark.parametrize(
    ("kind", "status", "sent", "outcome"),
    [
        ("read", 200, True, OK),
        ("read", 404, True, OK),  # absent is an answer: the register holds nothing
        ("write", 200, True, OK),
        ("cas", 200, True, OK),
        ("cas", 412, True, FAIL),  # the only definite failure: the value differed
        ("write", 503, True, UNKNOWN),  # no quorum in time, yet the entry may still commit
        ("cas", 503, True, UNKNOWN),
        ("read", 503, True, UNKNOWN),
        ("write", None, True, UNKNOWN),  # timeout or reset after sending
        ("write", 404, True, UNKNOWN),  # unexpected: cannot rule out that it happened
        ("write", 500, True, UNKNOWN),
        ("write", 400, True, None),  # malformed: says nothing about the register
        ("cas", 400, True, None),  # and must not become a FAIL, which would assert "value differed"
        ("cas", None, False, None),  # connection refused: never reached a node
    ],
)
def test_answers_are_classified_soundly(
    kind: OpKind, status: int | None, sent: bool, outcome: Outcome | None
) -> None:
    assert classify(kind, status, sent=sent) is outcome


def test_outcome_counts_count_each_kind() -> None:
    counts = OutcomeCounts()
    for outcome in (OK, OK, FAIL, UNKNOWN, None):
        counts.add(outcome)
    assert (counts.ok, counts.fail, counts.unknown, counts.left_out, counts.total) == (2, 1, 1, 1, 5)


def final(value: Any, call: float = 100.0) -> dict[str, Op]:
    return {"k": op("read", value, call, call + 0.1, process=9)}


def test_a_write_acknowledged_after_the_final_value_was_written_is_lost() -> None:
    older = op("write", "a", 1.0, 2.0)
    newer = op("write", "b", 3.0, 4.0)
    assert lost_acknowledged_writes([older, newer], final("a")) == [newer]


def test_a_final_read_of_absence_loses_every_acknowledged_write() -> None:
    writes = [op("write", "a", 1.0, 2.0), op("cas", "b", 3.0, 4.0, expected="a")]
    assert lost_acknowledged_writes(writes, final(None)) == writes


def test_concurrent_writes_may_end_in_either_order() -> None:
    first = op("write", "a", 1.0, 3.0)
    second = op("write", "b", 2.0, 4.0)
    assert lost_acknowledged_writes([first, second], final("a")) == []
    assert lost_acknowledged_writes([first, second], final("b")) == []


def test_a_final_value_from_an_unknown_write_proves_nothing() -> None:
    unknown = op("write", "a", 1.0, None, UNKNOWN)
    acknowledged = op("write", "b", 5.0, 6.0)
    assert lost_acknowledged_writes([unknown, acknowledged], final("a")) == []


def test_a_final_value_nobody_wrote_is_left_to_the_checker() -> None:
    assert lost_acknowledged_writes([op("write", "a", 1.0, 2.0)], final("ghost")) == []


def test_failed_and_unknown_writes_are_never_counted_lost() -> None:
    source = op("write", "a", 1.0, 2.0)
    failed_cas = op("cas", "b", 3.0, 4.0, FAIL, expected="x")
    unknown = op("write", "c", 3.0, None, UNKNOWN)
    successful_cas = op("cas", "d", 5.0, 6.0, expected="a")
    history = [source, failed_cas, unknown, successful_cas]
    assert lost_acknowledged_writes(history, final("a")) == [successful_cas]


def test_writes_returning_after_the_final_read_began_are_not_counted() -> None:
    source = op("write", "a", 1.0, 2.0)
    late = op("write", "b", 3.0, 101.0)
    assert lost_acknowledged_writes([source, late], final("a", call=100.0)) == []


def test_keys_are_accounted_separately() -> None:
    history = [op("write", "a", 1.0, 2.0, key="x"), op("write", "b", 3.0, 4.0, key="y")]
    finals = {"x": op("read", "a", 10.0, 11.0, key="x"), "y": op("read", None, 10.0, 11.0, key="y")}
    assert lost_acknowledged_writes(history, finals) == [history[1]]


def test_throughput_is_bucketed_by_completion_time() -> None:
    history = [
        op("read", "a", 0.1, 0.5),
        op("write", "b", 0.6, 1.2),
        op("cas", "c", 0.7, 1.4, FAIL, expected="x"),
        op("write", "d", 1.5, None, UNKNOWN),  # no answer: it completes at its deadline, 1.5 + 1.0
    ]
    buckets = per_second(history, timeout=1.0)
    assert [(b.ok, b.fail, b.unknown) for b in buckets] == [(1, 0, 0), (1, 1, 0), (0, 0, 1)]
    assert ok_ops_between(history, 0.0, 1.0) == 1
    assert ok_ops_between(history, 0.0, 2.0) == 2
    assert per_second([], timeout=1.0) == []


def test_serving_again_waits_for_an_acknowledged_write_after_the_heal() -> None:
    history = [
        op("write", "a", 1.0, 4.0),  # returned before the heal
        op("read", "a", 5.0, 5.2),  # reads do not count: writes need a quorum
        op("write", "b", 5.0, 6.0, UNKNOWN),
        op("cas", "c", 5.1, 5.8, FAIL, expected="x"),
        op("cas", "d", 5.5, 6.5, expected="a"),
        op("write", "e", 5.6, 7.0),
    ]
    assert time_to_serve_again(history, heal=5.0) == pytest.approx(1.5)
    assert time_to_serve_again(history, heal=8.0) is None
