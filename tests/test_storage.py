"""Durable Raft state: what a save means (every backend), snapshot data written, received and read back, and
that FileStorage keeps it all through power cuts."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from raftkv.machine import SnapshotWriter
from raftkv.raft.membership import Membership
from raftkv.raft.types import Entry, EntryKind, HardState, PersistentState, Snapshot
from raftkv.storage import (
    FileStorage,
    MemoryStorage,
    OsDisk,
    SimulatedDisk,
    SimulatedPowerLoss,
    SnapshotReceiver,
    Storage,
    StorageClosedError,
    StorageCorruptError,
)
from raftkv.storage.file import LOG_NAME
from raftkv.storage.log_state import LogState
from raftkv.storage.snapshot_files import PART_SUFFIX, STREAM_BUFFER_BYTES, parse_name

Opener = Callable[[], Storage]
SIM_DIR = Path("/sim/data")
PART_SYNC = 64  # small, so that transfers of a few hundred bytes cross several checkpoints
MEMBERSHIP = Membership.of(["n1", "n2", "n3"], {"n1": "h1:7001", "n2": "h2:7001", "n3": "h3:7001"})


def key(snapshot: Snapshot) -> tuple[int, int]:
    return snapshot.index, snapshot.term


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(index, term, f"{index}@{term}".encode()) for index in range(first, last + 1)]


def snap(index: int, term: int = 1, membership: Membership = MEMBERSHIP) -> Snapshot:
    return Snapshot(index, term, membership)


def state_of(snapshot: Snapshot) -> bytes:
    """The state machine's bytes for ``snapshot``: the same for the same index and term, as in a real cluster."""
    rng = random.Random(f"{snapshot.index}/{snapshot.term}")
    return rng.randbytes(rng.randint(200, 400))


def writer_of(data: bytes, chunks: int = 1) -> SnapshotWriter:
    """A state machine's writer that hands ``data`` over in ``chunks`` writes."""

    def write(out: BinaryIO) -> None:
        for i in range(chunks):
            out.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])

    return write


def with_data(storage: Storage, snapshot: Snapshot, data: bytes | None = None) -> Snapshot:
    """``snapshot``, its data written first so that a save may take it."""
    storage.write_snapshot(snapshot, writer_of(state_of(snapshot) if data is None else data))
    return snapshot


def read_snapshot(storage: Storage, snapshot: Snapshot) -> bytes:
    with storage.open_snapshot(snapshot) as file:
        return file.read()


def feed(receiver: SnapshotReceiver, data: bytes, chunk: int = 37, stop: int | None = None) -> int:
    """Send ``data`` from the receiver's offset up to ``stop`` (or the end), as the leader would; the offset."""
    end = len(data) if stop is None else stop
    offset = receiver.offset
    while offset < end:
        offset = receiver.write(offset, data[offset : min(offset + chunk, end)])
    return offset


def summary(data: bytes) -> tuple[int, int]:
    return len(data), zlib.crc32(data)


def assert_stored(storage: Storage, open_storage: Opener, expected: PersistentState) -> Storage:
    """The state is as expected now and after a restart; returns the reopened storage."""
    assert storage.load() == expected
    storage.close()
    reopened = open_storage()
    assert reopened.load() == expected
    return reopened


