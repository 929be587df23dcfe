"""The chaos suite's invariant checks on hand-made records: each passes a clean run and reports the fault it
exists for (a double-applied write, a broken total, a gap or a reordering in a watch stream, a lease key gone
before its ttl while kept alive)."""

from __future__ import annotations

from raftkv_harness.checks.events import ChangeEvent
from raftkv_harness.checks.exactly_once import IdempotentWrite, check_exactly_once
from raftkv_harness.checks.lease_safety import LeaseLife, Probe, Renewal, check_late_keep_alives, check_leases
from raftkv_harness.checks.transfers import Audit, check_transfers
from raftkv_harness.checks.watch_completeness import WatchRecord, check_watch


def put(revision: int, key: str, value: object) -> ChangeEvent:
    return ChangeEvent(revision, "put", key, value)


WRITES = [
    IdempotentWrite("once/0", "w0-0", attempts=1, status=200, revision=1),
    IdempotentWrite("once/1", "w0-1", attempts=3, status=200, revision=3),
    IdempotentWrite("once/0", "w1-0", attempts=2, status=None),  # no answer: may or may not have applied
]


def test_writes_applied_once_each_pass() -> None:
    events = [put(1, "once/0", "w0-0"), put(2, "other", "w0-1"), put(3, "once/1", "w0-1")]
    assert check_exactly_once(WRITES, events) == []
    assert check_exactly_once(WRITES, [*events, put(4, "once/0", "w1-0")]) == []


def test_a_retry_applied_twice_is_reported() -> None:
    events = [put(1, "once/0", "w0-0"), put(3, "once/1", "w0-1"), put(5, "once/1", "w0-1")]
    assert check_exactly_once(WRITES, events) == ["write 'w0-1' to once/1 applied 2 times"]


def test_an_unacknowledged_write_applied_twice_is_reported() -> None:
    events = [put(1, "once/0", "w0-0"), put(3, "once/1", "w0-1"), put(4, "once/0", "w1-0")]
    doubled = [*events, put(6, "once/0", "w1-0")]
    assert check_exactly_once(WRITES, doubled) == ["write 'w1-0' to once/0 applied 2 times"]


def test_an_acknowledged_write_missing_from_the_history_is_reported() -> None:
    problems = check_exactly_once(WRITES, [put(3, "once/1", "w0-1")])
    assert problems == ["acknowledged write 'w0-0' to once/0 at revision 1 is not in the history"]
    assert check_exactly_once(WRITES, [put(3, "once/1", "w0-1")], covered_after=2) == []


def test_a_refused_retry_is_reported() -> None:
    refused = IdempotentWrite("once/0", "w2-0", attempts=2, status=422)
    assert check_exactly_once([refused], []) == ["write 'w2-0': a retry with the same body was refused (422)"]


ACCOUNTS = ["a", "b", "c"]


def test_audits_that_keep_the_total_pass() -> None:
    audits = [Audit(1.0, 4, {"a": 100, "b": 100, "c": 100}), Audit(2.0, 9, {"a": 0, "b": 250, "c": 50})]
    assert check_transfers(audits, ACCOUNTS, total=300) == []


def test_a_broken_total_is_reported() -> None:
    problems = check_transfers([Audit(2.0, 9, {"a": 10, "b": 250, "c": 50})], ACCOUNTS, total=300)
    assert problems == ["audit at revision 9 (2.0 s): total 310, expected 300: {'a': 10, 'b': 250, 'c': 50}"]


def test_an_overdrawn_or_missing_account_is_reported() -> None:
    overdrawn = Audit(3.0, 12, {"a": -5, "b": 255, "c": 50})
    missing = Audit(4.0, 13, {"a": 100, "b": 200})
    problems = check_transfers([overdrawn, missing], ACCOUNTS, total=300)
    assert len(problems) == 2
    assert "negative balance" in problems[0] and "missing" in problems[1]


REFERENCE = [put(1, "x", "a"), put(2, "x", "b"), put(3, "y", "c"), put(3, "z", "d"), put(5, "x", "e")]


def stream(events: list[ChangeEvent], *, after: int = 0, end: int | None = 5) -> WatchRecord:
    return WatchRecord("watcher-0", after=after, end=end, events=events)


def test_a_complete_stream_passes_from_where_it_started() -> None:
    assert check_watch([stream(REFERENCE), stream(REFERENCE[2:], after=2)], REFERENCE) == []
    assert check_watch([stream(REFERENCE[:4], end=4)], REFERENCE) == []


