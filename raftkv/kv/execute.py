"""What each command does to the state: puts, deletes, transactions and leases, with etcd's revisions.

Every change of a key goes through ``_write`` or ``_remove``, which keep the table, the lease index and the
watch history in step. A command either changes what it says, at one new store revision, or changes nothing.
"""

from __future__ import annotations

from raftkv.kv.commands import (
    UNSET,
    Command,
    Compare,
    CompareRevision,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
)
from raftkv.kv.history import Event
from raftkv.kv.jsontext import JSONValue, same_json
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
from raftkv.kv.state import State
from raftkv.kv.table import NO_LEASE


def execute(state: State, command: Command) -> Outcome:
    match command:
        case Put():
            return _put(state, command)
        case Delete():
            return _delete(state, command)
        case Txn():
            return _txn(state, command)
        case LeaseGrant():
            return _grant(state, command)
        case LeaseRevoke():
            return _revoke(state, command)


def _revision_is(current: KeyValue | None, revision: int) -> bool:
    # A live key's mod_revision is at least 1, so "0 = must not exist" needs no case of its own.
    return (0 if current is None else current.mod_revision) == revision


def _value_is(current: KeyValue | None, value: JSONValue) -> bool:
    return current is not None and same_json(current.value, value)


def _holds(state: State, compare: Compare) -> bool:
    current = state.table.get(compare.key)
    if isinstance(compare, CompareRevision):
        return _revision_is(current, compare.revision)
    return _value_is(current, compare.value)


def _write(state: State, key: str, value: JSONValue, lease: int | None, current: KeyValue | None) -> KeyValue:
    """Put ``key`` (whose state is ``current``) at the revision ``state.revision + 1``, which the caller sets."""
    revision = state.revision + 1
    written = state.table.put(key, value, revision, lease or NO_LEASE)
    state.leases.move(key, None if current is None else current.lease, lease)
    state.history.record(Event(revision, "put", key, value))
    return written


def _remove(state: State, current: KeyValue) -> None:
    """Delete the key whose state is ``current`` at the revision ``state.revision + 1``, which the caller sets."""
    state.table.delete(current.key)
    state.leases.move(current.key, current.lease, None)
    state.history.record(Event(state.revision + 1, "delete", current.key))


def _put(state: State, put: Put) -> Outcome:
    """Preconditions first, then the lease: a put that could not apply says so before naming a bad lease."""
    current = state.table.get(put.key)
    if (put.prev_revision is not None and not _revision_is(current, put.prev_revision)) or (
        put.prev_value is not UNSET and not _value_is(current, put.prev_value)
    ):
        return PreconditionFailed(put.key, current, state.revision)
    if put.lease is not None and put.lease not in state.leases:
        return LeaseNotFound(put.lease, state.revision)
    _write(state, put.key, put.value, put.lease, current)
    state.revision += 1
    return Ok(put.key, put.value, state.revision)


def _delete(state: State, delete: Delete) -> Outcome:
    current = state.table.get(delete.key)
    if delete.prev_revision is not None and not _revision_is(current, delete.prev_revision):
        return PreconditionFailed(delete.key, current, state.revision)
    if current is None:
        return NotFound(delete.key, state.revision)
    _remove(state, current)
    state.revision += 1
    return Deleted(delete.key, state.revision)


def _txn(state: State, txn: Txn) -> Outcome:
    succeeded = all(_holds(state, compare) for compare in txn.compare)
    ops = txn.success if succeeded else txn.failure
    for op in ops:
        if isinstance(op, TxnPut) and op.lease is not None and op.lease not in state.leases:
            return LeaseNotFound(op.lease, state.revision)
    results: list[TxnOpResult] = []
    changed = False
    for op in ops:
        current = state.table.get(op.key)
        match op:
            case TxnGet():
                results.append(current)
            case TxnPut():
                results.append(_write(state, op.key, op.value, op.lease, current))
                changed = True
            case TxnDelete():
                if current is not None:
                    _remove(state, current)
                    changed = True
                results.append(TxnDeleted(op.key, current is not None))
    if changed:
        state.revision += 1
    return TxnResult(succeeded, state.revision, tuple(results))


def _grant(state: State, grant: LeaseGrant) -> Outcome:
    if grant.lease in state.leases:
        return LeaseExists(grant.lease, state.revision)
    state.leases.grant(grant.lease, grant.ttl)
    return LeaseGranted(grant.lease, grant.ttl, state.revision)


def _revoke(state: State, revoke: LeaseRevoke) -> Outcome:
    found = state.leases.lease(revoke.lease)
    if found is None:
        return LeaseNotFound(revoke.lease, state.revision)
    _, keys = found
    for key in keys:  # in key order, so the events are in the same order on every replica
        current = state.table.get(key)
        assert current is not None, key  # the lease index follows the table
        _remove(state, current)
    if keys:
        state.revision += 1
    state.leases.revoke(revoke.lease)
    return LeaseRevoked(revoke.lease, len(keys), state.revision)
