"""A chaos run: real nodes, a seeded nemesis and concurrent clients at once, then a verdict.

The run: start a LocalCluster, wait for a leader, let the workload and the nemesis run together for the set
time, stop the nemesis (it heals the fault in progress), keep the clients going a few seconds more so the last
heal's recovery is measured, read every key once more, stop the cluster, and check the history. It reports the
linearizability verdict, the acknowledged writes lost, the outcome counts, and per fault the throughput during
and after it, the time until writes were acknowledged again after the heal, and the time to a new leader when
the fault hit the leader. Beside the register clients, the feature clients (``features``) use idempotent
writes, transactions, watches and leases, and their invariants (``checks``) are part of the verdict.
``tools/chaos`` is the command around :func:`run`; tests call :func:`run_chaos`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from raftkv_harness.cluster import LocalCluster
from raftkv_harness.faulty_node import Faults
from raftkv_harness.features.suite import FeatureConfig, FeatureReport, FeatureWorkload
from raftkv_harness.linearizability import CheckResult, Op, check, format_report, history_to_jsonl
from raftkv_harness.nemesis import FaultKind, Nemesis, NemesisEvent, NemesisTiming
from raftkv_harness.workload import (
    OutcomeCounts,
    Workload,
    WorkloadConfig,
    lost_acknowledged_writes,
    ok_ops_between,
    per_second,
    time_to_serve_again,
)

EXIT_OK, EXIT_VIOLATION, EXIT_HARNESS_ERROR = 0, 1, 2
LEADER_POLL_INTERVAL = 0.2
STARTUP_LEADER_TIMEOUT = 30.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    out: Path
    nodes: int = 5
    duration: float = 120.0
    faults: tuple[FaultKind, ...] = tuple(FaultKind)
    seed: int = 0
    node_args: tuple[str, ...] = ()
    unsafe_local_reads: bool = False  # run deliberately broken nodes (see faulty_node), which must fail
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    features: FeatureConfig | None = field(default_factory=FeatureConfig)  # None: the register clients alone
    timing: NemesisTiming = field(default_factory=NemesisTiming)
    recovery: float = 5.0  # the clients keep going this long after the last heal
    progress_interval: float = 5.0


@dataclass(frozen=True)
class FaultReport:
    """One fault and how the cluster coped; times in seconds since the workload started."""

    kind: str
    variant: str
    targets: tuple[str, ...]
    start: float
    heal: float
    leader_at_start: str | None
    ok_per_s_during: float
    ok_per_s_after: float
    serving_again: float | None  # heal -> first acknowledged write after it
    new_leader_after: (
        float | None
    )  # start -> a majority names another leader, if the fault cut the leader off

    @property
    def label(self) -> str:
        return self.kind if self.variant == self.kind else f"{self.kind}/{self.variant}"


@dataclass
class ChaosReport:
    config: ChaosConfig
    check: CheckResult
    counts: OutcomeCounts
    lost: list[Op]
    final_values: dict[str, Any]
    faults: list[FaultReport]
    ops_per_second: list[OutcomeCounts]
    operations: int
    check_seconds: float
    features: FeatureReport | None = None

    @property
    def linearizable(self) -> bool:
        return self.check.verdict == "linearizable"

    @property
    def exit_status(self) -> int:
        if self.check.verdict == "violation" or self.lost or (self.features and not self.features.held):
            return EXIT_VIOLATION
        return EXIT_OK if self.linearizable else EXIT_HARNESS_ERROR

    @property
    def median_serving_again(self) -> float | None:
        """Median over faults; a fault after which no write was acknowledged counts as infinitely slow."""
        times = [inf_if_none(fault.serving_again) for fault in self.faults]
        return statistics.median(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["out"] = str(self.config.out)
        return {
            "config": config,
            "verdict": self.check.verdict,
            "exit_status": self.exit_status,
            "explanation": format_report(self.check),
            "operations": self.operations,
            "outcomes": asdict(self.counts),
            "acknowledged_writes_lost": len(self.lost),
            "lost_writes": [json.loads(history_to_jsonl([op])) for op in self.lost],
            "final_values": self.final_values,
            "median_serving_again": self.median_serving_again,
            "check_seconds": self.check_seconds,
            "features": self.features.to_dict() if self.features else None,
            "faults": [{**asdict(fault), "label": fault.label} for fault in self.faults],
            "ops_per_second": [asdict(bucket) for bucket in self.ops_per_second],
        }

    def table(self) -> str:
        """The human summary printed at the end of a run."""
        config, counts = self.config, self.counts
        serving = [f.serving_again for f in self.faults]
        elections = [f.new_leader_after for f in self.faults if f.new_leader_after is not None]
        lines = [
            f"raftkv chaos: seed {config.seed}, {config.nodes} nodes, {config.duration:g} s, "
            f"faults {','.join(kind.value for kind in config.faults)}, {config.workload.clients} clients on "
            f"{config.workload.keys} keys{' ' + ' '.join(config.node_args) if config.node_args else ''}"
            f"{' with unsafe local reads' if config.unsafe_local_reads else ''}",
            f"verdict                  {self.check.verdict} ({self.operations} operations, "
            f"checked in {self.check_seconds:.1f} s)",
            f"acknowledged writes lost {len(self.lost)}",
            f"operations               ok {counts.ok}  fail {counts.fail}  unknown {counts.unknown}  "
            f"left out {counts.left_out}",
            *(self.features.lines() if self.features else []),
            f"serving again after heal median {seconds(self.median_serving_again)}, "
            f"max {seconds(max(map(inf_if_none, serving), default=None))}",
            f"new leader after a leader fault median "
            f"{seconds(statistics.median(elections) if elections else None)}, {len(elections)} elections",
            "",
            f"{'#':>3} {'start':>7} {'heal':>7}  {'fault':<28} {'targets':<12} {'ok/s during':>11} "
            f"{'ok/s after':>10} {'serving again':>13} {'new leader':>10}",
        ]
        for number, fault in enumerate(self.faults, 1):
            lines.append(
                f"{number:>3} {fault.start:>7.1f} {fault.heal:>7.1f}  {fault.label:<28} "
                f"{','.join(fault.targets):<12} {fault.ok_per_s_during:>11.1f} {fault.ok_per_s_after:>10.1f} "
                f"{seconds(fault.serving_again):>13} {seconds(fault.new_leader_after):>10}"
            )
        if not self.linearizable:
            lines += ["", format_report(self.check)]
        if self.lost:
            lines += ["", "lost acknowledged writes:", history_to_jsonl(self.lost).rstrip()]
        return "\n".join(lines)


def inf_if_none(value: float | None) -> float:
    return float("inf") if value is None else value


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if value == float("inf") else f"{value:.2f} s"


class LeaderLog:
    """Samples which leader a majority names, so faults can be matched with elections."""

    def __init__(self, cluster: LocalCluster, origin: float) -> None:
        self.cluster = cluster
        self.origin = origin
        self.samples: list[tuple[float, str | None]] = []

    async def run(self) -> None:
        while True:
            leader = await self.cluster.leader()
            self.samples.append((trio.current_time() - self.origin, leader))
            await trio.sleep(LEADER_POLL_INTERVAL)

    @property
    def current(self) -> str | None:
        return self.samples[-1][1] if self.samples else None

    def at(self, moment: float) -> str | None:
        """The leader of the last sample taken before ``moment``."""
        before = [leader for sampled, leader in self.samples if sampled < moment]
        return before[-1] if before else None

    def new_leader_after(self, start: float, end: float, old: str) -> float | None:
        """Seconds from ``start`` until a sample before ``end`` names a leader other than ``old``."""
        for sampled, leader in self.samples:
            if start <= sampled < end and leader is not None and leader != old:
                return sampled - start
        return None


def cuts_off_targets(event: NemesisEvent) -> bool:
    """Faults that take their targets away from the others: when one hits the leader, another must be elected.
    (A one-way cut or a slow network may or may not cost the leader its office.)"""
    if event.kind == FaultKind.PARTITION:
        return event.variant != "one-way"
    return event.kind in (FaultKind.KILL, FaultKind.POWERLOSS, FaultKind.PAUSE)


def fault_reports(
    timeline: Sequence[NemesisEvent], history: Sequence[Op], leaders: LeaderLog, end: float
) -> list[FaultReport]:
    """One report per fault of ``timeline`` (its events alternate start, heal); ``end``: the workload's end."""
    starts, heals = timeline[0::2], timeline[1::2]
    next_starts = [event.time for event in starts[1:]] + [end]
    reports = []
    for start, heal, next_start in zip(starts, heals, next_starts, strict=False):
        leader = leaders.at(start.time)
        reports.append(
            FaultReport(
                kind=start.kind,
                variant=start.variant,
                targets=start.targets,
                start=start.time,
                heal=heal.time,
                leader_at_start=leader,
                ok_per_s_during=rate(ok_ops_between(history, start.time, heal.time), heal.time - start.time),
                ok_per_s_after=rate(ok_ops_between(history, heal.time, next_start), next_start - heal.time),
                serving_again=time_to_serve_again(history, heal.time),
                new_leader_after=leaders.new_leader_after(start.time, heal.time, leader)
                if leader is not None and leader in start.targets and cuts_off_targets(start)
                else None,
            )
        )
    return reports