def test_a_gap_is_reported() -> None:
    problems = check_watch([stream([*REFERENCE[:2], *REFERENCE[3:]])], REFERENCE)
    assert problems == [
        "watcher-0: event 2 is ChangeEvent(revision=3, type='put', key='z', value='d'), "
        "the history has ChangeEvent(revision=3, type='put', key='y', value='c') there"
    ]
    assert check_watch([stream(REFERENCE[:3])], REFERENCE) == [
        "watcher-0: missing 2 events from ChangeEvent(revision=3, type='put', key='z', value='d') on"
    ]


def test_a_reordering_is_reported() -> None:
    swapped = [REFERENCE[1], REFERENCE[0], *REFERENCE[2:]]
    problems = check_watch([stream(swapped)], REFERENCE)
    assert problems[0] == "watcher-0: revision 1 came after 2"
    assert len(problems) == 2


def test_a_duplicate_is_reported() -> None:
    problems = check_watch([stream([*REFERENCE[:2], REFERENCE[1], *REFERENCE[2:]])], REFERENCE)
    assert problems[0] == "watcher-0: x at revision 2 came twice"


def test_a_stream_that_never_reached_the_end_is_reported() -> None:
    assert check_watch([stream(REFERENCE, end=None)], REFERENCE) == [
        "watcher-0: never reached the end of the run"
    ]


def test_declared_resync_gaps_and_a_compacted_reference_are_allowed_for() -> None:
    resynced = stream([*REFERENCE[:2], REFERENCE[4]])
    resynced.resyncs.append((2, 4))
    assert check_watch([resynced], REFERENCE) == []
    assert check_watch([stream(REFERENCE)], REFERENCE[2:], reference_after=2) == []


def renewals(*sent: float) -> list[Renewal]:
    return [Renewal(time, time + 0.1) for time in sent]


LIFE = LeaseLife("lease/0", ttl=3.0, established=1.2, renewals=renewals(1.0, 2.0, 3.0))


def test_a_lease_key_present_while_kept_alive_and_gone_after_its_ttl_passes() -> None:
    probes = [Probe("lease/0", 2.5, 2.6, True), Probe("lease/0", 6.0, 6.1, False)]
    assert check_leases([LIFE], probes) == []


def test_a_read_before_the_key_was_put_proves_nothing() -> None:
    assert check_leases([LIFE], [Probe("lease/0", 1.1, 1.3, False)]) == []


def test_a_lease_key_gone_before_its_ttl_is_reported() -> None:
    problems = check_leases([LIFE], [Probe("lease/0", 4.0, 4.2, False)])
    assert problems == [
        "lease/0 absent at 4.20 s, 1.80 s before its lease could end "
        "(last acknowledged renewal sent at 3.00 s, ttl 3 s)"
    ]


def test_the_clock_margin_is_allowed_for() -> None:
    assert check_leases([LIFE], [Probe("lease/0", 5.8, 5.95, False)]) == []
    assert len(check_leases([LIFE], [Probe("lease/0", 5.8, 5.85, False)])) == 1


def test_an_early_end_after_a_late_keep_alive_is_reported_apart() -> None:
    """Renewed at 3.0, then late at 6.5 (the lease could have run out at 6.0): the keep-alive was acknowledged,
    so the key must stay until 9.5; gone at 7.0 it is a late keep-alive wrongly acknowledged."""
    late = LeaseLife("lease/0", ttl=3.0, established=1.2, renewals=renewals(1.0, 2.0, 3.0, 6.5))
    probes = [Probe("lease/0", 6.8, 7.0, False)]
    assert check_leases([late], probes) == []
    assert check_late_keep_alives([late], probes) == [
        "lease/0 absent at 7.00 s, 2.50 s before its lease could end "
        "(last acknowledged renewal sent at 6.50 s, ttl 3 s, after a late one)"
    ]
    assert check_late_keep_alives([LIFE], [Probe("lease/0", 4.0, 4.2, False)]) == []


def test_a_keep_alive_sent_in_time_but_answered_after_the_ttl_counts_as_late() -> None:
    slow = LeaseLife("lease/0", ttl=3.0, established=1.2, renewals=[*renewals(1.0, 3.0), Renewal(5.5, 6.2)])
    probes = [Probe("lease/0", 6.8, 7.0, False)]
    assert check_leases([slow], probes) == []
    assert len(check_late_keep_alives([slow], probes)) == 1
