"""Pydantic models of the client and operations bodies in openapi.yaml (the Raft messages are in
raftkv.wire), one class per component schema (the class name, or its
``title``, is the schema's name; tests/test_spec.py fails when the two drift).

Inputs (request bodies, query strings) are validated strictly: the wire is untrusted, so
``"5"`` is not 5, ``1`` is not ``true`` and an unknown field is an error rather than a silently ignored typo.
Every failure is a ``pydantic.ValidationError``, which raftkv.api.errors turns into a 400.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal
from urllib.parse import parse_qs

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, TypeAdapter

from raftkv.kv import MAX_LEASE_ID, MAX_LEASE_TTL, MAX_TXN_COMPARES, MAX_TXN_OPS
from raftkv.raft.types import Role
from raftkv.wire import NonNegativeInt, PositiveInt, StrictInput

MAX_KEY_BYTES = 1024


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
_REVISION_ADAPTER: TypeAdapter[int] = TypeAdapter(NonNegativeInt)
_LEASE_ADAPTER: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_LEASE_ID)])


def parse_revision(raw: str) -> int:
    """A revision from a header (``Last-Event-ID``), or ValidationError."""
    return _REVISION_ADAPTER.validate_python(_query_integer(raw), strict=True)


def parse_lease(raw: str) -> int:
    """A lease id from a path, or ValidationError."""
    return _LEASE_ADAPTER.validate_python(_query_integer(raw), strict=True)


def parse_key(raw: str) -> str:
    """The key from a path, or ValidationError: empty, over 1024 UTF-8 bytes, or not UTF-8 at all."""
    return _KEY_ADAPTER.validate_python(raw, strict=True)


_QUERY_INTEGER = re.compile(r"-?[0-9]+")
_QUERY_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
DEFAULT_PAGE, MAX_PAGE = 1000, 10_000  # keys per page of GET /kv
DEFAULT_WAIT, MAX_WAIT = 30.0, 300.0  # seconds a long-poll watch waits for a change
MAX_PARTITION_PEERS = 100
MAX_STREAM = 86400.0  # seconds a watch stream may be asked to last
_QUERY_BOOLEANS = {"true": True, "false": False}


def _query_integer(raw: object) -> object:
    """Only plain decimal digits are an integer; anything else is left for strict validation to reject."""
    return int(raw) if isinstance(raw, str) and _QUERY_INTEGER.fullmatch(raw) else raw


def _query_number(raw: object) -> object:
    """A decimal number (``30``, ``0.5``); anything else is left for strict validation to reject."""
    return float(raw) if isinstance(raw, str) and _QUERY_NUMBER.fullmatch(raw) else raw


def _query_boolean(raw: object) -> object:
    """Only ``true`` and ``false`` (as OpenAPI serialises them); not ``1``, ``yes`` or ``on``."""
    return _QUERY_BOOLEANS.get(raw, raw) if isinstance(raw, str) else raw


QueryBool = Annotated[bool, BeforeValidator(_query_boolean)]
Consistency = Literal["linearizable", "lease", "stale"]


class ReadQuery(BaseModel):
    """Query of a single-key read or ``GET /``: ``ReadQuery.model_validate(request.args.to_dict())``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    consistency: Consistency = "linearizable"
    redirect: QueryBool = False


