"""Pydantic models of every body in openapi.yaml, one class per component schema (the class name, or its
``title``, is the schema's name; tests/test_spec.py fails when the two drift).

Inputs (request bodies, query strings, Raft messages) are validated strictly: the wire is untrusted, so
``"5"`` is not 5, ``1`` is not ``true`` and an unknown field is an error rather than a silently ignored typo.
Every failure is a ``pydantic.ValidationError``, which raftkv.api.errors turns into a 400.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import operator
import re
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from urllib.parse import parse_qs

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    RequestVote,
    RequestVoteReply,
    Role,
    Snapshot,
    TimeoutNow,
)

MAX_KEY_BYTES = 1024

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]


class _Input(BaseModel):
    """A body that arrives from outside: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Output(BaseModel):
    """A body this service produces: built by our own code, so lax construction is fine. Every field is
    always sent, so its serialisation schema marks fields with defaults as required too."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


# --- keys and query strings -------------------------------------------------------------------------------


def _fits_key_bytes(key: str) -> str:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("key is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"key is {size} bytes of UTF-8, at most {MAX_KEY_BYTES} allowed")
    return key


Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_BYTES), AfterValidator(_fits_key_bytes)]
_KEY_ADAPTER: TypeAdapter[str] = TypeAdapter(Key)


def parse_key(raw: str) -> str:
    """The key from a path, or ValidationError: empty, over 1024 UTF-8 bytes, or not UTF-8 at all."""
    return _KEY_ADAPTER.validate_python(raw, strict=True)


_QUERY_INTEGER = re.compile(r"-?[0-9]+")
_QUERY_BOOLEANS = {"true": True, "false": False}


def _query_integer(raw: object) -> object:
    """Only plain decimal digits are an integer; anything else is left for strict validation to reject."""
    return int(raw) if isinstance(raw, str) and _QUERY_INTEGER.fullmatch(raw) else raw


def _query_boolean(raw: object) -> object:
    """Only ``true`` and ``false`` (as OpenAPI serialises them); not ``1``, ``yes`` or ``on``."""
    return _QUERY_BOOLEANS.get(raw, raw) if isinstance(raw, str) else raw


QueryBool = Annotated[bool, BeforeValidator(_query_boolean)]
Consistency = Literal["linearizable", "stale"]


class ReadQuery(BaseModel):
    """Query of a single-key read or ``GET /``: ``ReadQuery.model_validate(request.args.to_dict())``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    consistency: Consistency = "linearizable"
    redirect: QueryBool = False


class WriteQuery(BaseModel):
    """Query of a write: only ``redirect``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    redirect: QueryBool = False


class ListQuery(ReadQuery):
    """Query of ``GET /kv``."""

    prefix: str = ""
    limit: Annotated[int, BeforeValidator(_query_integer), Field(ge=1)] | None = None


# --- client bodies ----------------------------------------------------------------------------------------


class ValueBody(_Input):
    """``{"value": V}``: the body of ``POST /`` and the answer of ``GET /`` and ``POST /``."""

    value: JsonValue


class FormValueBody(_Input):
    """A real form body ``value=<text>`` sent to ``POST /``."""

    value: str


class WriteRequest(_Input):
    """Body of ``PUT``/``POST /kv/{key}``; ``prev_value`` and/or ``prev_revision`` make it a compare-and-set."""

    value: JsonValue
    prev_value: JsonValue = None
    prev_revision: NonNegativeInt | None = None

    @property
    def has_prev_value(self) -> bool:
        """``prev_value: null`` (the value must be null) differs from no ``prev_value`` at all."""
        return "prev_value" in self.model_fields_set


_FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def parse_value_body(raw: bytes | str, mimetype: str | None) -> ValueBody:
    """The body of ``POST /``, whatever way it came.

    ``curl -d '{"value": "test"}'`` sends a JSON document labelled as a form, so a form-labelled body is taken
    as JSON when it parses as JSON (a real form body never does: it starts with ``value=``), and as a form
    with exactly one field ``value`` otherwise. Any other label is read as JSON.
    """
    if mimetype != _FORM_MEDIA_TYPE:
        return ValueBody.model_validate_json(raw)
    try:
        json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        fields = parse_qs(text, keep_blank_values=True, errors="strict")
        form = FormValueBody.model_validate({k: v[0] if len(v) == 1 else v for k, v in fields.items()})
        return ValueBody(value=form.value)
    return ValueBody.model_validate_json(raw)


# --- client answers ---------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error: ``{"error": "<readable message>"}``, possibly with more fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    error: str


class NotLeaderError(ErrorBody):
    """Body of a 307: the leader's base URL (the ``Location`` header has the full target)."""

    leader: str


class KeyValue(_Output):
    key: str
    value: JsonValue
    revision: PositiveInt


class CasFailedError(ErrorBody):
    """Body of a 412: the key's current state (null when absent), so the client can retry its CAS at once."""

    current: KeyValue | None


class DeleteResult(_Output):
    key: str
    deleted: Literal[True] = True
    revision: PositiveInt


class KeyValueList(_Output):
    items: list[KeyValue]
    revision: NonNegativeInt


class LeaderInfo(_Output):
    id: str
    url: str


class Member(_Output):
    id: str
    url: str
    voter: bool


class Status(_Output):
    id: str
    role: Role
    term: NonNegativeInt
    leader: LeaderInfo | None
    commit_index: NonNegativeInt
    last_applied: NonNegativeInt
    last_log_index: NonNegativeInt
    snapshot_index: NonNegativeInt
    members: list[Member]


class Health(_Output):
    status: Literal["ok"] = "ok"


class Accepted(_Output):
    """The ``{}`` that answers every Raft message."""


