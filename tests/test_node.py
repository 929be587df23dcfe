"""The Trio runtime (raftkv.node) on trio's MockClock: in-process nodes wired by a loopback transport.

Virtual time makes elections, heartbeats and request deadlines run in milliseconds and deterministically
enough to assert on; the real-process tests in test_cluster.py cover HTTP and the OS.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pytest
import trio
import trio.testing

from raftkv import kv
from raftkv.api.app import create_app
from raftkv.config import NodeConfig
from raftkv.forwarding import Forward, PeerMessage
from raftkv.machine import SnapshotWriter, StateMachine
from raftkv.node import NotLeader, RaftNode, Unavailable
from raftkv.raft.types import AppendEntries, Entry, HardState, InstallSnapshot, Snapshot
from raftkv.storage import MemoryStorage
from raftkv.trace import TRACE_HEADER, StageClock

IDS = ("n1", "n2", "n3")
T = TypeVar("T")
Node = RaftNode[Any]


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def inline(function: Callable[..., T], *args: object) -> T:
    """Blocking work run in the loop's own thread, so virtual time cannot jump while a save is under way."""
    return function(*args)


@dataclass
class LoopbackNet:
    """Delivers messages between in-process nodes; ``cut`` nodes neither send nor receive."""

    nodes: dict[str, Node] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)
    sent: list[PeerMessage] = field(default_factory=list)

    def deliver(self, message: PeerMessage) -> None:
        self.sent.append(message)
        if message.src in self.cut or message.dst in self.cut or message.dst not in self.nodes:
            return
        if isinstance(message, InstallSnapshot):  # the data goes first, as the real transport ships it
            sender, receiver = self.nodes[message.src].storage, self.nodes[message.dst].storage
            with sender.open_snapshot(message.snapshot) as data:
                content = data.read()
            snapshot = message.snapshot
            receiver.receive_snapshot(snapshot.index, snapshot.term, len(content), zlib.crc32(content)).write(
                0, content
            )
        self.nodes[message.dst].deliver(message)


