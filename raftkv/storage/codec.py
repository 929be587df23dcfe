"""Byte layout of the log file (snapshot data files hold the state machine's bytes and nothing else).

Log file: a header (magic ``RKVLOG02``, u32 salt) then frames. A frame is ``u32 length, u32 crc`` then
``length`` bytes of payload; the crc covers the length and the payload and is seeded with the file's salt, so
a frame copied from an older log generation, or one that happens to sit inside a value, does not pass for a
record here. A payload is one save: ``u8 flags`` (1 snapshot, 2 entries, 4 hard state) then what it holds, in
the order a save applies it:

- snapshot reference: ``u64 index, u64 term, u64 size, u32 crc, u32 length``, then ``length`` bytes of the
  encoded membership; size and crc (CRC-32) are those of the snapshot's data file (0 and 0 at index 0, the
  bootstrap configuration, which has none);
- entries: ``u64 first index, u32 count``, then per entry ``u64 term, u8 kind, i32 length`` and ``length``
  bytes of data (length -1 is a no-op's None);
- hard state: ``u64 term, u64 commit, i32 length`` and the vote's UTF-8 (length -1: no vote).

Integers are little-endian.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from raftkv.raft.membership import Membership, MembershipError
from raftkv.raft.types import Entry, EntryKind, HardState, Snapshot

_LOG_HEADER = struct.Struct("<8sI")
_LOG_MAGIC_FAMILY = b"RKVLOG"
_LOG_MAGIC = _LOG_MAGIC_FAMILY + b"02"
LOG_HEADER_SIZE = _LOG_HEADER.size

_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<II")
FRAME_HEADER_SIZE = _FRAME.size

_FLAGS = struct.Struct("<B")
_HAS_SNAPSHOT, _HAS_ENTRIES, _HAS_HARD_STATE = 1, 2, 4
_SNAPSHOT_REF = struct.Struct("<QQQII")
_ENTRIES_HEAD = struct.Struct("<QI")
_ENTRY_HEAD = struct.Struct("<QBi")
_HARD_STATE = struct.Struct("<QQi")
_NONE = -1
_KINDS = {kind.value: kind for kind in EntryKind}


class DecodeError(ValueError):
    """Bytes that do not decode; ``offset`` is relative to the start of what was being decoded."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset


class SnapshotData(NamedTuple):
    """Size and CRC-32 of one snapshot's data: what the log records of it, and part of its file's name."""

    size: int
    crc: int


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """What the log records about the current snapshot: its description, and the data its file must hold."""

    snapshot: Snapshot
    data: SnapshotData


@dataclass(frozen=True, slots=True)
class SaveRecord:
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: SnapshotRef | None


def encode_log_header(salt: int) -> bytes:
    return _LOG_HEADER.pack(_LOG_MAGIC, salt)


def decode_log_header(buf: bytes) -> int:
    """The file's salt."""
    if len(buf) < LOG_HEADER_SIZE:
        raise DecodeError(0, "log header is cut short")
    magic, salt = _LOG_HEADER.unpack_from(buf)
    if magic != _LOG_MAGIC:
        if magic.startswith(_LOG_MAGIC_FAMILY):
            raise DecodeError(
                0, f"log format {magic!r} is not {_LOG_MAGIC!r}: written by another raftkv version"
            )
        raise DecodeError(0, f"not a raftkv log (magic {magic!r})")
    return int(salt)


def encode_frame(payload: bytes, salt: int) -> bytes:
    length = _U32.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length, salt))
    return b"".join((length, _U32.pack(crc), payload))


def frame_end(buf: bytes, offset: int, salt: int) -> int | None:
    """Where the whole, valid frame starting at ``offset`` ends; None if no such frame starts there."""
    start = offset + FRAME_HEADER_SIZE
    if start > len(buf):
        return None
    length, crc = _FRAME.unpack_from(buf, offset)
    end = start + length
    if length == 0 or end > len(buf):
        return None
    view = memoryview(buf)
    return (
        end
        if zlib.crc32(view[start:end], zlib.crc32(view[offset : offset + _U32.size], salt)) == crc
        else None
    )


