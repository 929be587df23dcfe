"""Snapshots: determinism across replicas, restore equivalent to applying the log, and the frames format."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kv_support import (
    DEEPEST,
    apply_all,
    random_history,
    restored,
    run,
    small_chunks,
    small_frames,
    small_store,
    snapshot_of,
    store_with,
)

import raftkv.kv.frames
import raftkv.kv.table
from raftkv.kv import (
    MAX_INTEGER_DIGITS,
    MAX_LEASE_ID,
    Command,
    Delete,
    Event,
    IdempotencyConflict,
    JSONValue,
    KeyValue,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    Ok,
    Put,
    Replayed,
    SnapshotDecodeError,
    Txn,
    TxnPut,
    fingerprint,
)

# --- snapshots and determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
@pytest.mark.parametrize("chunk_keys", [2, raftkv.kv.table.CHUNK_KEYS])
def test_restore_midway_then_apply_the_rest_equals_applying_everything(
    seed: int, chunk_keys: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch, chunk_keys)
    history = random_history(seed, 150)
    split = random.Random(-seed).randint(0, len(history))
    whole = small_store()
    whole_results = apply_all(whole, history)

    first_half = small_store()
    apply_all(first_half, history[:split])
    copy = restored(snapshot_of(first_half))
    assert snapshot_of(copy) == snapshot_of(first_half)
    assert apply_all(copy, history[split:]) == whole_results[split:]

    assert snapshot_of(copy) == snapshot_of(whole)
    assert copy.range() == whole.range()
    assert copy.leases() == whole.leases()
    assert (copy.revision, copy.applied_index, copy.compact_revision) == (
        whole.revision,
        whole.applied_index,
        whole.compact_revision,
    )
    assert copy.events_after(whole.compact_revision) == whole.events_after(whole.compact_revision)


@pytest.mark.parametrize("seed", range(20))
def test_revision_events_and_leases_bookkeeping_over_random_histories(seed: int) -> None:
    store = KVStore(idempotency_capacity=8, idempotency_window=40, history_capacity=100_000)
    for index, entry in enumerate(random_history(seed, 300), start=1):
        before = store.revision
        result = store.apply(index, entry)
        assert store.revision - before in (0, 1)
        new_events = store.events_after(before)
        assert bool(new_events) == (store.revision > before)
        assert {event.revision for event in new_events} <= {store.revision}
        if result is not None and not isinstance(result, Replayed):
            assert result.revision == store.revision
    model: dict[str, JSONValue] = {}
    for event in store.events_after(0):  # the events replayed rebuild the keys
        if event.type == "put":
            model[event.key] = event.value
        else:
            del model[event.key]
    assert [(kv.key, kv.value) for kv in store.range()] == sorted(model.items())
    for kv in store.range():
        assert 1 <= kv.create_revision <= kv.mod_revision <= store.revision
        assert kv.version <= kv.mod_revision - kv.create_revision + 1
        if kv.lease is not None:
            found = store.lease(kv.lease)
            assert found is not None and kv.key in found[1]
    for lease, _ in store.leases():
        found = store.lease(lease)
        assert found is not None and all(
            store.get(key) == replace_lease(store.get(key), lease) for key in found[1]
        )


def replace_lease(kv: KeyValue | None, lease: int) -> KeyValue | None:
    """``kv`` as it would be on ``lease`` (None stays None)."""
    return (
        None
        if kv is None
        else KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, lease)
    )


def test_two_replicas_applying_the_same_entries_write_identical_bytes() -> None:
    history = random_history(7, 400)
    one, two = small_store(), small_store()
    assert apply_all(one, history) == apply_all(two, history)
    assert snapshot_of(one) == snapshot_of(two)
    assert snapshot_of(restored(snapshot_of(one))) == snapshot_of(one)
    kinds = {type(result).__name__ for result in apply_all(small_store(), history)}
    assert {
        "Replayed",
        "IdempotencyConflict",
        "TxnResult",
        "LeaseRevoked",
        "LeaseExists",
        "InvalidCommand",
    } <= kinds


def test_replicas_in_processes_of_different_hash_seeds_write_identical_bytes() -> None:
    """Sets of strings iterate in another order under another hash seed; nothing may show it."""
    script = (
        "import sys\n"
        "from test_kv_support import apply_all, random_history, small_store, snapshot_of\n"
        "store = small_store()\n"
        "for seed in range(5):\n"
        "    apply_all(store, random_history(seed, 200))\n"
        "sys.stdout.write(snapshot_of(store).hex())\n"
    )
    tests = Path(__file__).parent
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(tests)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_a_capture_does_not_see_later_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    small_chunks(monkeypatch)
    store = KVStore(idempotency_capacity=8, history_capacity=20)
    run(store, LeaseGrant(1, 5), LeaseGrant(2, 5))
    run(store, *[Put(f"k{n:02d}", n, idempotency_key=f"i{n}", lease=1 + n % 2) for n in range(40)])
    expected = snapshot_of(store)
    writer = store.snapshot()
    run(
        store,
        *[Delete(f"k{n:02d}") for n in range(0, 40, 3)],  # chunks shrink and merge
        *[Put(f"k{n:02d}+", n) for n in range(40)],  # chunks grow and split; events drop out of the history
        Put("k01", "changed", idempotency_key="new"),  # a value changes, an idempotency key is forgotten
        Put("k02", "moved", lease=1),  # a key changes lease
        LeaseRevoke(2),  # a lease and its keys go
        LeaseGrant(3, 5),
    )
    assert snapshot_of(store) != expected
    written = io.BytesIO()
    writer(written)
    assert written.getvalue() == expected


def test_object_member_order_survives_a_snapshot() -> None:
    store = store_with(Put("k", {"z": 1, "a": 2}))
    copy = restored(snapshot_of(store))
    value = copy.get("k")
    assert value is not None and isinstance(value.value, dict)
    assert list(value.value) == ["z", "a"]


def test_lone_surrogates_from_escapes_survive_a_snapshot() -> None:
    store = KVStore()
    assert store.apply(1, b'{"op":"put","key":"k","value":"\\ud800"}') == Ok("k", "\ud800", 1)
    put = b'{"op":"put","key":"j","value":["\\udfff"],"idempotency_key":"\\ud800"}'
    assert store.apply(2, put) == Ok("j", ["\udfff"], 2)
    copy = restored(snapshot_of(store))
    assert snapshot_of(copy) == snapshot_of(store)
    assert copy.get("k") == KeyValue("k", "\ud800", 1, 1, 1)
    assert copy.events_after(0) == [Event(1, "put", "k", "\ud800"), Event(2, "put", "j", ["\udfff"])]
    assert copy.apply(3, put) == Replayed(Ok("j", ["\udfff"], 2))  # the idempotency key was kept


LONGEST = int("9" * MAX_INTEGER_DIGITS)


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**200),
        LONGEST,
        -LONGEST,
        1e300,
        -0.0,
        5e-324,
        "é\U0001f600\x00",
        {"": {"a": [None]}},
        DEEPEST,
    ],
    ids=[
        "2**64",
        "-2**200",
        "longest",
        "-longest",
        "1e300",
        "-0.0",
        "5e-324",
        "non-ascii",
        "object",
        "deepest",
    ],
)
def test_any_value_a_command_can_carry_survives_a_snapshot(value: JSONValue) -> None:
    # The value is in the table, in an Ok, in a PreconditionFailed's current, in a transaction's results
    # and in the history.
    store = store_with(
        Put("k", value, idempotency_key="i"),
        Put("k", 1, prev_value=[], idempotency_key="j"),
        Txn(success=(TxnPut("t", value),), idempotency_key="t"),
    )
    copy = restored(snapshot_of(store))
    kv = copy.get("k")
    assert kv is not None and json.dumps(kv.value) == json.dumps(value)
    assert snapshot_of(copy) == snapshot_of(store)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"format":2}',
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[],"idempotency":[]}',
    ],
)
def test_restore_rejects_what_snapshot_did_not_write(data: bytes) -> None:
    with pytest.raises(SnapshotDecodeError):
        restored(data)


# --- the snapshot format --------------------------------------------------------------------------------

PREFIX = b"RKVS" + (3).to_bytes(4, "big")  # magic and format number


def frame(body: object) -> bytes:
    """One frame as the format lays it out: body length, CRC-32 of the body, the body as JSON."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return struct.pack(">II", len(data), zlib.crc32(data)) + data


