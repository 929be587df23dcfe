"""CRC-checked frames of JSON, written and read one at a time, so that a snapshot streams both ways.

A frame is a big-endian u32 length, the CRC-32 of the body, and the body: JSON, UTF-8 with lone surrogates
passed through (values decoded from "\\ud800" escapes may hold them, and so may idempotency keys). A body of
rows is columns of equal length; where a run of rows is cut into frames depends on the rows alone (every
``FRAME_ROWS`` rows, halved while a body is over ``FRAME_BYTES``), so equal states write equal bytes.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, Final, TypeAlias

from raftkv.kv.jsontext import dump_json, load_json

FRAME_ROWS: Final = 1000
FRAME_BYTES: Final = 1 << 20  # a frame of several rows is halved until its body is at most this long
_HEAD: Final = struct.Struct(">II")  # body length, CRC-32 of the body
_READ_PIECE: Final = 1 << 20  # a length read from the data is trusted no further than the data goes

Rows: TypeAlias = list[list[Any]]  # columns of equal length


class SnapshotDecodeError(ValueError):
    """Bytes that are not a snapshot written by ``KVStore.snapshot``."""


def write_frame(out: BinaryIO, body: bytes) -> None:
    out.write(_HEAD.pack(len(body), zlib.crc32(body)))
    out.write(body)


def write_rows(out: BinaryIO, columns: Sequence[Iterator[Any]]) -> None:
    """Write the columns (iterators of equal length) as frames of at most ``FRAME_ROWS`` rows; none if empty."""
    while (rows := [list(itertools.islice(column, FRAME_ROWS)) for column in columns]) and rows[0]:
        for body in _bodies(rows):
            write_frame(out, body)


def _bodies(rows: Rows) -> Iterator[bytes]:
    """The body of ``rows``, or, when it is over ``FRAME_BYTES``, those of its halves (one row may be more)."""
    body = dump_json(rows, "surrogatepass")
    count = len(rows[0])
    if len(body) <= FRAME_BYTES or count == 1:
        yield body
        return
    yield from _bodies([column[: count // 2] for column in rows])
    yield from _bodies([column[count // 2 :] for column in rows])


def read_exact(data: BinaryIO, size: int) -> bytes:
    pieces = []
    while size > 0:
        piece = data.read(min(size, _READ_PIECE))
        if not piece:
            raise SnapshotDecodeError("truncated snapshot")
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def read_frame(data: BinaryIO, nesting_limit: int) -> Any:
    """The next frame's body, parsed (raises SnapshotDecodeError)."""
    length, crc = _HEAD.unpack(read_exact(data, _HEAD.size))
    body = read_exact(data, length)
    if zlib.crc32(body) != crc:
        raise SnapshotDecodeError("snapshot frame fails its checksum")
    try:
        return load_json(body, nesting_limit, "surrogatepass")
    except ValueError as error:
        raise SnapshotDecodeError(f"snapshot frame is not JSON: {error}") from None


def read_rows(data: BinaryIO, nesting_limit: int, count: int, width: int) -> Iterator[Rows]:
    """The frames of ``count`` rows of ``width`` columns (raises SnapshotDecodeError if they are not)."""
    while count > 0:
        rows = read_frame(data, nesting_limit)
        if not (
            isinstance(rows, list)
            and len(rows) == width
            and all(isinstance(column, list) for column in rows)
            and 0 < len(rows[0]) <= count
            and all(len(column) == len(rows[0]) for column in rows)
        ):
            raise SnapshotDecodeError(f"bad frame of {width} columns (rows left: {count}): {rows!r:.200}")
        count -= len(rows[0])
        yield rows
