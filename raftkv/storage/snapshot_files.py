"""Snapshot data in files of their own beside the log: names, streamed writes, incoming transfers, reads.

A snapshot's data is one file holding exactly the state machine's bytes, named by the snapshot's index and
term and by the data's size and CRC-32 (``snapshot-<index>-<term>-<size>-<crc>.snap``, fixed width), so a name
always means one content: a file is never rewritten in place, and two different data for one snapshot (a state
machine need not serialise a state to the same bytes twice) never overwrite each other. A file only gets that
name whole: it is written under a temporary name (a local snapshot, ``.tmp``) or received into a part file
(from the leader, ``.part``), fsynced, renamed, and the directory fsynced. So a crash never leaves a named
file short, and the log, which records size and CRC, refers to one only once it exists.

An incoming transfer appends to its part file (named like the file it becomes) as chunks arrive, with a
checkpoint (an fsync) at every multiple of ``part_sync_bytes``, taken before any byte beyond it is written. A
part outlives a restart and resumes from the last checkpoint below its length: the last point known to be
durable, since what lay beyond it may be a torn tail after a power cut. So a resumed transfer never fails its
checksum for a power cut, and a restart without one costs less than ``part_sync_bytes`` of resending.

Where size and CRC are checked: as a local snapshot is written (over the bytes handed to the disk), when the
last byte of a transfer arrives (over the whole part, the bytes read back on a resume included), and, for a
file this process neither wrote nor received (the current one after a restart), the first time it is opened:
it is read through once before it is handed out, so a restore never starts on damaged data.

One caller at a time, as ``FileStorage``.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from raftkv.machine import SnapshotWriter
from raftkv.raft.types import Snapshot
from raftkv.storage.codec import SnapshotData, SnapshotRef
from raftkv.storage.disk import Disk
from raftkv.storage.errors import FailStop, StorageCorruptError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

Key = tuple[int, int]
"""A snapshot's (index, term): data is held by it, since the state as of one entry is one state."""

DATA_SUFFIX, PART_SUFFIX, TMP_SUFFIX = ".snap", ".part", ".tmp"
STREAM_BUFFER_BYTES = 1 << 20
"""The most a local snapshot holds in memory on its way to disk (beyond a single larger write of the writer's)."""
_READ_CHUNK = 1 << 20
_PREFIX = "snapshot-"
_NAME = re.compile(r"snapshot-(\d{20})-(\d{20})-(\d{20})-([0-9a-f]{8})(\.snap|\.part)")


def file_name(key: Key, data: SnapshotData, suffix: str) -> str:
    index, term = key
    return f"{_PREFIX}{index:020d}-{term:020d}-{data.size:020d}-{data.crc:08x}{suffix}"