class LoopbackTransport:
    def __init__(self, net: LoopbackNet) -> None:
        self.net = net
        self.on_unreachable: Callable[[str], None] = lambda peer: None
        self.snapshots: Callable[[Snapshot], Awaitable[tuple[BinaryIO, int, int]]] | None = None
        self.routes: dict[str, str] = {}

    def set_routes(self, routes: dict[str, str]) -> None:
        self.routes = routes

    def send(self, message: PeerMessage) -> None:
        if message.dst in self.routes:
            self.net.deliver(message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()


def make_node(
    config: NodeConfig,
    storage: MemoryStorage,
    net: LoopbackNet,
    seed: int,
    new_machine: Callable[[], StateMachine] = kv.KVStore,
) -> Node:
    return RaftNode(config, storage, LoopbackTransport(net), random.Random(seed), new_machine, inline)


def make_config(node_id: str, **overrides: object) -> NodeConfig:
    peers = {p: f"http://{p}.invalid" for p in IDS if p != node_id}
    url = f"http://{node_id}.invalid"
    return NodeConfig(id=node_id, url=url, peers=peers, data_dir=Path("unused"), token="t", **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def cluster(
    storages: dict[str, MemoryStorage] | None = None,
    new_machine: Callable[[], StateMachine] = kv.KVStore,
    **config: object,
) -> AsyncIterator[LoopbackNet]:
    net = LoopbackNet()
    storages = storages if storages is not None else {i: MemoryStorage() for i in IDS}
    async with trio.open_nursery() as nursery:
        for seed, node_id in enumerate(IDS):
            node = make_node(make_config(node_id, **config), storages[node_id], net, seed, new_machine)
            net.nodes[node_id] = node
            await nursery.start(node.run)
        yield net
        nursery.cancel_scope.cancel()


async def next_change(nodes: Iterable[Node]) -> None:
    """Return once any of ``nodes`` has handled its next event."""
    async with trio.open_nursery() as nursery:

        async def first(node: Node) -> None:
            await node.changed()
            nursery.cancel_scope.cancel()

        for node in nodes:
            nursery.start_soon(first, node)


async def wait_until(nodes: Iterable[Node], condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (in virtual time, at most ``timeout``) until ``condition`` holds, checking after each event."""
    nodes = list(nodes)
    with trio.fail_after(timeout):
        while not condition():
            await next_change(nodes)


async def wait_for_leader(net: LoopbackNet, exclude: frozenset[str] = frozenset()) -> Node:
    def leaders() -> list[Node]:
        return [n for i, n in net.nodes.items() if n.is_leader and i not in exclude]

    await wait_until(net.nodes.values(), lambda: bool(leaders()))
    return leaders()[0]


def put(key: str, value: kv.JSONValue) -> bytes:
    return kv.encode_command(kv.Put(key=key, value=value))


async def test_elects_a_leader_and_replicates_a_write(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        result = await leader.write(put("a", 1))
        assert isinstance(result, kv.Ok) and result.value == 1
        with trio.fail_after(5):  # followers apply it once a heartbeat brings the commit index
            for node in net.nodes.values():
                await node.wait_applied(leader.machine.applied_index)
        assert {n.machine.get("a").value for n in net.nodes.values()} == {1}


async def test_a_follower_forwards_writes_and_answers_with_its_own_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        follower = next(n for n in net.nodes.values() if n is not leader)
        await wait_until([follower], lambda: follower.leader is not None)
        assert follower.leader == (leader.config.id, leader.config.advertised_url)
        sent_before = len(net.sent)
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            results[i] = await follower.write(put(f"k{i}", i))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(write, i)
        forwards = [m for m in net.sent[sent_before:] if isinstance(m, Forward)]
        assert sum(len(f.commands) for f in forwards) == 20  # (batching: see test_forwarding)
        for i, result in results.items():
            assert isinstance(result, kv.Ok) and result.value == i
            assert leader.machine.get(f"k{i}") == follower.machine.get(f"k{i}")  # the same outcome


async def test_a_write_is_refused_while_no_leader_is_known(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        follower = next(n for n in net.nodes.values() if n is not leader)
        net.cut.add(leader.config.id)
        await wait_until([follower], lambda: follower.leader is None or follower.is_leader, timeout=30)
        if not follower.is_leader:
            with pytest.raises(NotLeader):
                await follower.write(put("a", 1))


async def test_a_cut_off_follower_does_not_stop_writes(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        stalled = next(i for i in IDS if i != leader.config.id)
        net.cut.add(stalled)
        for i in range(20):
            assert isinstance(await leader.write(put(f"k{i}", i)), kv.Ok)
        assert net.nodes[stalled].machine.get("k19") is None
        net.cut.clear()
        with trio.fail_after(10):  # it catches up once the link heals
            await net.nodes[stalled].wait_applied(leader.machine.applied_index)
        assert net.nodes[stalled].machine.get("k19") is not None


async def test_isolated_leader_steps_down_and_a_new_one_takes_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as net:
        old = await wait_for_leader(net)
        net.cut.add(old.config.id)
        with pytest.raises(Unavailable):
            await old.write(put("lost?", 1))  # no quorum: times out instead of hanging
        new = await wait_for_leader(net, exclude=frozenset({old.config.id}))
        assert new.core.term > old.core.term or not old.is_leader
        assert isinstance(await new.write(put("b", 2)), kv.Ok)
        await wait_until([old], lambda: not old.is_leader)  # check-quorum: it gives up by itself


async def test_linearizable_read_needs_a_quorum(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        await leader.write(put("a", 1))
        await leader.read_barrier()  # a healthy leader confirms at once
        net.cut.update(i for i in IDS if i != leader.config.id)
        with pytest.raises(Unavailable):
            await leader.read_barrier()


async def test_restart_keeps_every_acknowledged_write(autojump_clock: trio.testing.MockClock) -> None:
    storages = {i: MemoryStorage() for i in IDS}
    async with cluster(storages) as net:
        leader = await wait_for_leader(net)
        for i in range(30):
            await leader.write(put(f"k{i}", i))
    async with cluster(storages) as net:  # every node restarts from what it persisted
        leader = await wait_for_leader(net)
        await leader.read_barrier()
        assert [leader.machine.get(f"k{i}").value for i in range(30)] == list(range(30))


async def test_snapshots_bound_the_log_and_catch_up_a_lagging_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = LoopbackNet()
    async with trio.open_nursery() as nursery:
        for seed, node_id in enumerate(IDS):
            config = make_config(node_id, snapshot_entries=10)
            node = make_node(config, MemoryStorage(), net, seed)
            net.nodes[node_id] = node
            await nursery.start(node.run)
        leader = await wait_for_leader(net)
        lagging = next(i for i in IDS if i != leader.config.id)
        net.cut.add(lagging)
        for i in range(50):
            await leader.write(put(f"k{i}", i))
        assert leader.core.log.snapshot_index >= 40 and len(leader.core.log.entries) < 20
        net.cut.clear()
        with trio.fail_after(10):  # only a snapshot can bring it back: the log before it is gone
            await net.nodes[lagging].wait_applied(leader.machine.applied_index)
        assert net.nodes[lagging].machine.get("k49") is not None
        nursery.cancel_scope.cancel()


async def test_a_leader_holds_back_compaction_for_a_follower_it_is_still_replicating_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(snapshot_entries=20) as net:
        leader = await wait_for_leader(net)
        await leader.write(put("warm-up", 0))  # every follower has answered: the leader replicates to each
        behind = next(i for i in IDS if i != leader.config.id)
        # What the leader sends it is lost, but it stays in the replicating state; once its window of batches
        # in flight is full, the leader sends it nothing more, so it has not been sent what the leader applies.
        net.cut.add(behind)
        for i in range(25):
            await leader.write(put(f"k{i}", i))
        assert leader.core.log.snapshot_index == 0  # compacting now would strand it: wait
        net.cut.clear()
        with trio.fail_after(10):  # the leader notices the stall and resends from the log, not a snapshot
            await net.nodes[behind].wait_applied(leader.machine.applied_index)
        assert not any(isinstance(m, InstallSnapshot) and m.dst == behind for m in net.sent)
        for i in range(5):  # nobody is behind any more: compacted well before twice snapshot_entries
            await leader.write(put(f"more {i}", i))
        assert 0 < leader.core.log.snapshot_index < 40


class CountingStorage(MemoryStorage):
    """Remembers how many entries each save carried."""

    def __init__(self) -> None:
        super().__init__()
        self.entry_saves: list[int] = []

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        if entries:
            self.entry_saves.append(len(entries))
        super().save(hard_state, entries, snapshot)


async def test_concurrent_writes_share_one_append_fsync_and_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storages = {i: CountingStorage() for i in IDS}
    async with cluster(storages) as net:  # type: ignore[arg-type]
        leader = await wait_for_leader(net)
        await leader.write(put("warm-up", 0))
        saves_before, sent_before = len(storages[leader.config.id].entry_saves), len(net.sent)
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(leader.write, put(f"k{i}", i))
        saves = storages[leader.config.id].entry_saves[saves_before:]
        appends = [m for m in net.sent[sent_before:] if isinstance(m, AppendEntries) and m.entries]
        assert sum(saves) == 20 and len(saves) <= 2  # group commit: one fsync for the lot
        assert len(appends) <= 2 * len(saves) * (len(IDS) - 1)


def assert_leader_stages(names: list[str]) -> None:
    """A leader's write: received and proposed, then sent, persisted and acked in an order that varies (its
    fsync and the followers' overlap; an entry may also wait for a later batch), then committed and applied."""
    assert names[:2] == ["received", "proposed"] and names[-2:] == ["committed", "applied"], names
    assert sorted(names[2:-2]) == ["acked", "persisted", "sent"], names
    assert names.index("sent") < names.index("acked"), names


async def test_a_traced_write_passes_every_stage_in_order(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        trace = StageClock()
        await leader.write(put("k", 1), trace)
        assert_leader_stages(list(trace.stages))
        assert sorted(trace.stages.values()) == list(trace.stages.values())
        assert not leader._traced  # nothing is kept once the write is answered

        response = (
            await create_app(leader)
            .test_client()
            .put("/kv/k", json={"value": 2}, headers={TRACE_HEADER: "1"})
        )
        pairs = [item.split("=") for item in response.headers[TRACE_HEADER].split(",")]
        assert [name for name, _ in pairs][-1] == "answered"
        assert_leader_stages([name for name, _ in pairs][:-1])
        untraced = await create_app(leader).test_client().put("/kv/k", json={"value": 3})
        assert TRACE_HEADER not in untraced.headers


async def test_shutdown_leaves_no_task_behind(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with cluster() as net:
            await wait_for_leader(net)
    # Reaching here means the nursery closed: every ticker, driver and apply loop was cancelled and joined.


class Counter:
    """A second state machine: one integer that each entry (b"+5", b"-2") adds to; bad entries change nothing."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.total = 0

    def apply(self, index: int, data: bytes | None) -> int | str:
        self.applied_index = index
        if data is None:
            return self.total
        try:
            self.total += int(data)
        except ValueError:
            return f"not a number: {data!r}"
        return self.total

    def snapshot(self) -> SnapshotWriter:
        image = f"{self.applied_index} {self.total}".encode()

        def write(out: BinaryIO) -> None:
            out.write(image)

        return write

    def restore(self, data: BinaryIO) -> None:
        index, total = data.read().split()
        self.applied_index, self.total = int(index), int(total)


async def test_a_counter_replicates_like_the_key_value_store(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(new_machine=Counter, snapshot_entries=10) as net:
        leader = await wait_for_leader(net)
        lagging = next(n for n in net.nodes.values() if n is not leader)
        net.cut.add(lagging.config.id)
        results = [await leader.write(b"+%d" % i) for i in range(1, 31)]
        assert results == [i * (i + 1) // 2 for i in range(1, 31)]
        assert await leader.write(b"two") == "not a number: b'two'"
        net.cut.clear()  # it catches up through a snapshot of the counter: the log before it is gone
        await wait_until(
            net.nodes.values(), lambda: lagging.machine.applied_index >= leader.machine.applied_index
        )
        assert {node.machine.total for node in net.nodes.values()} == {465}
        assert leader.core.log.snapshot_index >= 20


async def test_a_joining_node_catches_up_by_snapshot_is_promoted_and_a_voter_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(snapshot_entries=10) as net:
        leader = await wait_for_leader(net)
        for i in range(30):
            await leader.write(put(f"k{i}", i))
        assert leader.core.log.snapshot_index >= 20  # the log from the start is gone: only a snapshot helps
        joiner = make_node(make_config("n4", join="http://n1.invalid"), MemoryStorage(), net, 9)
        assert not joiner.core.membership.members  # it starts outside any configuration
        net.nodes["n4"] = joiner
        async with trio.open_nursery() as nursery:
            await nursery.start(joiner.run)
            added = leader.core.membership.with_learner("n4", "http://n4.invalid", promote=True)
            await leader.change_membership(added)
            joiner.learn_routes(
                {str(m["id"]): str(m["url"]) for m in leader.members()}
            )  # what the join answers
            await wait_until(net.nodes.values(), lambda: leader.core.membership.is_voter("n4"))
            await wait_until(
                net.nodes.values(), lambda: joiner.machine.applied_index >= leader.machine.applied_index
            )
            assert joiner.machine.get("k29") is not None and joiner.core.log.snapshot_index > 0
            leaving = leader.config.id  # the leader itself: it hands over once its removal commits
            await leader.change_membership(leader.core.membership.without(leaving))
            assert leaving not in {m["id"] for m in leader.members()}
            successor = await wait_for_leader(net, exclude=frozenset({leaving}))
            assert await successor.write(put("after", 1)) == kv.Ok("after", 1, 31)
            assert [m["id"] for m in successor.members()] == sorted({"n1", "n2", "n3", "n4"} - {leaving})
            nursery.cancel_scope.cancel()


async def test_a_leader_hands_over_before_it_stops(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as net:
        leader = await wait_for_leader(net)
        await leader.write(put("a", 1))
        await leader.hand_over()
        assert not leader.is_leader
        successor = leader.core.leader_id
        assert successor is not None and net.nodes[successor].is_leader


async def test_a_leader_stops_without_handing_over_once_the_core_gives_the_transfer_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Thesis §3.10: a transfer not done within an election timeout is abandoned. A stopping leader whose
    successor is gone (stopping too) then stops as leader, instead of waiting out the request timeout."""
    async with cluster() as net:
        leader = await wait_for_leader(net)
        lagging, successor = (i for i in IDS if i != leader.config.id)
        net.cut.add(lagging)
        await leader.write(put("a", 1))  # the successor now holds more of the log than the lagging one
        net.cut.clear()
        net.cut.add(successor)  # it stops answering; the lagging one keeps the quorum
        started = trio.current_time()
        await leader.hand_over()
        assert trio.current_time() - started < leader.config.request_timeout
        assert leader.is_leader and leader.core.transfer_target is None
