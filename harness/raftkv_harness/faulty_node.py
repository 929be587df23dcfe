"""``python -m raftkv_harness.faulty_node [FAULT ...] serve ...``: a real node, with faults only a test may
want. They live here, outside the product, so no setting can turn them on by accident.

- ``--power-loss``: SIGUSR1 cuts the node's files back to what was fsynced (perhaps leaving a torn tail) and
  exits at once with status 137, as a power cut would; ``kill -9`` alone never loses what the kernel holds.
- ``--unsafe-local-reads``: linearizable reads skip the ReadIndex round and read the local state, a
  deliberately broken node whose stale reads the chaos suite's checker must catch.
- ``--crash-on-marked-entry``: the core raises, as a broken invariant would, when the node steps an
  AppendEntries carrying an entry that contains ``crash:<its id>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from raftkv import cli
from raftkv.node import RaftNode
from raftkv.raft.core import Raft
from raftkv.raft.types import AnyMessage, AppendEntries
from raftkv.storage import FileStorage

POWER_LOSS_EXIT = 137  # what a shell reports for a process killed by SIGKILL, which a power cut resembles


def arm_power_loss() -> None:
    """Remember the node's storage as it opens, and cut the power under it on SIGUSR1. The handler runs in
    the main thread (Trio's), and OsDisk's lock makes it wait for a save in flight in a worker thread."""
    opened: list[FileStorage] = []
    original_init = FileStorage.__init__

    def remember(self: FileStorage, data_dir: Path, **options: Any) -> None:
        original_init(self, data_dir, **options)
        opened.append(self)

    def cut_power(signum: int, frame: FrameType | None) -> None:
        for storage in opened:
            storage.simulate_power_loss(random.Random())
        os._exit(POWER_LOSS_EXIT)

    FileStorage.__init__ = remember  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, cut_power)


def break_reads() -> None:
    async def no_barrier(self: RaftNode[Any], *, lease: bool = False) -> None:
        return None

    RaftNode.read_barrier = no_barrier  # type: ignore[method-assign]


def crash_on_marked_entry(node_id: str) -> None:
    marker = f"crash:{node_id}".encode()
    step = Raft.step

    def step_or_crash(self: Raft, message: AnyMessage) -> None:
        if isinstance(message, AppendEntries) and any(marker in (e.data or b"") for e in message.entries):
            raise AssertionError(f"injected broken invariant: {marker.decode()} reached the core")
        step(self, message)

    Raft.step = step_or_crash  # type: ignore[method-assign,assignment]


@dataclass(frozen=True)
class Faults:
    """Which faults a node is armed with; each field is the flag of the same name."""

    power_loss: bool = False
    unsafe_local_reads: bool = False
    crash_on_marked_entry: bool = False

    def launcher(self) -> list[str]:
        """The prefix of a node's command line that runs it through this module with these faults."""
        flags = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self) if getattr(self, f.name)]
        return [sys.executable, "-m", "raftkv_harness.faulty_node", *flags]


POWER_LOSS_ONLY = Faults(power_loss=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m raftkv_harness.faulty_node", description=__doc__)
    for field in dataclasses.fields(Faults):
        parser.add_argument(f"--{field.name.replace('_', '-')}", action="store_true")
    faults, raftkv_args = parser.parse_known_args(argv)
    if faults.power_loss:
        arm_power_loss()
    if faults.unsafe_local_reads:
        break_reads()
    if faults.crash_on_marked_entry:
        crash_on_marked_entry(raftkv_args[raftkv_args.index("--id") + 1])
    cli.main(raftkv_args)


if __name__ == "__main__":
    main(sys.argv[1:])
