"""Leader election on one key (a lock, too), built on a lease and a transaction.

A candidate grants itself a lease and, in one transaction that holds only while the key is absent, puts the
key naming itself, tied to that lease. The one whose transaction succeeds leads for as long as it keeps the
lease alive; the others wait for the key to change and try again. Resigning revokes the lease, which deletes
the key; a leader that dies stops refreshing its lease, and the key goes when the lease expires (``ttl``
seconds later).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import trio

from raftkv.client.errors import LeaseNotFound
from raftkv.client.trio import AsyncClient
from raftkv.client.txn import Txn

RESIGN_TIMEOUT: Final = 10.0  # seconds a leader leaving (even when cancelled) tries to revoke its lease


@contextlib.asynccontextmanager
async def leadership(client: AsyncClient, key: str, name: str, ttl: int = 10) -> AsyncIterator[int]:
    """``async with leadership(kv, "election/db", "me"):`` -- lead (hold the lock ``key``) for the duration
    of the block, waiting first while another does; resign on leaving it. Yields the lease. Should the lease
    be lost all the same (the cluster unreachable for ``ttl`` seconds), the block is cancelled and
    LeaseNotFound raised."""
    lease = int((await client.grant_lease(ttl))["id"])
    try:
        async with client.keep_alive(lease):
            await campaign(client, key, name, lease)
            yield lease
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(RESIGN_TIMEOUT):
            await resign(client, lease)


async def campaign(client: AsyncClient, key: str, name: str, lease: int) -> None:
    """Return once ``key`` names ``name``, tied to ``lease``."""
    attempt = Txn().if_absent(key).then_put(key, name, lease=lease)
    while not (outcome := await client.txn(attempt)).succeeded:
        await client.wait(key, after_revision=outcome.revision)  # a change (or a while) later, try again


async def resign(client: AsyncClient, lease: int) -> None:
    with contextlib.suppress(LeaseNotFound):  # gone already: nothing left to resign
        await client.revoke_lease(lease)


async def observe(client: AsyncClient, key: str) -> AsyncGenerator[str | None, None]:
    """The leader of ``key`` now, then each change of leader (None while there is none), from one read and
    the watch that follows it; close it when done, as any watch."""
    page = await client.list_keys(prefix=key, limit=1)  # ``key`` itself sorts first of its prefix
    holder = next((item["value"] for item in page["items"] if item["key"] == key), None)
    yield holder
    async with contextlib.aclosing(client.watch(key, after_revision=page["revision"])) as changes:
        async for change in changes:
            if change["key"] == key:
                yield change["value"] if change["type"] == "put" else None
