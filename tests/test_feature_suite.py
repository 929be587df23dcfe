"""The feature workload's bookkeeping without a cluster: how watch records merge into one history for the
exactly-once check, from which revision that history is complete, where a watcher resumes, and the report."""

from __future__ import annotations

from raftkv_harness.checks.events import ChangeEvent
from raftkv_harness.checks.watch_completeness import WatchRecord
from raftkv_harness.features.suite import FeatureReport, covered_after, merged_events
from raftkv_harness.features.watchers import Fence, Watcher


def put(revision: int, key: str, value: object = None) -> ChangeEvent:
    return ChangeEvent(revision, "put", key, value)


def test_records_merge_into_one_history_each_event_once() -> None:
    first = WatchRecord("a", after=0, end=3, events=[put(1, "x"), put(2, "y"), put(2, "z")])
    second = WatchRecord("b", after=1, end=3, events=[put(2, "y"), put(2, "z"), put(3, "x")])
    assert merged_events([first, second]) == [put(1, "x"), put(2, "y"), put(2, "z"), put(3, "x")]


def test_the_history_is_complete_from_the_start_only_if_a_watcher_saw_all_of_it() -> None:
    whole = WatchRecord("a", after=0, end=9)
    resynced = WatchRecord("b", after=0, end=9, resyncs=[(3, 5)])
    late = WatchRecord("c", after=4, end=9)
    unfinished = WatchRecord("d", after=0, end=None)
    assert covered_after([whole, late], reference_after=7) == 0
    assert covered_after([resynced, late, unfinished], reference_after=7) == 7


def watcher(events: list[ChangeEvent], resyncs: list[tuple[int, int]] | None = None) -> Watcher:
    made = Watcher("w", ["http://127.0.0.1:1"], seed=0, fence=Fence("x/fence", "f"), timeout=1.0)
    made.record.events = events
    made.record.resyncs = resyncs or []
    return made


def test_a_watcher_resumes_before_its_last_revision_and_drops_that_revision() -> None:
    """The events of one transaction share a revision: a stream cut between them is asked for again."""
    resuming = watcher([put(1, "x"), put(2, "y"), put(2, "z")])
    assert resuming.resume_point() == 1
    assert resuming.record.events == [put(1, "x")]
    assert watcher([]).resume_point() == 0


def test_a_watcher_resumes_after_a_resync_gap() -> None:
    resynced = watcher([put(1, "x")], resyncs=[(1, 6)])
    assert resynced.resume_point() == 6
    assert resynced.record.events == [put(1, "x")]


def test_the_report_names_each_invariant_and_what_broke_it() -> None:
    report = FeatureReport({"transfers keep total": ["total 310"], "leases": []}, {"writes": 3})
    assert not report.held
    assert report.lines() == [
        "transfers keep total     VIOLATED (1)",
        "leases                   held",
        "features                 writes 3",
        "transfers keep total: total 310",
    ]
    assert report.to_dict() == {"held": False, "problems": report.problems, "figures": {"writes": 3}}