def parse_name(name: str) -> tuple[Key, SnapshotData, str] | None:
    """What a data or part file's name says; None for any other name."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    index, term, size, crc, suffix = match.groups()
    return (int(index), int(term)), SnapshotData(int(size), int(crc, 16)), suffix


def _tmp_name(key: Key) -> str:
    index, term = key
    return f"{_PREFIX}{index:020d}-{term:020d}{TMP_SUFFIX}"


def _key(snapshot: Snapshot) -> Key:
    return snapshot.index, snapshot.term


class SnapshotFiles:
    """The snapshot data held in one directory: the current snapshot's, which the log refers to, and any written
    or received since, which a save may make current.

    A file is removed once nothing can need it: when a save makes a newer snapshot current (older data, the file
    it replaced, and transfers of older snapshots go), when another write or transfer for the same snapshot
    replaces data that is not current, and on start (whatever the log does not refer to, except the parts of
    transfers of snapshots newer than the current one, kept so that they can resume).
    """

    def __init__(self, directory: Path, disk: Disk, stop: FailStop, part_sync_bytes: int) -> None:
        if part_sync_bytes < 1:
            raise ValueError("part_sync_bytes must be at least 1")
        self.directory, self.disk, self.stop = directory, disk, stop
        self.part_sync_bytes = part_sync_bytes
        # The current snapshot: (0, 0) and None before there is one; no data at index 0 either.
        self._current_key: Key = (0, 0)
        self._current_data: SnapshotData | None = None
        self._held: dict[Key, SnapshotData] = {}
        self._incoming: dict[Key, _Receiver] = {}
        self._parts_found: dict[Key, SnapshotData] = {}  # left by an earlier run, read back once asked for
        self._checked: set[str] = set()

    # --- start ---------------------------------------------------------------------------------------------

    def recover(self, names: list[str], current: SnapshotRef | None) -> None:
        """Take the directory as found on start: the current data must be there; newer parts stay; the rest go."""
        if current is not None:
            self._become_current(current)
        if self._current_data is not None:
            current_file = file_name(self._current_key, self._current_data, DATA_SUFFIX)
            if current_file not in names:
                reason = "snapshot data the log refers to is missing"
                raise StorageCorruptError(self.directory / current_file, 0, reason)
            self._held[self._current_key] = self._current_data
        for name in sorted(names):
            if self._is_leftover(name):
                self._remove(name)
            elif (parsed := parse_name(name)) is not None and parsed[2] == PART_SUFFIX:
                self._parts_found[parsed[0]] = parsed[1]

    def _is_leftover(self, name: str) -> bool:
        """Whether a crash, or a save since, made ``name`` useless (names that are not ours never are)."""
        if name.startswith(_PREFIX) and name.endswith(TMP_SUFFIX):
            return True
        parsed = parse_name(name)
        if parsed is None:
            return False
        key, data, suffix = parsed
        if suffix == DATA_SUFFIX:
            return (key, data) != (self._current_key, self._current_data)
        return key < self._current_key or key in self._parts_found

    # --- what a save needs, and what it makes unneeded ---------------------------------------------------------

    def data(self, snapshot: Snapshot) -> SnapshotData | None:
        return self._held.get(_key(snapshot))

    def ref_for(self, snapshot: Snapshot) -> SnapshotRef:
        """What a save of ``snapshot`` records; ValueError if no data was written or received for it."""
        if snapshot.index == 0:
            return SnapshotRef(snapshot, SnapshotData(0, 0))  # a bootstrap configuration: no state, no file
        data = self._held.get(_key(snapshot))
        if data is None:
            raise ValueError(f"no data was written or received for snapshot {snapshot.index}/{snapshot.term}")
        return SnapshotRef(snapshot, data)

    def make_current(self, ref: SnapshotRef) -> None:
        """``ref`` is now durably the current snapshot: older data, older transfers, and the file it replaced,
        are not needed any more."""
        replaced = self._current_file()
        self._become_current(ref)
        key = self._current_key
        older = [held for held in self._held if held < key]
        released = {file_name(old, self._held.pop(old), DATA_SUFFIX) for old in older}
        if replaced is not None:
            released.add(replaced)
        for old in [k for k in self._incoming if k < key]:
            self._incoming.pop(old).abandon()
        for old in [k for k in self._parts_found if k < key]:
            self._remove(file_name(old, self._parts_found.pop(old), PART_SUFFIX))
        self._remove_unneeded(released)

    def _become_current(self, ref: SnapshotRef) -> None:
        self._current_key = _key(ref.snapshot)
        self._current_data = ref.data if ref.snapshot.index > 0 else None

    def _current_file(self) -> str | None:
        return (
            None
            if self._current_data is None
            else file_name(self._current_key, self._current_data, DATA_SUFFIX)
        )

    def _hold(self, key: Key, data: SnapshotData, name: str) -> None:
        """``name`` now holds ``key``'s data, checked; data held for it before is not needed unless current."""
        self._checked.add(name)
        before = self._held.get(key)
        self._held[key] = data
        if before is not None and before != data:
            self._remove_unneeded({file_name(key, before, DATA_SUFFIX)})

    def _remove_unneeded(self, names: set[str]) -> None:
        needed = {file_name(key, data, DATA_SUFFIX) for key, data in self._held.items()}
        current = self._current_file()
        if current is not None:
            needed.add(current)
        for name in names - needed:
            self._remove(name)
            self._checked.discard(name)

    def _remove(self, name: str) -> None:
        with self.stop.writing():
            self.disk.remove(self.directory / name)

    # --- local snapshots -----------------------------------------------------------------------------------

    def write(self, snapshot: Snapshot, writer: SnapshotWriter) -> None:
        """Stream ``writer`` into a tmp file, then give it its name (see the module docstring)."""
        key = _key(snapshot)
        tmp = self.directory / _tmp_name(key)
        with self.stop.writing():
            self.disk.write_new(tmp, b"")
        data = self._stream(tmp, writer)
        name = file_name(key, data, DATA_SUFFIX)
        with self.stop.writing():
            self.disk.fsync(tmp)
            self.disk.rename(tmp, self.directory / name)
            self.disk.fsync_dir(self.directory)
        self._hold(key, data, name)

    def _stream(self, tmp: Path, writer: SnapshotWriter) -> SnapshotData:
        """Run ``writer`` into ``tmp`` through a bounded buffer; a writer that fails leaves no tmp file."""
        sink = _Sink(partial(self._append, tmp))
        out = io.BufferedWriter(sink, STREAM_BUFFER_BYTES)
        try:
            writer(out)
            out.flush()
        except BaseException:
            if not self.stop.closed:  # the writer failed, not the disk: the storage stays usable
                self._remove(tmp.name)
            raise
        finally:
            sink.close()  # before ``out`` is collected: it then drops what it still buffers instead of writing it
        return SnapshotData(sink.size, sink.crc)

    def _append(self, path: Path, chunk: bytes) -> None:
        with self.stop.writing():
            self.disk.append(path, chunk)

    # --- transfers from the leader -------------------------------------------------------------------------

    def receive(self, key: Key, data: SnapshotData) -> _Receiver:
        self.stop.check()
        if self.holds(key, data):
            return _Receiver(self, key, data, data.size, data.crc, done=True)
        receiver = self._incoming.get(key)
        if receiver is None or receiver.data != data:
            if receiver is not None:
                receiver.abandon()
            receiver = self._incoming[key] = self._start(key, data)
        return receiver

    def holds(self, key: Key, data: SnapshotData) -> bool:
        return self._held.get(key) == data

    def _start(self, key: Key, data: SnapshotData) -> _Receiver:
        """A transfer of ``data`` for ``key``: resumed from the part an earlier run left, or from nothing."""
        found = self._parts_found.pop(key, None)
        if found == data:
            return _Receiver.resume(self, key, data)
        if found is not None:
            self._remove(file_name(key, found, PART_SUFFIX))
        return _Receiver.begin(self, key, data)

    def received(self, key: Key, data: SnapshotData, name: str) -> None:
        """The transfer of ``data`` for ``key`` is complete and checked, in ``name``."""
        del self._incoming[key]
        self._hold(key, data, name)

    # --- reading ---------------------------------------------------------------------------------------------

    def open(self, snapshot: Snapshot) -> BinaryIO:
        """The data held for ``snapshot``, checked against its size and CRC the first time (see the module
        docstring); FileNotFoundError if none is held."""
        key = _key(snapshot)
        data = self._held.get(key)
        if data is None:
            raise FileNotFoundError(f"no data is held for snapshot {snapshot.index}/{snapshot.term}")
        path = self.directory / file_name(key, data, DATA_SUFFIX)
        file = self.disk.open_read(path)
        if path.name not in self._checked:
            _check(file, path, data)
            self._checked.add(path.name)
        return file