def snapshot_bytes(frames: Sequence[object], prefix: bytes = PREFIX) -> bytes:
    return prefix + b"".join(map(frame, frames))


def frame_bodies(data: bytes) -> list[Any]:
    """The parsed frames of a snapshot (the inverse of ``snapshot_bytes``)."""
    assert data.startswith(PREFIX)
    bodies, at = [], len(PREFIX)
    while at < len(data):
        length, _ = struct.unpack_from(">II", data, at)
        bodies.append(json.loads(data[at + 8 : at + 8 + length].decode("utf-8", "surrogatepass")))
        at += 8 + length
    return bodies


HAND_BUILT_HISTORY: list[Command] = [
    LeaseGrant(5, 10),  # index 1
    Put("a", 0),  # 2, revision 1
    Put("b", [2]),  # 3, revision 2
    Put("a", 1, lease=5, idempotency_key="i"),  # 4, revision 3
]
FINGERPRINT = fingerprint(HAND_BUILT_HISTORY[-1])


def hand_built_store() -> KVStore:
    store = KVStore(idempotency_capacity=2, idempotency_window=10, history_capacity=3)
    run(store, *HAND_BUILT_HISTORY)
    return store


def header(**fields: object) -> dict[str, object]:
    return {
        "applied_index": 4,
        "revision": 3,
        "idempotency_capacity": 2,
        "idempotency_window": 10,
        "history_capacity": 3,
        "compact_revision": 0,
        "leases": 1,
        "keys": 2,
        "idempotency": 1,
        "events": 3,
    } | fields


