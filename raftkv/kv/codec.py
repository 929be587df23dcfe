"""The log form of commands: compact JSON with fields at their defaults left out, strictly checked on decode.

    {"op":"put","key":K,"value":V,"prev_value"?:V,"prev_revision"?:N,"idempotency_key"?:S,"lease"?:ID}
    {"op":"delete","key":K,"prev_revision"?:N,"idempotency_key"?:S}
    {"op":"txn","compare"?:[C...],"success"?:[O...],"failure"?:[O...],"idempotency_key"?:S}
        C: {"key":K,"value":V} or {"key":K,"revision":N}
        O: {"put":{"key":K,"value":V,"lease"?:ID}}, {"delete":{"key":K}} or {"get":{"key":K}}
    {"op":"lease_grant","lease":ID,"ttl":S,"idempotency_key"?:S}
    {"op":"lease_revoke","lease":ID,"idempotency_key"?:S}

Members come in this order, so the encoding of a command is canonical: equal commands, equal bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from raftkv.kv.commands import (
    Command,
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
)
from raftkv.kv.jsontext import JSONValue, dump_json, load_json, nesting_exceeds

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MAX_VALUE_NESTING: Final = 63
"""Deepest nesting of arrays/objects in a value a command carries (``[]`` is one level, a scalar none).