def encode_save(
    hard_state: HardState | None, entries: Sequence[Entry], snapshot: SnapshotRef | None
) -> bytes:
    flags = (
        (_HAS_SNAPSHOT if snapshot is not None else 0)
        | (_HAS_ENTRIES if entries else 0)
        | (_HAS_HARD_STATE if hard_state is not None else 0)
    )
    parts = [_FLAGS.pack(flags)]
    if snapshot is not None:
        described, data = snapshot.snapshot, snapshot.data
        membership = described.membership.encode()
        parts.append(
            _SNAPSHOT_REF.pack(described.index, described.term, data.size, data.crc, len(membership))
        )
        parts.append(membership)
    if entries:
        parts.append(_ENTRIES_HEAD.pack(entries[0].index, len(entries)))
        pack_head = _ENTRY_HEAD.pack
        for entry in entries:
            if entry.data is None:
                parts.append(pack_head(entry.term, entry.kind, _NONE))
            else:
                parts.append(pack_head(entry.term, entry.kind, len(entry.data)))
                parts.append(entry.data)
    if hard_state is not None:
        vote = b"" if hard_state.vote is None else hard_state.vote.encode()
        vote_length = _NONE if hard_state.vote is None else len(vote)
        parts.append(_HARD_STATE.pack(hard_state.term, hard_state.commit, vote_length))
        parts.append(vote)
    return b"".join(parts)


def encoded_entries_size(entries: Sequence[Entry]) -> int:
    """What ``encode_save`` spends on these entries: the measure of live data when deciding to compact."""
    return _ENTRIES_HEAD.size + sum(_ENTRY_HEAD.size + len(entry.data or b"") for entry in entries)


def decode_save(buf: bytes, start: int, end: int) -> SaveRecord:
    """The save encoded in ``buf[start:end]``; DecodeError offsets are relative to ``start``."""
    try:
        return _decode_save(buf, start, end)
    except (struct.error, UnicodeDecodeError, MembershipError) as exc:
        raise DecodeError(0, f"undecodable record: {exc}") from exc


def _decode_save(buf: bytes, start: int, end: int) -> SaveRecord:
    (flags,) = _FLAGS.unpack_from(buf, start)
    if flags & ~(_HAS_SNAPSHOT | _HAS_ENTRIES | _HAS_HARD_STATE):
        raise DecodeError(0, f"unknown record flags {flags:#x}")
    pos = start + _FLAGS.size
    snapshot = None
    if flags & _HAS_SNAPSHOT:
        index, term, size, crc, length = _SNAPSHOT_REF.unpack_from(buf, pos)
        pos += _SNAPSHOT_REF.size
        if length > end - pos:
            raise DecodeError(pos - start, f"membership has a bad length {length}")
        membership = Membership.decode(buf[pos : pos + length])
        pos += length
        snapshot = SnapshotRef(Snapshot(index, term, membership), SnapshotData(size, crc))
    entries: list[Entry] = []
    if flags & _HAS_ENTRIES:
        first, count = _ENTRIES_HEAD.unpack_from(buf, pos)
        pos += _ENTRIES_HEAD.size
        unpack_head, head_size, append = _ENTRY_HEAD.unpack_from, _ENTRY_HEAD.size, entries.append
        for index in range(first, first + count):
            term, kind_value, length = unpack_head(buf, pos)
            kind = _KINDS.get(kind_value)
            if kind is None:
                raise DecodeError(pos - start, f"entry {index} has an unknown kind {kind_value}")
            pos += head_size
            if length == _NONE:
                append(Entry(index, term, None, kind))
            elif 0 <= length <= end - pos:
                append(Entry(index, term, buf[pos : pos + length], kind))
                pos += length
            else:
                raise DecodeError(pos - start, f"entry {index} has a bad length {length}")
    hard_state = None
    if flags & _HAS_HARD_STATE:
        term, commit, vote_length = _HARD_STATE.unpack_from(buf, pos)
        pos += _HARD_STATE.size
        vote = None if vote_length == _NONE else buf[pos : pos + vote_length].decode()
        pos += max(vote_length, 0)
        hard_state = HardState(term, vote, commit)
    if pos != end:
        raise DecodeError(0, f"record holds {end - start} bytes but its contents take {pos - start}")
    return SaveRecord(hard_state, entries, snapshot)
