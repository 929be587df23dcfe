"""Everything a replica replicates, in one place: what applying the log builds and what a snapshot holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.kv.history import History
from raftkv.kv.idempotency import IdempotencyTable
from raftkv.kv.leases import Leases
from raftkv.kv.table import SortedTable


@dataclass(slots=True)
class State:
    idempotency: IdempotencyTable
    history: History
    table: SortedTable = field(default_factory=SortedTable)
    leases: Leases = field(default_factory=Leases)
    revision: int = 0  # etcd's store revision: bumped once by each command that changes a key
    applied_index: int = 0  # the index of the last log entry applied (or covered by the snapshot restored)
