"""What ``KVStore.apply`` returns, and the state of a key: frozen dataclasses, equal on every replica.

Every result carries a ``revision``: the store revision it created, or, when it changed nothing, the one it
saw. A result holds values shared with the store; treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftkv.kv.jsontext import JSONValue


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key's current state, as etcd keeps it."""

    key: str
    value: JSONValue
    create_revision: int
    mod_revision: int
    version: int  # writes since the key was (re)created; 1 after the first
    lease: int | None = None  # the lease the key is on, if any


@dataclass(frozen=True, slots=True)
class Ok:
    """A put succeeded; ``revision`` is the store revision it created."""

    key: str
    value: JSONValue
    revision: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """A delete succeeded; ``revision`` is the store revision it created."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class NotFound:
    """A delete of an absent key: nothing changed."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class PreconditionFailed:
    """A precondition did not hold: nothing changed. ``current`` is what the key held (None: absent)."""

    key: str
    current: KeyValue | None
    revision: int


@dataclass(frozen=True, slots=True)
class TxnDeleted:
    """A transaction's delete: ``deleted`` says whether the key existed."""

    key: str
    deleted: bool


TxnOpResult: TypeAlias = KeyValue | TxnDeleted | None
"""Per operation of a transaction: a get's key-value (None: absent), a put's written key-value, a delete's
``TxnDeleted``."""


@dataclass(frozen=True, slots=True)
class TxnResult:
    """A transaction ran: ``succeeded`` says which branch, ``results`` has one entry per operation of it."""

    succeeded: bool
    revision: int
    results: tuple[TxnOpResult, ...]


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """A lease was created. Granting changes no key, so ``revision`` is the one it saw."""

    lease: int
    ttl: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseExists:
    """A grant named a lease id already granted: nothing changed."""

    lease: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseRevoked:
    """A lease ended and its ``deleted`` keys went with it, at one new revision (none if it had no keys)."""

    lease: int
    deleted: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseNotFound:
    """A revoke, put or transaction named a lease that is not granted: nothing changed."""

    lease: int
    revision: int


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """The entry was not a command: nothing changed. Deterministic, so every replica returns the same."""

    reason: str
    revision: int


WriteResult: TypeAlias = Ok | Deleted | NotFound | PreconditionFailed
"""What a put or a delete gives (a put naming a lease may also give ``LeaseNotFound``)."""

LeaseResult: TypeAlias = LeaseGranted | LeaseExists | LeaseRevoked | LeaseNotFound

Outcome: TypeAlias = WriteResult | TxnResult | LeaseResult
"""What carrying out a command gives, and what an idempotency key remembers."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """The command's idempotency key and fingerprint were seen before: ``result`` is the first outcome, and
    nothing changed now."""

    result: Outcome


@dataclass(frozen=True, slots=True)
class IdempotencyConflict:
    """The idempotency key was seen before with a different command: nothing changed."""

    idempotency_key: str
    revision: int


Result: TypeAlias = Outcome | Replayed | IdempotencyConflict | InvalidCommand
"""Whatever ``apply`` returns for an entry that carries data."""
