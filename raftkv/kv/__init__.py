"""The replicated state machine: keys with etcd-style revisions, transactions, leases, a watch history, and
exactly-once writes.

Every node applies the same committed log entries in the same order and must end in the same state, so
everything here is a pure function of (state, entry bytes):

- no clock: a lease runs out when its revoke is applied, which the leader proposes by its own clock, and an
  idempotency key ages by log indices, not by time;
- no randomness: a lease id is chosen by the proposer and carried in the command;
- no iteration over anything whose order differs between nodes (sets of strings are sorted before their
  order can show);
- no outcome that depends on the process: not on how deep the caller's stack is (the nesting limits,
  ``MAX_VALUE_NESTING`` and ``MAX_COMMAND_NESTING``, are checked on the bytes) nor on the interpreter's
  int-digits limit (integer literals longer than ``MAX_INTEGER_DIGITS`` are refused, on every node).

A bad entry yields an error result, never an exception: one poisoned entry must not stop every replica's
apply loop.

Modules, each with one job: ``commands`` (the commands), ``codec`` (their log form), ``results`` (what applying
gives), ``execute`` (what each command does), ``table`` (the sorted keys), ``leases``, ``idempotency``,
``history`` (the watch events), ``state`` (all of it together), ``snapshot`` with ``frames`` and ``forms``
(the snapshot format), ``jsontext`` (JSON parsed the same on every node), and ``store`` (``KVStore``).
"""

from raftkv.kv.codec import (
    MAX_COMMAND_NESTING,
    MAX_VALUE_NESTING,
    CommandDecodeError,
    CommandEncodeError,
    decode_command,
    encode_command,
    fingerprint,
    value_size,
)
from raftkv.kv.commands import (
    MAX_LEASE_ID,
    MAX_LEASE_TTL,
    MAX_TXN_COMPARES,
    MAX_TXN_OPS,
    UNSET,
    Command,
    Compare,
    CompareRevision,
    CompareValue,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Txn,
    TxnDelete,
    TxnGet,
    TxnOp,
    TxnPut,
    Unset,
)
from raftkv.kv.frames import SnapshotDecodeError
from raftkv.kv.history import DEFAULT_HISTORY_CAPACITY, Compacted, Event, EventType
from raftkv.kv.idempotency import DEFAULT_IDEMPOTENCY_CAPACITY, DEFAULT_IDEMPOTENCY_WINDOW
from raftkv.kv.jsontext import MAX_INTEGER_DIGITS, JSONValue
from raftkv.kv.results import (
    Deleted,
    IdempotencyConflict,
    InvalidCommand,
    KeyValue,
    LeaseExists,
    LeaseGranted,
    LeaseNotFound,
    LeaseResult,
    LeaseRevoked,
    NotFound,
    Ok,
    Outcome,
    PreconditionFailed,
    Replayed,
    Result,
    TxnDeleted,
    TxnOpResult,
    TxnResult,
    WriteResult,
)
from raftkv.kv.store import ApplyOrderError, KVStore, Page

__all__ = [
    "DEFAULT_HISTORY_CAPACITY",
    "DEFAULT_IDEMPOTENCY_CAPACITY",
    "DEFAULT_IDEMPOTENCY_WINDOW",
    "MAX_COMMAND_NESTING",
    "MAX_INTEGER_DIGITS",
    "MAX_LEASE_ID",
    "MAX_LEASE_TTL",
    "MAX_TXN_COMPARES",
    "MAX_TXN_OPS",
    "MAX_VALUE_NESTING",
    "UNSET",
    "ApplyOrderError",
    "Command",
    "CommandDecodeError",
    "CommandEncodeError",
    "Compacted",
    "Compare",
    "CompareRevision",
    "CompareValue",
    "Delete",
    "Deleted",
    "Event",
    "EventType",
    "IdempotencyConflict",
    "InvalidCommand",
    "JSONValue",
    "KVStore",
    "KeyValue",
    "LeaseExists",
    "LeaseGrant",
    "LeaseGranted",
    "LeaseNotFound",
    "LeaseResult",
    "LeaseRevoke",
    "LeaseRevoked",
    "NotFound",
    "Ok",
    "Outcome",
    "Page",
    "PreconditionFailed",
    "Put",
    "Replayed",
    "Result",
    "SnapshotDecodeError",
    "Txn",
    "TxnDelete",
    "TxnDeleted",
    "TxnGet",
    "TxnOp",
    "TxnOpResult",
    "TxnPut",
    "TxnResult",
    "Unset",
    "WriteResult",
    "decode_command",
    "encode_command",
    "fingerprint",
    "value_size",
]
