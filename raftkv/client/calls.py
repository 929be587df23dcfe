"""Every operation of the API as a ``Call``: what to send and how to read a good answer, free of any I/O, so
that the synchronous and the Trio client carry out exactly the same calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")


def _json(response: httpx.Response) -> Any:
    return response.json()


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


def key_path(key: str) -> str:
    """The path of a key: percent-encoded whole (slashes too), as the API expects."""
    return "/kv/" + quote(key, safe="")


# --- keys ---------------------------------------------------------------------------------------------------


def get(key: str, consistency: str = "linearizable") -> Call[dict[str, Any] | None]:
    return Call("GET", key_path(key), params={"consistency": consistency}, not_found_is_none=True)


def put(key: str, value: object, **conditions: object) -> Call[dict[str, Any]]:
    """``conditions``: ``prev_value`` and/or ``prev_revision`` make it a compare-and-set."""
    return Call("PUT", key_path(key), json={"value": value, **conditions}, write=True)


def delete(key: str) -> Call[dict[str, Any] | None]:
    return Call("DELETE", key_path(key), write=True, not_found_is_none=True)


def list_keys(
    prefix: str = "", limit: int | None = None, consistency: str = "linearizable"
) -> Call[dict[str, Any]]:
    params = {"prefix": prefix, "consistency": consistency} | ({"limit": str(limit)} if limit else {})
    return Call("GET", "/kv", params=params)


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
