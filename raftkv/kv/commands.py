"""The commands a log entry carries: frozen dataclasses that check their fields whenever one is built.

Decoded commands are built the same way, so a field no valid command has is refused on the way in, whoever
wrote the entry. Values are not checked here but by the codec (``encode_command``, ``decode_command``): any
JSON value can be built into a command, and only one that is not JSON, or nests too deeply, cannot be encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

from raftkv.kv.jsontext import JSONValue

MAX_TXN_OPS: Final = 64
"""Most operations in one transaction, its two branches together."""

MAX_TXN_COMPARES: Final = 64
"""Most comparisons in one transaction."""

MAX_LEASE_ID: Final = 2**63 - 1
"""Lease ids are positive 63-bit integers, chosen by the proposer (etcd's are too)."""

MAX_LEASE_TTL: Final = 30 * 24 * 60 * 60
"""Longest lease, in seconds: 30 days. The state machine only keeps it for the leader's lease keeper."""


class Unset(Enum):
    """The type of ``UNSET``, so that ``prev_value`` can tell "not given" from "given as null"."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    key.encode("utf-8")  # keys are UTF-8 strings: a lone surrogate raises UnicodeEncodeError, a ValueError


def _check_revision(name: str, revision: int | None) -> None:
    if revision is not None and (type(revision) is not int or revision < 0):
        raise ValueError(f"{name} must be a non-negative integer")


def _check_idempotency_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
        raise ValueError("idempotency_key must be a non-empty string")


def _check_lease(lease: int | None, *, optional: bool) -> None:
    if not (lease is None and optional) and (type(lease) is not int or not 1 <= lease <= MAX_LEASE_ID):
        raise ValueError(f"lease must be an integer in 1..{MAX_LEASE_ID}")


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` to ``key``, if the preconditions (all that are given) hold, and attach it to ``lease``.

    ``prev_revision``: 0 means the key must not exist; N means the key's ``mod_revision`` must be N.
    ``prev_value``: the key must exist and hold this JSON value (``None`` means "holds null"; ``UNSET``
    means no such check). Values compare as canonical JSON: ``1``, ``1.0`` and ``true`` all differ.
    ``lease``: the lease the key is on from now (None: none, which detaches it from any it was on).
    """

    key: str
    value: JSONValue
    prev_value: JSONValue | Unset = UNSET
    prev_revision: int | None = None
    idempotency_key: str | None = None
    lease: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_revision("prev_revision", self.prev_revision)
        _check_idempotency_key(self.idempotency_key)
        _check_lease(self.lease, optional=True)


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``, if ``prev_revision`` (when given) holds; same meaning as for ``Put``."""

    key: str
    prev_revision: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_revision("prev_revision", self.prev_revision)
        _check_idempotency_key(self.idempotency_key)


@dataclass(frozen=True, slots=True)
class CompareValue:
    """Holds when ``key`` exists and holds ``value``, compared as canonical JSON (as ``Put.prev_value``)."""

    key: str
    value: JSONValue

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class CompareRevision:
    """Holds when the ``mod_revision`` of ``key`` is ``revision``; 0 means the key is absent."""

    key: str
    revision: int

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_revision("revision", self.revision)


@dataclass(frozen=True, slots=True)
class TxnPut:
    """In a transaction: write ``value`` to ``key``, on ``lease`` (None: on none)."""

    key: str
    value: JSONValue
    lease: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_lease(self.lease, optional=True)


@dataclass(frozen=True, slots=True)
class TxnDelete:
    """In a transaction: remove ``key`` if it exists."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class TxnGet:
    """In a transaction: read ``key`` as the operations before this one in its branch left it."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)


Compare: TypeAlias = CompareValue | CompareRevision
TxnOp: TypeAlias = TxnPut | TxnDelete | TxnGet


def _check_items(name: str, items: tuple[object, ...], kinds: type | tuple[type, ...]) -> None:
    if not isinstance(items, tuple) or not all(isinstance(item, kinds) for item in items):
        raise ValueError(f"{name} must be a tuple of {kinds}")


@dataclass(frozen=True, slots=True)
class Txn:
    """Evaluate every ``compare`` against the state before the transaction; if all hold (or there are none),
    apply the ``success`` operations in order, else the ``failure`` ones, as one atomic step.

    Every write of the branch taken gets the same new store revision; a branch that changes nothing (only
    gets, or deletes of absent keys) leaves the revision alone. A put of the branch taken naming an unknown
    lease makes the whole transaction fail with ``LeaseNotFound``, changing nothing. As in etcd, a branch
    writes (puts or deletes) each key at most once, so that a revision holds one change per key.
    """

    compare: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_items("compare", self.compare, (CompareValue, CompareRevision))
        _check_items("success", self.success, (TxnPut, TxnDelete, TxnGet))
        _check_items("failure", self.failure, (TxnPut, TxnDelete, TxnGet))
        if len(self.compare) > MAX_TXN_COMPARES:
            raise ValueError(f"at most {MAX_TXN_COMPARES} comparisons in a transaction")
        if len(self.success) + len(self.failure) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} operations in a transaction")
        for branch in (self.success, self.failure):
            written = [op.key for op in branch if not isinstance(op, TxnGet)]
            if len(set(written)) != len(written):
                raise ValueError("a branch writes the same key twice")
        _check_idempotency_key(self.idempotency_key)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create lease ``lease`` (an id the proposer chose at random) of ``ttl`` seconds, unless it exists.

    The state machine keeps no clock: the leader times the lease and, when it runs out, proposes its revoke.
    """

    lease: int
    ttl: int
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_lease(self.lease, optional=False)
        if type(self.ttl) is not int or not 1 <= self.ttl <= MAX_LEASE_TTL:
            raise ValueError(f"ttl must be an integer in 1..{MAX_LEASE_TTL}")
        _check_idempotency_key(self.idempotency_key)


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """End lease ``lease`` and delete every key on it, all at one new store revision."""

    lease: int
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_lease(self.lease, optional=False)
        _check_idempotency_key(self.idempotency_key)


Command: TypeAlias = Put | Delete | Txn | LeaseGrant | LeaseRevoke
