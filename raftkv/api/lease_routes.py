"""Handlers of ``/leases``: grant, list, look at, keep alive and revoke leases (see ``raftkv.lease_keeper``)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator

from quart import Response, request

from raftkv import kv
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api, idempotency_key
from raftkv.api.errors import Answer, error_response, json_response
from raftkv.lease_keeper import LeaseNotFound

operations = Operations[Api]()


@operations("grantLease")
async def grant_lease(api: Api) -> Response:
    query = api.query(models.WriteQuery)
    body = models.LeaseGrantRequest.model_validate_json(await request.get_data(as_text=False))
    lease = body.id if body.id is not None else secrets.randbelow(kv.MAX_LEASE_ID) + 1
    command = kv.LeaseGrant(lease=lease, ttl=body.ttl, idempotency_key=idempotency_key())
    match await api.apply(query.redirect, command):
        case kv.LeaseGranted(lease=granted, ttl=ttl):
            return json_response(models.LeaseInfo(id=granted, ttl=ttl))
        case kv.LeaseExists(lease=existing):
            return error_response(409, f"lease {existing} exists already")
        case other:
            raise AssertionError(other)


@operations("listLeases")
async def list_leases(api: Api) -> Response:
    leases = await api.read(api.query(models.ReadQuery), lambda store: store.leases())
    return json_response(models.LeaseList(leases=[models.LeaseInfo(id=i, ttl=ttl) for i, ttl in leases]))


@operations("getLease")
async def get_lease(api: Api, lease: str) -> Response:
    def detail(lease_number: int) -> Response:
        held = api.store.lease(lease_number)
        if held is None:
            raise LeaseNotFound(lease_number)
        remaining = api.leases.remaining(lease_number)
        return json_response(
            models.LeaseDetail(id=lease_number, ttl=held[0], remaining=remaining, keys=held[1])
        )

    return await on_the_leader(api, lease, detail)


@operations("keepLeaseAlive")
async def keep_lease_alive(api: Api, lease: str) -> Response:
    def renew(lease_number: int) -> Response:
        return json_response(models.LeaseInfo(id=lease_number, ttl=api.leases.keep_alive(lease_number)))

    return await on_the_leader(api, lease, renew)


async def on_the_leader(api: Api, lease: str, answer: Callable[[int], Response]) -> Response:
    """``answer`` for the lease, on the leader (forwarded or redirected there) once it passed a read barrier:
    a new leader may not have applied a grant yet, and the barrier waits until it has applied every entry
    committed before it (it commits in its term first), so a granted lease is never a 404 there. An unknown
    lease is a 404."""
    query = api.query(models.WriteQuery)
    lease_number = models.parse_lease(lease)

    async def on_leader() -> Response:
        await api.node.read_barrier()
        with unknown_lease_is_404():
            return answer(lease_number)

    return await api.router.on_leader(query.redirect, on_leader)


@operations("revokeLease")
async def revoke_lease(api: Api, lease: str) -> Response:
    query = api.query(models.WriteQuery)
    command = kv.LeaseRevoke(lease=models.parse_lease(lease), idempotency_key=idempotency_key())
    match await api.apply(query.redirect, command):
        case kv.LeaseRevoked(lease=revoked, deleted=deleted, revision=revision):
            return json_response(models.LeaseRevokeResult(id=revoked, deleted=deleted, revision=revision))
        case other:
            raise AssertionError(other)


@contextlib.contextmanager
def unknown_lease_is_404() -> Iterator[None]:
    try:
        yield
    except LeaseNotFound as e:
        raise Answer(error_response(404, f"lease {e.args[0]} not found")) from None
