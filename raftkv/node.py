"""The Trio runtime of one node: it drives the sans-IO core with real time, storage and peers.

``RaftNode.run`` opens one nursery that owns every task of the node:

- the *ticker* feeds the sans-IO core a tick at each deadline (``trio.sleep_until``, no polling);
- the *driver* turns each ``Ready`` batch into effects in the order Raft demands: a leader's AppendEntries
  to the transport at once, then persist (fsync, in a worker thread so the loop never stalls), then the other
  messages to the transport, then committed entries to ...
- the *apply loop*, which applies them to the state machine in order, answers the clients waiting on them,
  releases linearizable reads and takes snapshots;
- the transport's tasks (see ``transport.py``), which reach whoever the configuration names.

Client calls (``write``, ``read_barrier``, ``change_membership``) and Raft messages from peers only touch the
core and wake the driver, so everything that arrives while one batch is being fsynced shares the next batch:
group commit for free. Storage is one caller at a time (``_storage_lock``), in a worker thread whenever the
call waits for the disk.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

import trio

from raftkv.backup import BackupHeader, write_data
from raftkv.config import NodeConfig
from raftkv.forwarding import Forward, Forwarder, ForwardReply, PeerMessage
from raftkv.machine import StateMachine
from raftkv.metrics import NodeMetrics, NodeState
from raftkv.raft.core import Config, MembershipChangeRefused, NotLeader, Raft, bootstrap
from raftkv.raft.membership import Membership
from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    NodeId,
    ReadState,
    Role,
    Snapshot,
)
from raftkv.storage import Storage
from raftkv.trace import StageClock
from raftkv.traffic import Traffic

log = logging.getLogger(__name__)

APPLY_BACKLOG = 1024
"""Ready batches the driver may hand the apply loop ahead of it; beyond that the driver waits, which slows
intake to the pace of applying rather than queueing without bound."""
READY_PATIENCE = 1.0
"""Seconds /readyz waits for entries already committed to be applied: longer than a busy apply loop needs,
shorter than a probe's timeout."""

RunBlocking = Callable[..., Awaitable[Any]]
"""How the node runs blocking disk and CPU work: in a worker thread (``trio.to_thread.run_sync``); tests on a
mock clock run it inline so virtual time cannot move while it runs."""


class MessageTransport(Protocol):
    """How the node reaches its peers (``transport.Transport`` over HTTP; tests wire nodes in memory)."""

    on_unreachable: Callable[[str], None]  # set by the node: called when a message could not be delivered
    snapshots: (
        Callable[[Snapshot], Awaitable[tuple[BinaryIO, int, int]]] | None
    )  # set by the node: data to ship

    def set_routes(self, routes: dict[NodeId, str]) -> None:
        """Send to exactly these peers from now on (id -> how to reach it); called when the membership changes."""

    def send(self, message: PeerMessage) -> None:
        """Queue ``message`` for ``message.dst`` without blocking (dropping it is allowed). An InstallSnapshot
        goes out only after the transport has shipped the snapshot's data to its destination."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued messages until cancelled."""


class Unavailable(Exception):
    """No leader, no quorum, or no answer in time: the client should retry (HTTP 503)."""


class NodeStopped(Exception):
    """The node hit a broken invariant (an exception from the core, the storage or the state machine) and
    stops, as etcd panics: carrying on with a half-updated core could break safety. The cause is chained."""


