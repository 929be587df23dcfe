"""``raftkv.client``: Python clients of a raftkv cluster, synchronous (``Client``) and for Trio (``AsyncClient``).

Both speak the HTTP API through httpx. Every call is described once, as a ``Call`` (what to send, how to read
the answer), and carried out by either client with the same rules: start from any member, learn the others from
``/cluster/members`` (or ``/status``), retry on 503 and on connection errors -- a write keeps its
``Idempotency-Key`` across retries, so it applies once -- and set aside for a while a member that stops
answering, as etcd's client balancer does. Errors are typed (``NotFound``, ``PreconditionFailed``,
``Unavailable``, ...).
"""

from raftkv.client.calls import Call
from raftkv.client.errors import (
    ClientError,
    Conflict,
    NotFound,
    PreconditionFailed,
    RaftkvError,
    Unauthorized,
    Unavailable,
)
from raftkv.client.sync import Client
from raftkv.client.trio import AsyncClient

__all__ = [
    "AsyncClient",
    "Call",
    "Client",
    "ClientError",
    "Conflict",
    "NotFound",
    "PreconditionFailed",
    "RaftkvError",
    "Unauthorized",
    "Unavailable",
]
