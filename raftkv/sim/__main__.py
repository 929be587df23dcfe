"""``python -m raftkv.sim --seed N --nodes K`` replays one seed; ``--seeds 0:1000`` runs a range;
``--scenario NAME`` runs one scripted scenario (``--scenario all``: every one)."""

from __future__ import annotations

import argparse
import sys
import time

from raftkv.sim.scenarios import SCENARIOS, run_scenario
from raftkv.sim.simulation import SimFailure, SimParams, run_seed


def seed_range(text: str) -> range:
    start, _, stop = text.partition(":")
    return range(int(start), int(stop))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkv.sim", description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run one seed and print what happened")
    which.add_argument("--seeds", type=seed_range, default=range(100), help="a range START:STOP")
    which.add_argument("--scenario", choices=[*SCENARIOS, "all"], help="run scripted scenarios instead")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--fault-ticks", type=int, default=SimParams().fault_ticks)
    args = parser.parse_args(argv)
    if args.scenario is not None:
        return run_scenarios(list(SCENARIOS) if args.scenario == "all" else [args.scenario])
    params = SimParams(fault_ticks=args.fault_ticks)
    seeds = range(args.seed, args.seed + 1) if args.seed is not None else args.seeds
    failures = 0
    started = time.perf_counter()
    for seed in seeds:
        try:
            report = run_seed(seed, args.nodes, params)
        except SimFailure as failure:
            failures += 1
            print(f"FAIL {failure}", file=sys.stderr)
            continue
        if args.seed is not None:
            print(report)
    elapsed = time.perf_counter() - started
    print(f"{len(seeds) - failures}/{len(seeds)} seeds passed with {args.nodes} nodes in {elapsed:.1f}s")
    return 1 if failures else 0


def run_scenarios(names: list[str]) -> int:
    failures = 0
    for name in names:
        try:
            run_scenario(name)
        except SimFailure as failure:
            failures += 1
            print(f"FAIL {failure}", file=sys.stderr)
    print(f"{len(names) - failures}/{len(names)} scenarios passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