@dataclass(slots=True, eq=False)
class _Waiter:
    """A client waiting for its proposal (or read) to take effect; a proposal's entry is at (index, term)
    once placed (a forwarded write is placed when the leader answers)."""

    term: int = 0
    index: int | None = None
    trace: StageClock | None = None
    started: float = field(default_factory=time.perf_counter)
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: str | None = None

    def finish(self, result: object = None, error: str | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass(frozen=True, slots=True)
class _ApplyWork:
    """What one Ready hands the apply loop, to be done in this order."""

    snapshot: Snapshot | None
    entries: list[Entry]
    read_states: list[ReadState]


M = TypeVar("M", bound=StateMachine)


class RaftNode(Generic[M]):
    """One replica of the state machine ``new_machine`` builds (fresh, or to restore a snapshot into)."""

    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        transport: MessageTransport,
        rng: random.Random,
        new_machine: Callable[[], M],
        run_blocking: RunBlocking = trio.to_thread.run_sync,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.transport = transport
        self.new_machine = new_machine
        self._run_blocking = run_blocking
        state = storage.load()
        if state.snapshot is None and not state.entries and config.founders:
            # A fresh data directory of a founding member: its first configuration comes from the flags.
            state = bootstrap(Membership.of(config.founders, config.founders))
            storage.save(state.hard_state, state.entries, state.snapshot)
        self._initial_snapshot = state.snapshot
        self.machine = new_machine()
        core_config = Config(
            id=config.id,
            election_ticks=config.election_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            max_inflight=config.max_inflight,
        )
        self.core = Raft(core_config, state, rng)
        self._routed: tuple[Membership, NodeId | None] = (self.core.membership, self.core.leader_id)
        self._known = dict(self.core.membership.addresses)  # every address any configuration gave, kept
        self._wakeup = trio.Event()
        self._changed = trio.Event()
        self._applied_more = trio.Event()
        self._failure: BaseException | None = None
        self._failed = trio.Event()
        self._storage_lock = trio.Lock()
        self._proposals: dict[int, _Waiter] = {}
        self._traced: dict[int, StageClock] = {}  # proposals whose client asked for X-Raft-Trace, by index
        self._reads: list[tuple[int, _Waiter]] = []  # waiting for the apply loop to reach an index
        self._apply_send, self._apply_recv = trio.open_memory_channel[_ApplyWork](APPLY_BACKLOG)
        self.traffic = Traffic()  # peer messages sent and received, for the dashboard
        self.cut_off: frozenset[NodeId] = frozenset()  # peers whose messages are dropped both ways
        self._forwarder = Forwarder(
            config.id, rng, self._forward_target, self._send, self._placed_by_leader, self._refused
        )
        self.metrics = metrics or NodeMetrics()
        self.metrics.observe_state(self._metric_state)

    # --- who is where ----------------------------------------------------------------------------------

    def route(self, node: NodeId) -> str | None:
        """How this node reaches ``node``: a ``--peer`` flag wins (a local proxy or sidecar), else the
        address the membership records; this node's own is its advertised URL."""
        if node == self.config.id:
            return self.config.advertised_url
        return self.config.peers.get(node) or self.core.membership.address(node) or self._known.get(node)

    def learn_routes(self, members: dict[NodeId, str]) -> None:
        """Where the members of the cluster this node just joined are: until the log it receives names them,
        this is how its answers reach the leader that replicates to it."""
        self._known.update(members)
        self.transport.set_routes(self._routes())

    @property
    def leader(self) -> tuple[str, str] | None:
        """(id, url) of the leader this node knows of."""
        leader = self.core.leader_id
        url = None if leader is None else self.route(leader)
        return (leader, url) if leader is not None and url is not None else None

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    def members(self) -> list[dict[str, object]]:
        """The configuration this node acts on, member by member (voters of either half count as voters)."""
        membership = self.core.membership
        return [
            {"id": node, "url": self.route(node) or "", "voter": membership.is_voter(node)}
            for node in sorted(membership.members)
        ]

    # --- what the HTTP layer calls ---------------------------------------------------------------------

    def deliver(self, *messages: PeerMessage) -> None:
        """Messages from a peer, in order (replies travel on their own). An InstallSnapshot whose data has not
        arrived in full is dropped: the core must not take a snapshot the storage cannot restore (the leader
        sends it again). Forwarded writes, and the answers to ours, are the node's business, not the core's. A
        message from a peer in ``cut_off`` is dropped, as a partition would."""
        for message in messages:
            if message.src in self.cut_off:
                continue
            self.traffic.received(message)
            if isinstance(message, Forward):
                self._serve_forward(message)
                continue
            if isinstance(message, ForwardReply):
                self._forwarder.answer(message)
                continue
            if isinstance(message, InstallSnapshot) and self.storage.snapshot_data(message.snapshot) is None:
                log.warning("dropped a snapshot from %s whose data has not arrived", message.src)
                continue
            if self._traced and isinstance(message, AppendEntriesReply) and message.success:
                self._mark_traced("acked", message.match_index)
            with self._invariant(f"stepping {message!r:.500}"):
                self.core.step(message)
        self._wake()

    async def write(self, command: bytes, trace: StageClock | None = None) -> object:
        """Replicate an encoded command and return the state machine's outcome once applied here. On a
        follower the command goes to the leader over the peer channel (``raftkv.forwarding``) and the outcome
        is this node's own, once it has applied the entry. ``trace`` is marked at each stage the entry passes
        (see ``raftkv.trace``).

        Raises NotLeader (no leader is known, or leadership is being handed over) or Unavailable."""
        waiter = _Waiter(trace=trace)
        with self._counted(waiter):
            with self._invariant(f"proposing {command!r:.200}"):
                try:
                    index, term = self.core.propose(command)
                except NotLeader as e:
                    if self._forward_target() is None or e.leader is None:
                        raise
                    index = term = 0
            if index:
                self._place(waiter, index, term, "proposed")
            else:
                if trace is not None:
                    trace.mark("forwarded")
                self._forwarder.submit(command, waiter)
            return await self._applied(waiter, "the write was not committed in time (it may still be)")

    async def change_membership(self, target: Membership) -> Membership:
        """Make ``target`` the configuration, returning once it is committed -- for a joint configuration,
        once the leader has left it for the new one. Raises NotLeader, Unavailable or MembershipChangeRefused."""
        with self._invariant(f"changing the membership to {target}"):
            index, term = self.core.change_membership(target)
        waiter = _Waiter()
        self._place(waiter, index, term)
        await self._applied(waiter, "the membership change was not committed in time (it may still be)")
        if target.joint:
            await self._until(
                lambda: (
                    not self.core.membership.joint
                    and self.core.log.committed >= self.core.log.last_config_index
                ),
                "the joint configuration was not left in time (the leader goes on with it)",
            )
        return self.core.membership

    def caught_up(self, node: NodeId) -> bool:
        """Whether the leader knows ``node`` holds its log to within one batch (what promotion needs)."""
        progress = self.core.progress.get(node)
        batch = self.core.config.max_batch_entries
        return progress is not None and progress.match + batch >= self.core.log.last_index

    async def transfer_leadership(self, target: NodeId | None = None) -> NodeId:
        """Hand leadership to ``target`` (default: the most caught-up voter) and return once it leads.
        Raises NotLeader, Unavailable, or ValueError for a target that is not a voting peer."""
        chosen = self._start_transfer(target)
        await self._until(lambda: self.core.leader_id == chosen, f"{chosen} did not take over in time")
        return chosen

    async def hand_over(self) -> None:
        """Before a leader stops (SIGTERM): hand leadership to the most caught-up voter and wait for it to lead,
        so clients see no election timeout. The wait ends early once the transfer is over without it: the
        core gives a transfer up within an election timeout (the successor may be stopping too, as when a
        whole cluster stops), or the leadership ended otherwise. Only a campaign of the successor that we voted
        for may still win, so only that is waited for. A follower, or a lone voter, has nothing to hand over."""
        if not self.is_leader or self._successor() is None:
            return
        chosen = self._start_transfer(None)

        def settled() -> bool:
            core = self.core
            return core.leader_id == chosen or (core.transfer_target != chosen and core.vote != chosen)

        with contextlib.suppress(Unavailable):
            await self._until(settled, f"{chosen} did not take over in time")
        if self.core.leader_id == chosen:
            log.info("handed leadership to %s before stopping", chosen)
        else:
            log.warning("%s did not take over (it may be stopping too); stopping without a handover", chosen)

    def _start_transfer(self, target: NodeId | None) -> NodeId:
        """Ask the core to hand leadership to ``target`` (default: the most caught-up voter); its id."""
        chosen = target or self._successor()
        if chosen is None:
            raise ValueError("there is no other voter to hand leadership to")
        if not self.is_leader:
            raise NotLeader(self.core.leader_id)
        if chosen not in self.core.progress or not self.core.membership.is_voter(chosen):
            raise ValueError(f"{chosen!r} is not a voting peer")
        with self._invariant(f"transferring leadership to {chosen}"):
            self.core.transfer_leadership(chosen)
        self._wake()
        return chosen

    async def read_barrier(self, *, lease: bool = False) -> None:
        """Return once a read of the local state is linearizable: ReadIndex (thesis §6.4) on the leader, or
        asked of the leader by a follower (§6.4.1), then applied here up to that index. ``lease``: on the
        leader, without a round of messages while its lease holds. Raises NotLeader (no leader known; or a
        lease read asked of a follower) or Unavailable."""
        waiter = _Waiter()
        with self._invariant("asking for a read index"):
            if lease:
                self.core.lease_read_index(waiter)
            else:
                self.core.read_index(waiter)
        self._wake()
        await self._wait(waiter, "no quorum confirmed the leadership in time")

    async def receive_snapshot_chunk(
        self, index: int, term: int, size: int, crc: int, offset: int, chunk: bytes
    ) -> tuple[int, bool]:
        """Store one chunk of a leader's snapshot data; returns (the offset held now, whether it is whole).
        The matching InstallSnapshot follows once it is whole."""

        def store() -> tuple[int, bool]:
            receiver = self.storage.receive_snapshot(index, term, size, crc)
            held = receiver.write(offset, chunk)
            return held, receiver.complete

        async with self._storage_lock:
            result: tuple[int, bool] = await self._run_blocking(store)
        return result

    async def open_snapshot_data(self, snapshot: Snapshot) -> tuple[BinaryIO, int, int]:
        """The data of ``snapshot`` to ship to a follower: (file, size, CRC-32); the caller closes the file."""

        def open_data() -> tuple[BinaryIO, int, int]:
            held = self.storage.snapshot_data(snapshot)
            if held is None:
                raise FileNotFoundError(f"no data for snapshot {snapshot.index} (a newer one replaced it)")
            return self.storage.open_snapshot(snapshot), *held

        async with self._storage_lock:
            result: tuple[BinaryIO, int, int] = await self._run_blocking(open_data)
        return result

    async def backup(self) -> tuple[BackupHeader, Path]:
        """A consistent point-in-time copy of the state machine, as of a linearizable read: its header and a
        file of its data in the data directory, which the caller streams and then removes (a crash leaves a
        ``.tmp`` that the storage removes on start). Raises NotLeader or Unavailable."""
        await self.read_barrier()
        snapshot = self.core.snapshot_at(self.machine.applied_index)
        writer = self.machine.snapshot()
        path = self.config.data_dir / f"backup-{snapshot.index}-{random.getrandbits(32):08x}.tmp"
        with self.metrics.snapshot_seconds.labels(operation="backup").time():
            size, crc = await self._run_blocking(write_data, path, writer)
        return BackupHeader(snapshot, size, crc), path

    def status(self) -> dict[str, object]:
        leader = self.leader
        return {
            "id": self.config.id,
            "role": self.core.role.value,
            "term": self.core.term,
            "leader": {"id": leader[0], "url": leader[1]} if leader else None,
            "commit_index": self.core.log.committed,
            "last_applied": self.machine.applied_index,
            "last_log_index": self.core.log.last_index,
            "snapshot_index": self.core.log.snapshot_index,
            "members": self.members(),
            "insecure": self.config.insecure and self.config.cluster_token is None,
        }

    async def changed(self) -> None:
        """Return once the node has next handled a tick, a message or a call (its state may have changed)."""
        await self._changed.wait()

    async def next_apply(self) -> None:
        """Return once the state machine has next applied entries (or been restored from a snapshot)."""
        await self._applied_more.wait()

    async def wait_applied(self, index: int) -> None:
        """Return once the store has applied the log up to ``index``."""
        waiter = _Waiter()
        self._reads.append((index, waiter))
        self._release_reads()
        await waiter.done.wait()

    async def ready_to_serve(self, patience: float = READY_PATIENCE) -> bool:
        """Knows a leader and has applied everything it knew to be committed when asked. Entries on their
        way through the apply loop get ``patience`` seconds; a node replaying a long log gets a no."""
        if self.leader is None:
            return False
        with trio.move_on_after(patience):
            await self.wait_applied(self.core.log.committed)
            return True
        return False

    # --- the tasks -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; every task of the node lives in this nursery."""
        if self._initial_snapshot is not None and self._initial_snapshot.index > 0:
            await self._restore(self._initial_snapshot, "restore")
        async with trio.open_nursery() as nursery:
            self.transport.on_unreachable = self._peer_unreachable
            self.transport.snapshots = self.open_snapshot_data
            self.transport.set_routes(self._routes())
            await nursery.start(self.transport.run)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._driver)
            nursery.start_soon(self._apply_loop)
            nursery.start_soon(self._stop_on_failure)
            self._wake()
            task_status.started()

    async def _stop_on_failure(self) -> None:
        """A failure seen outside the node's own tasks (in a request handler) ends the nursery from here."""
        await self._failed.wait()
        raise NodeStopped(f"node {self.config.id} stopped on a broken invariant") from self._failure

    @contextlib.contextmanager
    def _invariant(self, doing: str) -> Iterator[None]:
        """Calls into the core outside the node's tasks: an exception other than the refusals the core is
        built to give is a broken invariant, which stops the whole node (the caller sees NodeStopped, never a
        half-updated core)."""
        if self._failure is not None:
            raise NodeStopped(f"node {self.config.id} has stopped") from self._failure
        try:
            yield
        except (NotLeader, MembershipChangeRefused):
            raise
        except Exception as e:
            e.add_note(f"node {self.config.id} was {doing}")
            log.critical("broken invariant while %s: the node stops", doing, exc_info=e)
            self._failure = e
            self._failed.set()
            raise NodeStopped(f"node {self.config.id} stopped on a broken invariant") from e

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        deadline = trio.current_time()
        while True:
            # After a stall (a paused process, a stalled loop) resume the beat instead of replaying missed
            # ticks in a burst, which would fire every election timeout at once.
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)
            self.core.tick()
            self._wake()

    async def _driver(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._changed.set()
            self._changed = trio.Event()
            if self.core.read_round_requested:  # this Ready's heartbeats confirm the leadership for reads
                self.metrics.read_index_rounds.inc()
            ready = self.core.ready()
            if not ready:
                continue
            self._follow_routes()
            self._send_all(ready.eager_messages)  # a leader's AppendEntries: its fsync and theirs overlap
            if ready.hard_state or ready.entries or ready.snapshot:
                async with self._storage_lock:
                    try:
                        if self.storage.needs_disk(ready.hard_state, ready.entries, ready.snapshot):
                            await self._run_blocking(
                                self.storage.save, ready.hard_state, ready.entries, ready.snapshot
                            )
                        else:  # only the commit index moved: no disk work, so no trip to a worker thread
                            self.storage.save(ready.hard_state, ready.entries, ready.snapshot)
                    except Exception as e:
                        first = ready.entries[0].index if ready.entries else None
                        e.add_note(
                            f"node {self.config.id} was saving {len(ready.entries)} entries from {first}, "
                            f"hard state {ready.hard_state}, snapshot {ready.snapshot}"
                        )
                        raise
                if (ready.entries or ready.snapshot) and self.core.persisted():
                    self._wake()  # the leader's own copy completed a quorum: the next Ready commits
                if self._traced and ready.entries:
                    self._mark_traced("persisted", ready.entries[-1].index)
            self._send_all(ready.messages)
            if self._traced and ready.committed:
                self._mark_traced("committed", ready.committed[-1].index)
            self._observe_commits(ready.committed)
            if ready.snapshot or ready.committed:
                await self._apply_send.send(_ApplyWork(ready.snapshot, ready.committed, ready.read_states))
            elif ready.read_states:
                await self._hand_out_reads(ready.read_states)

    def _follow_routes(self) -> None:
        """Point the transport and the forwarder at the current members and leader, before anything is sent."""
        if (self.core.membership, self.core.leader_id) == self._routed:
            return
        if self.core.leader_id not in (None, self._routed[1]):
            self.metrics.leader_changes.inc()
        if self.core.leader_id != self._routed[1]:
            self._forwarder.leader_changed()
        if self.core.membership != self._routed[0]:
            self._known.update(self.core.membership.addresses)
            log.info("membership: %s", self.members())
        self._routed = (self.core.membership, self.core.leader_id)
        self.transport.set_routes(self._routes())

    def _send_all(self, messages: list[AnyMessage]) -> None:
        for message in messages:
            if self._traced and isinstance(message, AppendEntries) and message.entries:
                self._mark_traced("sent", message.entries[-1].index)
            self._send(message)

    async def _apply_loop(self) -> None:
        async for work in self._apply_recv:
            if work.snapshot:
                await self._restore(work.snapshot, "install")
                self._fail_proposals_up_to(work.snapshot.index)
            self._apply_entries(work.entries)
            if self._traced and work.entries:
                self._mark_traced("applied", work.entries[-1].index)
            self._confirm_reads(work.read_states)
            self._release_reads()
            if work.entries or work.snapshot:
                self._applied_more.set()
                self._applied_more = trio.Event()
            await self._maybe_snapshot()

    async def _hand_out_reads(self, states: list[ReadState]) -> None:
        """Read states with nothing to apply before them: released here when the apply loop is idle with
        nothing queued (it would do just this, one task switch later -- a read's largest cost on a quiet
        node), else queued behind the work it has."""
        queue = self._apply_recv.statistics()
        if queue.current_buffer_used == 0 and queue.tasks_waiting_receive:
            self._confirm_reads(states)
            self._release_reads()
        else:
            await self._apply_send.send(_ApplyWork(None, [], states))

    # --- apply-side helpers ----------------------------------------------------------------------------

    def _apply_entries(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.index <= self.machine.applied_index:
                continue  # covered by a snapshot restored meanwhile
            try:
                result = self.machine.apply(entry.index, entry.command)
            except Exception as e:
                e.add_note(
                    f"node {self.config.id} was applying entry {entry.index} (term {entry.term}): "
                    f"{entry.data!r:.500}"
                )
                raise
            waiter = self._proposals.get(entry.index)
            if waiter is None:
                continue
            if waiter.term == entry.term:  # the same index and term: the very entry that was proposed
                waiter.finish(result)
            else:
                waiter.finish(error="leadership changed before the write committed; it was not applied")

    async def _restore(self, snapshot: Snapshot, operation: str) -> None:
        """Rebuild the machine from a snapshot in a worker thread (a large one takes seconds), then swap it in:
        readers keep seeing the old state until the new one is whole. The storage is locked only to open the
        data: the driver must go on saving and answering meanwhile, or a leader that has just promoted this
        node would miss its quorum for the length of the restore. (An open file stays readable even if a
        newer snapshot replaces it.) ``operation`` names the work for the metrics: restore or install."""
        started = time.perf_counter()
        machine = self.new_machine()
        async with self._storage_lock:
            data: BinaryIO = await self._run_blocking(self.storage.open_snapshot, snapshot)
        with data:
            await self._run_blocking(machine.restore, data)
        self.machine = machine
        self.metrics.snapshot_seconds.labels(operation=operation).observe(time.perf_counter() - started)
        self._observe_snapshot_size(snapshot)
        log.info("restored the state machine from the snapshot at index %d", snapshot.index)

    def _fail_proposals_up_to(self, index: int) -> None:
        for proposed_at, waiter in list(self._proposals.items()):
            if proposed_at <= index:
                waiter.finish(error="the outcome of the write is unknown (replaced by a snapshot): retry")

    def _confirm_reads(self, states: list[ReadState]) -> None:
        for state in states:
            assert isinstance(state.ctx, _Waiter)
            if state.index is None:
                state.ctx.finish(error="leadership was lost before the read was confirmed")
            else:
                self._reads.append((state.index, state.ctx))

    def _release_reads(self) -> None:
        applied = self.machine.applied_index
        still_waiting = []
        for index, waiter in self._reads:
            if index <= applied:
                waiter.finish()
            else:
                still_waiting.append((index, waiter))
        self._reads = still_waiting

    async def _maybe_snapshot(self) -> None:
        """Keep the log bounded: snapshot the state machine once enough entries were applied since the last
        one. The capture is cheap and happens here; writing it out happens in a worker thread. A leader waits
        (up to twice as many entries) while a follower under load has not yet been sent all it applied:
        compacting the log under that follower would send it the whole snapshot and fail the writes it waits
        on."""
        applied = self.machine.applied_index
        since = applied - self.core.log.snapshot_index
        if since < self.config.snapshot_entries:
            return
        if since < 2 * self.config.snapshot_entries and self.core.still_replicating(applied):
            return
        snapshot = self.core.snapshot_at(applied)
        writer = self.machine.snapshot()
        with self.metrics.snapshot_seconds.labels(operation="save").time():
            async with self._storage_lock:
                await self._run_blocking(self.storage.write_snapshot, snapshot, writer)
        if applied <= self.core.log.snapshot_index:
            return  # meanwhile the leader sent a newer snapshot: ours would only be older
        self.core.compact(snapshot)
        async with self._storage_lock:
            await self._run_blocking(self.storage.save, None, [], snapshot)
        size = self._observe_snapshot_size(snapshot)
        log.info("snapshot at index %d (%d bytes)", applied, size)

    # --- small helpers ---------------------------------------------------------------------------------

    def _routes(self) -> dict[NodeId, str]:
        """Whom this node sends to: every member of its configuration, and its leader even when that is not a
        member (a leader that removed itself leads until the change commits; a joining node has no
        configuration until its log names one, so until then it answers every node it was told of)."""
        wanted = (
            self.core.membership.members | {self.core.leader_id}
            if self.core.leader_id
            else self.core.membership.members
        )
        if not self.core.membership.members:
            wanted = wanted | self._known.keys()
        return {node: url for node in wanted - {self.config.id} if (url := self.route(node)) is not None}

    def _successor(self) -> NodeId | None:
        """The voter (other than us) whose log the leader knows to be the longest."""
        voters = [node for node in self.core.progress if self.core.membership.is_voter(node)]
        return max(voters, key=lambda node: (self.core.progress[node].match, node), default=None)

    def _send(self, message: PeerMessage) -> None:
        """Every peer message leaves through here: counted, or dropped while its peer is cut off."""
        if message.dst in self.cut_off:
            return
        self.traffic.sent(message)
        self.transport.send(message)

    def _wake(self) -> None:
        self._wakeup.set()

    def _mark_traced(self, stage: str, up_to: int) -> None:
        """The traced proposals up to index ``up_to`` reached ``stage``."""
        for index, trace in self._traced.items():
            if index <= up_to:
                trace.mark(stage)

    def _peer_unreachable(self, peer: str) -> None:
        self.metrics.transport_errors.labels(peer=peer).inc()
        self.core.report_unreachable(peer)
        self._wake()

    # --- metrics ---------------------------------------------------------------------------------------

    def _metric_state(self) -> NodeState:
        core = self.core
        last = core.log.last_index
        lag = {peer: last - pr.match for peer, pr in core.progress.items()} if self.is_leader else {}
        return NodeState(core.term, core.role, core.log.committed, self.machine.applied_index, last, lag)

    @contextlib.contextmanager
    def _counted(self, waiter: _Waiter) -> Iterator[None]:
        """Count a client write by its outcome (see ``metrics.PROPOSAL_OUTCOMES``)."""
        outcome = "abandoned"
        try:
            yield
            outcome = "committed"
        except NotLeader:
            outcome = "not_leader"
            raise
        except Unavailable:
            outcome = "dropped" if waiter.done.is_set() else "timeout"
            raise
        finally:
            self.metrics.proposals.labels(outcome=outcome).inc()

    def _observe_commits(self, entries: list[Entry]) -> None:
        """Time the client writes waiting here whose entries are now known committed."""
        now = time.perf_counter()
        for entry in entries:
            waiter = self._proposals.get(entry.index)
            if waiter is not None and waiter.term == entry.term:
                self.metrics.commit_seconds.observe(now - waiter.started)

    def _observe_snapshot_size(self, snapshot: Snapshot) -> int:
        data = self.storage.snapshot_data(snapshot)
        size = data[0] if data else 0
        self.metrics.snapshot_bytes.set(size)
        return size

    def _place(self, waiter: _Waiter, index: int, term: int, stage: str = "accepted") -> None:
        """``waiter``'s entry is at (``index``, ``term``): the apply loop answers it from there."""
        if index <= self.machine.applied_index:  # a forwarded write's answer came after its entry was applied
            waiter.finish(
                error="the outcome of the write is unknown (applied before it was known where): retry"
            )
            return
        overwritten = self._proposals.get(index)
        if overwritten is not None:  # our earlier proposal at this index was truncated by another leader
            overwritten.finish(error="leadership changed before the write committed; it was not applied")
        waiter.index, waiter.term = index, term
        self._proposals[index] = waiter
        if waiter.trace is not None:
            waiter.trace.mark(stage)
            self._traced[index] = waiter.trace

    def _placed_by_leader(self, write: object, index: int, term: int) -> None:
        assert isinstance(write, _Waiter)
        self._place(write, index, term)

    def _refused(self, write: object, reason: str) -> None:
        assert isinstance(write, _Waiter)
        write.finish(error=reason)

    def _forward_target(self) -> tuple[NodeId, int] | None:
        """The leader to forward writes to, and our term: None when we lead, or know of no leader we can reach."""
        leader = self.core.leader_id
        if leader is None or leader == self.config.id or self.route(leader) is None:
            return None
        return leader, self.core.term

    def _serve_forward(self, forward: Forward) -> None:
        """A follower's writes: append them all (in a row, in our term) and tell it where they landed. The answer
        is queued before the entries go out, so the follower knows them before it can apply them."""
        first: int | None = None
        try:
            with self._invariant(f"appending {len(forward.commands)} writes forwarded by {forward.src}"):
                for command in forward.commands:
                    index, _ = self.core.propose(command)
                    first = first or index
        except NotLeader:
            first = None
        self._send(
            ForwardReply(
                term=self.core.term, src=self.config.id, dst=forward.src, seq=forward.seq, index=first
            )
        )

    async def _applied(self, waiter: _Waiter, timeout_message: str) -> object:
        """Wait for ``waiter``'s entry (placed, or to be placed once forwarded) to be applied; its outcome."""
        self._wake()
        try:
            await self._wait(waiter, timeout_message)
        finally:
            if waiter.index is None:
                self._forwarder.abandon(waiter)
            elif self._proposals.get(waiter.index) is waiter:
                del self._proposals[waiter.index]
            if waiter.index is not None and waiter.trace is not None:
                self._traced.pop(waiter.index, None)
        return waiter.result

    async def _wait(self, waiter: _Waiter, timeout_message: str) -> None:
        with trio.move_on_after(self.config.request_timeout):
            await waiter.done.wait()
        if not waiter.done.is_set():
            raise Unavailable(timeout_message)
        if waiter.error is not None:
            raise Unavailable(waiter.error)

    async def _until(self, condition: Callable[[], bool], timeout_message: str) -> None:
        """Wait, at most the request timeout, until ``condition`` holds (checked after each event)."""
        with trio.move_on_after(self.config.request_timeout):
            while not condition():
                await self.changed()
            return
        raise Unavailable(timeout_message)


__all__ = ["MembershipChangeRefused", "NodeStopped", "NotLeader", "RaftNode", "Unavailable"]
