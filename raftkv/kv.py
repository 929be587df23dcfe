"""The replicated state machine: keys with etcd-style revisions, compare-and-set, and a dedup table.

Every node applies the same committed log entries in the same order and must end in the same state, so
everything here is a pure function of (state, entry bytes): no clock, no randomness, no iteration over
anything whose order differs between nodes, and no outcome that depends on the process: not on how deep the
caller's stack is (see ``MAX_COMMAND_NESTING``) nor on the interpreter's int-digits limit (integer literals
longer than ``MAX_INTEGER_DIGITS`` are refused, on every node). A bad entry yields an error result, never an
exception: one poisoned entry must not stop every replica's apply loop.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import operator
import re
import struct
import sys
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO, Final, TypeAlias

from raftkv.machine import SnapshotWriter

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

DEFAULT_IDEMPOTENCY_CAPACITY: Final = 10_000
"""How many idempotency keys are remembered; the oldest (by apply order) is forgotten first."""

MAX_COMMAND_NESTING: Final = 64
"""Deepest nesting of arrays/objects in an encoded command (the command object itself is level 1).

The stdlib JSON parser's own limit is the interpreter's recursion limit, which depends on the caller's stack
depth: near it, one node could accept an entry another rejects, and the replicas would diverge. A fixed
limit, checked on the bytes before parsing, keeps the outcome a function of the entry alone.
"""

MAX_INTEGER_DIGITS: Final = 640
"""Longest integer literal (digits, sign not counted) that JSON text here may hold.

CPython converts an integer to or from decimal text only within the int-digits limit, which each process sets
for itself (``PYTHONINTMAXSTRDIGITS``, ``sys.set_int_max_str_digits``). 640 is the least limit it accepts
(``sys.int_info.str_digits_check_threshold``; 0 means no limit), so every node parses such a literal and
writes it back whatever its setting, and every node refuses a longer one.
"""


class Unset(Enum):
    """The type of ``UNSET``, so that ``prev_value`` can tell "not given" from "given as null"."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


class CommandEncodeError(ValueError):
    """A command that cannot go into the log: a value that is not JSON, not UTF-8, or nested too deeply."""


class CommandDecodeError(ValueError):
    """Entry bytes that are not a command this version understands."""


class SnapshotDecodeError(ValueError):
    """Bytes that are not a snapshot written by ``KVStore.snapshot``."""


class ApplyOrderError(ValueError):
    """An entry applied out of order: applying twice or skipping one would make this replica diverge."""


# --- commands -------------------------------------------------------------------------------------------


def _check_common_fields(key: str, prev_revision: int | None, idempotency_key: str | None) -> None:
    """Reject fields no valid command has; runs on every construction, so decoded commands are checked too."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    key.encode("utf-8")  # keys are UTF-8 strings: a lone surrogate raises UnicodeEncodeError, a ValueError
    if prev_revision is not None and (type(prev_revision) is not int or prev_revision < 0):
        raise ValueError("prev_revision must be a non-negative integer")
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
        raise ValueError("idempotency_key must be a non-empty string")


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` to ``key``, if the preconditions (all that are given) hold.

    ``prev_revision``: 0 means the key must not exist; N means the key's ``mod_revision`` must be N.
    ``prev_value``: the key must exist and hold this JSON value (``None`` means "holds null"; ``UNSET``
    means no such check). Values compare as canonical JSON: ``1``, ``1.0`` and ``true`` all differ.
    """

    key: str
    value: JSONValue
    prev_value: JSONValue | Unset = UNSET
    prev_revision: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_common_fields(self.key, self.prev_revision, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``, if ``prev_revision`` (when given) holds; same meaning as for ``Put``."""

    key: str
    prev_revision: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _check_common_fields(self.key, self.prev_revision, self.idempotency_key)


Command: TypeAlias = Put | Delete

_COMMAND_TYPES: Final[dict[str, type[Put] | type[Delete]]] = {"put": Put, "delete": Delete}
_OPS: Final = {command_type: op for op, command_type in _COMMAND_TYPES.items()}

_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS_TO_PARENS: Final = bytes.maketrans(b"[{]}", b"(())")
_ALL_BUT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_DIGITS_TO_ZEROS: Final = bytes(ord("0") if b in b"0123456789" else ord(" ") for b in range(256))
_TOO_MANY_DIGITS: Final = b"0" * (MAX_INTEGER_DIGITS + 1)


def _nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (unbalanced text counts as too deep).

    Runs at C speed: the common case (few brackets) is two ``count`` calls; otherwise strings are cut out,
    brackets become parentheses, and each pass of ``replace`` peels off one level of nesting.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    parens = _JSON_STRING.sub(b"", data).translate(_BRACKETS_TO_PARENS, _ALL_BUT_BRACKETS)
    for _ in range(limit):
        if not parens:
            return False
        parens = parens.replace(b"()", b"")
    return bool(parens)


def _finite_float(text: str) -> float:
    """Parse a JSON number as a float, refusing ``1e999``: infinity is not JSON and could not be written back."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text}")
    return number


