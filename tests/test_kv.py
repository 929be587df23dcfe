"""The replicated state machine: commands on the wire, and the semantics of puts, deletes and listings.

Transactions, leases, idempotency, the watch history, JSON limits and snapshots have files of their own
(tests/test_kv_*.py); tests/test_kv_support.py holds what they share.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kv_support import (
    GARBAGE,
    assert_only_index_advanced,
    commands,
    json_values,
    restored,
    run,
    short_id,
    small_chunks,
    snapshot_of,
    store_with,
)

import raftkv.kv.table
from raftkv.kv import (
    UNSET,
    ApplyOrderError,
    Command,
    CommandDecodeError,
    CommandEncodeError,
    CompareRevision,
    CompareValue,
    Delete,
    Deleted,
    InvalidCommand,
    JSONValue,
    KeyValue,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    NotFound,
    Ok,
    Page,
    PreconditionFailed,
    Put,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
    decode_command,
    encode_command,
    fingerprint,
    value_size,
)

# --- commands on the wire -------------------------------------------------------------------------------


@given(commands)
def test_encode_decode_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


def test_encoding_is_compact_and_omits_defaults() -> None:
    assert encode_command(Put("k", None)) == b'{"op":"put","key":"k","value":null}'
    assert (
        encode_command(Put("k", 1, prev_value=None)) == b'{"op":"put","key":"k","value":1,"prev_value":null}'
    )
    assert encode_command(Delete("k", prev_revision=0)) == b'{"op":"delete","key":"k","prev_revision":0}'
    assert encode_command(Put("k", 1, lease=7)) == b'{"op":"put","key":"k","value":1,"lease":7}'
    assert encode_command(Txn()) == b'{"op":"txn"}'
    assert encode_command(
        Txn(
            (CompareValue("a", [1]), CompareRevision("b", 0)),
            (TxnPut("a", 2), TxnPut("c", 3, lease=9), TxnDelete("b"), TxnGet("a")),
            idempotency_key="i",
        )
    ) == (
        b'{"op":"txn","compare":[{"key":"a","value":[1]},{"key":"b","revision":0}],'
        b'"success":[{"put":{"key":"a","value":2}},{"put":{"key":"c","value":3,"lease":9}},'
        b'{"delete":{"key":"b"}},{"get":{"key":"a"}}],"idempotency_key":"i"}'
    )
    assert encode_command(LeaseGrant(5, 10)) == b'{"op":"lease_grant","lease":5,"ttl":10}'
    assert encode_command(LeaseRevoke(5, "i")) == b'{"op":"lease_revoke","lease":5,"idempotency_key":"i"}'


def test_prev_value_null_and_not_given_decode_differently() -> None:
    assert decode_command(b'{"op":"put","key":"k","value":1,"prev_value":null}') == Put(
        "k", 1, prev_value=None
    )
    assert decode_command(b'{"op":"put","key":"k","value":1}') == Put("k", 1, prev_value=UNSET)
    assert Put("k", 1, prev_value=UNSET) != Put("k", 1, prev_value=None)


def test_members_may_come_in_any_order_on_the_way_in() -> None:
    data = b'{"success":[{"put":{"value":1,"key":"k"}}],"idempotency_key":"i","op":"txn"}'
    assert decode_command(data) == Txn(success=(TxnPut("k", 1),), idempotency_key="i")


@pytest.mark.parametrize("data", GARBAGE, ids=short_id)
def test_garbage_does_not_decode(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_command(data)


@pytest.mark.parametrize("data", GARBAGE, ids=short_id)
def test_garbage_entry_changes_nothing_but_the_applied_index(data: bytes) -> None:
    store = store_with(Put("k", 1), Put("j", [1]), Put("k", 2, idempotency_key="i"))
    before = snapshot_of(store)

    result = store.apply(4, data)

    assert isinstance(result, InvalidCommand)
    assert result.revision == 3
    assert_only_index_advanced(store, before)


FIELD_NAMES = [
    "op",
    "key",
    "value",
    "prev_value",
    "prev_revision",
    "idempotency_key",
    "lease",
    "ttl",
    "compare",
]
OP_NAMES = ["put", "delete", "txn", "lease_grant", "lease_revoke", "get"]
members = st.recursive(
    json_values | st.sampled_from(OP_NAMES),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*FIELD_NAMES, *OP_NAMES, "success", "failure", "revision"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)
command_shaped = st.builds(
    lambda op, fields: json.dumps({"op": op, **fields}).encode(),
    st.sampled_from(OP_NAMES),
    st.dictionaries(st.sampled_from(FIELD_NAMES), members, max_size=5),
)


@given(
    st.binary()
    | st.builds(lambda c, cut: encode_command(c)[:cut], commands, st.integers(0, 200))
    | command_shaped
)
def test_no_entry_raises(data: bytes) -> None:
    store = store_with(Put("k", 1), LeaseGrant(1, 5), Put("j", 2, lease=1, idempotency_key="i"))
    result = store.apply(store.applied_index + 1, data)
    assert result is not None
    restored(snapshot_of(store))  # and the state stays one a snapshot can hold


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), object(), {"k": {1, 2}}, "\ud800"],
    ids=["nan", "inf", "object", "set", "lone-surrogate"],
)
def test_values_that_are_not_json_do_not_encode(value: object) -> None:
    for command in (Put("k", value), Txn(success=(TxnPut("k", value),)), Txn((CompareValue("k", value),))):  # type: ignore[arg-type]
        with pytest.raises(CommandEncodeError):
            encode_command(command)
    with pytest.raises(CommandEncodeError):
        value_size(value)  # type: ignore[arg-type]


def test_value_size_counts_compact_json_bytes() -> None:
    assert value_size({"a": [1, "é"]}) == len('{"a":[1,"é"]}'.encode())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Put("", 1),
        lambda: Put("k", 1, prev_revision=-1),
        lambda: Delete("k", prev_revision=True),
        lambda: Delete("k", idempotency_key=""),
        lambda: Put("k", 1, lease=0),
        lambda: Put("k", 1, lease=2**63),
        lambda: LeaseGrant(1, 0),
        lambda: LeaseGrant(None, 5),  # type: ignore[arg-type]
        lambda: LeaseRevoke(-3),
        lambda: Txn(success=[TxnGet("k")]),  # type: ignore[arg-type]
        lambda: Txn(success=(Put("k", 1),)),  # type: ignore[arg-type]
        lambda: Txn(compare=(TxnGet("k"),)),  # type: ignore[arg-type]
        lambda: Txn(success=(TxnGet("k"),) * 33, failure=(TxnGet("k"),) * 32),
        lambda: Txn(compare=(CompareRevision("k", 0),) * 65),
        lambda: Txn(success=(TxnPut("k", 1), TxnDelete("k"))),
        lambda: CompareRevision("k", -1),
    ],
    ids=[
        "empty-key",
        "negative-revision",
        "bool-revision",
        "empty-idempotency-key",
        "lease-zero",
        "lease-over-63-bits",
        "ttl-zero",
        "grant-without-lease",
        "revoke-negative",
        "ops-in-a-list",
        "put-command-as-op",
        "op-as-compare",
        "65-ops",
        "65-compares",
        "key-written-twice",
        "negative-compare-revision",
    ],
)
def test_invalid_commands_cannot_be_built(make: Callable[[], Command]) -> None:
    with pytest.raises(ValueError):
        make()


def test_the_limits_are_inclusive() -> None:
    most = Txn(
        tuple(CompareRevision(f"k{n}", 0) for n in range(64)),
        tuple(TxnGet("k") for _ in range(40)),
        tuple(TxnPut(f"k{n}", n) for n in range(24)),
    )
    assert decode_command(encode_command(most)) == most
    assert decode_command(encode_command(LeaseGrant(2**63 - 1, 30 * 24 * 3600))) == LeaseGrant(
        2**63 - 1, 30 * 24 * 3600
    )


def test_a_fingerprint_is_the_command_without_its_idempotency_key() -> None:
    assert fingerprint(Put("k", 1, idempotency_key="a")) == fingerprint(Put("k", 1, idempotency_key="b"))
    assert fingerprint(Put("k", 1)) == fingerprint(Put("k", 1, idempotency_key="a"))
    different: list[Command] = [
        Put("k", 1),
        Put("k", 1.0),
        Put("k", True),
        Put("k", 1, lease=3),
        Delete("k"),
        Put("j", 1),
    ]
    assert len({fingerprint(command) for command in different}) == len(different)
    assert fingerprint(Put("k", {"a": 1, "b": 2})) != fingerprint(Put("k", {"b": 2, "a": 1}))
    assert fingerprint(Put("k", "\ud800")) == fingerprint(
        decode_command(b'{"op":"put","key":"k","value":"\\ud800"}')
    )


# --- semantics ------------------------------------------------------------------------------------------


def test_put_creates_then_updates() -> None:
    store = KVStore()
    assert run(store, Put("a", "x"), Put("b", 1), Put("a", {"y": [2]})) == [
        Ok("a", "x", 1),
        Ok("b", 1, 2),
        Ok("a", {"y": [2]}, 3),
    ]
    assert store.get("a") == KeyValue("a", {"y": [2]}, create_revision=1, mod_revision=3, version=2)
    assert store.get("b") == KeyValue("b", 1, create_revision=2, mod_revision=2, version=1)
    assert (store.revision, store.applied_index) == (3, 3)


def test_null_is_a_real_value() -> None:
    store = store_with(Put("a", None))
    assert store.get("a") == KeyValue("a", None, 1, 1, 1)
    assert store.get("b") is None


def test_delete_then_recreate_starts_a_new_life() -> None:
    store = store_with(Put("a", 1), Put("a", 2))
    assert run(store, Delete("a"), Delete("a")) == [Deleted("a", 3), NotFound("a", 3)]
    assert store.get("a") is None
    assert store.range() == []
    assert run(store, Put("a", 3)) == [Ok("a", 3, 4)]
    assert store.get("a") == KeyValue("a", 3, create_revision=4, mod_revision=4, version=1)


def test_noop_entry_only_advances_the_applied_index() -> None:
    store = store_with(Put("a", 1))
    assert store.apply(2, None) is None
    assert (store.applied_index, store.revision) == (2, 1)
    assert store.get("a") == KeyValue("a", 1, 1, 1, 1)


@pytest.mark.parametrize("index", [0, 1, 3])
def test_entries_must_be_applied_in_order_exactly_once(index: int) -> None:
    store = store_with(Put("a", 1))
    with pytest.raises(ApplyOrderError):
        store.apply(index, None)
    assert store.applied_index == 1


EXISTING = KeyValue("k", None, create_revision=1, mod_revision=2, version=2)


@pytest.mark.parametrize(
    ("command", "succeeds"),
    [
        (Put("k", "new", prev_revision=2), True),
        (Put("k", "new", prev_revision=1), False),  # the create revision is not the mod revision
        (Put("k", "new", prev_revision=0), False),
        (Put("k", "new", prev_value=None), True),
        (Put("k", "new", prev_value=False), False),
        (Put("k", "new", prev_value=0), False),
        (Put("k", "new", prev_value="null"), False),
        (Put("k", "new", prev_value=None, prev_revision=2), True),
        (Put("k", "new", prev_value=None, prev_revision=3), False),
        (Put("k", "new", prev_value=1, prev_revision=2), False),
        (Put("absent", "new", prev_revision=0), True),
        (Put("absent", "new", prev_revision=2), False),
        (Put("absent", "new", prev_value=None), False),  # prev_value needs the key to exist
        (Delete("k", prev_revision=2), True),
        (Delete("k", prev_revision=1), False),
        (Delete("k", prev_revision=0), False),
        (Delete("absent", prev_revision=1), False),
    ],
)
def test_preconditions(command: Put | Delete, succeeds: bool) -> None:
    store = store_with(Put("k", "old"), Put("k", None))
    before = snapshot_of(store)
    [result] = run(store, command)
    if succeeds:
        assert isinstance(result, (Ok, Deleted))
        assert result.revision == 3
    else:
        current = store.get(command.key)
        assert result == PreconditionFailed(command.key, current, revision=2)
        assert current == (EXISTING if command.key == "k" else None)
        assert_only_index_advanced(store, before)


@pytest.mark.parametrize(
    ("stored", "expected", "equal"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),  # object member order does not matter
        ([1, 2], [2, 1], False),
        (1, 1.0, False),
        (1, True, False),
        (0, False, False),
        ("1", 1, False),
        ({"a": None}, {}, False),
        (0.5, 0.5, True),
    ],
)
def test_prev_value_compares_as_json(stored: JSONValue, expected: JSONValue, equal: bool) -> None:
    store = store_with(Put("k", stored))
    [result] = run(store, Put("k", "new", prev_value=expected))
    assert isinstance(result, Ok) == equal


def test_delete_with_must_not_exist_on_absent_key_is_not_found() -> None:
    store = store_with(Put("other", 1))
    assert run(store, Delete("absent", prev_revision=0)) == [NotFound("absent", 1)]


# --- range ----------------------------------------------------------------------------------------------

RANGE_KEYS = [
    "a",
    "ab",
    "abc",
    "ab\U0010ffff",
    "ab\U0010ffffz",
    "ac",
    "b",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
]


@pytest.mark.parametrize("prefix", ["", "a", "ab", "ab\U0010ffff", "abc", "abd", "b", "\U0010ffff", "z"])
@pytest.mark.parametrize("limit", [None, 0, 1, 2, 100])
def test_range_matches_a_sorted_filter(prefix: str, limit: int | None) -> None:
    store = store_with(*[Put(key, key.upper()) for key in reversed(RANGE_KEYS)])
    expected = sorted(key for key in RANGE_KEYS if key.startswith(prefix))[:limit]
    assert [kv.key for kv in store.range(prefix, limit)] == expected
    assert all(kv == store.get(kv.key) for kv in store.range(prefix, limit))


def test_range_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError):
        KVStore().range("", -1)


@pytest.mark.parametrize("seed", range(50))
@pytest.mark.parametrize("chunk_keys", [2, raftkv.kv.table.CHUNK_KEYS])
def test_range_tracks_puts_and_deletes(seed: int, chunk_keys: int, monkeypatch: pytest.MonkeyPatch) -> None:
    small_chunks(monkeypatch, chunk_keys)
    rng = random.Random(seed)
    store, model = KVStore(), dict[str, int]()
    alphabet = ["a", "b", "é", "\U0001f600"]
    for n in range(200):
        key = "".join(rng.choices(alphabet, k=rng.randint(1, 3)))
        if rng.random() < 0.6:
            run(store, Put(key, n))
            model[key] = n
        else:
            run(store, Delete(key))
            model.pop(key, None)
        assert [(kv.key, kv.value) for kv in store.range()] == sorted(model.items())
    for prefix in ["", *alphabet, "ab", "é\U0001f600"]:
        limit = rng.choice([None, 0, 1, 5])
        expected = sorted(key for key in model if key.startswith(prefix))[:limit]
        assert [kv.key for kv in store.range(prefix, limit)] == expected
    assert all(store.get(kv.key) == kv for kv in store.range())
    assert store.get("c") is None and store.get("\U0010ffff") is None


def test_range_starts_after_a_key_within_the_prefix() -> None:
    store = store_with(*[Put(key, 0) for key in ["a", "a\0", "a/1", "a/2", "a/3", "b"]])
    assert [kv.key for kv in store.range("a/", start_after="a/1")] == ["a/2", "a/3"]
    assert [kv.key for kv in store.range("", start_after="a")] == ["a\0", "a/1", "a/2", "a/3", "b"]
    assert [kv.key for kv in store.range("a/", start_after="")] == ["a/1", "a/2", "a/3"]  # below the prefix
    assert store.range("a/", start_after="a/3") == store.range("a/", start_after="z") == []


def test_pages_walk_a_prefix_in_order() -> None:
    keys = [f"p/{n:02d}" for n in range(7)]
    store = store_with(*[Put(key, n) for n, key in enumerate(keys)], Put("q", 0))
    seen, start_after = [], None
    while True:
        page = store.page("p/", 3, start_after)
        seen += [kv.key for kv in page.items]
        if page.next is None:
            break
        assert page.next == page.items[-1].key
        start_after = page.next
    assert seen == keys
    assert store.page("p/", 7) == Page(store.range("p/"), None)  # exactly full: no next page
    assert store.page("p/", 6).next == "p/05"
    with pytest.raises(ValueError):
        store.page("p/", 0)
