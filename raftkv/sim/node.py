"""One simulated server: the real Raft core, a durable store, and a state machine, driven like the real node."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

from raftkv.raft.core import Config, Raft, bootstrap
from raftkv.raft.membership import Membership
from raftkv.raft.types import AnyMessage, ReadState, Ready, Snapshot
from raftkv.sim.checker import SafetyChecker
from raftkv.sim.machine import DigestMachine
from raftkv.storage.memory import MemoryStorage

Send = Callable[[AnyMessage], None]


class SimNode:
    """A crash drops ``raft`` and ``machine`` (everything volatile); the store survives for the restart."""

    def __init__(
        self, config: Config, seed: str, checker: SafetyChecker, send: Send, founding: Membership | None
    ) -> None:
        """``founding``: the first configuration of the cluster, for its founding members; a server that is to
        join later starts from an empty store and learns the configuration from the leader."""
        self.id = config.id
        self.config = config
        self.seed = seed
        self.checker = checker
        self.send = send
        self.store = MemoryStorage()
        if founding is not None:
            state = bootstrap(founding)
            self.store.save(state.hard_state, state.entries, state.snapshot)
        self.incarnation = 0
        # A slow disk leaves each Ready that must reach the disk pending until ``finish_persist`` (the
        # simulation calls it at random later): meanwhile messages arrive and step the core, as they do while
        # the node fsyncs.
        self.slow_disk = False
        self.pending: Ready | None = None
        self.raft: Raft | None = None
        self.machine = DigestMachine()
        self.answered_reads: list[ReadState] = []
        self.restart()

    @property
    def up(self) -> bool:
        return self.raft is not None

    def crash(self) -> None:
        self.raft = None
        self.pending = None  # a persist in flight is lost
        self.machine = DigestMachine()

    def restart(self) -> None:
        """Rebuild the core and the state machine from the store alone (with a fresh election jitter)."""
        state = self.store.load()
        self.pending = None  # a restart, like a crash, loses a persist in flight
        self.incarnation += 1
        self.raft = Raft(self.config, state, random.Random(f"{self.seed}/{self.id}/{self.incarnation}"))
        if state.snapshot is not None and state.snapshot.index > 0:
            self.machine = self.checker.on_restore(
                self.id, state.snapshot, self.store.open_snapshot(state.snapshot)
            )
        self.checker.on_restart(self.id, self.raft, state.hard_state.commit)
        self.process()

    def process(self) -> None:
        """Carry out Readys in the contract's order: send the eager messages, persist, send the rest, apply.
        One Ready at a time, as the node's driver does: none is taken while a persist is pending."""
        while self.pending is None:
            raft = self.raft
            assert raft is not None
            ready = self.pending = raft.ready()
            for message in ready.eager_messages:
                self.send(message)
            waits = self.slow_disk and self.store.needs_disk(ready.hard_state, ready.entries, ready.snapshot)
            if waits or not self.finish_persist():
                return

    def finish_persist(self) -> bool:
        """Complete the pending Ready; True when that gave the core more to do (a leader's commit)."""
        raft, ready = self.raft, self.pending
        assert raft is not None and ready is not None
        self.pending = None
        more = False
        if ready.hard_state is not None or ready.entries or ready.snapshot is not None:
            self.store.save(ready.hard_state, ready.entries, ready.snapshot)
            self.checker.on_persist(self.id, raft, ready.hard_state, ready.entries, self.store.term_at)
            more = bool(ready.entries or ready.snapshot) and raft.persisted()
        for message in ready.messages:
            self.checker.on_send(message)
            self.send(message)
        if ready.snapshot is not None:
            self.machine = self.checker.on_restore(
                self.id, ready.snapshot, self.store.open_snapshot(ready.snapshot)
            )
        for entry in ready.committed:
            self.checker.on_apply(self.id, self.machine, entry)
        for read in ready.read_states:
            self.checker.on_read_state(self.id, read)
            self.answered_reads.append(read)
        return more

    def compact(self) -> None:
        """Snapshot the state machine at its applied index, as an operator's periodic compaction would."""
        raft = self.raft
        assert raft is not None
        if self.machine.applied_index > raft.log.snapshot_index:
            snapshot = raft.snapshot_at(self.machine.applied_index)
            self.store.write_snapshot(snapshot, self.machine.snapshot())
            raft.compact(snapshot)
            self.store.save(None, [], snapshot)

    def receive_snapshot_data(self, snapshot: Snapshot, data: bytes) -> None:
        """What the transport does before it sends an InstallSnapshot: ship the data (here, all at once)."""
        self.store.receive_snapshot(snapshot.index, snapshot.term, len(data), zlib.crc32(data)).write(0, data)

    def holds_snapshot_data(self, snapshot: Snapshot) -> bool:
        return self.store.snapshot_data(snapshot) is not None