The stdlib JSON parser's own limit is the interpreter's recursion limit, which depends on the caller's stack
depth: near it, one node could accept an entry another rejects, and the replicas would diverge. A fixed
limit, checked on the bytes, keeps the outcome a function of the entry alone.
"""

MAX_COMMAND_NESTING: Final = MAX_VALUE_NESTING + 4
"""Deepest nesting in an encoded command (the command object is level 1): a transaction's put holds its value
four levels in. Checked on the bytes before they are parsed."""

FINGERPRINT_DIGITS: Final = 32
"""Hex digits of a fingerprint: 128 bits, so that two different commands under one idempotency key are
never taken for a retry of each other by chance."""

_COMMANDS: Final[dict[str, type[Command]]] = {
    "put": Put,
    "delete": Delete,
    "txn": Txn,
    "lease_grant": LeaseGrant,
    "lease_revoke": LeaseRevoke,
}
_TXN_OPS: Final[dict[str, type[TxnOp]]] = {"put": TxnPut, "delete": TxnDelete, "get": TxnGet}
_NAMES: Final[dict[type, str]] = {
    kind: name for names in (_COMMANDS, _TXN_OPS) for name, kind in names.items()
}

T = TypeVar("T", bound="DataclassInstance")


class CommandEncodeError(ValueError):
    """A command that cannot go into the log: a value that is not JSON, not UTF-8, or nested too deeply."""


class CommandDecodeError(ValueError):
    """Entry bytes that are not a command this version understands."""


def _members(item: DataclassInstance) -> dict[str, Any]:
    """The fields of a command (or of a part of one) that are not at their defaults, in declaration order."""
    members = {}
    for name, default in _defaults(type(item)):
        value = getattr(item, name)
        if type(value) is not type(default) or value != default:  # an empty tuple may be a copy
            members[name] = value
    return members


@functools.cache
def _defaults(kind: type[DataclassInstance]) -> tuple[tuple[str, object], ...]:
    """The fields of ``kind`` in order, each with its default (``dataclasses.MISSING``: none)."""
    return tuple((field.name, field.default) for field in dataclasses.fields(kind))


def _json_form(command: Command) -> dict[str, Any]:
    form: dict[str, Any] = {"op": _NAMES[type(command)], **_members(command)}
    if isinstance(command, Txn):
        for branch in ("success", "failure"):
            if branch in form:
                form[branch] = [{_NAMES[type(op)]: _members(op)} for op in form[branch]]
        if "compare" in form:
            form["compare"] = list(map(_members, form["compare"]))
    return form


def _txn_values(txn: Txn) -> Iterator[JSONValue]:
    """The JSON values a transaction carries: those it compares with and those it writes."""
    yield from (compare.value for compare in txn.compare if isinstance(compare, CompareValue))
    yield from (op.value for op in txn.success + txn.failure if isinstance(op, TxnPut))


def _nested_too_deep(command: Command, data: bytes) -> bool:
    """Whether a value of ``command`` (encoded as ``data``) nests deeper than ``MAX_VALUE_NESTING``."""
    if isinstance(command, Txn):
        return any(
            nesting_exceeds(dump_json(v, "surrogatepass"), MAX_VALUE_NESTING) for v in _txn_values(command)
        )
    return nesting_exceeds(data, 1 + MAX_VALUE_NESTING)  # any value is a member of the command object


def encode_command(command: Command) -> bytes:
    """The log form of a command (raises CommandEncodeError for a value that cannot be in it)."""
    try:
        data = dump_json(_json_form(command), "strict")
    except (TypeError, ValueError, RecursionError) as error:
        raise CommandEncodeError(f"cannot encode {type(command).__name__}: {error}") from None
    if _nested_too_deep(command, data):
        raise CommandEncodeError(f"value nested deeper than {MAX_VALUE_NESTING} levels")
    return data


def fingerprint(command: Command) -> str:
    """A digest of the command's log form without its idempotency key: what makes a retry the same request.

    Values are part of it as encoded, so a value whose object members come in another order is another
    request (the store keeps member order)."""
    form = _json_form(command)
    form.pop("idempotency_key", None)
    return hashlib.blake2b(dump_json(form, "surrogatepass"), digest_size=FINGERPRINT_DIGITS // 2).hexdigest()


def value_size(value: JSONValue) -> int:
    """Bytes of ``value`` as compact JSON: what a value limit counts (raises CommandEncodeError if not JSON)."""
    try:
        return len(dump_json(value, "strict"))
    except (TypeError, ValueError, RecursionError) as error:
        raise CommandEncodeError(f"cannot encode the value: {error}") from None


def decode_command(data: bytes) -> Command:
    """Parse what ``encode_command`` wrote; anything else raises ``CommandDecodeError``."""
    try:
        members = load_json(data, MAX_COMMAND_NESTING, "strict")
    except ValueError as error:
        raise CommandDecodeError(f"not a JSON command: {error}") from None
    if not isinstance(members, dict):
        raise CommandDecodeError("a command is a JSON object")
    op = members.pop("op", None)
    command_type = _COMMANDS.get(op) if isinstance(op, str) else None
    if command_type is None:
        raise CommandDecodeError(f"unknown op: {op!r:.100}")
    try:
        if command_type is Txn:
            members = _txn_members(members)
        command = _build(command_type, members)
    except ValueError as error:
        raise CommandDecodeError(f"{op}: {error}") from None
    if _nested_too_deep(command, data):
        raise CommandDecodeError(f"{op}: value nested deeper than {MAX_VALUE_NESTING} levels")
    return command


@functools.cache
def _field_names(kind: type[DataclassInstance]) -> tuple[frozenset[str], frozenset[str]]:
    """The names of the fields of ``kind`` that have no default, and of all its fields."""
    fields = _defaults(kind)
    required = frozenset(name for name, default in fields if default is dataclasses.MISSING)
    return required, frozenset(name for name, _ in fields)


def _build(kind: type[T], members: Any) -> T:
    """``kind`` built from a JSON object of exactly its fields (raises ValueError)."""
    if not isinstance(members, dict):
        raise ValueError(f"{_NAMES.get(kind, kind.__name__)} is not an object")
    required, known = _field_names(kind)
    if not required <= members.keys() <= known:
        missing, unknown = required - members.keys(), members.keys() - known
        raise ValueError(f"missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    return kind(**members)


def _txn_members(members: dict[str, Any]) -> dict[str, Any]:
    """A transaction's members with its lists turned into tuples of compares and operations."""
    lists = {name: members[name] for name in ("compare", "success", "failure") if name in members}
    if not all(isinstance(items, list) for items in lists.values()):
        raise ValueError("compare, success and failure are lists")
    converted = {
        name: tuple(map(_compare if name == "compare" else _op, items)) for name, items in lists.items()
    }
    return members | converted


def _compare(item: Any) -> CompareValue | CompareRevision:
    members = set(item) if isinstance(item, dict) else None
    if members == {"key", "value"}:
        return _build(CompareValue, item)
    if members == {"key", "revision"}:
        return _build(CompareRevision, item)
    raise ValueError(f"a comparison is {{key, value}} or {{key, revision}}: {item!r:.100}")


def _op(item: Any) -> TxnOp:
    if isinstance(item, dict) and len(item) == 1:
        [(name, members)] = item.items()
        if name in _TXN_OPS:
            return _build(_TXN_OPS[name], members)
    raise ValueError(f"an operation is {{put|delete|get: {{...}}}}: {item!r:.100}")
