"""Every operation of the API as a ``Call``: what to send and how to read a good answer, free of any I/O, so
that the synchronous and the Trio client carry out exactly the same calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from raftkv.client.errors import LeaseNotFound, RaftkvError
from raftkv.client.txn import TxnOutcome

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds to reach a member, for calls whose answer may take long to come
LEASE_ERRORS: Mapping[int, type[RaftkvError]] = {404: LeaseNotFound}


def _json(response: httpx.Response) -> Any:
    return response.json()


def _json_or_none(response: httpx.Response) -> Any:
    """A long-poll's answer: the event, or None when none came in time (204)."""
    return None if response.status_code == 204 else response.json()


def _open(response: httpx.Response) -> httpx.Response:
    """A stream's answer: the open response itself, for the caller to read and close."""
    return response


def patient(seconds: float) -> httpx.Timeout:
    """The timeout of an attempt whose answer comes after up to ``seconds`` by design (a long-poll, a stream
    between keep-alives), with a margin for the answer to travel."""
    return httpx.Timeout(seconds + CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request. ``write`` calls get an ``Idempotency-Key`` (kept across retries, so a write retried
    after a lost answer applies once); ``retry_conflicts`` calls (membership changes) also wait out a 409."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T] = _json
    json: object = None
    params: Mapping[str, str] = field(default_factory=dict)
    write: bool = False
    retry_conflicts: bool = False
    not_found_is_none: bool = False
    errors: Mapping[int, type[RaftkvError]] = field(default_factory=dict)  # this call's meaning of a status
    timeout: httpx.Timeout | None = None  # one attempt's, when not the client's request_timeout
    stream: bool = False  # ``parse`` gets the response before its body is read
    idempotency_key: str | None = None  # a write's key, when the caller picks it (default: a fresh one)


def key_path(key: str) -> str:
    """The path of a key: percent-encoded whole (slashes too), as the API expects."""
    return "/kv/" + quote(key, safe="")


# --- keys ---------------------------------------------------------------------------------------------------


def get(key: str, consistency: str = "linearizable") -> Call[dict[str, Any] | None]:
    return Call("GET", key_path(key), params={"consistency": consistency}, not_found_is_none=True)


def put(key: str, value: object, *, lease: int | None = None, **conditions: object) -> Call[dict[str, Any]]:
    """``conditions``: ``prev_value`` and/or ``prev_revision`` make it a compare-and-set; ``lease`` ties the
    key to a lease (it goes when the lease does)."""
    body = {"value": value, **conditions} | ({} if lease is None else {"lease": lease})
    return Call("PUT", key_path(key), json=body, write=True, errors=LEASE_ERRORS)


def delete(key: str) -> Call[dict[str, Any] | None]:
    return Call("DELETE", key_path(key), write=True, not_found_is_none=True)


def list_keys(
    prefix: str = "",
    limit: int | None = None,
    consistency: str = "linearizable",
    start_after: str | None = None,
) -> Call[dict[str, Any]]:
    """One page of keys in order; the answer's ``next`` is the ``start_after`` of the page that follows."""
    params = (
        {"prefix": prefix, "consistency": consistency}
        | ({"limit": str(limit)} if limit else {})
        | ({} if start_after is None else {"start_after": start_after})
    )
    return Call("GET", "/kv", params=params)


def revision() -> Call[int]:
    """The revision of the store now (of a linearizable read): where a watch "from now" starts."""
    return Call("GET", "/kv", _revision, params={"limit": "1"})


def _revision(response: httpx.Response) -> int:
    return int(response.json()["revision"])


def wait(key: str, after_revision: int | None = None, timeout: float = 30.0) -> Call[dict[str, Any] | None]:
    """The first change of ``key`` after ``after_revision`` (default: the serving member's revision now), or
    None when none comes within ``timeout`` seconds."""
    params = {"wait": "true", "timeout": str(timeout)} | (
        {} if after_revision is None else {"after_revision": str(after_revision)}
    )
    return Call("GET", key_path(key), _json_or_none, params=params, timeout=patient(timeout))


def watch(prefix: str, after_revision: int, keep_alive: float) -> Call[httpx.Response]:
    """The open stream of changes under ``prefix`` after ``after_revision`` (read by
    ``raftkv.client.watch``); a member sends a comment line at least every ``keep_alive`` seconds."""
    params = {"prefix": prefix, "after_revision": str(after_revision)}
    return Call("GET", "/watch", _open, params=params, timeout=patient(keep_alive), stream=True)


def txn(body: Mapping[str, object]) -> Call[TxnOutcome]:
    """A transaction; ``body`` is a TxnRequest (``raftkv.client.txn.Txn`` builds one)."""
    return Call("POST", "/txn", _txn_outcome, json=body, write=True, errors=LEASE_ERRORS)


def _txn_outcome(response: httpx.Response) -> TxnOutcome:
    return TxnOutcome.of(response.json())


# --- leases -------------------------------------------------------------------------------------------------


def lease_path(lease: int) -> str:
    return f"/leases/{lease}"


def grant_lease(ttl: int, lease: int | None = None) -> Call[dict[str, Any]]:
    body = {"ttl": ttl} | ({} if lease is None else {"id": lease})
    return Call("POST", "/leases", json=body, write=True)


def keepalive(lease: int) -> Call[dict[str, Any]]:
    """Restart the lease's time to live (the leader times it; nothing is written)."""
    return Call("POST", lease_path(lease) + "/keepalive", errors=LEASE_ERRORS)


def revoke_lease(lease: int) -> Call[dict[str, Any]]:
    return Call("DELETE", lease_path(lease), write=True, errors=LEASE_ERRORS)


def lease_info(lease: int) -> Call[dict[str, Any]]:
    return Call("GET", lease_path(lease), errors=LEASE_ERRORS)


def list_leases() -> Call[dict[str, Any]]:
    return Call("GET", "/leases")


# --- the cluster --------------------------------------------------------------------------------------------


def status() -> Call[dict[str, Any]]:
    return Call("GET", "/status")


def members() -> Call[dict[str, Any]]:
    return Call("GET", "/cluster/members")


def add_member(member: str, url: str, *, voter: bool = True) -> Call[dict[str, Any]]:
    return Call(
        "POST", "/cluster/members", json={"id": member, "url": url, "voter": voter}, retry_conflicts=True
    )


def remove_member(member: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/cluster/members/{quote(member, safe='')}", retry_conflicts=True)


def promote_member(member: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/cluster/members/{quote(member, safe='')}/promote", retry_conflicts=True)


def set_members(wanted: list[dict[str, object]]) -> Call[dict[str, Any]]:
    return Call("PUT", "/cluster/members", json={"members": wanted}, retry_conflicts=True)


def transfer_leadership(member: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/cluster/transfer-leadership", json={"id": member})
