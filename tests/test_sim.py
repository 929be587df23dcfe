"""The deterministic simulator over the CI seed budget: 600 three-node and 400 five-node clusters under faults
and membership changes, plus the scripted scenarios."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftkv.sim import SCENARIOS, SimFailure, ci_seeds, run_scenario, run_seed
from raftkv.sim.__main__ import main

CHUNK = 50
SEEDS = ci_seeds()


@pytest.mark.parametrize("start", range(0, len(SEEDS), CHUNK), ids=lambda start: f"runs{start}")
def test_simulator_seeds_keep_raft_safe_and_live(start: int) -> None:
    failures = []
    for seed, nodes in SEEDS[start : start + CHUNK]:
        try:
            run_seed(seed, nodes)
        except SimFailure as failure:
            failures.append(str(failure))
    assert not failures, "\n\n".join(failures)


def test_ci_budget_covers_both_cluster_sizes() -> None:
    sizes = [nodes for _, nodes in SEEDS]
    assert (sizes.count(3), sizes.count(5)) == (600, 400)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scripted_scenarios_keep_raft_safe(name: str) -> None:
    run_scenario(name)


def test_a_seed_replays_identically() -> None:
    assert run_seed(7, 5) == run_seed(7, 5)


def test_a_seed_replays_identically_in_another_process() -> None:
    """Nothing may depend on the order of a set of strings, which changes with each process's hash seed. (The
    report is compared, not the summary line after it, which says how long the run took.)"""
    command = [sys.executable, "-m", "raftkv.sim", "--seed", "7", "--nodes", "5"]
    runs = {
        subprocess.run(
            command,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[0]
        for hash_seed in ("1", "2", "3")
    }
    assert len(runs) == 1, runs


def test_seeds_exercise_every_fault() -> None:
    reports = [run_seed(seed, 3) for seed in range(40)]
    for field in ("crashes", "partitions", "snapshots_sent", "reads", "transfers", "membership_changes"):
        assert sum(getattr(report, field) for report in reports) > 0, field
    assert max(report.terms for report in reports) >= 5


def test_command_line_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--nodes", "3"]) == 0
    assert "1/1 seeds passed" in capsys.readouterr().out