class WriteQuery(BaseModel):
    """Query of a write: only ``redirect``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    redirect: QueryBool = False


QueryInt = Annotated[int, BeforeValidator(_query_integer)]
LeaseId = Annotated[int, Field(ge=1, le=MAX_LEASE_ID)]


class ListQuery(ReadQuery):
    """Query of ``GET /kv``: a page of keys in order; ``next`` in the answer is the next page's start."""

    prefix: str = ""
    limit: Annotated[QueryInt, Field(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    start_after: str | None = None


class KeyQuery(ReadQuery):
    """Query of ``GET /kv/{key}``: a read, or with ``wait`` a long-poll for the key's next change."""

    wait: QueryBool = False
    after_revision: Annotated[QueryInt, Field(ge=0)] | None = None
    timeout: Annotated[float, BeforeValidator(_query_number), Field(ge=0, le=MAX_WAIT)] = DEFAULT_WAIT


class WatchQuery(BaseModel):
    """Query of ``GET /watch``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    prefix: str = ""
    after_revision: Annotated[QueryInt, Field(ge=0)] | None = None
    timeout: Annotated[float, BeforeValidator(_query_number), Field(ge=0, le=MAX_STREAM)] | None = None


class EventsQuery(BaseModel):
    """Query of ``GET /events``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    timeout: Annotated[float, BeforeValidator(_query_number), Field(ge=0, le=MAX_STREAM)] | None = None


# --- client bodies ----------------------------------------------------------------------------------------


class ValueBody(StrictInput):
    """``{"value": V}``: the body of ``POST /`` and the answer of ``GET /`` and ``POST /``."""

    value: JsonValue


class FormValueBody(StrictInput):
    """A real form body ``value=<text>`` sent to ``POST /``."""

    value: str


class WriteRequest(StrictInput):
    """Body of ``PUT``/``POST /kv/{key}``; ``prev_value`` and/or ``prev_revision`` make it a compare-and-set,
    ``lease`` attaches the key to a lease."""

    value: JsonValue
    prev_value: JsonValue = None
    prev_revision: NonNegativeInt | None = None
    lease: LeaseId | None = None

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
    next: str | None


class WatchEvent(_Output):
    """A change of a key: what a long-poll answers and each event of a watch stream carries."""

    type: Literal["put", "delete"]
    key: str
    value: JsonValue
    revision: PositiveInt


class CompactedError(ErrorBody):
    """Body of a 410: the history no longer holds changes after the revision asked for."""

    compact_revision: NonNegativeInt


# --- transactions -------------------------------------------------------------------------------------------


class CompareValue(StrictInput):
    key: Key
    value: JsonValue


class CompareRevision(StrictInput):
    key: Key
    revision: NonNegativeInt


class TxnPut(StrictInput):
    key: Key
    value: JsonValue
    lease: LeaseId | None = None


class TxnKey(StrictInput):
    key: Key


class TxnPutOperation(StrictInput):
    put: TxnPut


class TxnDeleteOperation(StrictInput):
    delete: TxnKey


class TxnGetOperation(StrictInput):
    get: TxnKey


TxnOperation = TxnPutOperation | TxnDeleteOperation | TxnGetOperation


class TxnRequest(StrictInput):
    """``POST /txn``: etcd-style compare, then the success or the failure operations (limits: see the spec)."""

    compare: Annotated[tuple[CompareValue | CompareRevision, ...], Field(max_length=MAX_TXN_COMPARES)] = ()
    success: Annotated[tuple[TxnOperation, ...], Field(max_length=MAX_TXN_OPS)] = ()
    failure: Annotated[tuple[TxnOperation, ...], Field(max_length=MAX_TXN_OPS)] = ()


class TxnResult(BaseModel):
    """One operation's outcome: the fields that apply to it (see the spec's ``TxnResult``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    value: JsonValue = None
    revision: PositiveInt | None = None
    found: bool | None = None
    deleted: bool | None = None


class TxnResponse(_Output):
    succeeded: bool
    revision: NonNegativeInt
    results: list[TxnResult]


# --- leases -------------------------------------------------------------------------------------------------


class LeaseGrantRequest(StrictInput):
    ttl: Annotated[int, Field(ge=1, le=MAX_LEASE_TTL)]
    id: LeaseId | None = None


class LeaseInfo(_Output):
    id: PositiveInt
    ttl: PositiveInt


class LeaseList(_Output):
    leases: list[LeaseInfo]


class LeaseDetail(_Output):
    id: PositiveInt
    ttl: PositiveInt
    remaining: Annotated[float, Field(ge=0)]
    keys: list[str]


class LeaseRevokeResult(_Output):
    id: PositiveInt
    revoked: Literal[True] = True
    deleted: NonNegativeInt
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
    insecure: bool


class LogEntryInfo(_Output):
    index: PositiveInt
    term: NonNegativeInt
    kind: Literal["normal", "membership"]


class NodeState(_Output):
    """One member as the dashboard draws it (a ``state`` event of ``/events``)."""

    id: str
    role: Role
    term: NonNegativeInt
    vote: str | None
    leader: str | None
    commit: NonNegativeInt
    applied: NonNegativeInt
    last_index: NonNegativeInt
    last_term: NonNegativeInt
    snapshot_index: NonNegativeInt
    log: list[LogEntryInfo]
    members: list[Member]


class ElectionStep(_Output):
    """One step of an election (an ``election`` event of ``/events``)."""

    step: Literal["pre-campaign", "campaign", "voted", "leader", "follower"]
    term: NonNegativeInt
    candidate: str | None  # on ``voted``: whom the vote went to
    leader: str | None  # on ``follower``: the leader now known


class TrafficCount(_Output):
    direction: Literal["sent", "received"]
    peer: str
    kind: str
    count: PositiveInt


class Traffic(_Output):
    """The peer messages of one interval (a ``traffic`` event of ``/events``)."""

    seconds: float
    counts: list[TrafficCount]


class Health(_Output):
    status: Literal["ok"] = "ok"


class Accepted(_Output):
    """The ``{}`` that answers every Raft message."""


# --- cluster operations -------------------------------------------------------------------------------------

NodeId = Annotated[
    str, Field(min_length=1, max_length=MAX_KEY_BYTES, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
BaseUrl = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]


class MemberList(_Output):
    """The configuration: each member, and the leader (``GET``, and the answer of every change)."""

    members: list[Member]
    leader: LeaderInfo | None


class NewMember(StrictInput):
    """``POST /cluster/members``: a server to add. It joins as a learner, and becomes a voter once caught up
    unless ``voter`` is false (then it stays a learner)."""

    id: NodeId
    url: BaseUrl
    voter: bool = True


class MemberSet(StrictInput):
    """``PUT /cluster/members``: exactly these members, several changed at once through joint consensus."""

    members: Annotated[list[NewMember], Field(min_length=1, max_length=64)]


class TransferRequest(StrictInput):
    """``POST /cluster/transfer-leadership``: to ``id``, or (absent) to the most caught-up voter."""

    id: NodeId | None = None


class Partition(StrictInput):
    """``PUT /cluster/partition`` and its answer: the peers this node is cut off from (none: healed)."""

    peers: list[NodeId] = Field(max_length=MAX_PARTITION_PEERS)


class ClusterQuery(BaseModel):
    """Query of a cluster call: only ``redirect``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    redirect: QueryBool = False


class SnapshotChunkQuery(BaseModel):
    """Which snapshot a chunk of data belongs to, and where in it the chunk starts."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    index: Annotated[int, BeforeValidator(_query_integer), Field(ge=1)]
    term: Annotated[int, BeforeValidator(_query_integer), Field(ge=0)]
    size: Annotated[int, BeforeValidator(_query_integer), Field(ge=0)]
    crc: Annotated[int, BeforeValidator(_query_integer), Field(ge=0, le=0xFFFFFFFF)]
    offset: Annotated[int, BeforeValidator(_query_integer), Field(ge=0)]


class SnapshotChunkAnswer(_Output):
    """Where the receiver stands: the sender continues from ``offset``; ``complete`` once all arrived."""

    offset: NonNegativeInt
    complete: bool
