"""Durable Raft state in a directory: one CRC-framed append-only log plus one file per snapshot.

Why this shape: every save is a single record appended to ``raft.log`` and made durable by one fsync, so
a save is atomic (a record is whole and passes its CRC, or it is a torn tail that recovery cuts off) and
costs one write and one fsync however much it holds. Replaying the records through ``LogState`` rebuilds
exactly what the saves produced. Snapshots can be large and are written once, so each goes to its own file
(write tmp, fsync, rename, fsync the directory) *before* the record that refers to it; the previous
snapshot file is removed only after that record is durable, and files no record refers to are removed on
start, so a crash anywhere leaves the log and its snapshot consistent. When a snapshot leaves most of the
log dead, the live state is rewritten into a new log the same tmp-and-rename way instead of appending,
which bounds disk use and restart time. SQLite was rejected because a power cut cannot be simulated under
it; here every write and fsync goes through the ``Disk`` seam, where tests can cut the power.

Recovery: a bad record with nothing valid after it is a torn tail (a crash mid-write) and is truncated
away; a bad record followed by a valid one is real corruption and raises StorageCorruptError.

Not thread-safe: one caller at a time (``simulate_power_loss`` excepted, see ``OsDisk``).
"""

from __future__ import annotations

import random
import secrets
import zlib
from collections.abc import Sequence
from pathlib import Path

from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.codec import (
    FRAME_HEADER_SIZE,
    LOG_HEADER_SIZE,
    DecodeError,
    SnapshotRef,
    decode_log_header,
    decode_save,
    decode_snapshot,
    encode_frame,
    encode_log_header,
    encode_save,
    encode_snapshot,
    encoded_entries_size,
    frame_end,
)
from raftkv.storage.disk import Disk, OsDisk
from raftkv.storage.errors import StorageClosedError, StorageCorruptError
from raftkv.storage.log_state import LogState

LOG_NAME = "raft.log"
_TMP_SUFFIX = ".tmp"
_SNAPSHOT_PREFIX, _SNAPSHOT_SUFFIX = "snapshot-", ".snap"
_REWRITE_CHUNK = 10_000  # entries per record when rewriting, so no record nears the 4 GiB frame limit


def snapshot_file_name(ref: SnapshotRef) -> str:
    """Named by content as well as position, so writing a snapshot never overwrites a different one."""
    return f"{_SNAPSHOT_PREFIX}{ref.index:020d}-{ref.term:020d}-{ref.crc:08x}{_SNAPSHOT_SUFFIX}"


