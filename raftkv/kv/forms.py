"""The JSON form of outcomes, as the idempotency table keeps them in a snapshot; read back strictly.

An outcome is an array whose first item names it; a key-value is [key, value, create, mod, version, lease]
(lease null: none); a transaction's operation result is null (a get of an absent key), a key-value, or
[key, deleted].
"""

from __future__ import annotations

from typing import Any

from raftkv.kv.commands import MAX_LEASE_ID
from raftkv.kv.frames import SnapshotDecodeError
from raftkv.kv.jsontext import JSONValue
from raftkv.kv.results import (
    Deleted,
    KeyValue,
    LeaseExists,
    LeaseGranted,
    LeaseNotFound,
    LeaseRevoked,
    NotFound,
    Ok,
    Outcome,
    PreconditionFailed,
    TxnDeleted,
    TxnOpResult,
    TxnResult,
)


def is_count(item: object) -> bool:
    """A JSON integer that is not negative (and not a boolean, which Python counts as an int)."""
    return type(item) is int and item >= 0


def is_lease(item: object) -> bool:
    """A lease id, as commands check them."""
    return type(item) is int and 1 <= item <= MAX_LEASE_ID


def _key_value_form(kv: KeyValue) -> JSONValue:
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def _key_value(item: Any) -> KeyValue:
    match item:
        case [str(key), value, create, mod, version, lease] if all(
            map(is_count, (create, mod, version))
        ) and (lease is None or is_lease(lease)):
            return KeyValue(key, value, create, mod, version, lease)
    raise SnapshotDecodeError(f"bad key-value: {item!r:.100}")


def _op_result_form(result: TxnOpResult) -> JSONValue:
    match result:
        case KeyValue():
            return _key_value_form(result)
        case TxnDeleted(key=key, deleted=deleted):
            return [key, deleted]
    return None


def _op_result(item: Any) -> TxnOpResult:
    match item:
        case None:
            return None
        case [str(key), bool(deleted)]:
            return TxnDeleted(key, deleted)
    return _key_value(item)


def outcome_form(outcome: Outcome) -> JSONValue:
    match outcome:
        case Ok(key=key, value=value, revision=revision):
            return ["ok", key, value, revision]
        case Deleted(key=key, revision=revision):
            return ["deleted", key, revision]
        case NotFound(key=key, revision=revision):
            return ["not_found", key, revision]
        case PreconditionFailed(key=key, current=current, revision=revision):
            return [
                "precondition_failed",
                key,
                None if current is None else _key_value_form(current),
                revision,
            ]
        case TxnResult(succeeded=succeeded, revision=revision, results=results):
            return ["txn", succeeded, revision, list(map(_op_result_form, results))]
        case LeaseGranted(lease=lease, ttl=ttl, revision=revision):
            return ["lease_granted", lease, ttl, revision]
        case LeaseExists(lease=lease, revision=revision):
            return ["lease_exists", lease, revision]
        case LeaseRevoked(lease=lease, deleted=deleted, revision=revision):
            return ["lease_revoked", lease, deleted, revision]
        case LeaseNotFound(lease=lease, revision=revision):
            return ["lease_not_found", lease, revision]


def outcome(item: Any) -> Outcome:
    """The outcome ``outcome_form`` wrote (raises SnapshotDecodeError for anything else)."""
    read = _outcome(item)
    if read is None or not is_count(read.revision):
        raise SnapshotDecodeError(f"bad outcome: {item!r:.100}")
    return read


def _outcome(item: Any) -> Outcome | None:
    match item:
        case ["ok", str(key), value, revision]:
            return Ok(key, value, revision)
        case ["deleted", str(key), revision]:
            return Deleted(key, revision)
        case ["not_found", str(key), revision]:
            return NotFound(key, revision)
        case ["precondition_failed", str(key), current, revision]:
            return PreconditionFailed(key, None if current is None else _key_value(current), revision)
        case ["txn", bool(succeeded), revision, list(results)]:
            return TxnResult(succeeded, revision, tuple(map(_op_result, results)))
        case ["lease_granted", lease, ttl, revision] if is_lease(lease) and is_count(ttl):
            return LeaseGranted(lease, ttl, revision)
        case ["lease_exists", lease, revision] if is_lease(lease):
            return LeaseExists(lease, revision)
        case ["lease_revoked", lease, deleted, revision] if is_lease(lease) and is_count(deleted):
            return LeaseRevoked(lease, deleted, revision)
        case ["lease_not_found", lease, revision] if is_lease(lease):
            return LeaseNotFound(lease, revision)
    return None