def _reject_constant(name: str) -> float:
    """Refuse the non-JSON literals ``NaN``, ``Infinity`` and ``-Infinity`` that ``json.loads`` accepts."""
    raise ValueError(f"not JSON: {name}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"integer literal longer than {MAX_INTEGER_DIGITS} digits")
    return int(text)


# Built once: ``json.loads`` with arguments builds a decoder per call, which costs more than a small command's
# parse. A decoder keeps no state between calls (``json.loads`` itself shares one among all threads).
_DECODER: Final = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
_DECODER_OF_BOUNDED_INTS: Final = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, parse_int=_bounded_int
)


def _load_json(data: bytes, nesting_limit: int, errors: str) -> Any:
    """Parse strict JSON whose outcome depends only on ``data`` (raises ValueError).

    Only text with a run of more than ``MAX_INTEGER_DIGITS`` digits somewhere (perhaps inside a string) can
    hold a literal too long, so the common case pays one C-speed scan and the stdlib's own integer parsing.
    """
    if _nesting_exceeds(data, nesting_limit):
        raise ValueError(f"nested deeper than {nesting_limit} levels, or unbalanced")
    long_digit_run = len(data) > MAX_INTEGER_DIGITS and _TOO_MANY_DIGITS in data.translate(_DIGITS_TO_ZEROS)
    decoder = _DECODER_OF_BOUNDED_INTS if long_digit_run else _DECODER
    return decoder.decode(data.decode("utf-8", errors))


def _dump_json(value: object, errors: str) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8", errors
    )


def encode_command(command: Command) -> bytes:
    """The log form of a command: compact JSON, with fields left at their defaults omitted."""
    fields: dict[str, JSONValue] = {"op": _OPS[type(command)]}
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        if field.default is dataclasses.MISSING or value is not field.default:
            fields[field.name] = value
    try:
        data = _dump_json(fields, "strict")
    except (TypeError, ValueError, RecursionError) as error:
        raise CommandEncodeError(f"cannot encode {type(command).__name__}: {error}") from None
    if _nesting_exceeds(data, MAX_COMMAND_NESTING):
        raise CommandEncodeError(f"value nested deeper than {MAX_COMMAND_NESTING - 1} levels")
    return data


def value_size(value: JSONValue) -> int:
    """Bytes of ``value`` as compact JSON: what a value limit counts (raises CommandEncodeError if not JSON)."""
    try:
        return len(_dump_json(value, "strict"))
    except (TypeError, ValueError, RecursionError) as error:
        raise CommandEncodeError(f"cannot encode the value: {error}") from None