class FileStorage:
    """The real ``Storage``. Opening recovers the directory (creating it if needed); ``load`` is then cheap.

    ``compact_min_bytes``: the log is never rewritten while smaller than this.
    """

    def __init__(self, data_dir: Path, *, disk: Disk | None = None, compact_min_bytes: int = 4 << 20) -> None:
        self._dir = data_dir
        self._disk: Disk = disk if disk is not None else OsDisk()
        self._log_path = data_dir / LOG_NAME
        self._compact_min_bytes = compact_min_bytes
        self._state = LogState()
        self._snapshot_ref: SnapshotRef | None = None
        self._salt = 0
        self._log_size = 0
        self._closed = False
        self._disk.ensure_dir(data_dir)
        buf = self._disk.read(self._log_path)
        if buf is None:
            self._refuse_orphan_snapshots()
            self._rewrite_log()
        else:
            self._recover(buf)
        self._remove_leftovers()

    def load(self) -> PersistentState:
        return self._state.persistent_state()

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        if self._closed:
            raise StorageClosedError(f"storage in {self._dir} is closed")
        self._state.check(entries, snapshot)
        try:
            self._persist(hard_state, entries, snapshot)
        except BaseException:
            self._closed = True  # the disk is now in an unknown state: recover from it on restart
            raise

    def close(self) -> None:
        self._closed = True
        self._disk.close()

    def simulate_power_loss(self, rng: random.Random, keep_torn: bool = True) -> None:
        """Cut the files back to what was fsynced (maybe leaving a torn part), as a power cut would.

        For chaos tests in a real process, which should ``os._exit`` right after: ``kill -9`` alone never
        loses data the kernel holds, so it cannot show a missing fsync.
        """
        self._closed = True
        self._disk.crash(keep_torn, rng)

    def _persist(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        previous_ref = self._snapshot_ref
        if snapshot is not None:
            self._snapshot_ref = self._write_snapshot(snapshot)
        self._state.apply(hard_state, entries, snapshot)
        if snapshot is not None and self._log_is_mostly_dead():
            self._rewrite_log()
        else:
            record = encode_frame(
                encode_save(hard_state, entries, None if snapshot is None else self._snapshot_ref), self._salt
            )
            self._disk.append(self._log_path, record)
            self._disk.fsync(self._log_path)
            self._log_size += len(record)
        if previous_ref is not None and self._snapshot_ref != previous_ref:
            self._disk.remove(self._snapshot_path(previous_ref))

    def _write_snapshot(self, snapshot: Snapshot) -> SnapshotRef:
        ref = SnapshotRef(snapshot.index, snapshot.term, zlib.crc32(snapshot.data))
        self._replace_durably(self._snapshot_path(ref), encode_snapshot(snapshot, ref.crc))
        return ref

    def _log_is_mostly_dead(self) -> bool:
        live = LOG_HEADER_SIZE + encoded_entries_size(self._state.entries)
        return self._log_size > max(self._compact_min_bytes, 2 * live)

    def _rewrite_log(self) -> None:
        """Write the live state as a fresh log under a new salt, so no old record can pass for a new one."""
        salt = secrets.randbits(32)
        state, entries = self._state, self._state.entries
        records = [encode_log_header(salt)]
        records.append(
            encode_frame(encode_save(state.hard_state, entries[:_REWRITE_CHUNK], self._snapshot_ref), salt)
        )
        for start in range(_REWRITE_CHUNK, len(entries), _REWRITE_CHUNK):
            records.append(
                encode_frame(encode_save(None, entries[start : start + _REWRITE_CHUNK], None), salt)
            )
        data = b"".join(records)
        self._replace_durably(self._log_path, data)
        self._salt, self._log_size = salt, len(data)

    def _replace_durably(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        self._disk.write_new(tmp, data)
        self._disk.fsync(tmp)
        self._disk.rename(tmp, path)
        self._disk.fsync_dir(self._dir)

    def _recover(self, buf: bytes) -> None:
        try:
            self._salt = decode_log_header(buf)
        except DecodeError as exc:
            raise StorageCorruptError(self._log_path, exc.offset, str(exc)) from exc
        offset = LOG_HEADER_SIZE
        while offset < len(buf):
            end = frame_end(buf, offset, self._salt)
            if end is None:
                self._cut_torn_tail(buf, offset)
                break
            self._replay(buf, offset, end)
            offset = end
        self._log_size = offset
        if self._snapshot_ref is not None:
            self._state.snapshot = self._read_snapshot(self._snapshot_ref)

    def _replay(self, buf: bytes, offset: int, end: int) -> None:
        """Apply one record; the snapshot's data is read once at the end, so it stands in as empty here."""
        start = offset + FRAME_HEADER_SIZE
        try:
            record = decode_save(buf, start, end)
            ref = record.snapshot
            snapshot = None if ref is None else Snapshot(ref.index, ref.term, b"")
            self._state.check(record.entries, snapshot)
        except DecodeError as exc:
            raise StorageCorruptError(self._log_path, start + exc.offset, str(exc)) from exc
        except ValueError as exc:
            raise StorageCorruptError(self._log_path, offset, f"record breaks the log: {exc}") from exc
        self._state.apply(record.hard_state, record.entries, snapshot)
        if ref is not None:
            self._snapshot_ref = ref

    def _cut_torn_tail(self, buf: bytes, offset: int) -> None:
        """Truncate a bad record at ``offset`` if it is a torn tail; raise if valid records follow it."""
        for later in range(offset + 1, len(buf) - FRAME_HEADER_SIZE):
            if frame_end(buf, later, self._salt) is not None:
                raise StorageCorruptError(
                    self._log_path, offset, f"bad record followed by a valid one at offset {later}"
                )
        self._disk.truncate(self._log_path, offset)
        self._disk.fsync(self._log_path)

    def _read_snapshot(self, ref: SnapshotRef) -> Snapshot:
        path = self._snapshot_path(ref)
        buf = self._disk.read(path)
        if buf is None:
            raise StorageCorruptError(path, 0, "snapshot file the log refers to is missing")
        try:
            return decode_snapshot(buf, ref)
        except DecodeError as exc:
            raise StorageCorruptError(path, exc.offset, str(exc)) from exc

    def _refuse_orphan_snapshots(self) -> None:
        """No crash leaves snapshots without a log (the log is created first), so do not delete them."""
        for name in self._disk.list_dir(self._dir):
            if _is_snapshot_file(name):
                raise StorageCorruptError(self._log_path, 0, f"log is missing but snapshot {name} exists")

    def _remove_leftovers(self) -> None:
        """Remove tmp files and snapshots no record refers to: what a crash mid-save leaves behind."""
        current = None if self._snapshot_ref is None else self._snapshot_path(self._snapshot_ref).name
        for name in self._disk.list_dir(self._dir):
            if name.endswith(_TMP_SUFFIX) or (_is_snapshot_file(name) and name != current):
                self._disk.remove(self._dir / name)

    def _snapshot_path(self, ref: SnapshotRef) -> Path:
        return self._dir / snapshot_file_name(ref)


def _is_snapshot_file(name: str) -> bool:
    return name.startswith(_SNAPSHOT_PREFIX) and name.endswith(_SNAPSHOT_SUFFIX)
