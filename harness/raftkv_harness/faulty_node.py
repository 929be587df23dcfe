"""``python -m raftkv_harness.faulty_node [--power-loss] [--unsafe-local-reads] serve ...``: a real node, with
faults only a test may want. They live here, outside the product, so no setting can turn them on by accident.

- ``--power-loss``: SIGUSR1 cuts the node's files back to what was fsynced (perhaps leaving a torn tail) and
  exits at once with status 137, as a power cut would; ``kill -9`` alone never loses what the kernel holds.
- ``--unsafe-local-reads``: linearizable reads skip the ReadIndex round and read the local state, a
  deliberately broken node whose stale reads the chaos suite's checker must catch.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from raftkv import cli
from raftkv.node import RaftNode
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
    async def no_barrier(self: RaftNode[Any]) -> None:
        return None

    RaftNode.read_barrier = no_barrier  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m raftkv_harness.faulty_node", description=__doc__)
    parser.add_argument("--power-loss", action="store_true")
    parser.add_argument("--unsafe-local-reads", action="store_true")
    faults, raftkv_args = parser.parse_known_args(argv)
    if faults.power_loss:
        arm_power_loss()
    if faults.unsafe_local_reads:
        break_reads()
    cli.main(raftkv_args)


def launcher(*, power_loss: bool, unsafe_local_reads: bool) -> list[str]:
    """The prefix of a node's command line that runs it through this module with the faults asked for."""
    flags = ["--power-loss"] * power_loss + ["--unsafe-local-reads"] * unsafe_local_reads
    return [sys.executable, "-m", "raftkv_harness.faulty_node", *flags]


if __name__ == "__main__":
    main(sys.argv[1:])
