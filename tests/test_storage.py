"""Durable Raft state: what a save means (both backends), and that FileStorage keeps it through power cuts."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage import (
    FileStorage,
    MemoryStorage,
    OsDisk,
    SimulatedDisk,
    SimulatedPowerLoss,
    Storage,
    StorageClosedError,
    StorageCorruptError,
)
from raftkv.storage.file import LOG_NAME
from raftkv.storage.log_state import LogState

Opener = Callable[[], Storage]
SIM_DIR = Path("/sim/data")


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(index, term, f"{index}@{term}".encode()) for index in range(first, last + 1)]


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
        return lambda: FileStorage(tmp_path / "data")
    disk = SimulatedDisk()
    return lambda: FileStorage(SIM_DIR, disk=disk)


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
    snapshot = Snapshot(3, 1, b"state@3")
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot, entries=tuple(entries(4, 5))))


@pytest.mark.parametrize("snapshot", [Snapshot(3, 2, b"other term"), Snapshot(9, 1, b"past the end")])
def test_snapshot_not_matching_the_log_discards_it(open_storage: Opener, snapshot: Snapshot) -> None:
    storage = open_storage()
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot))


def test_snapshot_at_the_stored_snapshot_keeps_the_log(open_storage: Opener) -> None:
    storage = open_storage()
    snapshot = Snapshot(2, 1, b"state@2")
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], snapshot)
    storage.save(None, [], snapshot)
    assert_stored(storage, open_storage, PersistentState(snapshot=snapshot, entries=tuple(entries(3, 5))))


def test_one_save_applies_snapshot_then_entries_then_hard_state(open_storage: Opener) -> None:
    storage = open_storage()
    storage.save(HardState(1, "n1", 2), entries(1, 5), None)
    snapshot = Snapshot(7, 2, b"state@7")
    storage.save(HardState(2, "n3", 7), entries(8, 9, term=2), snapshot)
    expected = PersistentState(HardState(2, "n3", 7), snapshot, tuple(entries(8, 9, term=2)))
    assert_stored(storage, open_storage, expected)


@pytest.mark.parametrize(
    ("bad_entries", "snapshot"),
    [
        (entries(5, 6), None),  # gap after the last entry (3)
        ([Entry(3, 1), Entry(5, 1)], None),  # not contiguous
        (entries(2, 3), Snapshot(2, 1, b"")),  # at the snapshot's index
        (entries(5, 5), Snapshot(3, 9, b"")),  # the snapshot discards the log, so 4 would be next
    ],
)
def test_saves_that_would_break_the_log_are_refused_and_store_nothing(
    open_storage: Opener, bad_entries: list[Entry], snapshot: Snapshot | None
) -> None:
    storage = open_storage()
    storage.save(HardState(1, "n1", 0), entries(1, 3), None)
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


# --- FileStorage on a real directory ---------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def storage(data_dir: Path) -> Iterator[FileStorage]:
    storage = FileStorage(data_dir)
    yield storage
    storage.close()


def save_three_records(storage: FileStorage, log_path: Path) -> list[int]:
    """Saves three records; returns the offset each one starts at."""
    offsets = []
    for first in (1, 4, 7):
        offsets.append(log_path.stat().st_size)
        storage.save(HardState(first, "n1", first), entries(first, first + 2), None)
    return offsets


def test_save_after_close_is_refused(storage: FileStorage) -> None:
    storage.close()
    with pytest.raises(StorageClosedError):
        storage.save(HardState(1), [], None)


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


def test_damaged_snapshot_file_raises_naming_it(storage: FileStorage, data_dir: Path) -> None:
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], Snapshot(3, 1, b"state@3"))
    storage.close()
    [snapshot_path] = data_dir.glob("snapshot-*")
    raw = bytearray(snapshot_path.read_bytes())
    raw[-1] ^= 0xFF
    snapshot_path.write_bytes(raw)
    with pytest.raises(StorageCorruptError, match=snapshot_path.name) as caught:
        FileStorage(data_dir)
    assert caught.value.path == snapshot_path


def test_snapshots_without_their_log_are_refused_not_deleted(storage: FileStorage, data_dir: Path) -> None:
    storage.save(None, entries(1, 5), None)
    storage.save(None, [], Snapshot(3, 1, b"state@3"))
    storage.close()
    (data_dir / LOG_NAME).unlink()
    with pytest.raises(StorageCorruptError, match="log is missing"):
        FileStorage(data_dir)
    assert len(list(data_dir.glob("snapshot-*"))) == 1


def test_only_the_current_snapshot_file_is_kept(storage: FileStorage, data_dir: Path) -> None:
    storage.save(None, entries(1, 9), None)
    storage.save(None, [], Snapshot(3, 1, b"state@3"))
    storage.save(None, [], Snapshot(6, 1, b"state@6"))
    (data_dir / "raft.log.tmp").write_bytes(b"left by a crash")
    (data_dir / "notes.txt").write_bytes(b"not ours")
    assert [path.name[:29] for path in data_dir.glob("snapshot-*")] == ["snapshot-00000000000000000006"]
    storage.close()
    FileStorage(data_dir).close()
    assert sorted(path.name for path in data_dir.iterdir() if not path.name.startswith("snapshot-")) == [
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
        backend.save(None, [], Snapshot(195, 1, b"state@195"))
    assert log_path.stat().st_size < full_size / 4
    assert_stored(storage, lambda: FileStorage(data_dir), model.load()).close()


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
    """(How fast they load is measured by ``tools/bench storage``, not asserted here.)"""
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
    disk.crash(keep_torn=False, rng=random.Random(0))
    assert disk.read(SIM_DIR / "a") is None


def clone(state: LogState) -> LogState:
    copy = LogState()
    copy.hard_state, copy.snapshot, copy.entries = state.hard_state, state.snapshot, list(state.entries)
    return copy


def random_data(rng: random.Random) -> bytes | None:
    choice = rng.randrange(4)
    return None if choice == 0 else b"" if choice == 1 else rng.randbytes(rng.randint(1, 64))


SaveArgs = tuple[HardState | None, list[Entry], Snapshot | None]


def random_save(rng: random.Random, model: LogState) -> tuple[SaveArgs, LogState]:
    """A valid save against ``model`` (the last state saved), and the state it leads to."""
    after = clone(model)
    snapshot = None
    if rng.random() < 0.15:
        index = rng.randint(after.first_index - 1, after.last_index + 2)
        held = after.term_at(index)
        term = held if held is not None and rng.random() < 0.8 else rng.randint(1, 9)
        snapshot = Snapshot(index, term, rng.randbytes(rng.randint(0, 200)))
        after.apply(None, [], snapshot)
    new_entries: list[Entry] = []
    if rng.random() < 0.7:
        start = rng.randint(max(after.first_index, after.last_index - 3), after.last_index + 1)
        term = rng.randint(1, 9)
        count = rng.choice([1, 1, 2, 5, 40])
        new_entries = [Entry(index, term, random_data(rng)) for index in range(start, start + count)]
    hard_state = None
    if rng.random() < 0.5:
        hard_state = HardState(rng.randint(0, 9), rng.choice([None, "n1", "n2"]), rng.randint(0, 50))
    after.apply(hard_state, new_entries, None)
    return (hard_state, new_entries, snapshot), after


def open_and_check(disk: SimulatedDisk, candidates: list[LogState]) -> tuple[FileStorage, LogState]:
    """Open after a crash; what it loads must be exactly one of the candidate states (never a mix such as
    a term without its vote), and only the log and the current snapshot may be left in the directory."""
    storage = FileStorage(SIM_DIR, disk=disk, compact_min_bytes=256)
    loaded = storage.load()
    matching = [model for model in candidates if model.persistent_state() == loaded]
    assert matching, f"loaded {loaded} is none of {[model.persistent_state() for model in candidates]}"
    leftovers = sorted(disk.list_dir(SIM_DIR))
    assert leftovers[0] == LOG_NAME
    assert len(leftovers) == (2 if loaded.snapshot is not None else 1), leftovers
    return storage, matching[0]


def run_power_loss_case(seed: int) -> None:
    rng = random.Random(seed)
    disk = SimulatedDisk()
    durable = LogState()  # the state after the last save that returned
    candidates = [durable]  # durable, plus the save in flight when the power went out
    for _ in range(4):
        disk.power_off_after(rng.randint(1, 40))
        try:
            storage, durable = open_and_check(disk, candidates)
            candidates = [durable]
            for _ in range(30):
                args, after = random_save(rng, durable)
                candidates = [durable, after]
                storage.save(*args)
                durable, candidates = after, [after]
        except SimulatedPowerLoss:
            pass
        disk.crash(keep_torn=rng.random() < 0.7, rng=rng)
    storage, durable = open_and_check(disk, candidates)
    for _ in range(3):  # writable again after recovering
        args, durable = random_save(rng, durable)
        storage.save(*args)
    storage.close()
    assert FileStorage(SIM_DIR, disk=disk).load() == durable.persistent_state()


@pytest.mark.parametrize("first_seed", range(0, 400, 100))
def test_every_returned_save_survives_power_loss_at_any_operation(first_seed: int) -> None:
    for seed in range(first_seed, first_seed + 100):
        try:
            run_power_loss_case(seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