def rows(columns: dict[str, list[Any]], changes: dict[str, list[Any]]) -> list[list[Any]]:
    """The columns, some replaced by ``changes``, in their order."""
    assert changes.keys() <= columns.keys()
    return list((columns | changes).values())


def lease_frame(**changes: list[Any]) -> list[list[Any]]:
    return rows({"ids": [5], "ttls": [10]}, changes)


def key_frame(**changes: list[Any]) -> list[list[Any]]:
    """Two keys, a (put at 1, updated at 3 onto lease 5) and b (put at 2)."""
    columns: dict[str, list[Any]] = {
        "keys": ["a", "b"],
        "values": [1, [2]],
        "create": [1, 2],
        "mod": [3, 2],
        "version": [2, 1],
        "lease": [5, 0],
    }
    return rows(columns, changes)


def idempotency_frame(**changes: list[Any]) -> list[list[Any]]:
    return rows(
        {"keys": ["i"], "fingerprints": [FINGERPRINT], "indices": [4], "outcomes": [["ok", "a", 1, 3]]},
        changes,
    )


def event_frame(**changes: list[Any]) -> list[list[Any]]:
    columns: dict[str, list[Any]] = {
        "revisions": [1, 2, 3],
        "types": ["put", "put", "put"],
        "keys": ["a", "b", "a"],
        "values": [0, [2], 1],
    }
    return rows(columns, changes)


VALID: list[object] = [header(), lease_frame(), key_frame(), idempotency_frame(), event_frame()]


def test_the_hand_built_snapshot_is_what_the_store_writes() -> None:
    assert snapshot_of(hand_built_store()) == snapshot_bytes(VALID)
    store = restored(snapshot_bytes(VALID))
    assert store.range() == [KeyValue("a", 1, 1, 3, 2, lease=5), KeyValue("b", [2], 2, 2, 1)]
    assert store.lease(5) == (10, ["a"])
    assert store.events_after(0) == [
        Event(1, "put", "a", 0),
        Event(2, "put", "b", [2]),
        Event(3, "put", "a", 1),
    ]
    assert run(store, HAND_BUILT_HISTORY[-1], Put("x", 0, idempotency_key="i")) == [
        Replayed(Ok("a", 1, 3)),
        IdempotencyConflict("i", 3),
    ]