def is_snapshot_file(name: str) -> bool:
    """A data or part file: what only a directory with a log can hold (the log is always created first)."""
    return parse_name(name) is not None


def _check(file: BinaryIO, path: Path, expected: SnapshotData) -> None:
    """Read ``file`` through and rewind it; if it does not hold ``expected``, close it and raise."""
    try:
        found = measure(file)
        if found.size != expected.size:
            reason = f"holds {found.size} bytes, but the log records {expected.size}"
            raise StorageCorruptError(path, min(found.size, expected.size), reason)
        if found.crc != expected.crc:
            raise StorageCorruptError(path, 0, "snapshot data does not match the CRC-32 the log records")
        file.seek(0)
    except BaseException:
        file.close()
        raise


def measure(file: BinaryIO, limit: int | None = None) -> SnapshotData:
    """Size and CRC-32 of ``file`` from where it stands to its end (or ``limit`` bytes), read in bounded chunks."""
    size = crc = 0
    while limit is None or size < limit:
        chunk = file.read(_READ_CHUNK if limit is None else min(_READ_CHUNK, limit - size))
        if not chunk:
            break
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return SnapshotData(size, crc)


class _Sink(io.RawIOBase):
    """What a SnapshotWriter's buffered output drains into: ``append``, counting and checksumming on the way."""

    def __init__(self, append: Callable[[bytes], None]) -> None:
        super().__init__()
        self._append = append
        self.size = 0
        self.crc = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        self._append(chunk)
        self.size += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        return len(chunk)


