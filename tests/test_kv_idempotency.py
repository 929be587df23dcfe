"""Exactly-once writes: a retry under the same idempotency key replays the first outcome; another command
under it is refused; keys are forgotten by count and by age in log indices."""

from __future__ import annotations

import pytest
from test_kv_support import assert_only_index_advanced, restored, run, snapshot_of, store_with

from raftkv.kv import (
    DEFAULT_IDEMPOTENCY_CAPACITY,
    DEFAULT_IDEMPOTENCY_WINDOW,
    Command,
    Delete,
    Deleted,
    IdempotencyConflict,
    KeyValue,
    KVStore,
    LeaseGrant,
    LeaseGranted,
    LeaseRevoke,
    LeaseRevoked,
    NotFound,
    Ok,
    PreconditionFailed,
    Put,
    Replayed,
    Txn,
    TxnPut,
    TxnResult,
    encode_command,
)


def test_retry_replays_the_first_result_and_applies_once() -> None:
    store = KVStore()
    first, other, retry = run(
        store, Put("k", 1, idempotency_key="i"), Put("j", 2), Put("k", 1, idempotency_key="i")
    )
    assert first == Ok("k", 1, 1)
    assert retry == Replayed(first)
    assert other == Ok("j", 2, 2)
    assert store.revision == 2
    assert store.get("k") == KeyValue("k", 1, 1, 1, 1)


@pytest.mark.parametrize(
    ("command", "outcome"),
    [
        (Put("k", 2, idempotency_key="i"), Ok("k", 2, 2)),
        (Delete("k", idempotency_key="i"), Deleted("k", 2)),
        (
            Txn(success=(TxnPut("t", 1),), idempotency_key="i"),
            TxnResult(True, 2, (KeyValue("t", 1, 2, 2, 1),)),
        ),
        (LeaseGrant(7, 10, idempotency_key="i"), LeaseGranted(7, 10, 1)),
        (LeaseRevoke(5, idempotency_key="i"), LeaseRevoked(5, 1, 2)),
    ],
    ids=["put", "delete", "txn", "lease-grant", "lease-revoke"],
)
def test_every_write_replays_without_changing_anything(command: Command, outcome: object) -> None:
    store = store_with(LeaseGrant(5, 10), Put("k", 1, lease=5))
    assert run(store, command) == [outcome]
    before = snapshot_of(store)
    assert run(store, command, command) == [Replayed(outcome)] * 2  # type: ignore[arg-type]
    assert_only_index_advanced(store, before)


def test_a_retry_is_the_same_command_however_its_bytes_are_laid_out() -> None:
    store = store_with(Put("k", {"a": 1}, idempotency_key="i"))
    retry = b'{ "idempotency_key" : "i", "value" : {"a": 1.0e0}, "key": "k", "op": "put" }'
    assert store.apply(2, retry) == IdempotencyConflict("i", 1)  # 1.0e0 is a float: another value
    retry = b'{ "idempotency_key" : "i", "value" : {"a": 1}, "key": "k", "op": "put" }'
    assert store.apply(3, retry) == Replayed(Ok("k", {"a": 1}, 1))


def test_another_command_under_a_used_key_is_refused_and_changes_nothing() -> None:
    store = store_with(Put("k", 1, idempotency_key="i"))
    before = snapshot_of(store)
    assert (
        run(store, Delete("k", idempotency_key="i"), Put("k", 2, idempotency_key="i"))
        == [IdempotencyConflict("i", 1)] * 2
    )
    assert_only_index_advanced(store, before)
    assert run(store, Put("k", 1, idempotency_key="i")) == [Replayed(Ok("k", 1, 1))]  # the first is kept


def test_failed_outcomes_are_remembered_too() -> None:
    store = store_with(Put("k", 1))
    failed, _, retry = run(
        store,
        Put("k", 2, prev_value=0, idempotency_key="cas"),
        Put("k", 0),
        Put("k", 2, prev_value=0, idempotency_key="cas"),
    )
    assert failed == PreconditionFailed("k", KeyValue("k", 1, 1, 1, 1), 1)
    assert retry == Replayed(failed)
    assert store.get("k") == KeyValue("k", 0, 1, 2, 2)  # the retry would now succeed, but replays the failure
    assert run(
        store, Delete("gone", idempotency_key="d"), Put("gone", 1), Delete("gone", idempotency_key="d")
    ) == [NotFound("gone", 2), Ok("gone", 1, 3), Replayed(NotFound("gone", 2))]


