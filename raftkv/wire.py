"""The peer wire codec: how Raft's messages (and forwarded writes) travel between nodes as JSON, for the
transport and the API alike.

One pydantic model per message, named as in openapi.yaml's component schemas. Parsing is strict: the wire
is untrusted, so ``"5"`` is not 5 and an unknown field is an error; every failure is a
``pydantic.ValidationError``. Both ends import this module, so the transport needs nothing from the HTTP app.
"""

from __future__ import annotations

import base64
import functools
import operator
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from raftkv.forwarding import MAX_FORWARDED, Forward, ForwardReply, PeerMessage
from raftkv.raft.membership import Membership, MembershipError
from raftkv.raft.types import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    ReadIndexReply,
    ReadIndexRequest,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    TimeoutNow,
)

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]


class StrictInput(BaseModel):
    """A body that arrives from outside: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- Raft messages ----------------------------------------------------------------------------------------


def _decode_base64(raw: object) -> object:
    """JSON carries bytes as base64 text; Python callers may hand over bytes directly."""
    return base64.b64decode(raw, validate=True) if isinstance(raw, str) else raw


def _encode_base64(data: object) -> str:
    """Bytes as base64 text (also ``orjson``'s hook for values it has no JSON for: only bytes occur)."""
    if not isinstance(data, bytes):
        raise TypeError(f"no JSON for {type(data).__name__}")
    return base64.b64encode(data).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "byte"}),
]


EntryKindName = Literal["normal", "membership"]
_KIND_NAMES: dict[EntryKind, EntryKindName] = {EntryKind.NORMAL: "normal", EntryKind.MEMBERSHIP: "membership"}
_KINDS = {name: kind for kind, name in _KIND_NAMES.items()}
NodeIdField = Annotated[str, Field(min_length=1)]


class EntryModel(StrictInput):
    model_config = ConfigDict(title="Entry")

    index: PositiveInt
    term: NonNegativeInt
    data: Base64Bytes | None
    kind: EntryKindName = "normal"

    @model_validator(mode="after")
    def _membership_is_readable(self) -> Self:
        """A configuration that does not decode is not something a leader sends: refuse it here, as a 400,
        rather than let it stop the node that would append it."""
        if self.kind == "membership":
            try:
                Membership.decode(self.data or b"")
            except MembershipError as e:
                raise ValueError(str(e)) from None
        return self

    @classmethod
    def wire(cls, entry: Entry) -> dict[str, object]:
        return {"index": entry.index, "term": entry.term, "data": entry.data, "kind": _KIND_NAMES[entry.kind]}

    def to_core(self) -> Entry:
        return Entry(index=self.index, term=self.term, data=self.data, kind=_KINDS[self.kind])


class MembershipModel(StrictInput):
    model_config = ConfigDict(title="Membership")

    voters: list[NodeIdField]
    outgoing: list[NodeIdField] = []
    learners: list[NodeIdField] = []
    promote: list[NodeIdField] = []
    addresses: dict[str, str]

    @classmethod
    def wire(cls, membership: Membership) -> dict[str, object]:
        return {
            "voters": sorted(membership.voters),
            "outgoing": sorted(membership.outgoing),
            "learners": sorted(membership.learners),
            "promote": sorted(membership.promote),
            "addresses": dict(membership.addresses),
        }

    def to_core(self) -> Membership:
        try:
            return Membership.of(
                self.voters,
                self.addresses,
                learners=self.learners,
                promote=self.promote,
                outgoing=self.outgoing,
            )
        except MembershipError as e:
            raise ValueError(str(e)) from None


class SnapshotModel(StrictInput):
    """A snapshot's description; its data travels apart (``raftSnapshotChunk``), before the message."""

    model_config = ConfigDict(title="Snapshot")

    index: NonNegativeInt
    term: NonNegativeInt
    membership: MembershipModel

    @classmethod
    def wire(cls, snapshot: Snapshot) -> dict[str, object]:
        return {
            "index": snapshot.index,
            "term": snapshot.term,
            "membership": MembershipModel.wire(snapshot.membership),
        }

    def to_core(self) -> Snapshot:
        return Snapshot(index=self.index, term=self.term, membership=self.membership.to_core())


class RaftMessageModel(StrictInput):
    """The wire form of one core message; ``type`` names which, so one endpoint can take a request or a reply.

    ``from_core`` and ``to_core`` are exact inverses; most callers want the module functions
    ``dump_raft_message`` and ``parse_raft_message``, which pick the model from the message.
    """

    core_type: ClassVar[type[PeerMessage]]

    term: NonNegativeInt
    src: NodeIdField
    dst: NodeIdField

    @classmethod
    def tag(cls) -> str:
        """The value of ``type`` for this message, read off the subclass's ``Literal`` annotation."""
        (value,) = get_args(cls.model_fields["type"].annotation)
        return str(value)

    @classmethod
    def from_core(cls, message: PeerMessage) -> Self:
        if type(message) is not cls.core_type:
            raise TypeError(f"{cls.__name__} wraps {cls.core_type.__name__}, not {type(message).__name__}")
        return cls.model_validate(_wire_fields(cls.tag(), message))

    def to_core(self) -> PeerMessage:
        fields: dict[str, Any] = {
            name: _to_core_value(getattr(self, name)) for name in self.core_type.__dataclass_fields__
        }
        return self.core_type(**fields)