def decode_command(data: bytes) -> Command:
    """Parse what ``encode_command`` wrote; anything else raises ``CommandDecodeError``."""
    try:
        fields = _load_json(data, MAX_COMMAND_NESTING, "strict")
    except ValueError as error:
        raise CommandDecodeError(f"not a JSON command: {error}") from None
    if not isinstance(fields, dict):
        raise CommandDecodeError("a command is a JSON object")
    op = fields.pop("op", None)
    command_type = _COMMAND_TYPES.get(op) if isinstance(op, str) else None
    if command_type is None:
        raise CommandDecodeError(f"unknown op: {op!r:.100}")
    known = dataclasses.fields(command_type)
    missing = {f.name for f in known if f.default is dataclasses.MISSING} - fields.keys()
    unknown = fields.keys() - {f.name for f in known}
    if missing or unknown:
        raise CommandDecodeError(f"{op}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    try:
        return command_type(**fields)
    except ValueError as error:
        raise CommandDecodeError(f"{op}: {error}") from None


# --- state and results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key's current state, as etcd keeps it. ``value`` is shared with the store: treat it as read-only."""

    key: str
    value: JSONValue
    create_revision: int
    mod_revision: int
    version: int  # writes since the key was (re)created; 1 after the first


@dataclass(frozen=True, slots=True)
class Ok:
    """A put succeeded; ``revision`` is the store revision it created."""

    key: str
    value: JSONValue
    revision: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """A delete succeeded; ``revision`` is the store revision it created."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class NotFound:
    """A delete of an absent key: nothing changed; ``revision`` is the store revision it saw."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class PreconditionFailed:
    """A precondition did not hold: nothing changed. ``current`` is what the key held (None: absent)."""

    key: str
    current: KeyValue | None
    revision: int


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """The entry was not a command: nothing changed. Deterministic, so every replica returns the same."""

    reason: str
    revision: int


WriteResult: TypeAlias = Ok | Deleted | NotFound | PreconditionFailed
Result: TypeAlias = WriteResult | InvalidCommand


def _same_json(a: JSONValue, b: JSONValue) -> bool:
    """JSON equality: object member order does not matter, but types do (Python says ``True == 1 == 1.0``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _preconditions_hold(command: Command, current: KeyValue | None) -> bool:
    # A live key's mod_revision is at least 1, so "0 = must not exist" needs no case of its own.
    current_revision = 0 if current is None else current.mod_revision
    if command.prev_revision is not None and current_revision != command.prev_revision:
        return False
    if isinstance(command, Put) and command.prev_value is not UNSET:
        return current is not None and _same_json(current.value, command.prev_value)
    return True


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None if there is none), so that a
    prefix scan is one bisected slice of the sorted keys."""
    stem = prefix.rstrip(chr(sys.maxunicode))
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


# --- the sorted table -----------------------------------------------------------------------------------

_CHUNK_KEYS: Final = 1000
"""Keys per chunk of the sorted table; a chunk splits above twice this and merges with a neighbour at half.

A new key shifts the references of one chunk, not those of every greater key in the store, and a capture
shares the chunks instead of copying them."""


class _Chunk:
    """A run of consecutive keys with their state, column by column; revisions are machine integers in arrays
    (8 bytes each) rather than int objects. ``epoch`` is the table's epoch when this chunk was made."""

    __slots__ = ("create", "epoch", "keys", "mod", "values", "version")

    def __init__(
        self,
        epoch: int,
        keys: list[str],
        values: list[JSONValue],
        create: array[int],
        mod: array[int],
        version: array[int],
    ) -> None:
        self.epoch, self.keys, self.values = epoch, keys, values
        self.create, self.mod, self.version = create, mod, version

    @classmethod
    def empty(cls, epoch: int) -> _Chunk:
        return cls(epoch, [], [], array("q"), array("q"), array("q"))

    def copy(self, epoch: int) -> _Chunk:
        return self.slice(0, len(self.keys), epoch)

    def columns(self) -> tuple[list[str], list[JSONValue], array[int], array[int], array[int]]:
        return self.keys, self.values, self.create, self.mod, self.version

    def key_value(self, i: int) -> KeyValue:
        return KeyValue(self.keys[i], self.values[i], self.create[i], self.mod[i], self.version[i])

    def key_values(self, start: int, end: int) -> list[KeyValue]:
        return list(
            map(
                KeyValue,
                self.keys[start:end],
                self.values[start:end],
                self.create[start:end],
                self.mod[start:end],
                self.version[start:end],
            )
        )

    def insert(self, i: int, key: str, value: JSONValue, revision: int) -> None:
        self.keys.insert(i, key)
        self.values.insert(i, value)
        self.create.insert(i, revision)
        self.mod.insert(i, revision)
        self.version.insert(i, 1)

    def update(self, i: int, value: JSONValue, revision: int) -> None:
        self.values[i] = value
        self.mod[i] = revision
        self.version[i] += 1

    def delete(self, i: int) -> None:
        del self.keys[i], self.values[i], self.create[i], self.mod[i], self.version[i]

    def extend(self, other: _Chunk) -> None:
        self.keys += other.keys
        self.values += other.values
        self.create += other.create
        self.mod += other.mod
        self.version += other.version

    def slice(self, start: int, end: int, epoch: int) -> _Chunk:
        return _Chunk(
            epoch,
            self.keys[start:end],
            self.values[start:end],
            self.create[start:end],
            self.mod[start:end],
            self.version[start:end],
        )

    def split_off(self, at: int, epoch: int) -> _Chunk:
        """Move the keys from ``at`` on into a new chunk, and return it."""
        tail = self.slice(at, len(self.keys), epoch)
        del self.keys[at:], self.values[at:], self.create[at:], self.mod[at:], self.version[at:]
        return tail


class _SortedTable:
    """The keys in order with their state, in chunks that a capture shares.

    ``freeze`` returns the chunks as they are and starts a new epoch; a chunk from an older epoch may be held
    by a capture, so it is copied before it is changed (copy on write), and a capture never sees later writes.
    """

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []  # none empty
        self._maxes: list[str] = []  # the last key of each chunk, to find a key's chunk by bisection
        self._epoch = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: str) -> KeyValue | None:
        ci = bisect.bisect_left(self._maxes, key)
        if ci == len(self._maxes):
            return None
        chunk = self._chunks[ci]
        i = bisect.bisect_left(chunk.keys, key)
        return chunk.key_value(i) if chunk.keys[i] == key else None

    def range(self, low: str, high: str | None, limit: int | None) -> list[KeyValue]:
        """The keys in [low, high) in order (high None: no upper bound), at most ``limit`` (None: all)."""
        found: list[KeyValue] = []
        ci = bisect.bisect_left(self._maxes, low)
        start = bisect.bisect_left(self._chunks[ci].keys, low) if ci < len(self._chunks) else 0
        while ci < len(self._chunks) and (limit is None or len(found) < limit):
            keys = self._chunks[ci].keys
            end = len(keys) if high is None else bisect.bisect_left(keys, high, start)
            if limit is not None:
                end = min(end, start + limit - len(found))
            found += self._chunks[ci].key_values(start, end)
            if end < len(keys):
                break
            ci, start = ci + 1, 0
        return found

    def put(self, key: str, value: JSONValue, revision: int) -> None:
        """Set ``key`` to ``value`` at ``revision``: a new key starts at version 1, an old one counts up."""
        if not self._chunks:
            self._chunks.append(_Chunk.empty(self._epoch))
            self._maxes.append(key)
        ci = min(bisect.bisect_left(self._maxes, key), len(self._chunks) - 1)
        chunk = self._writable(ci)
        i = bisect.bisect_left(chunk.keys, key)
        if i < len(chunk.keys) and chunk.keys[i] == key:
            chunk.update(i, value, revision)
            return
        chunk.insert(i, key, value, revision)
        self._count += 1
        self._maxes[ci] = chunk.keys[-1]
        self._split_if_big(ci)

    def delete(self, key: str) -> None:
        """Remove ``key``, which must be present."""
        ci = bisect.bisect_left(self._maxes, key)
        chunk = self._writable(ci)
        chunk.delete(bisect.bisect_left(chunk.keys, key))
        self._count -= 1
        if len(self._chunks) > 1 and len(chunk.keys) <= _CHUNK_KEYS // 2:
            self._merge(ci)
        elif chunk.keys:
            self._maxes[ci] = chunk.keys[-1]
        else:
            self._chunks.clear()
            self._maxes.clear()

    def append(self, run: _Chunk) -> None:
        """Add a run of keys above all present ones (restore's way in), in chunks of ``_CHUNK_KEYS``."""
        for start in range(0, len(run.keys), _CHUNK_KEYS):
            chunk = run.slice(start, start + _CHUNK_KEYS, self._epoch)
            self._chunks.append(chunk)
            self._maxes.append(chunk.keys[-1])
        self._count += len(run.keys)

    def last_key(self) -> str:
        """The greatest key, or "" (which is below every key) if there are none."""
        return self._maxes[-1] if self._maxes else ""

    def freeze(self) -> tuple[_Chunk, ...]:
        """The chunks as they are now; later writes leave them alone."""
        self._epoch += 1
        return tuple(self._chunks)

    def _writable(self, ci: int) -> _Chunk:
        chunk = self._chunks[ci]
        if chunk.epoch != self._epoch:
            chunk = self._chunks[ci] = chunk.copy(self._epoch)
        return chunk

    def _split_if_big(self, ci: int) -> None:
        chunk = self._chunks[ci]
        if len(chunk.keys) > 2 * _CHUNK_KEYS:
            tail = chunk.split_off(_CHUNK_KEYS, self._epoch)
            self._chunks.insert(ci + 1, tail)
            self._maxes[ci : ci + 1] = [chunk.keys[-1], tail.keys[-1]]

    def _merge(self, ci: int) -> None:
        """Merge the small chunk ``ci`` with a neighbour, keeping chunks few and the bisection short."""
        left = ci if ci + 1 < len(self._chunks) else ci - 1
        chunk = self._writable(left)
        chunk.extend(self._chunks.pop(left + 1))
        del self._maxes[left + 1]
        self._maxes[left] = chunk.keys[-1]
        self._split_if_big(left)


