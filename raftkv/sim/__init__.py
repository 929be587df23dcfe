"""A deterministic simulator that drives many instances of the real Raft core and checks Raft's safety."""

from raftkv.sim.checker import SafetyChecker, SafetyViolation
from raftkv.sim.cluster import Cluster
from raftkv.sim.scenarios import SCENARIOS, run_scenario
from raftkv.sim.simulation import (
    SimFailure,
    SimParams,
    SimReport,
    Simulation,
    ci_seeds,
    replay_command,
    run_seed,
)

__all__ = [
    "SCENARIOS",
    "Cluster",
    "SafetyChecker",
    "SafetyViolation",
    "SimFailure",
    "SimParams",
    "SimReport",
    "Simulation",
    "ci_seeds",
    "replay_command",
    "run_scenario",
    "run_seed",
]
