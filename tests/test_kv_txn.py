"""Transactions: compares against the state before, one branch applied in order, atomically, at one revision."""

from __future__ import annotations

import pytest
from test_kv_support import assert_only_index_advanced, run, snapshot_of, store_with

from raftkv.kv import (
    Compare,
    CompareRevision,
    CompareValue,
    Event,
    JSONValue,
    KeyValue,
    LeaseGrant,
    LeaseNotFound,
    Ok,
    Put,
    Txn,
    TxnDelete,
    TxnDeleted,
    TxnGet,
    TxnPut,
    TxnResult,
)


def test_every_write_of_a_transaction_gets_the_same_new_revision() -> None:
    store = store_with(Put("a", 1), Put("gone", 0))  # revisions 1, 2
    [result] = run(
        store,
        Txn(success=(TxnPut("a", 2), TxnPut("b", [3]), TxnDelete("gone"), TxnDelete("never"), TxnGet("a"))),
    )
    written_a = KeyValue("a", 2, create_revision=1, mod_revision=3, version=2)
    assert result == TxnResult(
        True,
        3,
        (
            written_a,
            KeyValue("b", [3], 3, 3, 1),
            TxnDeleted("gone", True),
            TxnDeleted("never", False),
            written_a,
        ),
    )
    assert store.revision == 3
    assert store.range() == [written_a, KeyValue("b", [3], 3, 3, 1)]
    assert store.events_after(2) == [
        Event(3, "put", "a", 2),
        Event(3, "put", "b", [3]),
        Event(3, "delete", "gone"),
    ]


def test_a_transaction_that_changes_nothing_keeps_the_revision() -> None:
    store = store_with(Put("a", 1))
    before = snapshot_of(store)
    assert run(store, Txn(success=(TxnGet("a"), TxnGet("b"), TxnDelete("b")))) == [
        TxnResult(True, 1, (KeyValue("a", 1, 1, 1, 1), None, TxnDeleted("b", False)))
    ]
    assert run(store, Txn()) == [TxnResult(True, 1, ())]
    assert_only_index_advanced(store, before)


def test_gets_see_the_writes_before_them_in_the_branch() -> None:
    store = store_with(Put("a", 1))
    [result] = run(
        store, Txn(success=(TxnGet("a"), TxnDelete("a"), TxnGet("a"), TxnPut("b", 2), TxnGet("b")))
    )
    assert isinstance(result, TxnResult)
    assert result.results == (
        KeyValue("a", 1, 1, 1, 1),
        TxnDeleted("a", True),
        None,
        KeyValue("b", 2, 2, 2, 1),
        KeyValue("b", 2, 2, 2, 1),
    )


def test_compares_see_the_state_before_the_transaction() -> None:
    store = store_with(Put("a", 1))
    txn = Txn(
        (CompareValue("a", 1), CompareRevision("b", 0)),
        success=(TxnPut("a", 2), TxnPut("b", 2)),
        failure=(TxnGet("a"),),
    )
    assert run(store, txn, txn) == [
        TxnResult(True, 2, (KeyValue("a", 2, 1, 2, 2), KeyValue("b", 2, 2, 2, 1))),
        TxnResult(False, 2, (KeyValue("a", 2, 1, 2, 2),)),  # now a holds 2 and b exists
    ]


EXISTING: list[Put] = [Put("k", {"x": [1, 2]}), Put("k", None), Put("other", 5)]  # k: create 1, mod 2


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (CompareValue("k", None), True),
        (CompareValue("k", False), False),
        (CompareValue("k", 0), False),
        (CompareValue("k", "null"), False),
        (CompareValue("absent", None), False),  # a value compare needs the key to exist
        (CompareRevision("k", 2), True),
        (CompareRevision("k", 1), False),  # the create revision is not the mod revision
        (CompareRevision("k", 0), False),
        (CompareRevision("k", 3), False),  # the store revision is not the key's
        (CompareRevision("absent", 0), True),
        (CompareRevision("absent", 3), False),
        (CompareRevision("other", 3), True),
    ],
)
def test_compares(compare: Compare, holds: bool) -> None:
    store = store_with(*EXISTING)
    [result] = run(store, Txn((compare,), success=(TxnGet("k"),), failure=(TxnGet("other"),)))
    assert isinstance(result, TxnResult)
    assert result.succeeded == holds
    assert result.results == (store.get("k") if holds else store.get("other"),)


@pytest.mark.parametrize(
    ("stored", "compared", "equal"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),  # object member order does not matter
        ([1, 2], [2, 1], False),
        (1, 1.0, False),
        (1, True, False),
        ({"a": None}, {}, False),
    ],
)
def test_value_compares_are_canonical_json_as_prev_value(
    stored: JSONValue, compared: JSONValue, equal: bool
) -> None:
    store = store_with(Put("k", stored))
    [result] = run(store, Txn((CompareValue("k", compared),)))
    assert isinstance(result, TxnResult) and result.succeeded == equal
    [result] = run(store, Put("k", stored, prev_value=compared))
    assert isinstance(result, Ok) == equal


def test_a_failing_compare_runs_the_failure_branch_and_all_must_hold() -> None:
    store = store_with(Put("a", 1), Put("b", 1))
    [result] = run(
        store,
        Txn(
            (CompareValue("a", 1), CompareValue("b", 2), CompareRevision("a", 1)),
            success=(TxnPut("won", 1),),
            failure=(TxnPut("lost", 1), TxnDelete("a")),
        ),
    )
    assert result == TxnResult(False, 3, (KeyValue("lost", 1, 3, 3, 1), TxnDeleted("a", True)))
    assert store.get("won") is None and store.get("a") is None


def test_a_put_on_an_unknown_lease_fails_the_whole_transaction() -> None:
    store = store_with(Put("a", 1), LeaseGrant(7, 10))
    before = snapshot_of(store)
    [result] = run(store, Txn(success=(TxnDelete("a"), TxnPut("b", 1, lease=7), TxnPut("c", 1, lease=8))))
    assert result == LeaseNotFound(8, 1)
    assert_only_index_advanced(store, before)


def test_only_the_branch_taken_must_name_known_leases() -> None:
    store = store_with(LeaseGrant(7, 10))
    txn = Txn(success=(TxnPut("b", 1, lease=7),), failure=(TxnPut("c", 1, lease=8),))
    [result] = run(store, txn)
    assert result == TxnResult(True, 1, (KeyValue("b", 1, 1, 1, 1, lease=7),))
    assert store.lease(7) == (10, ["b"])
