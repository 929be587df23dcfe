"""The watch history: one event per key changed, in revision order, bounded, replicated through snapshots."""

from __future__ import annotations

import pytest
from test_kv_support import restored, run, snapshot_of, store_with

from raftkv.kv import (
    DEFAULT_HISTORY_CAPACITY,
    Compacted,
    Delete,
    Event,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
)


def changes() -> KVStore:
    """Revisions 1..5: puts, a failed write, a transaction of three changes, a delete, and a lease revoke."""
    store = KVStore()
    run(
        store,
        LeaseGrant(9, 10),
        Put("a/1", 1),  # 1
        Put("b", "x", lease=9),  # 2
        Put("a/1", 0, prev_revision=7),  # fails: no event
        Txn(
            success=(TxnPut("a/2", [2]), TxnGet("b"), TxnDelete("a/1"), TxnPut("c", None), TxnDelete("zz"))
        ),  # 3
        Delete("c"),  # 4
        Put("a/3", 3, lease=9),  # 5
        LeaseRevoke(9),  # 6
    )
    return store


ALL = [
    Event(1, "put", "a/1", 1),
    Event(2, "put", "b", "x"),
    Event(3, "put", "a/2", [2]),
    Event(3, "delete", "a/1"),
    Event(3, "put", "c", None),
    Event(4, "delete", "c"),
    Event(5, "put", "a/3", 3),
    Event(6, "delete", "a/3"),
    Event(6, "delete", "b"),
]


def test_events_after_a_revision_in_order() -> None:
    store = changes()
    assert store.revision == 6
    assert store.events_after(0) == ALL
    assert store.events_after(2) == ALL[2:]
    assert store.events_after(3) == ALL[5:]
    assert store.events_after(6) == store.events_after(100) == []
    assert [event.mod_revision for event in ALL] == [event.revision for event in ALL]


def test_events_of_a_key_and_under_a_prefix() -> None:
    store = changes()
    assert store.events_after(0, key="a/1") == [ALL[0], ALL[3]]
    assert store.events_after(1, key="a/1") == [ALL[3]]
    assert store.events_after(0, key="a/") == []
    assert store.events_after(0, prefix="a/") == [ALL[0], ALL[2], ALL[3], ALL[6], ALL[7]]
    assert store.events_after(3, prefix="a/") == [ALL[6], ALL[7]]
    assert store.events_after(0, prefix="") == ALL
    assert store.events_after(0, key="b", prefix="a/") == []


def test_a_negative_revision_is_refused() -> None:
    with pytest.raises(ValueError):
        KVStore().events_after(-1)


def test_the_oldest_events_are_dropped_and_asking_for_them_raises_compacted() -> None:
    store = KVStore(history_capacity=4)
    run(store, Put("a", 1), Put("b", 2))
    assert store.compact_revision == 0
    run(store, Txn(success=(TxnPut("a", 3), TxnPut("b", 3), TxnPut("c", 3))))  # 3 events at revision 3
    assert store.compact_revision == 1  # the event of revision 1 is dropped
    assert store.events_after(1) == [Event(2, "put", "b", 2), *(Event(3, "put", k, 3) for k in "abc")]
    with pytest.raises(Compacted) as raised:
        store.events_after(0)
    assert raised.value.compact_revision == 1
    run(store, Put("d", 4), Put("e", 5))
    assert store.compact_revision == 3  # a revision of three events, split: two of them are gone
    assert store.events_after(3) == [Event(4, "put", "d", 4), Event(5, "put", "e", 5)]
    for revision in (0, 1, 2):
        with pytest.raises(Compacted) as raised:
            store.events_after(revision, key="e")
        assert raised.value.compact_revision == 3


def test_the_default_capacity() -> None:
    assert KVStore().history_capacity == DEFAULT_HISTORY_CAPACITY == 10_000
    with pytest.raises(ValueError):
        KVStore(history_capacity=0)


def test_the_history_survives_a_snapshot() -> None:
    store = KVStore(history_capacity=5)
    run(
        store,
        LeaseGrant(9, 10),
        *[Put(f"k{n}", n, lease=9) for n in range(4)],
        LeaseRevoke(9),
        Put("k0", "x"),
    )
    copy = restored(snapshot_of(store))
    assert (copy.history_capacity, copy.compact_revision) == (5, 4)  # 4 puts, 4 deletes at 5, a put at 6
    for revision in range(4, 7):
        assert copy.events_after(revision) == store.events_after(revision)
    with pytest.raises(Compacted):
        copy.events_after(3)
    for replica in (store, copy):
        run(replica, Delete("k0"))
        assert replica.compact_revision == 5
        assert replica.events_after(5) == [Event(6, "put", "k0", "x"), Event(7, "delete", "k0")]
    assert snapshot_of(copy) == snapshot_of(store)


def test_an_empty_history_survives_a_snapshot() -> None:
    store = store_with(LeaseGrant(9, 10))
    copy = restored(snapshot_of(store))
    assert copy.events_after(0) == []
    assert copy.compact_revision == 0