@pytest.fixture(params=["memory", "file", "simulated-disk"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same storage again each call, as a restarted node would."""
    if request.param == "memory":
        memory = MemoryStorage()
        return lambda: memory
    if request.param == "file":
        return lambda: FileStorage(tmp_path / "data", part_sync_bytes=PART_SYNC)
    disk = SimulatedDisk()
    return lambda: FileStorage(SIM_DIR, disk=disk, part_sync_bytes=PART_SYNC)


# --- what a save means, for every backend ----------------------------------------------------------------


def test_new_storage_loads_defaults(open_storage: Opener) -> None:
    assert_stored(open_storage(), open_storage, PersistentState())


def test_hard_state_is_replaced_whole(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(HardState(3, "n2", 5), [], None)
    storage = assert_stored(storage, open_storage, PersistentState(HardState(3, "n2", 5)))
    storage.save(HardState(4, None, 5), [], None)
    assert_stored(storage, open_storage, PersistentState(HardState(4, None, 5)))


def test_entry_data_round_trips_with_none_distinct_from_empty(open_storage: Opener) -> None:
    log = (Entry(1, 1, None), Entry(2, 1, b""), Entry(3, 2, bytes(range(256))), Entry(4, 2, b"x" * 100_000))
    storage = open_storage()
    storage.save(None, log, None)
    assert_stored(storage, open_storage, PersistentState(entries=log))


def test_entry_kinds_round_trip(open_storage: Opener) -> None:
    log = (
        Entry(1, 1, None),
        Entry(2, 1, MEMBERSHIP.encode(), EntryKind.MEMBERSHIP),
        Entry(3, 1, b"put"),
        Entry(4, 2, b"", EntryKind.MEMBERSHIP),
    )
    storage = open_storage()
    storage.save(None, log, None)
    assert_stored(storage, open_storage, PersistentState(entries=log))


def test_entries_replace_the_log_from_their_first_index(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(None, entries(1, 5), None)
    storage.save(None, entries(3, 4, term=2), None)
    storage.save(None, entries(5, 5, term=2), None)
    assert_stored(
        storage, open_storage, PersistentState(entries=tuple(entries(1, 2) + entries(3, 5, term=2)))
    )


def test_snapshot_matching_the_log_keeps_later_entries(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(None, entries(1, 5), None)
    snapshot = with_data(storage, snap(3))
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot, entries=tuple(entries(4, 5))))


@pytest.mark.parametrize(("index", "term"), [(3, 2), (9, 1)], ids=["other-term", "past-the-end"])
def test_snapshot_not_matching_the_log_discards_it(open_storage: Opener, index: int, term: int) -> None:
    storage = open_storage()
    storage.save(None, entries(1, 5), None)
    snapshot = with_data(storage, snap(index, term))
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot))


def test_snapshot_at_the_stored_snapshot_keeps_the_log(open_storage: Opener) -> None:
    storage = open_storage()
    snapshot = with_data(storage, snap(2))
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], snapshot)
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot, entries=tuple(entries(3, 5))))


def test_one_save_applies_snapshot_then_entries_then_hard_state(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(HardState(1, "n1", 2), entries(1, 5), None)
    snapshot = with_data(storage, snap(7, 2))
    storage.save(HardState(2, "n3", 7), entries(8, 9, term=2), snapshot)
    expected = PersistentState(HardState(2, "n3", 7), snapshot, tuple(entries(8, 9, term=2)))
    assert_stored(storage, open_storage, expected)


@pytest.mark.parametrize(
    ("bad_entries", "snapshot"),
    [
        (entries(5, 6), None),  # gap after the last entry (3)
        ([Entry(3, 1), Entry(5, 1)], None),  # not contiguous
        (entries(2, 3), snap(2)),  # at the snapshot's index
        (entries(5, 5), snap(3, 9)),  # the snapshot discards the log, so 4 would be next
    ],
)
def test_saves_that_would_break_the_log_are_refused_and_store_nothing(
    open_storage: Opener, bad_entries: list[Entry], snapshot: Snapshot | None
) -> None:
    storage = open_storage()
    storage.save(HardState(1, "n1", 0), entries(1, 3), None)
    if snapshot is not None:
        with_data(storage, snapshot)
    with pytest.raises(ValueError):
        storage.save(HardState(9, "n9", 9), bad_entries, snapshot)
    assert_stored(storage, open_storage, PersistentState(HardState(1, "n1", 0), entries=tuple(entries(1, 3))))


def test_stored_state_does_not_alias_the_callers_list(open_storage: Opener) -> None:
    storage = open_storage()
    log = entries(1, 3)
    storage.save(None, log, None)
    log.append(Entry(4, 1, b"added later"))
    loaded = storage.load()
    assert isinstance(loaded.entries, tuple)
    assert_stored(storage, open_storage, PersistentState(entries=tuple(entries(1, 3))))


# --- snapshot descriptions and their data, for every backend ---------------------------------------------


def test_the_snapshots_membership_round_trips(open_storage: Opener) -> None:
    joint = Membership.of(
        ["n1", "n4"],
        {"n1": "h1:1", "n2": "h2:1", "n3": "h3:1", "n4": "h4:1", "n5": "h5:1"},
        outgoing=["n1", "n2", "n3"],
        learners=["n5"],
        promote=["n5"],
    )
    storage = open_storage()
    storage.save(None, entries(1, 4), None)
    snapshot = with_data(storage, snap(4, 1, joint))
    storage.save(None, [], snapshot)
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snapshot))
    loaded = storage.load().snapshot
    assert loaded is not None
    assert loaded.membership == joint


def test_bootstrap_configuration_at_index_0_needs_no_data(open_storage: Opener) -> None:
    storage = open_storage()
    bootstrap = snap(0, 0)
    storage.save(HardState(1), [], bootstrap)
    storage = assert_stored(storage, open_storage, PersistentState(HardState(1), bootstrap))
    assert storage.snapshot_data(bootstrap) is None


def test_save_refuses_a_snapshot_without_data_and_stores_nothing(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(HardState(1, "n1", 0), entries(1, 5), None)
    with_data(storage, snap(3, 2))  # another term's data does not count
    receiver = storage.receive_snapshot(*key(snap(3)), *summary(state_of(snap(3))))
    feed(receiver, state_of(snap(3)), stop=10)  # nor does data not received whole
    with pytest.raises(ValueError, match="no data"):
        storage.save(HardState(2, "n2", 3), [], snap(3))
    assert_stored(storage, open_storage, PersistentState(HardState(1, "n1", 0), entries=tuple(entries(1, 5))))


def test_streamed_snapshot_reads_back_after_a_restart(open_storage: Opener) -> None:
    data = random.Random(1).randbytes(1000 * 257)
    storage = open_storage()
    storage.save(None, entries(1, 9), None)
    storage.write_snapshot(snap(9), writer_of(data, chunks=1000))
    assert storage.snapshot_data(snap(9)) == summary(data)
    storage.save(None, [], snap(9))
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snap(9)))
    assert storage.snapshot_data(snap(9)) == summary(data)
    assert read_snapshot(storage, snap(9)) == data


def test_empty_snapshot_data_is_data(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(None, [], with_data(storage, snap(1), b""))
    receiver = storage.receive_snapshot(*key(snap(2)), *summary(b""))
    assert receiver.write(0, b"") == 0
    assert receiver.complete
    storage.save(None, [], snap(2))
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snap(2)))
    assert read_snapshot(storage, snap(2)) == b""


def test_a_second_write_for_one_snapshot_replaces_its_data(open_storage: Opener) -> None:
    storage = open_storage()
    with_data(storage, snap(4), b"first serialisation")
    with_data(storage, snap(4), b"second, other bytes")
    assert read_snapshot(storage, snap(4)) == b"second, other bytes"
    storage.save(None, [], snap(4))
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snap(4)))
    assert read_snapshot(storage, snap(4)) == b"second, other bytes"


def test_open_snapshot_without_data_raises(open_storage: Opener) -> None:
    with pytest.raises(FileNotFoundError):
        open_storage().open_snapshot(snap(5))


def test_an_open_snapshot_stays_readable_after_a_newer_one_replaces_it(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(None, [], with_data(storage, snap(3)))
    with storage.open_snapshot(snap(3)) as old:
        storage.save(None, [], with_data(storage, snap(6)))
        assert storage.snapshot_data(snap(3)) is None
        assert old.read() == state_of(snap(3))


def test_received_snapshot_resumes_after_a_dropped_connection(open_storage: Opener) -> None:
    data = state_of(snap(8))
    storage = open_storage()
    first = storage.receive_snapshot(*key(snap(8)), *summary(data))
    assert feed(first, data, stop=100) == 100
    assert first.write(150, data[150:160]) == 100  # ahead of what is held: ignored
    assert first.write(90, data[90:110]) == 100  # overlapping what is held: ignored too
    second = storage.receive_snapshot(*key(snap(8)), *summary(data))  # the leader reconnects
    assert second.offset == 100
    assert not second.complete
    assert feed(second, data) == len(data)
    assert second.complete
    assert storage.snapshot_data(snap(8)) == summary(data)
    storage.save(None, [], snap(8))
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snap(8)))
    assert read_snapshot(storage, snap(8)) == data
    again = storage.receive_snapshot(*key(snap(8)), *summary(data))  # sent once more: nothing left to send
    assert (again.offset, again.complete) == (len(data), True)


def test_received_snapshot_resumes_after_a_restart(open_storage: Opener) -> None:
    data = random.Random(3).randbytes(1000)
    storage = open_storage()
    feed(storage.receive_snapshot(*key(snap(8, 2)), *summary(data)), data, stop=500)
    storage.close()
    storage = open_storage()
    receiver = storage.receive_snapshot(*key(snap(8, 2)), *summary(data))
    assert (
        500 - PART_SYNC <= receiver.offset <= 500
    )  # from the last checkpoint (the memory backend: all of it)
    feed(receiver, data)
    assert receiver.complete
    storage.save(None, [], snap(8, 2))
    assert read_snapshot(storage, snap(8, 2)) == data


def test_received_data_failing_its_checksum_is_refused_and_starts_over(open_storage: Opener) -> None:
    data = state_of(snap(5))
    damaged = data[:100] + bytes([data[100] ^ 1]) + data[101:]  # a bit flipped in transit
    storage = open_storage()
    receiver = storage.receive_snapshot(*key(snap(5)), *summary(data))
    with pytest.raises(StorageCorruptError, match="fails its"):
        feed(receiver, damaged)
    assert (receiver.offset, receiver.complete) == (0, False)
    assert storage.snapshot_data(snap(5)) is None
    with pytest.raises(ValueError, match="no data"):
        storage.save(None, [], snap(5))
    assert feed(receiver, data) == len(data)  # sent again, from the start
    assert receiver.complete
    storage.save(None, [], snap(5))
    storage = assert_stored(storage, open_storage, PersistentState(snapshot=snap(5)))
    assert read_snapshot(storage, snap(5)) == data


def test_a_transfer_of_other_data_for_the_same_snapshot_starts_over(open_storage: Opener) -> None:
    data = state_of(snap(5))
    storage = open_storage()
    feed(storage.receive_snapshot(*key(snap(5)), *summary(data)), data, stop=60)
    assert storage.receive_snapshot(*key(snap(5)), len(data) + 1, 7).offset == 0
    receiver = storage.receive_snapshot(*key(snap(5)), *summary(data))
    assert receiver.offset == 0
    feed(receiver, data)
    assert read_snapshot(storage, snap(5)) == data


# --- FileStorage on a real directory ---------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def storage(data_dir: Path) -> Iterator[FileStorage]:
    storage = FileStorage(data_dir, part_sync_bytes=PART_SYNC)
    yield storage
    storage.close()


def save_three_records(storage: FileStorage, log_path: Path) -> list[int]:
    """Saves three records; returns the offset each one starts at."""
    offsets = []
    for first in (1, 4, 7):
        offsets.append(log_path.stat().st_size)
        storage.save(HardState(first, "n1", first), entries(first, first + 2), None)
    return offsets


def snapshot_names(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.glob("snapshot-*"))


def test_writes_after_close_are_refused(storage: FileStorage) -> None:
    receiver = storage.receive_snapshot(*key(snap(3)), *summary(state_of(snap(3))))
    storage.close()
    with pytest.raises(StorageClosedError):
        storage.save(HardState(1), [], None)
    with pytest.raises(StorageClosedError):
        with_data(storage, snap(4))
    with pytest.raises(StorageClosedError):
        storage.receive_snapshot(*key(snap(5)), 1, 0)
    with pytest.raises(StorageClosedError):
        receiver.write(0, b"x")


@pytest.mark.parametrize("tail", [b"\x40\x00\x00\x00\x12\x34", b"\x00" * 37], ids=["torn-record", "zeros"])
def test_torn_tail_is_cut_and_the_storage_stays_writable(
    storage: FileStorage, data_dir: Path, tail: bytes
) -> None:
    log_path = data_dir / LOG_NAME
    save_three_records(storage, log_path)
    expected, size = storage.load(), log_path.stat().st_size
    storage.close()
    with log_path.open("ab") as file:
        file.write(tail)
    reopened = FileStorage(data_dir)
    assert reopened.load() == expected
    assert log_path.stat().st_size == size
    reopened.save(HardState(20, "n2", 10), entries(10, 11), None)
    expected = PersistentState(HardState(20, "n2", 10), entries=expected.entries + tuple(entries(10, 11)))
    assert_stored(reopened, lambda: FileStorage(data_dir), expected).close()


@pytest.mark.parametrize("damage", ["payload", "length"])
def test_corruption_before_valid_records_raises_naming_file_and_offset(
    storage: FileStorage, data_dir: Path, damage: str
) -> None:
    log_path = data_dir / LOG_NAME
    offsets = save_three_records(storage, log_path)
    storage.close()
    raw = bytearray(log_path.read_bytes())
    if damage == "payload":
        raw[offsets[1] + 20] ^= 0x01
    else:
        raw[offsets[1] + 3] = 0x7F  # the record now claims to run far past the end of the file
    log_path.write_bytes(raw)
    with pytest.raises(StorageCorruptError) as caught:
        FileStorage(data_dir)
    assert caught.value.path == log_path
    assert caught.value.offset == offsets[1]
    assert f"{log_path}: corrupt at offset {offsets[1]}" in str(caught.value)


def test_a_log_of_the_previous_format_is_refused_clearly(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / LOG_NAME).write_bytes(b"RKVLOG01" + bytes(4) + b"\x05\x00\x00\x00 records of the old layout")
    with pytest.raises(StorageCorruptError, match=r"RKVLOG01.*another raftkv version") as caught:
        FileStorage(data_dir)
    assert caught.value.offset == 0


@pytest.mark.parametrize("damage", ["flipped", "cut-short"])
def test_damaged_snapshot_data_raises_naming_it_when_opened(
    storage: FileStorage, data_dir: Path, damage: str
) -> None:
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], with_data(storage, snap(3)))
    storage.close()
    [name] = snapshot_names(data_dir)
    raw = bytearray((data_dir / name).read_bytes())
    if damage == "flipped":
        raw[-1] ^= 0xFF
    else:
        del raw[-1]
    (data_dir / name).write_bytes(raw)
    reopened = FileStorage(data_dir)
    assert reopened.load().snapshot == snap(3)  # loading reads no snapshot data; opening it checks it
    with pytest.raises(StorageCorruptError, match="CRC-32" if damage == "flipped" else "bytes") as caught:
        reopened.open_snapshot(snap(3))
    assert caught.value.path == data_dir / name
    reopened.close()


def test_missing_snapshot_data_is_refused_on_start(storage: FileStorage, data_dir: Path) -> None:
    storage.save(None, [], with_data(storage, snap(3)))
    storage.close()
    [name] = snapshot_names(data_dir)
    (data_dir / name).unlink()
    with pytest.raises(StorageCorruptError, match="missing") as caught:
        FileStorage(data_dir)
    assert caught.value.path == data_dir / name


def test_snapshots_without_their_log_are_refused_not_deleted(storage: FileStorage, data_dir: Path) -> None:
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], with_data(storage, snap(3)))
    storage.close()
    (data_dir / LOG_NAME).unlink()
    with pytest.raises(StorageCorruptError, match="log is missing"):
        FileStorage(data_dir)
    assert len(snapshot_names(data_dir)) == 1


def test_start_keeps_the_current_snapshot_and_newer_transfers_only(
    storage: FileStorage, data_dir: Path
) -> None:
    storage.save(None, entries(1, 9), None)
    feed(storage.receive_snapshot(*key(snap(2)), *summary(state_of(snap(2)))), state_of(snap(2)), stop=100)
    storage.save(None, [], with_data(storage, snap(3)))
    storage.save(None, [], with_data(storage, snap(6)))
    with_data(storage, snap(7))  # written, never saved
    feed(storage.receive_snapshot(*key(snap(9)), *summary(state_of(snap(9)))), state_of(snap(9)), stop=100)
    (data_dir / "raft.log.tmp").write_bytes(b"left by a crash")
    (data_dir / "snapshot-00000000000000000008-00000000000000000001.tmp").write_bytes(b"left by a crash")
    (data_dir / "notes.txt").write_bytes(b"not ours")
    (data_dir / "notes.tmp").write_bytes(b"not ours either")
    assert [name[:29] for name in snapshot_names(data_dir)] == [  # the transfer of 2 went with the save of 3
        "snapshot-00000000000000000006",
        "snapshot-00000000000000000007",
        "snapshot-00000000000000000008",
        "snapshot-00000000000000000009",
    ]
    storage.close()
    FileStorage(data_dir).close()
    kept = [parse_name(name) for name in snapshot_names(data_dir)]
    assert [(key, suffix) for key, _, suffix in filter(None, kept)] == [
        ((6, 1), ".snap"),
        ((9, 1), PART_SUFFIX),
    ]
    assert sorted(path.name for path in data_dir.iterdir() if not path.name.startswith("snapshot-")) == [
        "notes.tmp",
        "notes.txt",
        LOG_NAME,
    ]


def test_compaction_rewrites_a_mostly_dead_log_into_the_same_state(data_dir: Path) -> None:
    storage = FileStorage(data_dir, compact_min_bytes=1024)
    model = MemoryStorage()
    for first in range(1, 200, 10):
        for backend in (storage, model):
            backend.save(HardState(1, "n1", first), entries(first, first + 9), None)
    log_path = data_dir / LOG_NAME
    full_size = log_path.stat().st_size
    for backend in (storage, model):
        backend.save(None, [], with_data(backend, snap(195)))
    assert log_path.stat().st_size < full_size / 4
    assert_stored(storage, lambda: FileStorage(data_dir), model.load()).close()


def test_a_superseded_transfer_refuses_further_writes(storage: FileStorage) -> None:
    data = state_of(snap(4))
    older = storage.receive_snapshot(*key(snap(4)), *summary(data))
    feed(older, data, stop=50)
    storage.save(None, [], with_data(storage, snap(6)))
    with pytest.raises(ValueError, match="abandoned"):
        older.write(50, data[50:60])
    retold = storage.receive_snapshot(*key(snap(7)), *summary(data))
    storage.receive_snapshot(*key(snap(7)), len(data) + 1, 1)  # the leader now offers other data for it
    with pytest.raises(ValueError, match="abandoned"):
        retold.write(0, data[:10])


def test_new_data_for_the_current_snapshot_replaces_it_only_once_saved(
    storage: FileStorage, data_dir: Path
) -> None:
    storage.save(None, [], with_data(storage, snap(4), b"first serialisation"))
    with_data(storage, snap(4), b"second, other bytes")
    assert read_snapshot(storage, snap(4)) == b"second, other bytes"
    storage.close()
    reopened = FileStorage(data_dir)  # the log still refers to the first
    assert read_snapshot(reopened, snap(4)) == b"first serialisation"
    with_data(reopened, snap(4), b"second, other bytes")
    reopened.save(None, [], snap(4))
    reopened.close()
    assert read_snapshot(FileStorage(data_dir), snap(4)) == b"second, other bytes"
    assert len(snapshot_names(data_dir)) == 1


def test_a_failing_writer_leaves_nothing_and_the_storage_usable(storage: FileStorage, data_dir: Path) -> None:
    def failing(out: BinaryIO) -> None:
        out.write(b"half a state")
        raise RuntimeError("the state machine broke")

    with pytest.raises(RuntimeError):
        storage.write_snapshot(snap(3), failing)
    assert snapshot_names(data_dir) == []
    assert storage.snapshot_data(snap(3)) is None
    storage.save(None, [], with_data(storage, snap(3)))
    assert read_snapshot(storage, snap(3)) == state_of(snap(3))


class RecordingDisk(SimulatedDisk):
    """Remembers the size of every append, to show what a snapshot write holds in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[int] = []

    def append(self, path: Path, data: bytes) -> None:
        self.appends.append(len(data))
        super().append(path, data)


def test_a_written_snapshot_reaches_the_disk_in_bounded_pieces() -> None:
    disk = RecordingDisk()
    storage = FileStorage(SIM_DIR, disk=disk)
    data = random.Random(2).randbytes(3 * STREAM_BUFFER_BYTES + 12345)
    storage.write_snapshot(snap(1), writer_of(data, chunks=1000))
    assert sum(disk.appends) == len(data)
    assert max(disk.appends) <= STREAM_BUFFER_BYTES
    assert read_snapshot(storage, snap(1)) == data


def test_simulated_power_loss_cuts_files_back_to_the_last_fsync(data_dir: Path) -> None:
    disk = OsDisk()
    storage = FileStorage(data_dir, disk=disk)
    storage.save(HardState(2, "n1", 0), entries(1, 3), None)
    log_path = data_dir / LOG_NAME
    durable, size = storage.load(), log_path.stat().st_size
    disk.append(log_path, b"\x30\x00\x00\x00 a save in flight, never fsynced")
    storage.simulate_power_loss(random.Random(1), keep_torn=False)
    assert log_path.stat().st_size == size
    with pytest.raises(StorageClosedError):
        storage.save(HardState(3), [], None)
    with pytest.raises(SimulatedPowerLoss):
        disk.append(log_path, b"written after the power cut")
    assert_stored(FileStorage(data_dir), lambda: FileStorage(data_dir), durable).close()


@pytest.mark.parametrize("seed", range(8))
def test_simulated_power_loss_with_a_torn_tail_recovers(data_dir: Path, seed: int) -> None:
    disk = OsDisk()
    storage = FileStorage(data_dir, disk=disk)
    storage.save(HardState(2, "n1", 0), entries(1, 3), None)
    durable = storage.load()
    disk.append(data_dir / LOG_NAME, b"\x30\x00\x00\x00 a save in flight, never fsynced")
    storage.simulate_power_loss(random.Random(seed))
    reopened = FileStorage(data_dir)
    assert reopened.load() == durable
    reopened.save(None, entries(4, 4), None)
    expected = PersistentState(durable.hard_state, entries=tuple(entries(1, 4)))
    assert_stored(reopened, lambda: FileStorage(data_dir), expected).close()


def test_100k_entries_in_200_saves_load_back_whole(storage: FileStorage, data_dir: Path) -> None:
    """(How fast they load is not asserted: wall-clock limits make tests flaky, not storage faster.)"""
    for first in range(1, 100_000, 500):
        storage.save(HardState(1, "n1", first), entries(first, first + 499), None)
    storage.close()
    loaded = FileStorage(data_dir).load()
    assert [entry.index for entry in loaded.entries] == list(range(1, 100_001))
    assert loaded.hard_state == HardState(1, "n1", 99_501)


# --- the simulated disk, and FileStorage on it through power cuts at every operation ---------------------


def test_simulated_disk_keeps_only_what_was_made_durable() -> None:
    disk = SimulatedDisk()
    synced, unnamed, renamed = SIM_DIR / "synced", SIM_DIR / "unnamed", SIM_DIR / "renamed"
    disk.append(synced, b"durable")
    disk.fsync(synced)
    disk.fsync_dir(SIM_DIR)
    disk.append(synced, b" + not synced")
    disk.append(unnamed, b"synced, but its name was never made durable")
    disk.fsync(unnamed)
    disk.rename(synced, renamed)
    disk.crash(keep_torn=False, rng=random.Random(0))
    assert disk.list_dir(SIM_DIR) == ["synced"]
    assert disk.read(synced) == b"durable"


def test_simulated_disk_fails_every_operation_after_the_power_cut() -> None:
    disk = SimulatedDisk()
    disk.power_off_after(2)
    disk.append(SIM_DIR / "a", b"1")
    with pytest.raises(SimulatedPowerLoss):
        disk.fsync(SIM_DIR / "a")
    with pytest.raises(SimulatedPowerLoss):
        disk.read(SIM_DIR / "a")
    with pytest.raises(SimulatedPowerLoss):
        disk.open_read(SIM_DIR / "a")
    disk.crash(keep_torn=False, rng=random.Random(0))
    assert disk.read(SIM_DIR / "a") is None


def open_on(disk: SimulatedDisk) -> FileStorage:
    return FileStorage(SIM_DIR, disk=disk, compact_min_bytes=256, part_sync_bytes=PART_SYNC)


def assert_snapshot_whole(storage: FileStorage) -> None:
    """The loaded snapshot, if it has data, reads back as exactly the data it was given."""
    snapshot = storage.load().snapshot
    if snapshot is not None and snapshot.index > 0:
        assert storage.snapshot_data(snapshot) == summary(state_of(snapshot))
        assert read_snapshot(storage, snapshot) == state_of(snapshot)


def give_data(storage: Storage, snapshot: Snapshot, how: str, rng: random.Random) -> None:
    """Give ``snapshot`` its data (``state_of`` it), written locally or received in random chunks, the leader
    reconnecting now and then."""
    data = state_of(snapshot)
    if how == "write":
        storage.write_snapshot(snapshot, writer_of(data, chunks=rng.randint(1, 20)))
        return
    while storage.snapshot_data(snapshot) != summary(data):
        receiver = storage.receive_snapshot(*key(snapshot), *summary(data))
        feed(receiver, data, chunk=rng.randint(1, 100), stop=rng.randint(receiver.offset, len(data)))


@pytest.mark.parametrize("how", ["write", "receive"])
def test_power_loss_at_any_operation_of_a_snapshot_install_keeps_a_whole_snapshot(how: str) -> None:
    """The previous snapshot survives until the new one is saved, and a saved one always has its data."""
    for cut in itertools.count(1):
        rng = random.Random(cut)
        disk = SimulatedDisk()
        storage = open_on(disk)
        storage.save(HardState(1, "n1", 9), entries(1, 9), None)
        give_data(storage, snap(3), how, random.Random(0))
        storage.save(None, [], snap(3))
        before = storage.load()
        disk.power_off_after(cut)
        try:
            give_data(storage, snap(8), how, random.Random(0))  # the same operations for every cut
            storage.save(None, [], snap(8))
        except SimulatedPowerLoss:
            pass
        else:
            break
        disk.crash(keep_torn=rng.random() < 0.7, rng=rng)
        reopened = open_on(disk)
        assert reopened.load() in (before, storage.load()), f"power cut at operation {cut}"
        assert_snapshot_whole(reopened)
    assert cut > 10  # the install took that many operations, each of them cut once


def test_a_transfer_cut_by_power_loss_resumes_and_completes_whole() -> None:
    """A resume never fails its checksum (it starts where the part is durable), and never goes back further
    than the checkpoint before the last one reached."""
    data = state_of(snap(8)) * 3
    for cut in itertools.count(1):
        disk = SimulatedDisk()
        storage = open_on(disk)
        disk.power_off_after(cut)
        cut_off: SnapshotReceiver | None = None
        try:
            cut_off = storage.receive_snapshot(*key(snap(8)), *summary(data))
            feed(cut_off, data, chunk=50)
        except SimulatedPowerLoss:
            pass
        else:
            break
        disk.crash(keep_torn=True, rng=random.Random(cut))
        held = 0 if cut_off is None else cut_off.offset  # every checkpoint up to it was taken
        receiver = open_on(disk).receive_snapshot(*key(snap(8)), *summary(data))
        if held < len(data):
            assert receiver.offset >= held // PART_SYNC * PART_SYNC - PART_SYNC, (
                f"power cut at operation {cut}"
            )
        feed(receiver, data)
        assert receiver.complete, f"power cut at operation {cut}"


def clone(state: LogState) -> LogState:
    copy = LogState()
    copy.hard_state, copy.snapshot, copy.entries = state.hard_state, state.snapshot, list(state.entries)
    return copy


def random_data(rng: random.Random) -> bytes | None:
    choice = rng.randrange(4)
    return None if choice == 0 else b"" if choice == 1 else rng.randbytes(rng.randint(1, 64))


def random_membership(rng: random.Random) -> Membership:
    voters = rng.sample(["n1", "n2", "n3", "n4"], rng.randint(1, 3))
    return Membership.of(voters, {voter: f"{voter}:1" for voter in voters})


SaveArgs = tuple[HardState | None, list[Entry], Snapshot | None]


def random_save(rng: random.Random, model: LogState) -> tuple[SaveArgs, LogState]:
    """A valid save against ``model`` (the last state saved), and the state it leads to."""
    after = clone(model)
    snapshot = None
    if rng.random() < 0.15:
        index = rng.randint(after.first_index - 1, after.last_index + 2)
        held = after.term_at(index)
        term = held if held is not None and rng.random() < 0.8 else rng.randint(1, 9)
        snapshot = Snapshot(index, term, random_membership(rng))
        after.apply(None, [], snapshot)
    new_entries: list[Entry] = []
    if rng.random() < 0.7:
        start = rng.randint(max(after.first_index, after.last_index - 3), after.last_index + 1)
        term = rng.randint(1, 9)
        count = rng.choice([1, 1, 2, 5, 40])
        kind = rng.choice(list(EntryKind))
        new_entries = [Entry(index, term, random_data(rng), kind) for index in range(start, start + count)]
    hard_state = None
    if rng.random() < 0.5:
        hard_state = HardState(rng.randint(0, 9), rng.choice([None, "n1", "n2"]), rng.randint(0, 50))
    after.apply(hard_state, new_entries, None)
    return (hard_state, new_entries, snapshot), after


def open_and_check(disk: SimulatedDisk, candidates: list[LogState]) -> tuple[FileStorage, LogState]:
    """Open after a crash; what it loads must be exactly one of the candidate states (never a mix such as
    a term without its vote), its snapshot whole, and only the log, the current snapshot's data and parts of
    newer transfers may be left in the directory."""
    storage = open_on(disk)
    loaded = storage.load()
    matching = [model for model in candidates if model.persistent_state() == loaded]
    assert matching, f"loaded {loaded} is none of {[model.persistent_state() for model in candidates]}"
    assert_snapshot_whole(storage)
    current = (0, 0) if loaded.snapshot is None else (loaded.snapshot.index, loaded.snapshot.term)
    names = sorted(disk.list_dir(SIM_DIR))
    assert names[0] == LOG_NAME, names
    files = [parse_name(name) for name in names[1:]]
    data_files = [(key, data) for key, data, suffix in filter(None, files) if suffix != PART_SUFFIX]
    assert data_files == ([] if current[0] == 0 else [(current, summary(state_of(snap(*current))))])
    assert all(parsed is not None and (parsed[2] != PART_SUFFIX or parsed[0] >= current) for parsed in files)
    return storage, matching[0]


def random_transfer(rng: random.Random, storage: FileStorage, model: LogState) -> None:
    """Receive part of a snapshot a little ahead of the log, as a leader cut off mid-transfer would leave."""
    snapshot = snap(model.last_index + rng.randint(1, 3), rng.randint(1, 9))
    data = state_of(snapshot)
    receiver = storage.receive_snapshot(*key(snapshot), *summary(data))
    feed(receiver, data, chunk=rng.randint(1, 100), stop=rng.randint(receiver.offset, len(data) - 1))


def run_power_loss_case(seed: int) -> None:
    rng = random.Random(seed)
    disk = SimulatedDisk()
    durable = LogState()  # the state after the last save that returned
    # What a power cut may leave: the state after the last save that wrote, or after the save in flight (a
    # save that only moves the commit index writes nothing; the next one that writes carries it).
    candidates = [durable]
    for _ in range(4):
        disk.power_off_after(rng.randint(1, 60))
        try:
            storage, durable = open_and_check(disk, candidates)
            candidates = [durable]
            for _ in range(30):
                if rng.random() < 0.1:
                    random_transfer(rng, storage, durable)
                args, after = random_save(rng, durable)
                unsynced = durable.moves_only_commit(*args)
                candidates = [*candidates, after]
                random_data_for(rng, storage, args[2])
                storage.save(*args)
                durable = after
                candidates = candidates if unsynced else [after]
        except SimulatedPowerLoss:
            pass
        disk.crash(keep_torn=rng.random() < 0.7, rng=rng)
    storage, durable = open_and_check(disk, candidates)
    written = durable
    for _ in range(3):  # writable again after recovering
        args, after = random_save(rng, durable)
        random_data_for(rng, storage, args[2])
        storage.save(*args)
        written = written if durable.moves_only_commit(*args) else after
        durable = after
    storage.close()
    assert open_on(disk).load() == written.persistent_state()


def test_only_a_save_that_moves_nothing_but_the_commit_index_waits_for_no_disk() -> None:
    disk = SimulatedDisk()
    storage = open_on(disk)
    storage.save(HardState(2, "n1", 0), [Entry(1, 2, b"x")], None)
    for save, durable in [
        ((HardState(2, "n1", 1), [], None), False),
        ((HardState(3, None, 1), [], None), True),
        ((HardState(3, "n2", 1), [], None), True),
        ((None, [Entry(2, 3, b"y")], None), True),
    ]:
        assert storage.needs_disk(*save) is durable, save
        storage.save(*save)
        disk.crash(keep_torn=False, rng=random.Random(0))
        storage = open_on(disk)
        survived = storage.load().hard_state == save[0] if save[0] else len(storage.load().entries) == 2
        assert survived is durable, save
        storage.save(*save)  # put back what a crash took, for the next step


def test_the_next_record_written_carries_a_commit_index_saved_only_in_memory() -> None:
    disk = SimulatedDisk()
    storage = open_on(disk)
    storage.save(HardState(2, "n1", 0), [Entry(1, 2, b"x"), Entry(2, 2, b"y")], None)
    storage.save(HardState(2, "n1", 2), [], None)
    storage.save(None, [Entry(3, 2, b"z")], None)
    disk.crash(keep_torn=False, rng=random.Random(0))
    assert open_on(disk).load().hard_state == HardState(2, "n1", 2)


def random_data_for(rng: random.Random, storage: FileStorage, snapshot: Snapshot | None) -> None:
    """What must come before a save of ``snapshot``: its data, one way or the other, unless already held."""
    if snapshot is not None and snapshot.index > 0 and storage.snapshot_data(snapshot) is None:
        give_data(storage, snapshot, rng.choice(["write", "receive"]), rng)


@pytest.mark.parametrize("first_seed", range(0, 400, 100))
def test_every_returned_save_survives_power_loss_at_any_operation(first_seed: int) -> None:
    for seed in range(first_seed, first_seed + 100):
        try:
            run_power_loss_case(seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