def _wire_fields(tag: str, message: PeerMessage) -> dict[str, object]:
    """``message`` as the fields of its model (bytes left as bytes)."""
    fields: dict[str, object] = {"type": tag}
    for name in message.__dataclass_fields__:
        fields[name] = _to_wire_value(getattr(message, name))
    return fields


def _to_wire_value(value: object) -> object:
    if isinstance(value, Entry):
        return EntryModel.wire(value)
    if isinstance(value, Snapshot):
        return SnapshotModel.wire(value)
    if isinstance(value, tuple):
        return tuple(_to_wire_value(item) for item in value)
    return value


def _to_core_value(value: object) -> object:
    if isinstance(value, EntryModel | SnapshotModel):
        return value.to_core()
    if isinstance(value, tuple):
        return tuple(_to_core_value(item) for item in value)
    return value


class RequestVoteModel(RaftMessageModel):
    model_config = ConfigDict(title="RequestVote")
    core_type = RequestVote

    type: Literal["request_vote"]
    last_log_index: NonNegativeInt
    last_log_term: NonNegativeInt
    pre_vote: bool = False
    transfer: bool = False


class RequestVoteReplyModel(RaftMessageModel):
    model_config = ConfigDict(title="RequestVoteReply")
    core_type = RequestVoteReply

    type: Literal["request_vote_reply"]
    granted: bool
    pre_vote: bool = False


class AppendEntriesModel(RaftMessageModel):
    model_config = ConfigDict(title="AppendEntries")
    core_type = AppendEntries

    type: Literal["append_entries"]
    prev_index: NonNegativeInt
    prev_term: NonNegativeInt
    entries: tuple[EntryModel, ...]
    commit: NonNegativeInt
    seq: NonNegativeInt = 0
    reply: bool = True

    @model_validator(mode="after")
    def _entries_follow_prev(self) -> Self:
        """Entries must continue the log right after ``prev_index``, in order, from no later term than the
        sender's: anything else is not a message a Raft leader sends, and would corrupt a follower's log."""
        for offset, entry in enumerate(self.entries):
            if entry.index != self.prev_index + 1 + offset or not self.prev_term <= entry.term <= self.term:
                raise ValueError(f"entry {offset} does not continue the log after index {self.prev_index}")
        return self


class AppendEntriesReplyModel(RaftMessageModel):
    model_config = ConfigDict(title="AppendEntriesReply")
    core_type = AppendEntriesReply

    type: Literal["append_entries_reply"]
    success: bool
    match_index: NonNegativeInt
    conflict_index: NonNegativeInt = 0
    conflict_term: NonNegativeInt = 0
    seq: NonNegativeInt = 0


class InstallSnapshotModel(RaftMessageModel):
    model_config = ConfigDict(title="InstallSnapshot")
    core_type = InstallSnapshot

    type: Literal["install_snapshot"]
    snapshot: SnapshotModel
    seq: NonNegativeInt = 0


class TimeoutNowModel(RaftMessageModel):
    model_config = ConfigDict(title="TimeoutNow")
    core_type = TimeoutNow

    type: Literal["timeout_now"]


class ReadIndexRequestModel(RaftMessageModel):
    model_config = ConfigDict(title="ReadIndexRequest")
    core_type = ReadIndexRequest

    type: Literal["read_index"]
    seq: NonNegativeInt


class ReadIndexReplyModel(RaftMessageModel):
    model_config = ConfigDict(title="ReadIndexReply")
    core_type = ReadIndexReply

    type: Literal["read_index_reply"]
    seq: NonNegativeInt
    index: NonNegativeInt | None


class ForwardModel(RaftMessageModel):
    model_config = ConfigDict(title="Forward")
    core_type = Forward

    type: Literal["forward"]
    seq: NonNegativeInt
    commands: Annotated[tuple[Base64Bytes, ...], Field(min_length=1, max_length=MAX_FORWARDED)]


class ForwardReplyModel(RaftMessageModel):
    model_config = ConfigDict(title="ForwardReply")
    core_type = ForwardReply

    type: Literal["forward_reply"]
    seq: NonNegativeInt
    index: PositiveInt | None


def _discriminated(*models: type[RaftMessageModel]) -> TypeAdapter[RaftMessageModel]:
    """A parser of any of ``models``, choosing by ``type`` (so errors name only the fields of that one)."""
    if len(models) == 1:
        return TypeAdapter(models[0])
    # A union built at run time is beyond what a type checker can follow, hence Any.
    tagged_union: Any = Annotated[functools.reduce(operator.or_, models), Field(discriminator="type")]
    return TypeAdapter[RaftMessageModel](tagged_union)


