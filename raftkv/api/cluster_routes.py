"""Handlers of the cluster calls: membership, leadership transfer, and the Raft snapshot-data endpoint.

Every change runs on the leader (a follower forwards it, as it does writes) and answers once committed, with
the members as they are then. The spec marks all of these for the cluster token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from quart import Response, request

from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import Answer, error_response, json_response
from raftkv.backup import COPY_BYTES
from raftkv.node import MembershipChangeRefused, NotLeader
from raftkv.raft.membership import Membership
from raftkv.storage import StorageCorruptError

operations = Operations[Api]()


def member_list(api: Api) -> Response:
    leader = api.node.leader
    return json_response(
        models.MemberList.model_validate(
            {"members": api.node.members(), "leader": {"id": leader[0], "url": leader[1]} if leader else None}
        )
    )


async def on_leader(api: Api, call: Callable[[], Awaitable[None]]) -> Response:
    """Run a cluster call on the leader and answer with the members; a refused change is a 409."""

    async def run() -> None:
        if not api.node.is_leader:
            raise NotLeader(api.node.core.leader_id)  # checked on the leader, against its configuration
        try:
            await call()
        except MembershipChangeRefused as e:
            raise Answer(error_response(409, str(e), headers={"Retry-After": "1"})) from None

    await api.router.on_leader(api.query(models.ClusterQuery).redirect, run)
    return member_list(api)


async def change(api: Api, target: Callable[[Membership], Membership]) -> None:
    """Propose ``target(current)`` unless it changes nothing (so a retried call succeeds)."""
    current = api.node.core.membership
    proposed = target(current)
    if proposed != current:
        await api.node.change_membership(proposed)


def known(api: Api, node: str) -> None:
    if node not in api.node.core.membership.members:
        raise Answer(error_response(404, f"{node!r} is not a member"))


@operations("getMembers")
async def get_members(api: Api) -> Response:
    return await on_leader(api, api.node.read_barrier)


@operations("addMember")
async def add_member(api: Api) -> Response:
    new = models.NewMember.model_validate_json(await request.get_data(as_text=False))

    async def add() -> None:
        current = api.node.core.membership
        if new.id in current.members and current.address(new.id) != new.url:
            raise Answer(error_response(409, f"{new.id!r} is already a member, at {current.address(new.id)}"))
        if new.id not in current.members:
            await change(api, lambda m: m.with_learner(new.id, new.url, promote=new.voter))

    return await on_leader(api, add)


@operations("removeMember")
async def remove_member(api: Api, member: str) -> Response:
    async def remove() -> None:
        known(api, member)
        await change(api, lambda m: m.without(member))

    return await on_leader(api, remove)


@operations("promoteMember")
async def promote_member(api: Api, member: str) -> Response:
    async def promote() -> None:
        known(api, member)
        membership = api.node.core.membership
        if membership.is_voter(member):
            return
        if not api.node.caught_up(member):
            raise Answer(error_response(412, f"{member!r} has not caught up with the leader's log yet"))
        await change(api, lambda m: m.promoted(member))

    return await on_leader(api, promote)


@operations("setMembers")
async def set_members(api: Api) -> Response:
    wanted = models.MemberSet.model_validate_json(await request.get_data(as_text=False)).members
    if len({m.id for m in wanted}) != len(wanted):
        return error_response(400, "a member is listed twice")
    voters = {m.id: m.url for m in wanted if m.voter}
    learners = {m.id: m.url for m in wanted if not m.voter}
    if not voters:
        return error_response(400, "a configuration needs at least one voter")
    return await on_leader(api, lambda: change(api, lambda m: m.replaced_by(voters, learners)))


@operations("transferLeadership")
async def transfer_leadership(api: Api) -> Response:
    body = await request.get_data(as_text=False)
    target = models.TransferRequest.model_validate_json(body or b"{}").id

    async def transfer() -> None:
        try:
            await api.node.transfer_leadership(target)
        except ValueError as e:
            raise Answer(error_response(400, str(e))) from None

    return await on_leader(api, transfer)


@operations("getBackup")
async def get_backup(api: Api) -> Response:
    """A point-in-time backup, streamed: the header line, then the data in pieces read in a worker thread."""
    header, path = await api.router.on_leader(api.query(models.ClusterQuery).redirect, api.node.backup)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield header.encode()
            with path.open("rb") as data:
                while piece := await trio.to_thread.run_sync(data.read, COPY_BYTES):
                    yield piece
        finally:
            path.unlink(missing_ok=True)

    headers = {
        "X-Raft-Snapshot-Index": str(header.snapshot.index),
        "X-Raft-Snapshot-Term": str(header.snapshot.term),
        "X-Raft-Snapshot-Checksum": f"crc32:{header.crc:08x}",
        "Content-Disposition": f'attachment; filename="raftkv-{header.snapshot.index}.backup"',
    }
    return Response(body(), content_type="application/octet-stream", headers=headers)


@operations("raftSnapshotChunk")
async def raft_snapshot_chunk(api: Api) -> Response:
    query = models.SnapshotChunkQuery.model_validate(request.args.to_dict())
    chunk = await request.get_data(as_text=False)
    assert isinstance(chunk, bytes)
    try:
        offset, complete = await api.node.receive_snapshot_chunk(
            query.index, query.term, query.size, query.crc, query.offset, chunk
        )
    except StorageCorruptError as e:
        return error_response(409, f"the snapshot's data failed its checksum and starts over: {e}")
    except ValueError as e:
        return error_response(409, f"this transfer was replaced; ask again: {e}")
    return json_response(models.SnapshotChunkAnswer(offset=offset, complete=complete))
