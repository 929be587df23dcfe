"""The chaos suite in CI: one short run per fault kind against real nodes (fixed seeds), which must stay
linearizable, lose no acknowledged write and keep the feature invariants (exactly-once writes, transfers'
total, complete watch streams, leases), and one run against a deliberately broken node that must be caught.

The real-cluster runs are marked slow (about half a minute each on 2 cores, under four minutes in all).
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import pytest
import trio

from raftkv_harness.chaos import EXIT_VIOLATION, ChaosConfig, ChaosReport, LeaderLog, fault_reports, run_chaos
from raftkv_harness.cluster import LocalCluster
from raftkv_harness.features.suite import FeatureReport
from raftkv_harness.linearizability import Op, Outcome, history_from_jsonl
from raftkv_harness.nemesis import FaultKind, NemesisEvent, NemesisTiming, plan_faults

TOOLS = Path(__file__).resolve().parent.parent / "tools"
RUN_SECONDS = 20.0
SEED_BY_KIND = {
    FaultKind.KILL: 11,
    FaultKind.PAUSE: 12,
    FaultKind.PARTITION: 13,
    FaultKind.POWERLOSS: 14,
    FaultKind.NETDELAY: 15,
    FaultKind.MEMBERSHIP: 16,
}
UNSAFE_READS_SEED = 8  # its schedule opens with two leader isolations and a majority-minority split


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SEED_BY_KIND), ids=str)
async def test_a_correct_cluster_survives_each_fault_kind(kind: FaultKind, tmp_path: Path) -> None:
    progress: list[str] = []
    config = ChaosConfig(
        out=tmp_path,
        nodes=3,
        duration=RUN_SECONDS,
        faults=(kind,),
        seed=SEED_BY_KIND[kind],
        recovery=3.0,
        progress_interval=5.0,
    )
    report = await run_chaos(config, progress.append)
    summary = report.table()
    assert report.check.verdict == "linearizable", summary
    assert report.lost == [], summary
    assert report.counts.ok > 200, summary  # the clients really ran
    figures = assert_features_held(report, summary).figures
    assert (
        min(figures["acknowledged"], figures["transfers"], figures["audits"], figures["lease-probes"]) > 0
    ), summary
    assert figures["watch-events"] > 0 and figures["reference-events"] > 0, summary
    assert len(report.faults) >= 2 and {fault.kind for fault in report.faults} == {kind.value}, summary
    median = report.median_serving_again
    assert median is not None and median < 10.0, summary
    assert any(line.startswith("[") and "leader" in line for line in progress)
    history = history_from_jsonl((tmp_path / "history.jsonl").read_text())
    assert len(history) == report.operations
    written = json.loads((tmp_path / "summary.json").read_text())
    assert (
        written["acknowledged_writes_lost"] == 0 and "exactly-once writes" in written["features"]["problems"]
    )
    assert (tmp_path / "logs" / "n1.log").stat().st_size > 0


def assert_features_held(report: ChaosReport, summary: str) -> FeatureReport:
    """Every feature invariant held: exactly-once writes, the transfers' total, complete watches, leases."""
    assert report.features is not None, summary
    broken = {name for name, problems in report.features.problems.items() if problems}
    assert not broken, summary
    return report.features


async def run_with_frequent_snapshots(
    tmp_path: Path, faults: tuple[FaultKind, ...], seed: int
) -> tuple[ChaosReport, str]:
    """A 3-node run with snapshots every 20 entries, so that nodes catch up by InstallSnapshot: checked
    linearizable, nothing acknowledged lost, every feature invariant held. Returns the report and the logs."""
    config = ChaosConfig(
        out=tmp_path,
        nodes=3,
        duration=RUN_SECONDS,
        faults=faults,
        seed=seed,
        node_args=("--snapshot-entries=20",),
        recovery=3.0,
    )
    report = await run_chaos(config, lambda line: None)
    assert report.check.verdict == "linearizable", report.table()
    assert report.lost == [], report.table()
    assert_features_held(report, report.table())
    logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.log"))
    assert "Traceback" not in logs
    return report, logs