def test_oldest_idempotency_key_is_forgotten_first() -> None:
    store = store_with(*[Put(f"k{n}", n, idempotency_key=f"i{n}") for n in range(4)], capacity=3)
    # i0 is forgotten: its retry is applied again; i1..i3 are remembered and replay their first result.
    assert run(store, Put("k0", 0, idempotency_key="i0")) == [Ok("k0", 0, 5)]
    assert run(store, Put("k2", 2, idempotency_key="i2")) == [Replayed(Ok("k2", 2, 3))]
    # Re-applying i0 forgot i1, the oldest remaining; a replay (i2) does not refresh its place.
    assert run(store, Put("k1", 1, idempotency_key="i1")) == [Ok("k1", 1, 6)]
    assert run(store, Put("k2", 9, idempotency_key="i2")) == [Ok("k2", 9, 7)]


def test_a_key_is_remembered_for_the_window_in_log_indices() -> None:
    store = KVStore(idempotency_window=3)
    put = Put("k", 1, idempotency_key="i")
    assert run(store, put) == [Ok("k", 1, 1)]  # recorded at index 1
    assert [store.apply(index, None) for index in (2, 3)] == [None, None]  # no-ops count: log time
    assert run(store, put) == [Replayed(Ok("k", 1, 1))]  # index 4 = 1 + window
    assert run(store, put) == [Ok("k", 1, 2)]  # index 5: forgotten, so it applies again (recorded at 5)
    assert run(store, Delete("k", idempotency_key="i")) == [IdempotencyConflict("i", 2)]


def test_ageing_forgets_in_order_and_leaves_the_younger() -> None:
    store = KVStore(idempotency_window=2)
    run(store, Put("a", 1, idempotency_key="a"), Put("b", 1, idempotency_key="b"))  # indices 1, 2
    assert run(store, Put("a", 1, idempotency_key="a"), Put("b", 1, idempotency_key="b")) == [
        Replayed(Ok("a", 1, 1)),  # index 3: a is 2 old
        Replayed(Ok("b", 1, 2)),  # index 4: a is now 3 old and forgotten, b is 2 old
    ]
    assert run(store, Put("a", 1, idempotency_key="a")) == [Ok("a", 1, 3)]


def test_the_defaults() -> None:
    store = KVStore()
    assert (store.idempotency_capacity, store.idempotency_window) == (10_000, 100_000)
    assert (DEFAULT_IDEMPOTENCY_CAPACITY, DEFAULT_IDEMPOTENCY_WINDOW) == (10_000, 100_000)
    with pytest.raises(ValueError):
        KVStore(idempotency_capacity=0)
    with pytest.raises(ValueError):
        KVStore(idempotency_window=0)


def test_the_table_its_order_fingerprints_and_ages_survive_a_snapshot() -> None:
    store = KVStore(idempotency_capacity=3, idempotency_window=6)
    run(store, *[Put(f"k{n}", n, idempotency_key=f"i{n}") for n in range(4)])  # i1..i3 at indices 2..4
    copy = restored(snapshot_of(store))
    assert (copy.idempotency_capacity, copy.idempotency_window) == (3, 6)
    for replica in (store, copy):
        assert run(replica, Put("k3", 3, idempotency_key="i3"), Put("k3", 0, idempotency_key="i3")) == [
            Replayed(Ok("k3", 3, 4)),
            IdempotencyConflict("i3", 4),
        ]
        assert run(replica, Put("k0", 0, idempotency_key="i0")) == [Ok("k0", 0, 5)]  # forgotten by count
        assert run(replica, Put("k2", 2, idempotency_key="i2")) == [Replayed(Ok("k2", 2, 3))]  # index 8
        assert run(replica, Put("k2", 2, idempotency_key="i2")) == [Replayed(Ok("k2", 2, 3))]  # 9 = 3 + 6
        assert run(replica, Put("k2", 2, idempotency_key="i2")) == [Ok("k2", 2, 6)]  # 10: forgotten by age
    assert snapshot_of(copy) == snapshot_of(store)


def test_replays_after_restore_return_the_first_outcome_of_every_kind() -> None:
    commands: list[Command] = [
        LeaseGrant(5, 10, idempotency_key="g"),
        Put("k", [1], lease=5, idempotency_key="p"),
        Put("k", 2, prev_revision=9, idempotency_key="f"),
        Txn(success=(TxnPut("t", {"x": None}, lease=5),), idempotency_key="t"),
        LeaseRevoke(5, idempotency_key="r"),
        Delete("k", idempotency_key="d"),
        LeaseRevoke(5, idempotency_key="n"),
        LeaseGrant(6, 1, idempotency_key="x"),
        LeaseGrant(6, 1, idempotency_key="e"),
    ]
    store = KVStore()
    first = run(store, *commands)
    copy = restored(snapshot_of(store))
    data = [encode_command(command) for command in commands]
    for replica in (store, copy):
        replays = [replica.apply(replica.applied_index + 1, entry) for entry in data]
        assert replays == [Replayed(outcome) for outcome in first]  # type: ignore[arg-type]