# --- snapshot form --------------------------------------------------------------------------------------
#
# A snapshot is _SNAPSHOT_PREFIX (magic and format number) and then frames, each a big-endian u32 length, the
# CRC-32 of the body, and the body: JSON, UTF-8 with lone surrogates passed through (values decoded from
# "\ud800" escapes may hold them, and so may idempotency keys). The first frame is the header, an object of
# the counts; then come the keys in order, as columns [keys, values, create, mod, version] of at most
# _FRAME_ROWS rows; then the idempotency table, oldest first, as columns [idempotency keys, results]; then
# the end of the data. Values stay JSON, which holds whatever a command can carry (integers of any size,
# lone surrogates), and a whole frame parses in one call. Where frames are cut depends on the rows alone
# (every _FRAME_ROWS rows, halved while a body is over _FRAME_BYTES), not on the table's chunks, so equal
# states write equal bytes.

_SNAPSHOT_PREFIX: Final = b"RKVS" + (2).to_bytes(4, "big")  # format 1 was one JSON object
_FRAME_HEAD: Final = struct.Struct(">II")  # body length, CRC-32 of the body
_FRAME_ROWS: Final = 1000
_FRAME_BYTES: Final = 1 << 20  # a frame of several rows is halved until its body is at most this long
_READ_PIECE: Final = 1 << 20  # a length read from the data is trusted no further than the data goes
_SNAPSHOT_NESTING: Final = MAX_COMMAND_NESTING + 8  # a value plus a frame's wrappers around it