@pytest.mark.slow
async def test_frequent_snapshots_survive_kills_and_partitions(tmp_path: Path) -> None:
    """Restarted and cut-off followers catch up by InstallSnapshot, under faults."""
    faults = (FaultKind.KILL, FaultKind.PARTITION, FaultKind.POWERLOSS)
    _, logs = await run_with_frequent_snapshots(tmp_path, faults, seed=21)
    assert "snapshot at index" in logs


@pytest.mark.slow
async def test_members_replaced_and_added_amid_kills_and_partitions(tmp_path: Path) -> None:
    """Membership changes (a member's disk lost and the member replaced; a spare added, then removed) among
    kills and partitions; new members catch up by snapshot."""
    faults = (FaultKind.MEMBERSHIP, FaultKind.KILL, FaultKind.PARTITION)
    report, logs = await run_with_frequent_snapshots(tmp_path, faults, seed=22)
    assert "membership" in {fault.kind for fault in report.faults}, report.table()
    assert "shipped snapshot" in logs


def test_the_unsafe_reads_seed_isolates_the_leader_first() -> None:
    """Why that seed: the run must hit a partition early, while clients still read from the cut-off node."""
    schedule = plan_faults(
        random.Random(UNSAFE_READS_SEED), ["n1", "n2", "n3"], [FaultKind.PARTITION], NemesisTiming()
    )
    variants = [fault.variant for fault in itertools.islice(schedule, 3)]
    assert variants == ["isolate-leader", "isolate-leader", "majority-minority"]


@pytest.mark.slow
async def test_the_command_flags_a_node_that_serves_reads_without_read_index(tmp_path: Path) -> None:
    """``--unsafe-local-reads`` makes every node answer reads from its own state: a follower, or a leader
    cut off from the majority, serves values that acknowledged writes have overwritten."""
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(TOOLS / "chaos"),
        "--nodes=3",
        "--time=10",
        "--faults=partition",
        f"--seed={UNSAFE_READS_SEED}",
        "--unsafe-local-reads",
        f"--out={out}",
    ]
    finished = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    output = finished.stdout.decode() + finished.stderr.decode()
    assert finished.returncode == EXIT_VIOLATION, output
    assert "verdict                  violation" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "violation"
    assert "cannot be linearized" in summary["explanation"] or "could have written" in summary["explanation"]
    assert sorted(path.name for path in (out / "logs").iterdir()) == ["n1.log", "n2.log", "n3.log"]
    assert (out / "history.jsonl").stat().st_size > 0
    assert json.loads((out / "timeline.json").read_text())["events"]


def test_fault_reports_pair_starts_with_heals_and_find_the_next_leader(tmp_path: Path) -> None:
    leaders = LeaderLog(LocalCluster(tmp_path), origin=0.0)
    leaders.samples = [(0.5, "n1"), (1.2, None), (2.0, None), (2.6, "n2"), (6.0, "n2")]
    timeline = [
        NemesisEvent(1.0, "kill", "kill", ("n1",), "start"),
        NemesisEvent(4.0, "kill", "kill", ("n1",), "heal"),
        NemesisEvent(6.5, "pause", "pause", ("n3",), "start"),
        NemesisEvent(8.0, "pause", "pause", ("n3",), "heal"),
    ]
    history = [
        Op(process=0, kind="write", key="k", value=f"v{i}", call=t - 0.1, ret=t, outcome=Outcome.OK)
        for i, t in enumerate([0.8, 3.0, 3.5, 4.7, 7.0, 8.2])
    ]
    first, second = fault_reports(timeline, history, leaders, end=9.0)
    assert first.leader_at_start == "n1"
    assert first.new_leader_after == pytest.approx(1.6)
    assert first.serving_again == pytest.approx(0.7)
    assert first.ok_per_s_during == pytest.approx(2 / 3.0)
    assert first.ok_per_s_after == pytest.approx(1 / 2.5)
    assert (second.leader_at_start, second.new_leader_after) == ("n2", None)  # the fault missed the leader
    assert second.serving_again == pytest.approx(0.2)
