"""Plain value types shared by the consensus core, storage, transport and simulator.

Everything here is an immutable dataclass with no behaviour, so that the same objects can be persisted,
serialised for HTTP, or passed between simulated nodes without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftkv.raft.membership import Membership

NodeId = str


class EntryKind(IntEnum):
    NORMAL = 0  # a command for the state machine (or, with no data, a new leader's no-op)
    MEMBERSHIP = (
        1  # a configuration (``Membership.encode``), which the core acts on as soon as it is appended
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is None for the no-op a new leader appends to commit its term."""

    index: int
    term: int
    data: bytes | None = None
    kind: EntryKind = EntryKind.NORMAL

    @property
    def command(self) -> bytes | None:
        """What the state machine applies: the data of a command, None for a no-op or a configuration."""
        return self.data if self.kind is EntryKind.NORMAL else None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log: the current term, the vote cast in it, the commit index."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state as of ``index`` (whose entry had ``term``): it replaces every entry up to ``index``. The core
    knows only this description and the membership then; the state machine's bytes live in storage, and travel
    between nodes beside the Raft messages, never inside them. A snapshot at index 0 holds no state: it is the
    configuration a fresh cluster starts from (``bootstrap``)."""

    index: int
    term: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class PersistentState:
    """Everything a node reloads on start: what storage returns and the core is built from."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


class Role(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# --- messages -------------------------------------------------------------------------------------------
# Every message carries the sender's term and both ends; replies name the request's sender as ``dst``.


@dataclass(frozen=True, slots=True)
class Message:
    term: int
    src: NodeId
    dst: NodeId


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    """A (pre-)vote request. For a pre-vote, ``term`` is the term the candidate *would* start."""

    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False  # sent after TimeoutNow: voters skip the leader-lease check


@dataclass(frozen=True, slots=True)
class RequestVoteReply(Message):
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """Entries after ``prev_index``; with no entries it is a heartbeat. ``seq`` is echoed for ReadIndex.
    ``reply`` False: a notice of the commit index only, which a follower that accepts it does not answer."""

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    seq: int = 0
    reply: bool = True


@dataclass(frozen=True, slots=True)
class AppendEntriesReply(Message):
    """``match_index`` is the last index known to match on success; on rejection, the conflict hint
    (``conflict_term`` and the first index the follower holds of that term, or its log end) lets the
    leader skip a whole term per round trip."""

    success: bool
    match_index: int
    conflict_index: int = 0
    conflict_term: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """The leader's snapshot. Its data is shipped to ``dst`` (in chunks, by the transport) before this message,
    so the core sees only the description; a receiver that does not hold the data yet ignores the message."""

    snapshot: Snapshot
    seq: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Sent by a leader handing over leadership: the receiver starts an election at once."""


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a read index, for every read waiting on it (thesis §6.4.1); ``seq``
    names the request, so that a late answer to an earlier one is not taken for this one's."""

    seq: int


@dataclass(frozen=True, slots=True)
class ReadIndexReply(Message):
    """The leader's answer: ``index`` once a quorum has confirmed its leadership, None if it could not."""

    seq: int
    index: int | None


AnyMessage = (
    RequestVote
    | RequestVoteReply
    | AppendEntries
    | AppendEntriesReply
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexReply
)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``.

    ``index`` is None when leadership was lost before the read was confirmed: the caller must retry.
    """

    ctx: object
    index: int | None


@dataclass(slots=True)
class Ready:
    """A batch of effects, to be carried out in this order by whoever drives the core:

    0. send ``eager_messages`` (a leader's AppendEntries), before or while persisting;
    1. persist ``snapshot`` (if any; its data has arrived beforehand), then ``entries`` (truncating the log
       from ``entries[0].index``), then ``hard_state`` (if changed) -- durably (fsync); then, if there were
       entries or a snapshot, call ``Raft.persisted`` (a leader counts its own entries towards commit only
       after it);
    2. send ``messages``;
    3. restore the state machine from ``snapshot`` (if any) and apply ``committed`` in order (MEMBERSHIP
       entries advance the state machine's index as no-ops: the core already acts on them);
    4. answer ``read_states`` once the state machine has applied their index.
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    eager_messages: list[AnyMessage] = field(default_factory=list)
    messages: list[AnyMessage] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    @property
    def all_messages(self) -> list[AnyMessage]:
        """Every message of the batch, the eager ones first: for whoever need not tell them apart."""
        return self.eager_messages + self.messages

    def __bool__(self) -> bool:
        return bool(
            self.hard_state
            or self.snapshot
            or self.entries
            or self.eager_messages
            or self.messages
            or self.committed
            or self.read_states
        )