def without(frame: list[list[Any]], row: int) -> list[list[Any]]:
    return [column[:row] + column[row + 1 :] for column in frame]


def replaced(*frames: object, at: int) -> list[object]:
    """VALID with the frames from ``at`` on replaced by ``frames``, then the rest of VALID after them."""
    return [*VALID[:at], *frames, *VALID[at + len(frames) :]]


INVALID: dict[str, Sequence[object]] = {
    "header-not-an-object": replaced(list(header().values()), at=0),
    "header-missing-a-field": replaced({k: v for k, v in header().items() if k != "revision"}, at=0),
    "header-fields-reordered": replaced(dict(reversed(header().items())), at=0),
    "header-extra-field": replaced(header(more=1), at=0),
    "header-negative-index": replaced(header(applied_index=-1), at=0),
    "header-boolean-count": replaced(header(idempotency=True), at=0),
    "zero-idempotency-capacity": replaced(header(idempotency_capacity=0, idempotency=0), at=0),
    "zero-idempotency-window": replaced(header(idempotency_window=0), at=0),
    "zero-history-capacity": replaced(header(history_capacity=0, events=0), at=0),
    "idempotency-over-capacity": replaced(header(idempotency_capacity=1, idempotency=2), at=0),
    "events-over-capacity": replaced(header(history_capacity=2), at=0),
    "compacted-after-the-revision": replaced(header(compact_revision=4), at=0),
    # leases
    "fewer-leases-than-counted": replaced(header(leases=2), at=0),
    "more-leases-than-counted": replaced(lease_frame(ids=[5, 6], ttls=[10, 10]), at=1),
    "lease-frame-of-three-columns": replaced([[5], [10], [0]], at=1),
    "lease-id-zero": [header(leases=2), lease_frame(ids=[0, 5], ttls=[1, 10]), *VALID[2:]],
    "lease-id-over-63-bits": [header(leases=2), lease_frame(ids=[5, 2**63], ttls=[10, 10]), *VALID[2:]],
    "lease-ids-descending": [header(leases=2), lease_frame(ids=[6, 5], ttls=[10, 10]), *VALID[2:]],
    "lease-ids-repeated-across-frames": [header(leases=2), lease_frame(), lease_frame(), *VALID[2:]],
    "lease-ttl-zero": replaced(lease_frame(ttls=[0]), at=1),
    "lease-ttl-over-30-days": replaced(lease_frame(ttls=[30 * 24 * 3600 + 1]), at=1),
    "lease-ttl-boolean": replaced(lease_frame(ttls=[True]), at=1),
    # keys
    "more-keys-than-counted": [header(keys=1), *VALID[1:]],
    "fewer-keys-than-counted": [header(keys=3), *VALID[1:]],
    "empty-key-frame": replaced(key_frame(keys=[], values=[], create=[], mod=[], version=[], lease=[]), at=2),
    "columns-of-unequal-length": replaced(key_frame(values=[1]), at=2),
    "key-frame-of-five-columns": replaced(key_frame()[:5], at=2),
    "key-frame-not-columns": replaced({"keys": ["a", "b"]}, at=2),
    "keys-descending": replaced(key_frame(keys=["b", "a"]), at=2),
    "keys-repeated": replaced(key_frame(keys=["a", "a"]), at=2),
    "keys-descending-across-frames": [
        *VALID[:2],
        without(key_frame(), 0),
        without(key_frame(), 1),
        *VALID[3:],
    ],
    "empty-key": replaced(key_frame(keys=["", "b"]), at=2),
    "non-string-key": replaced(key_frame(keys=[1, "b"]), at=2),
    "lone-surrogate-in-key": replaced(key_frame(keys=["a", "\ud800"]), at=2),
    "float-revision": replaced(key_frame(create=[1.0, 2]), at=2),
    "boolean-version": replaced(key_frame(version=[True, 1]), at=2),
    "revision-zero": replaced(key_frame(create=[0, 2]), at=2),
    "created-after-modified": replaced(key_frame(create=[1, 3]), at=2),
    "modified-after-the-store-revision": replaced(key_frame(mod=[4, 2]), at=2),
    "version-zero": replaced(key_frame(version=[0, 1]), at=2),
    "revision-beyond-64-bits": [header(revision=2**64), lease_frame(), key_frame(mod=[2**64, 2]), *VALID[3:]],
    "key-on-a-lease-not-granted": replaced(key_frame(lease=[5, 6]), at=2),
    "key-on-a-negative-lease": replaced(key_frame(lease=[5, -5]), at=2),
    "key-on-a-float-lease": replaced(key_frame(lease=[5.0, 0]), at=2),
    "value-nested-too-deep": replaced(key_frame(values=[1, json.loads("[" * 100 + "]" * 100)]), at=2),
    "integer-too-long": replaced(key_frame(values=[1, int("9" * (MAX_INTEGER_DIGITS + 1))]), at=2),
    # the idempotency table
    "idempotency-key-repeated": [
        header(idempotency=2),
        *VALID[1:3],
        idempotency_frame(
            keys=["i", "i"], fingerprints=[FINGERPRINT] * 2, indices=[3, 4], outcomes=[["ok", "a", 1, 3]] * 2
        ),
        *VALID[4:],
    ],
    "more-idempotency-keys-than-counted": replaced(
        idempotency_frame(
            keys=["h", "i"], fingerprints=[FINGERPRINT] * 2, indices=[3, 4], outcomes=[["ok", "a", 1, 3]] * 2
        ),
        at=3,
    ),
    "fewer-idempotency-keys-than-counted": [header(idempotency=2), *VALID[1:]],
    "empty-idempotency-key": replaced(idempotency_frame(keys=[""]), at=3),
    "idempotency-key-not-a-string": replaced(idempotency_frame(keys=[7]), at=3),
    "fingerprint-short": replaced(idempotency_frame(fingerprints=[FINGERPRINT[:-1]]), at=3),
    "fingerprint-upper-case": replaced(idempotency_frame(fingerprints=[FINGERPRINT.upper()]), at=3),
    "fingerprint-not-a-string": replaced(idempotency_frame(fingerprints=[None]), at=3),
    "index-after-the-applied-index": replaced(idempotency_frame(indices=[5]), at=3),
    "index-older-than-the-window": [header(applied_index=15), *VALID[1:]],
    "index-zero": replaced(idempotency_frame(indices=[0]), at=3),
    "index-boolean": replaced(idempotency_frame(indices=[True]), at=3),
    "indices-not-ascending": [
        header(idempotency=2),
        *VALID[1:3],
        idempotency_frame(
            keys=["h", "i"], fingerprints=[FINGERPRINT] * 2, indices=[4, 3], outcomes=[["ok", "a", 1, 3]] * 2
        ),
        *VALID[4:],
    ],
    "unknown-outcome": replaced(idempotency_frame(outcomes=[["maybe", "a", 3]]), at=3),
    "outcome-of-boolean-revision": replaced(idempotency_frame(outcomes=[["ok", "a", 1, True]]), at=3),
    "outcome-of-negative-revision": replaced(idempotency_frame(outcomes=[["deleted", "a", -1]]), at=3),
    "outcome-with-an-extra-field": replaced(idempotency_frame(outcomes=[["not_found", "a", 1, 1]]), at=3),
    "txn-outcome-of-a-bad-result": replaced(idempotency_frame(outcomes=[["txn", True, 3, [["a", 1]]]]), at=3),
    "txn-outcome-of-a-bad-key-value": replaced(
        idempotency_frame(outcomes=[["txn", True, 3, [["a", 1, 1, 1, 1]]]]), at=3
    ),
    "lease-outcome-of-lease-zero": replaced(idempotency_frame(outcomes=[["lease_not_found", 0, 3]]), at=3),
    "key-value-on-lease-zero": replaced(
        idempotency_frame(outcomes=[["precondition_failed", "a", ["a", 1, 1, 1, 1, 0], 3]]), at=3
    ),
    # the history
    "fewer-events-than-counted": [
        header(events=3, history_capacity=4),
        *VALID[1:4],
        without(event_frame(), 2),
    ],
    "more-events-than-counted": [header(events=2), *VALID[1:]],
    "event-revisions-descending": replaced(event_frame(revisions=[2, 1, 3]), at=4),
    "event-revision-zero": replaced(event_frame(revisions=[0, 2, 3]), at=4),
    "event-after-the-store-revision": replaced(event_frame(revisions=[1, 2, 4]), at=4),
    "event-before-the-compact-revision": [header(compact_revision=2), *VALID[1:]],
    "event-revision-float": replaced(event_frame(revisions=[1, 2, 3.0]), at=4),
    "event-type-unknown": replaced(event_frame(types=["put", "put", "patch"]), at=4),
    "delete-event-with-a-value": replaced(event_frame(types=["put", "put", "delete"]), at=4),
    "event-key-empty": replaced(event_frame(keys=["a", "", "a"]), at=4),
    "event-key-not-a-string": replaced(event_frame(keys=["a", 2, "a"]), at=4),
    "event-key-with-a-lone-surrogate": replaced(event_frame(keys=["a", "\udfff", "a"]), at=4),
    # the end
    "missing-frame": VALID[:-1],
    "frame-after-the-end": [*VALID, event_frame()],
}