class _Receiver:
    """One incoming transfer into its part file (see the module docstring): a ``SnapshotReceiver``."""

    def __init__(
        self,
        files: SnapshotFiles,
        key: Key,
        data: SnapshotData,
        offset: int = 0,
        crc: int = 0,
        *,
        done: bool = False,
    ) -> None:
        self._files, self._key, self.data = files, key, data
        self._part = files.directory / file_name(key, data, PART_SUFFIX)
        self._offset, self._crc = offset, crc
        self._done = done
        self._abandoned = False

    @classmethod
    def begin(cls, files: SnapshotFiles, key: Key, data: SnapshotData) -> _Receiver:
        receiver = cls(files, key, data)
        with files.stop.writing():
            files.disk.write_new(receiver._part, b"")
            files.disk.fsync_dir(files.directory)  # so the part, and the transfer, outlive a power cut
        return receiver

    @classmethod
    def resume(cls, files: SnapshotFiles, key: Key, data: SnapshotData) -> _Receiver:
        """From the last checkpoint in the part an earlier run left (what lies beyond it may be torn)."""
        receiver = cls(files, key, data)
        with files.disk.open_read(receiver._part) as part:
            length = part.seek(0, io.SEEK_END)
            sync = files.part_sync_bytes
            offset = (length - 1) // sync * sync if 0 < length <= data.size else 0
            part.seek(0)
            receiver._offset, receiver._crc = measure(part, offset)
        if offset < length:
            with files.stop.writing():
                files.disk.truncate(receiver._part, offset)
        return receiver

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def complete(self) -> bool:
        return self._done and self._files.holds(self._key, self.data)

    def write(self, offset: int, chunk: bytes) -> int:
        self._files.stop.check()
        if self._abandoned:
            index, term = self._key
            raise ValueError(f"the transfer of snapshot {index}/{term} was abandoned: superseded, ask again")
        if offset == self._offset and not self._done:
            self._append(chunk[: self.data.size - offset])
            if self._offset == self.data.size:
                self._finish()
        return self._offset

    def abandon(self) -> None:
        """Superseded (by a newer snapshot, or other data for this one): the part goes, writes are refused."""
        self._abandoned = True
        with self._files.stop.writing():
            self._files.disk.remove(self._part)

    def _append(self, chunk: bytes) -> None:
        """Append ``chunk``, taking a checkpoint at each multiple of ``part_sync_bytes`` it reaches."""
        disk, sync = self._files.disk, self._files.part_sync_bytes
        start = 0
        while start < len(chunk):
            end = min(len(chunk), start + sync - self._offset % sync)
            piece = chunk[start:end]
            with self._files.stop.writing():
                disk.append(self._part, piece)
                if (self._offset + len(piece)) % sync == 0:
                    disk.fsync(self._part)
            self._offset += len(piece)
            self._crc = zlib.crc32(piece, self._crc)
            start = end

    def _finish(self) -> None:
        """Every byte is in: check the CRC, then give the part its name -- or start the transfer over."""
        if self._crc != self.data.crc:
            self._start_over()
            raise StorageCorruptError(self._part, 0, "received snapshot data fails its CRC-32: starting over")
        disk, name = self._files.disk, file_name(self._key, self.data, DATA_SUFFIX)
        with self._files.stop.writing():
            disk.fsync(self._part)
            disk.rename(self._part, self._files.directory / name)
            disk.fsync_dir(self._files.directory)
        self._done = True
        self._files.received(self._key, self.data, name)

    def _start_over(self) -> None:
        """Empty the part, durably, so that no power cut can bring the failed bytes back for a resume."""
        with self._files.stop.writing():
            self._files.disk.truncate(self._part, 0)
            self._files.disk.fsync(self._part)
        self._offset = self._crc = 0
