"""Leases: granted with the proposer's id, keys attached by puts, revoked (by the leader's clock) with their keys."""

from __future__ import annotations

import pytest
from test_kv_support import assert_only_index_advanced, restored, run, small_chunks, snapshot_of, store_with

from raftkv.kv import (
    MAX_LEASE_ID,
    Delete,
    Event,
    KeyValue,
    LeaseExists,
    LeaseGrant,
    LeaseGranted,
    LeaseNotFound,
    LeaseRevoke,
    LeaseRevoked,
    Ok,
    PreconditionFailed,
    Put,
    Txn,
    TxnDelete,
    TxnPut,
)


def test_grant_changes_no_key_and_the_revision_stays() -> None:
    store = store_with(Put("a", 1))
    assert run(store, LeaseGrant(MAX_LEASE_ID, 30), LeaseGrant(5, 10)) == [
        LeaseGranted(MAX_LEASE_ID, 30, 1),
        LeaseGranted(5, 10, 1),
    ]
    assert store.revision == 1
    assert store.leases() == [(5, 10), (MAX_LEASE_ID, 30)]  # by id, not by grant order
    assert store.lease(5) == (10, [])
    assert store.lease(6) is None


def test_granting_an_id_that_exists_fails_and_changes_nothing() -> None:
    store = store_with(LeaseGrant(5, 10), Put("a", 1, lease=5))
    before = snapshot_of(store)
    assert run(store, LeaseGrant(5, 99)) == [LeaseExists(5, 1)]
    assert store.lease(5) == (10, ["a"])
    assert_only_index_advanced(store, before)


def test_a_put_attaches_its_key_to_a_lease() -> None:
    store = store_with(LeaseGrant(5, 10), LeaseGrant(6, 10))
    assert run(store, Put("b", 1, lease=5), Put("a", 2, lease=5), Put("c", 3, lease=6)) == [
        Ok("b", 1, 1),
        Ok("a", 2, 2),
        Ok("c", 3, 3),
    ]
    assert store.get("a") == KeyValue("a", 2, 2, 2, 1, lease=5)
    assert store.lease(5) == (10, ["a", "b"])
    assert store.lease(6) == (10, ["c"])
    assert [kv.lease for kv in store.range()] == [5, 5, 6]


def test_a_later_put_moves_or_detaches_the_key_and_a_delete_detaches_it() -> None:
    store = store_with(LeaseGrant(5, 10), LeaseGrant(6, 10), Put("a", 1, lease=5), Put("b", 1, lease=5))
    run(store, Put("a", 2, lease=6))
    assert (store.lease(5), store.lease(6)) == ((10, ["b"]), (10, ["a"]))
    run(store, Put("a", 3), Delete("b"))
    assert (store.lease(5), store.lease(6)) == ((10, []), (10, []))
    assert store.get("a") == KeyValue("a", 3, create_revision=1, mod_revision=4, version=3, lease=None)
    run(store, Put("b", 4))  # a new life of b is on no lease
    assert store.get("b") == KeyValue("b", 4, 6, 6, 1)
    assert run(store, LeaseRevoke(5), LeaseRevoke(6)) == [LeaseRevoked(5, 0, 6), LeaseRevoked(6, 0, 6)]
    assert [kv.key for kv in store.range()] == ["a", "b"]


@pytest.mark.parametrize(
    "command",
    [Put("k", 1, lease=9), Put("k", 1, prev_revision=1, lease=9), Txn(success=(TxnPut("k", 1, lease=9),))],
    ids=["put", "put-with-precondition-that-holds", "txn"],
)
def test_a_write_on_an_unknown_lease_changes_nothing(command: Put | Txn) -> None:
    store = store_with(Put("k", 0), LeaseGrant(5, 10))
    before = snapshot_of(store)
    assert run(store, command) == [LeaseNotFound(9, 1)]
    assert_only_index_advanced(store, before)


def test_a_failing_precondition_is_reported_before_an_unknown_lease() -> None:
    store = store_with(Put("k", 0))
    [result] = run(store, Put("k", 1, prev_revision=7, lease=9))
    assert result == PreconditionFailed("k", KeyValue("k", 0, 1, 1, 1), 1)


def test_revoke_deletes_every_attached_key_at_one_revision_with_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_chunks(monkeypatch)
    store = store_with(
        LeaseGrant(5, 10),
        LeaseGrant(6, 10),
        *[Put(f"k{n}", n, lease=5 if n % 2 else 6) for n in range(9, -1, -1)],
        Put("free", 0),
    )
    assert store.revision == 11
    assert run(store, LeaseRevoke(5)) == [LeaseRevoked(5, 5, 12)]
    assert store.revision == 12
    assert store.events_after(11) == [Event(12, "delete", f"k{n}") for n in (1, 3, 5, 7, 9)]  # in key order
    assert [kv.key for kv in store.range()] == ["free", "k0", "k2", "k4", "k6", "k8"]
    assert store.lease(5) is None
    assert store.leases() == [(6, 10)]


def test_revoking_a_lease_without_keys_keeps_the_revision_and_an_unknown_one_fails() -> None:
    store = store_with(Put("a", 1), LeaseGrant(5, 10), Put("b", 1, lease=5), Delete("b"))
    assert run(store, LeaseRevoke(5), LeaseRevoke(5)) == [LeaseRevoked(5, 0, 3), LeaseNotFound(5, 3)]
    assert store.events_after(3) == []


def test_a_revoked_lease_can_be_granted_again_and_puts_on_it_fail_meanwhile() -> None:
    store = store_with(LeaseGrant(5, 10), LeaseRevoke(5))
    assert run(store, Put("a", 1, lease=5), LeaseGrant(5, 20), Put("a", 1, lease=5)) == [
        LeaseNotFound(5, 0),
        LeaseGranted(5, 20, 0),
        Ok("a", 1, 1),
    ]
    assert store.lease(5) == (20, ["a"])


def test_a_transaction_moves_keys_between_leases() -> None:
    store = store_with(LeaseGrant(5, 10), LeaseGrant(6, 10), Put("a", 1, lease=5), Put("b", 1, lease=5))
    run(store, Txn(success=(TxnPut("a", 2, lease=6), TxnDelete("b"), TxnPut("c", 3, lease=5))))
    assert (store.lease(5), store.lease(6)) == ((10, ["c"]), (10, ["a"]))


def test_leases_and_their_keys_survive_a_snapshot() -> None:
    store = store_with(
        LeaseGrant(9, 10),
        LeaseGrant(3, 20),
        LeaseGrant(MAX_LEASE_ID, 1),
        *[Put(f"k{n}", n, lease=9) for n in range(5)],
    )
    run(store, Put("k2", "moved", lease=3), Put("free", 0))
    copy = restored(snapshot_of(store))
    assert copy.leases() == store.leases() == [(3, 20), (9, 10), (MAX_LEASE_ID, 1)]
    for lease in (3, 9, MAX_LEASE_ID):
        assert copy.lease(lease) == store.lease(lease)
    assert copy.range() == store.range()
    for replica in (store, copy):
        assert run(replica, LeaseRevoke(9)) == [LeaseRevoked(9, 4, 8)]
    assert snapshot_of(copy) == snapshot_of(store)
