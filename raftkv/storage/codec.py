"""Byte layout of the log file and the snapshot file.

Log file: a header (magic, salt) then frames. A frame is ``u32 length, u32 crc`` then ``length`` bytes of
payload; the crc covers the length and the payload and is seeded with the file's salt, so a frame copied
from an older log generation, or one that happens to sit inside a value, does not pass for a record here.
A payload is one save: ``u8 flags`` then, in the order a save applies them, the snapshot reference, the
entries (first index and count, then ``u64 term, i32 length`` and the data per entry; length -1 is a
no-op's None) and the hard state. Integers are little-endian; indices and terms are u64.

Snapshot file: magic, index, term, crc32 of the data, then the data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.raft.types import Entry, HardState, Snapshot

_LOG_HEADER = struct.Struct("<8sI")
_LOG_MAGIC = b"RKVLOG01"
LOG_HEADER_SIZE = _LOG_HEADER.size

_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<II")
FRAME_HEADER_SIZE = _FRAME.size

_FLAGS = struct.Struct("<B")
_HAS_SNAPSHOT, _HAS_ENTRIES, _HAS_HARD_STATE = 1, 2, 4
_SNAPSHOT_REF = struct.Struct("<QQI")
_ENTRIES_HEAD = struct.Struct("<QI")
_ENTRY_HEAD = struct.Struct("<Qi")
_HARD_STATE = struct.Struct("<QQi")
_NONE = -1

_SNAPSHOT_HEADER = struct.Struct("<8sQQI")
_SNAPSHOT_MAGIC = b"RKVSNAP1"


class DecodeError(ValueError):
    """Bytes that do not decode; ``offset`` is relative to the start of what was being decoded."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """What the log records about a snapshot; the data lives in its own file, checked against ``crc``."""

    index: int
    term: int
    crc: int


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
        parts.append(_SNAPSHOT_REF.pack(snapshot.index, snapshot.term, snapshot.crc))
    if entries:
        parts.append(_ENTRIES_HEAD.pack(entries[0].index, len(entries)))
        pack_head = _ENTRY_HEAD.pack
        for entry in entries:
            if entry.data is None:
                parts.append(pack_head(entry.term, _NONE))
            else:
                parts.append(pack_head(entry.term, len(entry.data)))
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
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(0, f"undecodable record: {exc}") from exc


def _decode_save(buf: bytes, start: int, end: int) -> SaveRecord:
    (flags,) = _FLAGS.unpack_from(buf, start)
    if flags & ~(_HAS_SNAPSHOT | _HAS_ENTRIES | _HAS_HARD_STATE):
        raise DecodeError(0, f"unknown record flags {flags:#x}")
    pos = start + _FLAGS.size
    snapshot = None
    if flags & _HAS_SNAPSHOT:
        snapshot = SnapshotRef(*_SNAPSHOT_REF.unpack_from(buf, pos))
        pos += _SNAPSHOT_REF.size
    entries: list[Entry] = []
    if flags & _HAS_ENTRIES:
        first, count = _ENTRIES_HEAD.unpack_from(buf, pos)
        pos += _ENTRIES_HEAD.size
        unpack_head, head_size, append = _ENTRY_HEAD.unpack_from, _ENTRY_HEAD.size, entries.append
        for index in range(first, first + count):
            term, length = unpack_head(buf, pos)
            pos += head_size
            if length == _NONE:
                append(Entry(index, term, None))
            elif 0 <= length <= end - pos:
                append(Entry(index, term, buf[pos : pos + length]))
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


def encode_snapshot(snapshot: Snapshot, crc: int) -> bytes:
    return _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, snapshot.index, snapshot.term, crc) + snapshot.data


def decode_snapshot(buf: bytes, expected: SnapshotRef) -> Snapshot:
    """The snapshot in ``buf``, which must be the one ``expected`` describes."""
    if len(buf) < _SNAPSHOT_HEADER.size:
        raise DecodeError(0, "snapshot header is cut short")
    magic, index, term, crc = _SNAPSHOT_HEADER.unpack_from(buf)
    if magic != _SNAPSHOT_MAGIC:
        raise DecodeError(0, f"not a raftkv snapshot (magic {magic!r})")
    if SnapshotRef(index, term, crc) != expected:
        raise DecodeError(0, f"holds snapshot {index}/{term}/{crc:#x} but the log refers to {expected}")
    data = buf[_SNAPSHOT_HEADER.size :]
    if zlib.crc32(data) != crc:
        raise DecodeError(_SNAPSHOT_HEADER.size, "snapshot data does not match its checksum")
    return Snapshot(index, term, data)
