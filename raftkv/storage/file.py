"""Durable Raft state in a directory: one CRC-framed append-only log plus one data file per snapshot.

Why this shape: every save is a single record appended to ``raft.log`` and made durable by one fsync, so a save
is atomic (a record is whole and passes its CRC, or it is a torn tail that recovery cuts off) and costs one
write and one fsync however much it holds. (A save that only moves the commit index writes nothing: the commit
index rides in the next record that is written. A crash may lose it, and an older commit index is still a true
one.) Replaying the records through ``LogState`` rebuilds exactly what the saves produced. A snapshot is two
things: its description (index, term, membership), which travels in the save record like everything else the
core knows, and the state machine's data, which can be large, is written once, and so goes to a file of its own
(see ``snapshot_files``): streamed by ``write_snapshot`` or arriving in chunks through ``receive_snapshot``,
then fsynced and renamed into place *before* any record may refer to it. The record carries the data's size and
CRC-32, against which the file is checked when it is read. The file a snapshot replaced is removed only after
the record of its successor is durable, and files no record refers to are removed on start (except parts of
transfers that can still resume), so a crash anywhere leaves the log and its snapshot data consistent. Loading
never reads snapshot data: restoring the state machine is the node's business, through ``open_snapshot``. When a
snapshot leaves most of the log dead, the live state is rewritten into a new log the same tmp-and-rename way
instead of appending, which bounds disk use and restart time. SQLite was rejected because a power cut cannot be
simulated under it; here every write and fsync goes through the ``Disk`` seam, where tests can cut the power.

Recovery: a bad record with nothing valid after it is a torn tail (a crash mid-write) and is truncated
away; a bad record followed by a valid one is real corruption and raises StorageCorruptError, as does a log
of another format and a missing snapshot data file.

Failures: once any write fails (a save, a snapshot written or received), the storage closes itself and every
later write raises StorageClosedError: the files are then in an unknown state, and only a restart, recovering
from what is on disk, is safe.

Not thread-safe: one caller at a time, receivers' writes included (the node holds a lock around every call);
``simulate_power_loss`` excepted, see ``OsDisk``. Every method blocks on the disk: call it from a worker thread
(except a save for which ``needs_disk`` is False, which only notes the commit index).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from raftkv.machine import SnapshotWriter
from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.codec import (
    FRAME_HEADER_SIZE,
    LOG_HEADER_SIZE,
    DecodeError,
    SnapshotData,
    SnapshotRef,
    decode_log_header,
    decode_save,
    encode_frame,
    encode_log_header,
    encode_save,
    encoded_entries_size,
    frame_end,
)
from raftkv.storage.disk import Disk, OsDisk
from raftkv.storage.errors import FailStop, StorageCorruptError
from raftkv.storage.log_state import LogState
from raftkv.storage.snapshot_files import SnapshotFiles, is_snapshot_file

if TYPE_CHECKING:
    from raftkv.storage import SnapshotReceiver

LOG_NAME = "raft.log"
_LOG_TMP_NAME = LOG_NAME + ".tmp"
_REWRITE_CHUNK = 10_000  # entries per record when rewriting, so no record nears the 4 GiB frame limit


class FileStorage:
    """The real ``Storage``. Opening recovers the directory (creating it if needed); ``load`` is then cheap.

    ``compact_min_bytes``: the log is never rewritten while smaller than this. ``part_sync_bytes``: how often an
    incoming snapshot's part file is fsynced, which is how far back a transfer may resume after a restart.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        disk: Disk | None = None,
        compact_min_bytes: int = 4 << 20,
        part_sync_bytes: int = 1 << 20,
    ) -> None:
        self._dir = data_dir
        self._disk: Disk = disk if disk is not None else OsDisk()
        self._log_path = data_dir / LOG_NAME
        self._compact_min_bytes = compact_min_bytes
        self._stop = FailStop(data_dir)
        self._files = SnapshotFiles(data_dir, self._disk, self._stop, part_sync_bytes)
        self._state = LogState()
        self._snapshot_ref: SnapshotRef | None = None
        self._salt = 0
        self._log_size = 0
        self._commit_unwritten = False  # the hard state in memory has a commit index no record holds yet
        self._disk.ensure_dir(data_dir)
        buf = self._disk.read(self._log_path)
        if buf is None:
            self._refuse_orphan_snapshots()
            self._rewrite_log()
        else:
            self._recover(buf)
        names = self._disk.list_dir(self._dir)
        self._files.recover(names, self._snapshot_ref)
        if _LOG_TMP_NAME in names:
            self._disk.remove(self._dir / _LOG_TMP_NAME)

    def load(self) -> PersistentState:
        return self._state.persistent_state()

    def needs_disk(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        return not self._state.moves_only_commit(hard_state, entries, snapshot)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self._stop.check()
        self._state.check(entries, snapshot)
        if not self.needs_disk(hard_state, entries, snapshot):
            self._state.apply(hard_state, entries, snapshot)
            self._commit_unwritten = True
            return
        ref = None if snapshot is None else self._files.ref_for(snapshot)
        with self._stop.writing():
            self._persist(hard_state, entries, ref)

    def write_snapshot(self, snapshot: Snapshot, writer: SnapshotWriter) -> None:
        """Until a save refers to it, the data does not outlive a restart (start removes what no record names)."""
        self._stop.check()
        self._files.write(snapshot, writer)

    def receive_snapshot(self, index: int, term: int, size: int, crc: int) -> SnapshotReceiver:
        """A transfer in progress outlives a restart and resumes from its last checkpoint (see
        ``snapshot_files``); a complete one that no save refers to yet does not, and starts over."""
        return self._files.receive((index, term), SnapshotData(size, crc))

    def snapshot_data(self, snapshot: Snapshot) -> tuple[int, int] | None:
        return self._files.data(snapshot)

    def open_snapshot(self, snapshot: Snapshot) -> BinaryIO:
        """StorageCorruptError if the data fails its size or CRC, checked on the first open since start."""
        return self._files.open(snapshot)

    def close(self) -> None:
        self._stop.closed = True
        self._disk.close()

    def simulate_power_loss(self, rng: random.Random, keep_torn: bool = True) -> None:
        """Cut the files back to what was fsynced (maybe leaving a torn part), as a power cut would.

        For chaos tests in a real process, which should ``os._exit`` right after: ``kill -9`` alone never
        loses data the kernel holds, so it cannot show a missing fsync.
        """
        self._stop.closed = True
        self._disk.crash(keep_torn, rng)

    def _persist(
        self, hard_state: HardState | None, entries: Sequence[Entry], ref: SnapshotRef | None
    ) -> None:
        written = hard_state is not None or self._commit_unwritten
        self._state.apply(hard_state, entries, None if ref is None else ref.snapshot)
        if ref is not None:
            self._snapshot_ref = ref
        if ref is not None and self._log_is_mostly_dead():
            self._rewrite_log()
        else:
            hard = self._state.hard_state if written else None
            record = encode_frame(encode_save(hard, entries, ref), self._salt)
            self._disk.append(self._log_path, record)
            self._disk.fsync(self._log_path)
            self._log_size += len(record)
            self._commit_unwritten = False
        if ref is not None:
            self._files.make_current(ref)

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
        tmp = self._dir / _LOG_TMP_NAME
        self._disk.write_new(tmp, data)
        self._disk.fsync(tmp)
        self._disk.rename(tmp, self._log_path)
        self._disk.fsync_dir(self._dir)
        self._commit_unwritten = False
        self._salt, self._log_size = salt, len(data)

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

    def _replay(self, buf: bytes, offset: int, end: int) -> None:
        start = offset + FRAME_HEADER_SIZE
        try:
            record = decode_save(buf, start, end)
            ref = record.snapshot
            snapshot = None if ref is None else ref.snapshot
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

    def _refuse_orphan_snapshots(self) -> None:
        """No crash leaves snapshot files without a log (the log is created first), so do not delete them."""
        for name in self._disk.list_dir(self._dir):
            if is_snapshot_file(name):
                raise StorageCorruptError(
                    self._log_path, 0, f"log is missing but snapshot file {name} exists"
                )