def test_the_invalid_snapshots_differ_from_the_valid_one() -> None:
    assert all(snapshot_bytes(frames) != snapshot_bytes(VALID) for frames in INVALID.values())
    ok = [header(compact_revision=1), *VALID[1:]]  # events at the compact revision may be kept
    assert restored(snapshot_bytes(ok)).events_after(1) == [
        Event(2, "put", "b", [2]),
        Event(3, "put", "a", 1),
    ]


@pytest.mark.parametrize("frames", INVALID.values(), ids=INVALID.keys())
def test_restore_rejects_frames_the_store_did_not_write_and_changes_nothing(frames: Sequence[object]) -> None:
    store = store_with(LeaseGrant(1, 5), Put("k", 1, idempotency_key="i", lease=1))
    before = snapshot_of(store)
    with pytest.raises(SnapshotDecodeError):
        store.restore(io.BytesIO(snapshot_bytes(frames)))
    assert snapshot_of(store) == before


FORMAT_2 = bytes.fromhex(  # a store of one key, "k": 1, as format 2 wrote it
    "524b565300000002000000560184f2ee7b226170706c6965645f696e646578223a312c227265766973696f6e223a312c22696465"
    "6d706f74656e63795f6361706163697479223a31303030302c226b657973223a312c226964656d706f74656e6379223a307d0000"
    "00174068f24f5b5b226b225d2c5b315d2c5b315d2c5b315d2c5b315d5d"
)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PREFIX,
        snapshot_bytes(VALID, prefix=b"RKVS" + (4).to_bytes(4, "big")),  # another format
        FORMAT_2,
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[],"idempotency":[]}',
        PREFIX + struct.pack(">II", 8, zlib.crc32(b"not json")) + b"not json",
        snapshot_bytes(VALID) + b"\n",
    ],
    ids=["empty", "prefix-only", "format-4", "format-2", "format-1", "body-not-json", "trailing-byte"],
)
def test_restore_rejects_other_formats(data: bytes) -> None:
    with pytest.raises(SnapshotDecodeError):
        restored(data)


