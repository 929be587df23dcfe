"""``raftkv.client``: Python clients of a raftkv cluster, synchronous (``Client``) and for Trio (``AsyncClient``).

Both speak the HTTP API through httpx. Every call is described once, as a ``Call`` (what to send, how to read
the answer), and carried out by either client with the same rules: start from any member, learn the others from
``/cluster/members`` (or ``/status``), retry on 503 and on connection errors -- a write keeps its
``Idempotency-Key`` across retries, so it applies once -- and set aside for a while a member that stops
answering, as etcd's client balancer does. Errors are typed (``NotFound``, ``PreconditionFailed``,
``Unavailable``, ...).

Beyond single calls: ``Txn`` builds transactions, ``watch`` follows changes across members without losing
or repeating one, leases come with a keep-alive, and ``raftkv.client.election`` elects a leader (or holds a
lock) with them.
"""

from raftkv.client.calls import Call
from raftkv.client.errors import (
    ClientError,
    Compacted,
    Conflict,
    IdempotencyConflict,
    LeaseNotFound,
    NotFound,
    PreconditionFailed,
    RaftkvError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from raftkv.client.sync import Client
from raftkv.client.trio import AsyncClient
from raftkv.client.txn import Txn, TxnOutcome

__all__ = [
    "AsyncClient",
    "Call",
    "Client",
    "ClientError",
    "Compacted",
    "Conflict",
    "IdempotencyConflict",
    "LeaseNotFound",
    "NotFound",
    "PreconditionFailed",
    "RaftkvError",
    "TooLarge",
    "Txn",
    "TxnOutcome",
    "Unauthorized",
    "Unavailable",
]