_Frame: TypeAlias = list[list[Any]]  # columns of equal length


def _column_frames(columns: Sequence[Iterator[Any]]) -> Iterator[_Frame]:
    """Cut the columns (iterators of equal length) into frames of ``_FRAME_ROWS`` rows; the last may be shorter."""
    while (frame := [list(itertools.islice(column, _FRAME_ROWS)) for column in columns]) and frame[0]:
        yield frame


def _encoded(frame: _Frame) -> Iterator[bytes]:
    """The body of ``frame``, or, when it is over ``_FRAME_BYTES``, those of its halves (one row may be more)."""
    body = _dump_json(frame, "surrogatepass")
    rows = len(frame[0])
    if len(body) <= _FRAME_BYTES or rows == 1:
        yield body
        return
    yield from _encoded([column[: rows // 2] for column in frame])
    yield from _encoded([column[rows // 2 :] for column in frame])


def _write_frame(out: BinaryIO, body: bytes) -> None:
    out.write(_FRAME_HEAD.pack(len(body), zlib.crc32(body)))
    out.write(body)


def _read_exact(data: BinaryIO, size: int) -> bytes:
    pieces = []
    while size > 0:
        piece = data.read(min(size, _READ_PIECE))
        if not piece:
            raise SnapshotDecodeError("truncated snapshot")
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def _read_frame(data: BinaryIO) -> Any:
    length, crc = _FRAME_HEAD.unpack(_read_exact(data, _FRAME_HEAD.size))
    body = _read_exact(data, length)
    if zlib.crc32(body) != crc:
        raise SnapshotDecodeError("snapshot frame fails its checksum")
    try:
        return _load_json(body, _SNAPSHOT_NESTING, "surrogatepass")
    except ValueError as error:
        raise SnapshotDecodeError(f"snapshot frame is not JSON: {error}") from None


@dataclass(frozen=True, slots=True)
class _Header:
    applied_index: int
    revision: int
    idempotency_capacity: int
    keys: int
    idempotency: int

    @classmethod
    def from_json(cls, item: Any) -> _Header:
        fields = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(item, dict) or list(item) != fields or not all(_is_count(v) for v in item.values()):
            raise SnapshotDecodeError(f"bad snapshot header: {item!r:.200}")
        header = cls(**item)
        if header.idempotency_capacity < 1 or header.idempotency > header.idempotency_capacity:
            raise SnapshotDecodeError("idempotency table exceeds its capacity")
        return header


def _is_count(item: object) -> bool:
    return type(item) is int and item >= 0


def _all_of_type(items: list[Any], kind: type) -> bool:
    return set(map(type, items)) <= {kind}


def _key_run_from_json(frame: Any, after: str, revision: int) -> _Chunk:
    """A frame of keys, checked: string keys ascending from above ``after``, revisions in 1..``revision``."""
    match frame:
        case [list(keys), list(values), list(create), list(mod), list(version)] if (
            0 < len(keys) == len(values) == len(create) == len(mod) == len(version)
        ):
            pass
        case _:
            raise SnapshotDecodeError(f"bad key frame: {frame!r:.200}")
    if not _all_of_type(keys, str) or not all(map(operator.lt, itertools.chain((after,), keys), keys)):
        raise SnapshotDecodeError("snapshot keys are not strings in strictly ascending order")
    if not all(_all_of_type(column, int) for column in (create, mod, version)):
        raise SnapshotDecodeError("snapshot revisions are not integers")
    if min(create) < 1 or max(mod) > revision or min(version) < 1 or not all(map(operator.le, create, mod)):
        raise SnapshotDecodeError("snapshot revisions out of order or range")
    try:
        "".join(keys).encode("utf-8")  # as commands check them: a lone surrogate raises
        return _Chunk(0, keys, values, array("q", create), array("q", mod), array("q", version))
    except (ValueError, OverflowError) as error:
        raise SnapshotDecodeError(f"bad key frame: {error}") from None


def _results_from_json(frame: Any) -> list[tuple[str, WriteResult]]:
    match frame:
        case [list(keys), list(results)] if 0 < len(keys) == len(results) and _all_of_type(keys, str):
            return list(zip(keys, map(_result_from_json, results), strict=True))
    raise SnapshotDecodeError(f"bad idempotency frame: {frame!r:.200}")


def _key_value_to_json(kv: KeyValue) -> JSONValue:
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version]


def _key_value_from_json(item: Any) -> KeyValue:
    match item:
        case [str(key), value, int(create_revision), int(mod_revision), int(version)]:
            return KeyValue(key, value, create_revision, mod_revision, version)
    raise SnapshotDecodeError(f"bad key entry: {item!r:.100}")


def _result_to_json(result: WriteResult) -> JSONValue:
    match result:
        case Ok():
            return ["ok", result.key, result.value, result.revision]
        case Deleted():
            return ["deleted", result.key, result.revision]
        case NotFound():
            return ["not_found", result.key, result.revision]
        case PreconditionFailed():
            current = None if result.current is None else _key_value_to_json(result.current)
            return ["precondition_failed", result.key, current, result.revision]


def _result_from_json(item: Any) -> WriteResult:
    match item:
        case ["ok", str(key), value, int(revision)]:
            return Ok(key, value, revision)
        case ["deleted", str(key), int(revision)]:
            return Deleted(key, revision)
        case ["not_found", str(key), int(revision)]:
            return NotFound(key, revision)
        case ["precondition_failed", str(key), current, int(revision)]:
            return PreconditionFailed(
                key, None if current is None else _key_value_from_json(current), revision
            )
    raise SnapshotDecodeError(f"bad idempotency result: {item!r:.100}")


def _read_keys(data: BinaryIO, header: _Header) -> _SortedTable:
    table = _SortedTable()
    while len(table) < header.keys:
        run = _key_run_from_json(_read_frame(data), table.last_key(), header.revision)
        if len(run.keys) > header.keys - len(table):
            raise SnapshotDecodeError("more keys than the snapshot header counts")
        table.append(run)
    return table


def _read_idempotency(data: BinaryIO, header: _Header) -> OrderedDict[str, WriteResult]:
    table: OrderedDict[str, WriteResult] = OrderedDict()
    read = 0
    while read < header.idempotency:
        results = _results_from_json(_read_frame(data))
        read += len(results)
        table.update(results)
    if read != header.idempotency or len(table) != read:
        raise SnapshotDecodeError("idempotency table has duplicates or more entries than its header counts")
    return table


# --- the store ------------------------------------------------------------------------------------------


class KVStore:
    """The key-value state every replica builds by applying the committed log in order.

    Like etcd, a global ``revision`` counts successful writes; each key records the revision that created
    it and the one that last changed it. Writes that carry an idempotency key remember their result, so a
    client's retry (perhaps through a new leader, after the first attempt did commit) returns the first
    outcome instead of writing twice.
    """

    def __init__(self, idempotency_capacity: int = DEFAULT_IDEMPOTENCY_CAPACITY) -> None:
        if idempotency_capacity < 1:
            raise ValueError("idempotency_capacity must be at least 1")
        self._idempotency_capacity = idempotency_capacity
        self._table = _SortedTable()
        self._idempotency: OrderedDict[str, WriteResult] = OrderedDict()  # oldest first, by apply order
        self._revision = 0
        self._applied_index = 0

    @property
    def revision(self) -> int:
        """The number of successful writes so far (etcd's store revision)."""
        return self._revision

    @property
    def applied_index(self) -> int:
        """The index of the last log entry applied (or covered by the snapshot restored)."""
        return self._applied_index

    @property
    def idempotency_capacity(self) -> int:
        return self._idempotency_capacity

    def apply(self, index: int, data: bytes | None) -> Result | None:
        """Apply the committed entry at ``index``, which must directly follow ``applied_index``.

        ``data`` None is the no-op a new leader commits: it returns None and only advances ``applied_index``.
        Undecodable data returns ``InvalidCommand`` and changes nothing else.
        """
        if index != self._applied_index + 1:
            raise ApplyOrderError(f"entry {index} applied after entry {self._applied_index}")
        self._applied_index = index
        if data is None:
            return None
        try:
            command = decode_command(data)
        except CommandDecodeError as error:
            return InvalidCommand(str(error), self._revision)
        if command.idempotency_key is None:
            return self._execute(command)
        first = self._idempotency.get(command.idempotency_key)
        if first is not None:
            return first
        result = self._execute(command)
        self._remember(command.idempotency_key, result)
        return result

    def get(self, key: str) -> KeyValue | None:
        return self._table.get(key)

    def range(self, prefix: str = "", limit: int | None = None) -> list[KeyValue]:
        """Keys starting with ``prefix``, in key order (code point order, which is also UTF-8 byte order);
        at most ``limit`` of them (None: all)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        return self._table.range(prefix, _after_prefix(prefix), limit)

    def snapshot(self) -> SnapshotWriter:
        """Capture the state now -- the table's chunks, frozen, and a copy of the idempotency table, whose
        results are immutable -- and return the writer of its frames (see "snapshot form")."""
        header = _Header(
            self._applied_index,
            self._revision,
            self._idempotency_capacity,
            len(self._table),
            len(self._idempotency),
        )
        chunks = self._table.freeze()
        idempotency = list(self._idempotency.items())

        def write(out: BinaryIO) -> None:
            out.write(_SNAPSHOT_PREFIX)
            _write_frame(out, _dump_json(dataclasses.asdict(header), "strict"))
            columns = zip(*(chunk.columns() for chunk in chunks), strict=True)  # nothing if no chunks
            key_columns = [itertools.chain.from_iterable(column) for column in columns]
            result_columns = [(key for key, _ in idempotency), (_result_to_json(r) for _, r in idempotency)]
            for frame in itertools.chain(_column_frames(key_columns), _column_frames(result_columns)):
                for body in _encoded(frame):
                    _write_frame(out, body)

        return write

    def restore(self, data: BinaryIO) -> None:
        """Become the store a snapshot was written of, reading it frame by frame; it then applies the entries
        after its ``applied_index``. Raises SnapshotDecodeError, changing nothing, on anything else."""
        if _read_exact(data, len(_SNAPSHOT_PREFIX)) != _SNAPSHOT_PREFIX:
            raise SnapshotDecodeError("not a snapshot of this format")
        header = _Header.from_json(_read_frame(data))
        table = _read_keys(data, header)
        idempotency = _read_idempotency(data, header)
        if data.read(1):
            raise SnapshotDecodeError("data after the end of the snapshot")
        self._applied_index, self._revision = header.applied_index, header.revision
        self._idempotency_capacity, self._table, self._idempotency = (
            header.idempotency_capacity,
            table,
            idempotency,
        )

    def _execute(self, command: Command) -> WriteResult:
        current = self._table.get(command.key)
        if not _preconditions_hold(command, current):
            return PreconditionFailed(command.key, current, self._revision)
        if isinstance(command, Put):
            self._revision += 1
            self._table.put(command.key, command.value, self._revision)
            return Ok(command.key, command.value, self._revision)
        if current is None:
            return NotFound(command.key, self._revision)
        self._revision += 1
        self._table.delete(command.key)
        return Deleted(command.key, self._revision)

    def _remember(self, idempotency_key: str, result: WriteResult) -> None:
        self._idempotency[idempotency_key] = result
        if len(self._idempotency) > self._idempotency_capacity:
            self._idempotency.popitem(last=False)