def test_format_2_is_what_the_previous_version_wrote() -> None:
    """The format-2 sample above is well formed: it is refused for its format, not for being garbage."""
    assert FORMAT_2[:8] == b"RKVS" + (2).to_bytes(4, "big")
    length, crc = struct.unpack_from(">II", FORMAT_2, 8)
    assert zlib.crc32(FORMAT_2[16 : 16 + length]) == crc
    assert json.loads(FORMAT_2[16 : 16 + length])["keys"] == 1


@given(st.binary())
def test_restore_rejects_garbage(data: bytes) -> None:
    for candidate in (data, PREFIX + data, PREFIX + frame(header()) + data):
        with pytest.raises(SnapshotDecodeError):
            restored(candidate)


def several_frames_snapshot() -> bytes:
    store = KVStore(idempotency_capacity=5, history_capacity=8)
    run(store, *[LeaseGrant(lease, lease) for lease in (1, 2, 3, 4)])
    run(store, *[Put(f"k{n}", "v" * n, idempotency_key=f"i{n}", lease=1 + n % 3) for n in range(7)])
    data = snapshot_of(store)
    assert len(frame_bodies(data)) == 1 + 2 + 3 + 2 + 3
    return data


def test_every_truncation_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    small_frames(monkeypatch)
    data = several_frames_snapshot()
    for end in range(len(data)):
        with pytest.raises(SnapshotDecodeError):
            restored(data[:end])