# --- Raft messages ----------------------------------------------------------------------------------------


def _decode_base64(raw: object) -> object:
    """JSON carries bytes as base64 text; Python callers may hand over bytes directly."""
    return base64.b64decode(raw, validate=True) if isinstance(raw, str) else raw


def _encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "byte"}),
]


class EntryModel(_Input):
    model_config = ConfigDict(title="Entry")

    index: PositiveInt
    term: NonNegativeInt
    data: Base64Bytes | None

    def to_core(self) -> Entry:
        return Entry(index=self.index, term=self.term, data=self.data)


class SnapshotModel(_Input):
    model_config = ConfigDict(title="Snapshot")

    index: NonNegativeInt
    term: NonNegativeInt
    data: Base64Bytes

    def to_core(self) -> Snapshot:
        return Snapshot(index=self.index, term=self.term, data=self.data)


NodeIdField = Annotated[str, Field(min_length=1)]


class RaftMessageModel(_Input):
    """The wire form of one core message; ``type`` names which, so one endpoint can take a request or a reply.

    ``from_core`` and ``to_core`` are exact inverses; most callers want the module functions
    ``dump_raft_message`` and ``parse_raft_message``, which pick the model from the message.
    """

    core_type: ClassVar[type[AnyMessage]]

    term: NonNegativeInt
    src: NodeIdField
    dst: NodeIdField

    @classmethod
    def tag(cls) -> str:
        """The value of ``type`` for this message, read off the subclass's ``Literal`` annotation."""
        (value,) = get_args(cls.model_fields["type"].annotation)
        return str(value)

    @classmethod
    def from_core(cls, message: AnyMessage) -> Self:
        if type(message) is not cls.core_type:
            raise TypeError(f"{cls.__name__} wraps {cls.core_type.__name__}, not {type(message).__name__}")
        return cls.model_validate({"type": cls.tag(), **dataclasses.asdict(message)})

    def to_core(self) -> AnyMessage:
        fields: dict[str, Any] = {
            name: _to_core_value(getattr(self, name)) for name in self.core_type.__dataclass_fields__
        }
        return self.core_type(**fields)


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


def _discriminated(*models: type[RaftMessageModel]) -> TypeAdapter[RaftMessageModel]:
    """A parser of any of ``models``, choosing by ``type`` (so errors name only the fields of that one)."""
    if len(models) == 1:
        return TypeAdapter(models[0])
    # A union built at run time is beyond what a type checker can follow, hence Any.
    tagged_union: Any = Annotated[functools.reduce(operator.or_, models), Field(discriminator="type")]
    return TypeAdapter[RaftMessageModel](tagged_union)


RAFT_MODELS_BY_PATH: dict[str, tuple[type[RaftMessageModel], ...]] = {
    "/raft/request-vote": (RequestVoteModel, RequestVoteReplyModel),
    "/raft/append-entries": (AppendEntriesModel, AppendEntriesReplyModel),
    "/raft/install-snapshot": (InstallSnapshotModel,),
    "/raft/timeout-now": (TimeoutNowModel,),
}
_MODEL_BY_CORE: dict[type[AnyMessage], type[RaftMessageModel]] = {
    model.core_type: model for models in RAFT_MODELS_BY_PATH.values() for model in models
}
_PATH_BY_CORE: dict[type[AnyMessage], str] = {
    model.core_type: path for path, models in RAFT_MODELS_BY_PATH.items() for model in models
}
_PARSER_BY_PATH = {path: _discriminated(*models) for path, models in RAFT_MODELS_BY_PATH.items()}
_ANY_MESSAGE_PARSER = _discriminated(*_MODEL_BY_CORE.values())


RAFT_BATCH_PATH = "/raft/messages"
MAX_BATCH_MESSAGES = 256

RaftMessage = Annotated[
    RequestVoteModel
    | RequestVoteReplyModel
    | AppendEntriesModel
    | AppendEntriesReplyModel
    | InstallSnapshotModel
    | TimeoutNowModel,
    Field(discriminator="type"),
]


class RaftMessageBatch(_Input):
    """Several messages from one node to another, in order: what the transport sends when messages queued up
    while the previous POST was under way, so a slow link costs one round trip per batch, not per message."""

    messages: Annotated[list[RaftMessage], Field(min_length=1, max_length=MAX_BATCH_MESSAGES)]


def dump_raft_batch(messages: list[AnyMessage]) -> bytes:
    """The JSON body of ``POST /raft/messages`` carrying ``messages``."""
    parts = b",".join(dump_raft_message(message) for message in messages)
    return b'{"messages":[' + parts + b"]}"


def parse_raft_batch(raw: bytes | str) -> list[AnyMessage]:
    """The messages of a batch body, in order, or ValidationError."""
    return [model.to_core() for model in RaftMessageBatch.model_validate_json(raw).messages]


def raft_path(message: AnyMessage) -> str:
    """The endpoint a message is POSTed to (a reply goes to the same endpoint as its request)."""
    return _PATH_BY_CORE[type(message)]


def dump_raft_message(message: AnyMessage) -> bytes:
    """The JSON body that carries ``message``."""
    return _MODEL_BY_CORE[type(message)].from_core(message).model_dump_json().encode()


def parse_raft_message(raw: bytes | str, path: str | None = None) -> AnyMessage:
    """The core message in a JSON body, or ValidationError. With ``path``, only the messages that endpoint
    takes are accepted (a ``TimeoutNow`` POSTed to ``/raft/append-entries`` is a 400)."""
    parser = _ANY_MESSAGE_PARSER if path is None else _PARSER_BY_PATH[path]
    return parser.validate_json(raw).to_core()