RAFT_MODELS: tuple[type[RaftMessageModel], ...] = (
    RequestVoteModel,
    RequestVoteReplyModel,
    AppendEntriesModel,
    AppendEntriesReplyModel,
    InstallSnapshotModel,
    TimeoutNowModel,
    ReadIndexRequestModel,
    ReadIndexReplyModel,
    ForwardModel,
    ForwardReplyModel,
)
_ANY_MESSAGE_PARSER = _discriminated(*RAFT_MODELS)
RAFT_MODELS_BY_PATH: dict[str, tuple[type[RaftMessageModel], ...]] = {
    "/raft/request-vote": (RequestVoteModel, RequestVoteReplyModel),
    "/raft/append-entries": (AppendEntriesModel, AppendEntriesReplyModel),
    "/raft/install-snapshot": (InstallSnapshotModel,),
    "/raft/timeout-now": (TimeoutNowModel,),
}
"""The endpoints that take one message each, of these kinds only (peers stream; these serve tools and other
implementations that speak one RPC per request)."""
_PARSER_BY_PATH = {path: _discriminated(*models) for path, models in RAFT_MODELS_BY_PATH.items()}
_TAG_BY_CORE: dict[type[PeerMessage], str] = {model.core_type: model.tag() for model in RAFT_MODELS}


RAFT_STREAM_PATH = "/raft/stream"
RAFT_STREAM_TYPE = "application/x-ndjson"  # one message as JSON per line: JSON text holds no raw newline
SNAPSHOT_CHUNK_PATH = "/raft/snapshot-chunk"  # a chunk of a snapshot's data, ahead of its InstallSnapshot
MAX_BATCH_MESSAGES = 256
MAX_FRAME_BYTES = 16 << 20  # one line of a stream: a batch of entries is kept to about 8 MiB

RaftMessage = Annotated[
    RequestVoteModel
    | RequestVoteReplyModel
    | AppendEntriesModel
    | AppendEntriesReplyModel
    | InstallSnapshotModel
    | TimeoutNowModel
    | ReadIndexRequestModel
    | ReadIndexReplyModel
    | ForwardModel
    | ForwardReplyModel,
    Field(discriminator="type"),
]


class RaftMessageBatch(StrictInput):
    """Several messages from one node to another, in order, in one request (``POST /raft/messages``)."""

    messages: Annotated[list[RaftMessage], Field(min_length=1, max_length=MAX_BATCH_MESSAGES)]


def dump_raft_batch(messages: Sequence[PeerMessage]) -> bytes:
    """The JSON body of ``POST /raft/messages`` carrying ``messages``."""
    return b'{"messages":[' + b",".join(dump_raft_message(message) for message in messages) + b"]}"


def parse_raft_batch(raw: bytes | str) -> list[PeerMessage]:
    """The messages of a batch body, in order, or ValidationError."""
    return [model.to_core() for model in RaftMessageBatch.model_validate_json(raw).messages]


def dump_raft_frames(messages: Sequence[PeerMessage]) -> bytes:
    """Messages as the lines of a ``/raft/stream`` body."""
    return b"".join(dump_raft_message(message) + b"\n" for message in messages)


class FrameTooLarge(Exception):
    """A line of a stream grew past MAX_FRAME_BYTES without ending."""


class FrameReader:
    """Cuts a ``/raft/stream`` body into its lines as its chunks arrive (a line may span chunks)."""

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self.limit = limit
        self._partial = bytearray()  # the start of a line whose end has not arrived yet

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, in order (empty ones left out); FrameTooLarge for an unfinished line
        over the limit."""
        first, *lines = chunk.split(b"\n")
        self._partial += first
        if lines:
            lines.insert(0, bytes(self._partial))
            self._partial = bytearray(lines.pop())
        if len(self._partial) > self.limit:
            raise FrameTooLarge(f"a message of more than {self.limit} bytes")
        return [line for line in lines if line]


def dump_raft_message(message: PeerMessage) -> bytes:
    """The JSON that carries ``message``: the same document as its model's, written straight from the core's
    dataclass. What the core sends is valid by construction, so only the receiver validates (with the model);
    validating here too cost as much CPU as the rest of the sender's path."""
    return orjson.dumps(_wire_fields(_TAG_BY_CORE[type(message)], message), default=_encode_base64)


def parse_raft_message(raw: bytes | str, path: str | None = None) -> PeerMessage:
    """The core message in JSON, or ValidationError. With ``path``, only the kinds that endpoint takes are
    accepted (a ``TimeoutNow`` POSTed to ``/raft/append-entries`` is a 400)."""
    parser = _ANY_MESSAGE_PARSER if path is None else _PARSER_BY_PATH[path]
    return parser.validate_json(raw).to_core()