def test_every_changed_byte_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    small_frames(monkeypatch)
    data = several_frames_snapshot()
    for at in range(len(data)):
        for flip in (0x01, 0x80):
            with pytest.raises(SnapshotDecodeError):
                restored(data[:at] + bytes([data[at] ^ flip]) + data[at + 1 :])


def test_a_snapshot_of_many_frames_restores_equal() -> None:
    keys, remembered, leases = 2500, 1200, 1100
    frame_rows = raftkv.kv.frames.FRAME_ROWS
    assert frame_rows < leases < remembered < keys  # several frames of each kind
    store = KVStore(idempotency_capacity=remembered, history_capacity=2 * frame_rows)
    run(store, *[LeaseGrant(MAX_LEASE_ID - n, 1 + n) for n in range(leases)])
    run(
        store,
        *[
            Put(
                f"k{n:05d}",
                n,
                idempotency_key=f"i{n}" if n < remembered else None,
                lease=MAX_LEASE_ID - n % leases,
            )
            for n in range(keys)
        ],
    )
    data = snapshot_of(store)
    assert len(frame_bodies(data)) == 1 + 2 + 3 + 2 + 2
    copy = restored(data)
    assert snapshot_of(copy) == data
    assert copy.range() == store.range()
    assert copy.leases() == store.leases()
    assert all(copy.lease(lease) == store.lease(lease) for lease, _ in store.leases())
    assert all(copy.get(kv.key) == kv for kv in store.range())
    for replica in (store, copy):
        put = Put("k00007", 7, idempotency_key="i7", lease=MAX_LEASE_ID - 7)
        assert run(replica, put) == [Replayed(Ok("k00007", 7, 8))]


def test_frames_are_halved_until_small_unless_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raftkv.kv.frames, "FRAME_BYTES", 200)
    store = KVStore(history_capacity=1)
    run(store, *[Put(f"k{n:02d}", "v" * (n * 10)) for n in range(40)])
    data = snapshot_of(store)
    key_frames = frame_bodies(data)[1:-1]  # the header first, the one event last
    assert sum(len(f[0]) for f in key_frames) == 40
    assert all(len(frame(f)) <= 8 + 200 or len(f[0]) == 1 for f in key_frames)
    assert any(len(f[0]) > 1 for f in key_frames) and any(len(frame(f)) > 8 + 200 for f in key_frames)
    assert snapshot_of(restored(data)) == data


def test_replicas_write_identical_bytes_over_many_frames_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    small_chunks(monkeypatch)
    small_frames(monkeypatch)
    history = random_history(5, 600)
    one, two = small_store(), small_store()
    apply_all(one, history)
    apply_all(two, history[:250])
    three = restored(snapshot_of(two))  # its chunks are cut where the frames were, not where splits were
    apply_all(two, history[250:])
    apply_all(three, history[250:])
    assert len(frame_bodies(snapshot_of(one))) > 10
    assert snapshot_of(one) == snapshot_of(two) == snapshot_of(three)


def test_captures_in_a_row_each_write_the_leases_of_their_moment() -> None:
    store = store_with(LeaseGrant(1, 5))
    writers, expected = [], []
    for command in (LeaseGrant(2, 5), LeaseRevoke(1), Put("k", 0, lease=2), LeaseGrant(3, 5), LeaseRevoke(2)):
        writers.append(store.snapshot())
        expected.append(snapshot_of(store))
        run(store, command)
    written = []
    for writer in writers:
        out = io.BytesIO()
        writer(out)
        written.append(out.getvalue())
    assert written == expected
    assert [restored(data).leases() for data in written] == [
        [(1, 5)],
        [(1, 5), (2, 5)],
        [(2, 5)],
        [(2, 5)],
        [(2, 5), (3, 5)],
    ]
