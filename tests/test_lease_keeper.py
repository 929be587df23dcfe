"""The leader's lease clock (raftkv.lease_keeper) on trio's MockClock, over in-process nodes: a lease kept alive
lives, one left alone is revoked through the log, and a keep-alive is never answered for a lease that is ending."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_node import cluster, wait_for_leader, wait_until

from raftkv import kv
from raftkv.lease_keeper import LeaseKeeper, LeaseNotFound

TTL = 3


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def grant(lease: int) -> bytes:
    return kv.encode_command(kv.LeaseGrant(lease=lease, ttl=TTL))


async def test_a_kept_alive_lease_lives_and_one_left_alone_is_revoked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as net, trio.open_nursery() as nursery:
        leader = await wait_for_leader(net)
        keeper = LeaseKeeper(leader)
        nursery.start_soon(keeper.run)
        await leader.write(grant(1))
        await leader.write(grant(2))
        for _ in range(4 * TTL):  # four ttls, kept alive every second
            await trio.sleep(1)
            assert keeper.keep_alive(1) == TTL
        assert leader.machine.lease(1) is not None
        assert leader.machine.lease(2) is None  # revoked by a committed LeaseRevoke, on every replica
        await wait_until(
            net.nodes.values(), lambda: all(n.machine.lease(2) is None for n in net.nodes.values())
        )
        nursery.cancel_scope.cancel()


async def test_a_keep_alive_after_the_countdown_ran_out_is_refused_even_before_the_revoke_commits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as net, trio.open_nursery() as nursery:
        leader = await wait_for_leader(net)
        keeper = LeaseKeeper(leader)
        await leader.write(grant(1))
        keeper.keep_alive(1)
        await trio.sleep(TTL)  # the keeper is not running yet: nothing has proposed the revoke
        with pytest.raises(LeaseNotFound):
            keeper.keep_alive(1)
        net.cut.update(n for n in net.nodes if n != leader.config.id)  # the revoke cannot commit now
        appended = leader.core.log.last_index
        nursery.start_soon(keeper.run)
        await wait_until([leader], lambda: leader.core.log.last_index > appended)  # the revoke is proposed
        assert leader.machine.lease(1) is not None  # proposed, not committed
        with pytest.raises(LeaseNotFound):
            keeper.keep_alive(1)
        nursery.cancel_scope.cancel()