def rate(count: int, interval: float) -> float:
    return count / interval if interval > 0 else 0.0


def print_progress(line: str) -> None:
    print(line, flush=True)


async def run_chaos(config: ChaosConfig, progress: Progress = print_progress) -> ChaosReport:
    """One chaos run; writes history.jsonl, timeline.json, summary.json, features.json (the feature clients'
    records) and logs/ into ``config.out``.

    Raises on harness trouble (a node that does not start, no leader after the faults, a key that stays
    unreadable): a run that cannot finish proves nothing either way."""
    config.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raftkv-chaos-") as workdir:
        async with LocalCluster(
            Path(workdir),
            size=config.nodes,
            seed=config.seed,
            node_args=config.node_args,
            faults=Faults(power_loss=True, unsafe_local_reads=config.unsafe_local_reads),
            spares=1 if FaultKind.MEMBERSHIP in config.faults else 0,
            log_dir=config.out / "logs",
        ) as cluster:
            first = await cluster.wait_for_leader(timeout=STARTUP_LEADER_TIMEOUT)
            progress(f"{config.nodes} nodes up, {first} leads; running for {config.duration:g} s")
            origin = trio.current_time()
            urls = [cluster.client_url(node_id) for node_id in (*cluster.nodes, *cluster.spares)]
            workload = Workload(urls, config.workload, seed=config.seed, origin=origin)
            features = None
            if config.features is not None:
                features = FeatureWorkload(urls, config.features, seed=config.seed, now=workload.now)
                await features.prepare()
            nemesis = Nemesis(
                cluster, seed=config.seed, kinds=config.faults, timing=config.timing, origin=origin
            )
            leaders = LeaderLog(cluster, origin)
            await _run_under_faults(config, workload, features, nemesis, leaders, progress)
            end = workload.now()
            leader = await cluster.wait_for_leader(timeout=STARTUP_LEADER_TIMEOUT)
            progress(f"faults healed, {leader} leads; reading every key")
            final = await workload.final_reads()
    history = workload.history
    (config.out / "history.jsonl").write_text(history_to_jsonl(history))
    timeline = {"events": nemesis.timeline_dicts(), "leaders": leaders.samples}
    (config.out / "timeline.json").write_text(json.dumps(timeline, indent=1))
    if features is not None:
        (config.out / "features.json").write_text(json.dumps(features.records(), default=str))
    progress(f"checking {len(history)} operations")
    started = time.perf_counter()
    result = check(history)
    report = ChaosReport(
        config=config,
        check=result,
        counts=workload.counts,
        lost=lost_acknowledged_writes(history, final),
        final_values={key: op.value for key, op in final.items()},
        faults=fault_reports(nemesis.timeline, history, leaders, end),
        ops_per_second=per_second(history, config.workload.request_timeout),
        operations=len(history),
        check_seconds=time.perf_counter() - started,
        features=features.report() if features else None,
    )
    (config.out / "summary.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    return report


async def _run_under_faults(
    config: ChaosConfig,
    workload: Workload,
    features: FeatureWorkload | None,
    nemesis: Nemesis,
    leaders: LeaderLog,
    progress: Progress,
) -> None:
    """Clients and nemesis together for ``config.duration``; then the clients alone for ``config.recovery``;
    then the feature clients' finish (fence and watchers' catching up)."""
    stop = trio.Event()
    async with trio.open_nursery() as observers:
        observers.start_soon(leaders.run)
        observers.start_soon(_report_progress, config.progress_interval, workload, nemesis, leaders, progress)
        async with trio.open_nursery() as actors:
            actors.start_soon(workload.run, stop)
            if features is not None:
                actors.start_soon(features.run, stop)
            with trio.move_on_after(config.duration):
                await nemesis.run()
            progress(f"[{workload.now():6.1f}s] nemesis stopped; clients go on for {config.recovery:g} s")
            await trio.sleep(config.recovery)
            stop.set()
        observers.cancel_scope.cancel()


async def _report_progress(
    interval: float, workload: Workload, nemesis: Nemesis, leaders: LeaderLog, progress: Progress
) -> None:
    while True:
        await trio.sleep(interval)
        counts = workload.counts
        active = nemesis.timeline[-1] if nemesis.timeline and nemesis.timeline[-1].phase == "start" else None
        fault = f"{active.kind}/{active.variant} on {','.join(active.targets)}" if active else "none"
        progress(
            f"[{workload.now():6.1f}s] ok {counts.ok} fail {counts.fail} unknown {counts.unknown} "
            f"left out {counts.left_out} | leader {leaders.current or '-'} | fault {fault}"
        )


def default_out_dir(seed: int) -> Path:
    return Path("chaos-out") / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"


def run(config: ChaosConfig, progress: Progress = print_progress) -> int:
    """Run, print the summary table, and return the exit status: 0 clean, 1 a violation or a lost
    acknowledged write, 2 a harness error (or a history the checker could not decide)."""
    try:
        report = trio.run(run_chaos, config, progress)
    except Exception:
        progress(f"chaos run failed (harness error):\n{traceback.format_exc()}")
        progress(f"node logs: {config.out / 'logs'}")
        return EXIT_HARNESS_ERROR
    progress(report.table())
    progress(f"output: {config.out}")
    return report.exit_status
