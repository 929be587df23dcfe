"""The replicated state machine: command semantics, determinism, and snapshot/restore equivalence."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

import raftkv.kv
from raftkv.kv import (
    MAX_COMMAND_NESTING,
    MAX_INTEGER_DIGITS,
    UNSET,
    ApplyOrderError,
    Command,
    CommandDecodeError,
    CommandEncodeError,
    Delete,
    Deleted,
    InvalidCommand,
    JSONValue,
    KeyValue,
    KVStore,
    NotFound,
    Ok,
    PreconditionFailed,
    Put,
    Result,
    SnapshotDecodeError,
    decode_command,
    encode_command,
)


def snapshot_of(store: KVStore) -> bytes:
    out = io.BytesIO()
    store.snapshot()(out)
    return out.getvalue()


def restored(data: bytes) -> KVStore:
    store = KVStore()
    store.restore(io.BytesIO(data))
    return store


def run(store: KVStore, *commands: Command) -> list[Result | None]:
    """Apply commands at the next indices, as the apply loop would."""
    return [store.apply(store.applied_index + 1, encode_command(command)) for command in commands]


def assert_only_index_advanced(store: KVStore, before: bytes) -> None:
    """``store`` is the state ``before`` plus a no-op: nothing but ``applied_index`` changed."""
    expected = restored(before)
    expected.apply(store.applied_index, None)
    assert snapshot_of(store) == snapshot_of(expected)


def store_with(*commands: Command, capacity: int = 10) -> KVStore:
    store = KVStore(idempotency_capacity=capacity)
    run(store, *commands)
    return store


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two keys per chunk, so that a few keys span many chunks and every split, merge and copy on write of
    the sorted table happens at test sizes."""
    monkeypatch.setattr(raftkv.kv, "_CHUNK_KEYS", 2)


# --- commands on the wire -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
keys = st.text(min_size=1).filter(lambda k: not any(0xD800 <= ord(c) <= 0xDFFF for c in k))
prev_values = st.just(UNSET) | json_values
revisions = st.none() | st.integers(min_value=0)
idempotency_keys = st.none() | st.text(min_size=1)
commands = st.builds(Put, keys, json_values, prev_values, revisions, idempotency_keys) | st.builds(
    Delete, keys, revisions, idempotency_keys
)


@given(commands)
def test_encode_decode_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


def test_encoding_is_compact_and_omits_defaults() -> None:
    assert encode_command(Put("k", None)) == b'{"op":"put","key":"k","value":null}'
    assert (
        encode_command(Put("k", 1, prev_value=None)) == b'{"op":"put","key":"k","value":1,"prev_value":null}'
    )
    assert encode_command(Delete("k", prev_revision=0)) == b'{"op":"delete","key":"k","prev_revision":0}'


def test_prev_value_null_and_not_given_decode_differently() -> None:
    assert decode_command(b'{"op":"put","key":"k","value":1,"prev_value":null}') == Put(
        "k", 1, prev_value=None
    )
    assert decode_command(b'{"op":"put","key":"k","value":1}') == Put("k", 1, prev_value=UNSET)
    assert Put("k", 1, prev_value=UNSET) != Put("k", 1, prev_value=None)


GARBAGE = [
    b"",
    b"\xff\xfe",
    b"not json",
    b"[]",
    b"null",
    b'{"op":"put","key":"k"}',  # no value
    b'{"op":"put","value":1}',  # no key
    b'{"op":"put","key":"","value":1}',
    b'{"op":"put","key":7,"value":1}',
    b'{"op":"put","key":"k","value":1,"extra":2}',
    b'{"op":"merge","key":"k"}',
    b'{"op":["put"],"key":"k","value":1}',
    b'{"op":"delete","key":"k","value":1}',
    b'{"op":"delete","key":"k","prev_revision":-1}',
    b'{"op":"delete","key":"k","prev_revision":1.0}',
    b'{"op":"delete","key":"k","prev_revision":true}',
    b'{"op":"delete","key":"k","idempotency_key":""}',
    b'{"op":"delete","key":"\\ud800"}',  # keys are UTF-8 strings
    b'{"op":"put","key":"k","value":NaN}',
    b'{"op":"put","key":"k","value":-Infinity}',
    b'{"op":"put","key":"k","value":1e999}',
    b'{"op":"put","key":"k","value":' + b"1" * 5000 + b"}",
    b'{"op":"put","key":"k","value":' + b"1" * (MAX_INTEGER_DIGITS + 1) + b"}",
    b'{"op":"put","key":"k","value":-' + b"1" * (MAX_INTEGER_DIGITS + 1) + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"op":"put","key":"k","value":' + b"[" * MAX_COMMAND_NESTING + b"]" * MAX_COMMAND_NESTING + b"}",
]


def short_id(data: bytes) -> str:
    return repr(data) if len(data) <= 40 else f"{data[:30]!r}...({len(data)} bytes)"


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


def test_nesting_limit_is_exact() -> None:
    deepest = Put("k", json.loads("[" * (MAX_COMMAND_NESTING - 1) + "]" * (MAX_COMMAND_NESTING - 1)))
    assert decode_command(encode_command(deepest)) == deepest
    too_deep = Put("k", [deepest.value])
    with pytest.raises(CommandEncodeError):
        encode_command(too_deep)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    command = Put("k[[[", "[{" * 1000 + '\\"[' * 100, prev_value=["]]]" * 100])
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), object(), {"k": {1, 2}}, "\ud800"],
    ids=["nan", "inf", "object", "set", "lone-surrogate"],
)
def test_values_that_are_not_json_do_not_encode(value: object) -> None:
    with pytest.raises(CommandEncodeError):
        encode_command(Put("k", value))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Put("", 1),
        lambda: Put("k", 1, prev_revision=-1),
        lambda: Delete("k", prev_revision=True),
        lambda: Delete("k", idempotency_key=""),
    ],
    ids=["empty-key", "negative-revision", "bool-revision", "empty-idempotency-key"],
)
def test_invalid_commands_cannot_be_built(make: Callable[[], Command]) -> None:
    with pytest.raises(ValueError):
        make()


def test_the_integer_limit_is_one_every_interpreter_can_convert() -> None:
    assert sys.int_info.str_digits_check_threshold >= MAX_INTEGER_DIGITS


@pytest.fixture(params=[0, sys.int_info.str_digits_check_threshold, 4300])
def int_digits_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """Each of: no limit, the least limit an interpreter accepts, the default."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(request.param)
    yield request.param
    sys.set_int_max_str_digits(before)


@pytest.mark.parametrize("longest", [int("9" * MAX_INTEGER_DIGITS), -int("9" * MAX_INTEGER_DIGITS)])
def test_the_longest_integer_survives_whatever_the_limit(int_digits_limit: int, longest: int) -> None:
    store = KVStore()
    assert store.apply(1, b'{"op":"put","key":"k","value":[%d]}' % longest) == Ok("k", [longest], 1)
    copy = restored(snapshot_of(store))
    assert copy.get("k") == store.get("k")
    assert snapshot_of(copy) == snapshot_of(store)


@pytest.mark.parametrize("literal", [b"1" * (MAX_INTEGER_DIGITS + 1), b"-" + b"1" * (MAX_INTEGER_DIGITS + 1)])
def test_a_longer_integer_is_refused_whatever_the_limit(int_digits_limit: int, literal: bytes) -> None:
    result = KVStore().apply(1, b'{"op":"put","key":"k","value":' + literal + b"}")
    assert isinstance(result, InvalidCommand) and "digits" in result.reason


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (b'"' + b"1" * 5000 + b'"', "1" * 5000),  # digits in a string are no integer
        (b"0." + b"1" * 5000, 0.1111111111111111),
        (b"1" * 700 + b"e-690", float("1" * 700 + "e-690")),
    ],
    ids=["in-a-string", "long-fraction", "long-mantissa"],
)
def test_long_digit_runs_that_are_not_integer_literals_are_fine(
    int_digits_limit: int, literal: bytes, value: JSONValue
) -> None:
    assert decode_command(b'{"op":"put","key":"k","value":' + literal + b"}") == Put("k", value)


def test_replicas_with_different_int_digits_limits_agree() -> None:
    """The same entries applied in processes with different PYTHONINTMAXSTRDIGITS give the same snapshot."""
    script = (
        "import io, sys\n"
        "from raftkv.kv import KVStore\n"
        "store = KVStore()\n"
        "for n, digits in enumerate([5, 640, 641, 700, 4300, 4301], start=1):\n"
        '    store.apply(n, b\'{"op":"put","key":"k%d","value":%s}\' % (n, b\'7\' * digits))\n'
        "out = io.BytesIO()\n"
        "store.snapshot()(out)\n"
        "sys.stdout.write(out.getvalue().hex())\n"
    )
    snapshots = {
        limit: subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONINTMAXSTRDIGITS": limit},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for limit in ("0", "640", "4300", "100000")
    }
    assert len(set(snapshots.values())) == 1
    assert [kv.key for kv in restored(bytes.fromhex(snapshots["0"])).range()] == ["k1", "k2"]


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
def test_preconditions(command: Command, succeeds: bool) -> None:
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
@pytest.mark.parametrize("chunk_keys", [2, raftkv.kv._CHUNK_KEYS])
def test_range_tracks_puts_and_deletes(seed: int, chunk_keys: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raftkv.kv, "_CHUNK_KEYS", chunk_keys)
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


# --- idempotency ----------------------------------------------------------------------------------------


def test_retry_returns_the_first_result_and_applies_once() -> None:
    store = KVStore()
    first, other, retry = run(
        store, Put("k", 1, idempotency_key="i"), Put("j", 2), Put("k", 1, idempotency_key="i")
    )
    assert first == retry == Ok("k", 1, 1)
    assert other == Ok("j", 2, 2)
    assert store.revision == 2
    assert store.get("k") == KeyValue("k", 1, 1, 1, 1)


def test_retry_with_different_content_still_returns_the_first_result() -> None:
    store = store_with(Put("k", 1, idempotency_key="i"))
    assert (
        run(store, Delete("k", idempotency_key="i"), Put("x", 0, idempotency_key="i")) == [Ok("k", 1, 1)] * 2
    )
    assert store.get("k") is not None
    assert store.get("x") is None


def test_failed_outcomes_are_remembered_too() -> None:
    store = store_with(Put("k", 1))
    failed, _, retry = run(
        store,
        Put("k", 2, prev_value=0, idempotency_key="cas"),
        Put("k", 0),
        Put("k", 2, prev_value=0, idempotency_key="cas"),
    )
    assert failed == retry == PreconditionFailed("k", KeyValue("k", 1, 1, 1, 1), 1)
    assert store.get("k") == KeyValue("k", 0, 1, 2, 2)  # the retry would now succeed, but returns the failure
    assert run(
        store, Delete("gone", idempotency_key="d"), Put("gone", 1), Delete("gone", idempotency_key="d")
    ) == [
        NotFound("gone", 2),
        Ok("gone", 1, 3),
        NotFound("gone", 2),
    ]


def test_oldest_idempotency_key_is_evicted_first() -> None:
    store = store_with(*[Put(f"k{n}", n, idempotency_key=f"i{n}") for n in range(4)], capacity=3)
    # i0 is forgotten: its retry is applied again; i1..i3 are remembered and return their first result.
    assert run(store, Put("k0", 0, idempotency_key="i0")) == [Ok("k0", 0, 5)]
    assert run(store, Put("k2", 0, idempotency_key="i2")) == [Ok("k2", 2, 3)]
    # Re-applying i0 evicted i1, the oldest remaining; a hit (i2) does not refresh its place.
    assert run(store, Put("k1", 1, idempotency_key="i1")) == [Ok("k1", 1, 6)]
    assert run(store, Put("k2", 9, idempotency_key="i2")) == [Ok("k2", 9, 7)]


def test_idempotency_table_and_its_order_survive_a_snapshot() -> None:
    store = store_with(*[Put(f"k{n}", n, idempotency_key=f"i{n}") for n in range(3)], capacity=3)
    copy = restored(snapshot_of(store))
    assert copy.idempotency_capacity == 3
    for replica in (store, copy):
        assert run(replica, Put("k3", 3, idempotency_key="i3"), Put("k0", 0, idempotency_key="i0")) == [
            Ok("k3", 3, 4),
            Ok("k0", 0, 5),
        ]
        assert run(replica, Put("k2", 0, idempotency_key="i2")) == [Ok("k2", 2, 3)]
    assert snapshot_of(copy) == snapshot_of(store)


# --- snapshots and determinism --------------------------------------------------------------------------

KEY_SPACE = ["a", "a/b", "a/c", "b", "é", "\U0001f600"]
VALUES: list[JSONValue] = [None, 0, 1, 1.0, True, False, "", "x", [], [1, None], {}, {"a": [1]}, {"a": None}]


def random_entry(rng: random.Random, store: KVStore) -> bytes | None:
    """A plausible mix: writes with and without preconditions and retries, plus no-ops and garbage."""
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.08:
        return rng.choice(GARBAGE[:8])
    key = rng.choice(KEY_SPACE)
    current = store.get(key)
    current_revision = None if current is None else current.mod_revision
    prev_revision = rng.choice([None, None, 0, rng.randint(0, store.revision + 1), current_revision])
    idempotency_key = rng.choice([None, None, f"r{rng.randint(0, 20)}"])
    if roll < 0.3:
        return encode_command(Delete(key, prev_revision, idempotency_key))
    current_value = None if current is None else current.value
    prev_value = rng.choice([UNSET, UNSET, rng.choice(VALUES), current_value])
    return encode_command(Put(key, rng.choice(VALUES), prev_value, prev_revision, idempotency_key))


def random_history(seed: int, length: int) -> list[bytes | None]:
    rng = random.Random(seed)
    scratch = KVStore(idempotency_capacity=8)  # generates preconditions that sometimes hold
    history = []
    for index in range(1, length + 1):
        entry = random_entry(rng, scratch)
        scratch.apply(index, entry)
        history.append(entry)
    return history


def apply_all(store: KVStore, entries: list[bytes | None]) -> list[Result | None]:
    return [store.apply(store.applied_index + 1, entry) for entry in entries]


@pytest.mark.parametrize("seed", range(300))
@pytest.mark.parametrize("chunk_keys", [2, raftkv.kv._CHUNK_KEYS])
def test_restore_midway_then_apply_the_rest_equals_applying_everything(
    seed: int, chunk_keys: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raftkv.kv, "_CHUNK_KEYS", chunk_keys)
    history = random_history(seed, 150)
    split = random.Random(-seed).randint(0, len(history))
    whole = KVStore(idempotency_capacity=8)
    whole_results = apply_all(whole, history)

    first_half = KVStore(idempotency_capacity=8)
    apply_all(first_half, history[:split])
    copy = restored(snapshot_of(first_half))
    assert snapshot_of(copy) == snapshot_of(first_half)
    assert apply_all(copy, history[split:]) == whole_results[split:]

    assert snapshot_of(copy) == snapshot_of(whole)
    assert copy.range() == whole.range()
    assert (copy.revision, copy.applied_index) == (whole.revision, whole.applied_index)


@pytest.mark.parametrize("seed", range(20))
def test_revision_bookkeeping_over_random_histories(seed: int) -> None:
    store = KVStore(idempotency_capacity=8)
    writes = 0
    for index, entry in enumerate(random_history(seed, 300), start=1):
        result = store.apply(index, entry)
        if isinstance(result, (Ok, Deleted)) and result.revision > writes:  # not an idempotent replay
            writes += 1
            assert result.revision == writes
        elif result is not None:
            assert result.revision <= writes
        assert store.revision == writes
    for kv in store.range():
        assert 1 <= kv.create_revision <= kv.mod_revision <= store.revision
        assert kv.version <= kv.mod_revision - kv.create_revision + 1


def test_equal_states_give_equal_snapshot_bytes() -> None:
    history = random_history(7, 200)
    one, two = KVStore(idempotency_capacity=8), KVStore(idempotency_capacity=8)
    apply_all(one, history)
    apply_all(two, history)
    assert snapshot_of(one) == snapshot_of(two)
    assert snapshot_of(restored(snapshot_of(one))) == snapshot_of(one)


def test_a_capture_does_not_see_later_writes(small_chunks: None) -> None:
    store = store_with(*[Put(f"k{n:02d}", n, idempotency_key=f"i{n}") for n in range(40)], capacity=8)
    expected = snapshot_of(store)
    writer = store.snapshot()
    run(
        store,
        *[Delete(f"k{n:02d}") for n in range(0, 40, 3)],  # chunks shrink and merge
        *[Put(f"k{n:02d}+", n) for n in range(40)],  # chunks grow and split
        Put("k01", "changed", idempotency_key="new"),  # a value changes, an idempotency key is evicted
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
    assert copy.apply(3, put) == Ok("j", ["\udfff"], 2)  # the idempotency key was kept


DEEPEST: Final[JSONValue] = json.loads("[" * (MAX_COMMAND_NESTING - 1) + "]" * (MAX_COMMAND_NESTING - 1))


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**200), 10**639, 1e300, -0.0, 5e-324, "é\U0001f600\x00", {"": {"a": [None]}}, DEEPEST],
    ids=["2**64", "-2**200", "10**639", "1e300", "-0.0", "5e-324", "non-ascii", "object", "deepest"],
)
def test_any_value_a_command_can_carry_survives_a_snapshot(value: JSONValue) -> None:
    # The value is in the table, in an Ok and in a PreconditionFailed's current.
    store = store_with(Put("k", value, idempotency_key="i"), Put("k", 1, prev_value=[], idempotency_key="j"))
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
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":0,"keys":[],"idempotency":[]}',
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[["b",1,1,1,1],["a",1,1,1,1]],'
        b'"idempotency":[]}',
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[["a",1,1,1]],"idempotency":[]}',
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[],'
        b'"idempotency":[["i",["ok","k",1,1]],["j",["ok","k",1,1]]]}',
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[],'
        b'"idempotency":[["i",["maybe","k",1]]]}',
    ],
)
def test_restore_rejects_what_snapshot_did_not_write(data: bytes) -> None:
    with pytest.raises(SnapshotDecodeError):
        restored(data)


# --- the snapshot format --------------------------------------------------------------------------------

PREFIX = b"RKVS" + (2).to_bytes(4, "big")  # magic and format number


def frame(body: object) -> bytes:
    """One frame as the format lays it out: body length, CRC-32 of the body, the body as JSON."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return struct.pack(">II", len(data), zlib.crc32(data)) + data


def snapshot_bytes(frames: Sequence[object]) -> bytes:
    return PREFIX + b"".join(map(frame, frames))


def frame_bodies(data: bytes) -> list[Any]:
    """The parsed frames of a snapshot (the inverse of ``snapshot_bytes``)."""
    assert data.startswith(PREFIX)
    bodies, at = [], len(PREFIX)
    while at < len(data):
        length, _ = struct.unpack_from(">II", data, at)
        bodies.append(json.loads(data[at + 8 : at + 8 + length].decode("utf-8", "surrogatepass")))
        at += 8 + length
    return bodies


def header(**fields: object) -> dict[str, object]:
    return {
        "applied_index": 3,
        "revision": 3,
        "idempotency_capacity": 2,
        "keys": 2,
        "idempotency": 1,
    } | fields


def key_frame(**columns: list[Any]) -> list[list[Any]]:
    """Two keys, a (put at 1, updated at 3) and b (put at 2); ``columns`` replace some."""
    frame: dict[str, list[Any]] = {
        "keys": ["a", "b"],
        "values": [1, [2]],
        "create": [1, 2],
        "mod": [3, 2],
        "version": [2, 1],
    }
    return list((frame | columns).values())


RESULTS_FRAME: list[list[Any]] = [["i"], [["ok", "a", 1, 3]]]
VALID: list[object] = [header(), key_frame(), RESULTS_FRAME]


def test_the_hand_built_snapshot_is_what_the_store_writes() -> None:
    store = restored(snapshot_bytes(VALID))
    assert store.range() == [KeyValue("a", 1, 1, 3, 2), KeyValue("b", [2], 2, 2, 1)]
    assert store.apply(4, encode_command(Put("x", 0, idempotency_key="i"))) == Ok("a", 1, 3)
    assert snapshot_of(restored(snapshot_bytes(VALID))) == snapshot_bytes(VALID)


INVALID: dict[str, Sequence[object]] = {
    "header-not-an-object": [list(header().values()), key_frame(), RESULTS_FRAME],
    "header-missing-a-field": [
        {k: v for k, v in header().items() if k != "revision"},
        key_frame(),
        RESULTS_FRAME,
    ],
    "header-extra-field": [header(more=1), key_frame(), RESULTS_FRAME],
    "header-negative-index": [header(applied_index=-1), key_frame(), RESULTS_FRAME],
    "header-boolean-count": [header(idempotency=True), key_frame(), RESULTS_FRAME],
    "zero-capacity": [header(idempotency_capacity=0, idempotency=0), key_frame()],
    "over-capacity": [
        header(idempotency_capacity=1, idempotency=2),
        key_frame(),
        [["i", "j"], RESULTS_FRAME[1] * 2],
    ],
    "more-keys-than-counted": [header(keys=1), key_frame(), RESULTS_FRAME],
    "fewer-keys-than-counted": [header(keys=3), key_frame(), RESULTS_FRAME],
    "empty-key-frame": [header(), key_frame(keys=[], values=[], create=[], mod=[], version=[]), *VALID[1:]],
    "empty-idempotency-frame": [header(), key_frame(), [[], []], RESULTS_FRAME],
    "columns-of-unequal-length": [header(), key_frame(values=[1]), RESULTS_FRAME],
    "key-frame-not-columns": [header(), {"keys": ["a", "b"]}, RESULTS_FRAME],
    "keys-descending": [header(), key_frame(keys=["b", "a"]), RESULTS_FRAME],
    "keys-repeated": [header(), key_frame(keys=["a", "a"]), RESULTS_FRAME],
    "keys-descending-across-frames": [
        header(),
        key_frame(keys=["b"], values=[1], create=[1], mod=[1], version=[1]),
        key_frame(keys=["a"], values=[1], create=[2], mod=[2], version=[1]),
        RESULTS_FRAME,
    ],
    "empty-key": [header(), key_frame(keys=["", "b"]), RESULTS_FRAME],
    "non-string-key": [header(), key_frame(keys=[1, "b"]), RESULTS_FRAME],
    "lone-surrogate-in-key": [header(), key_frame(keys=["a", "\ud800"]), RESULTS_FRAME],
    "float-revision": [header(), key_frame(create=[1.0, 2]), RESULTS_FRAME],
    "boolean-version": [header(), key_frame(version=[True, 1]), RESULTS_FRAME],
    "revision-zero": [header(), key_frame(create=[0, 2]), RESULTS_FRAME],
    "created-after-modified": [header(), key_frame(create=[1, 3]), RESULTS_FRAME],
    "modified-after-the-store-revision": [header(), key_frame(mod=[4, 2]), RESULTS_FRAME],
    "version-zero": [header(), key_frame(version=[0, 1]), RESULTS_FRAME],
    "revision-beyond-64-bits": [header(revision=2**64), key_frame(mod=[2**64, 2]), RESULTS_FRAME],
    "value-nested-too-deep": [
        header(),
        key_frame(values=[1, json.loads("[" * 100 + "]" * 100)]),
        RESULTS_FRAME,
    ],
    "idempotency-key-repeated": [header(idempotency=2), key_frame(), [["i", "i"], RESULTS_FRAME[1] * 2]],
    "more-results-than-counted": [header(), key_frame(), [["i", "j"], RESULTS_FRAME[1] * 2]],
    "idempotency-key-not-a-string": [header(), key_frame(), [[7], RESULTS_FRAME[1]]],
    "unknown-result": [header(), key_frame(), [["i"], [["maybe", "a", 3]]]],
    "fewer-results-than-counted": [header(idempotency=2), key_frame(), RESULTS_FRAME],
    "missing-frame": [header(), key_frame()],
    "frame-after-the-end": [*VALID, RESULTS_FRAME],
}


@pytest.mark.parametrize("frames", INVALID.values(), ids=INVALID.keys())
def test_restore_rejects_frames_the_store_did_not_write_and_changes_nothing(frames: Sequence[object]) -> None:
    store = store_with(Put("k", 1, idempotency_key="i"))
    before = snapshot_of(store)
    with pytest.raises(SnapshotDecodeError):
        store.restore(io.BytesIO(snapshot_bytes(frames)))
    assert snapshot_of(store) == before


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PREFIX,
        PREFIX[:4] + (3).to_bytes(4, "big") + snapshot_bytes(VALID)[len(PREFIX) :],  # another format
        b'{"format":1,"applied_index":0,"revision":0,"idempotency_capacity":1,"keys":[],"idempotency":[]}',
        PREFIX + struct.pack(">II", 8, zlib.crc32(b"not json")) + b"not json",
        snapshot_bytes(VALID) + b"\n",
    ],
    ids=["empty", "prefix-only", "format-3", "format-1", "body-not-json", "trailing-byte"],
)
def test_restore_rejects_other_formats(data: bytes) -> None:
    with pytest.raises(SnapshotDecodeError):
        restored(data)


@given(st.binary())
def test_restore_rejects_garbage(data: bytes) -> None:
    for candidate in (data, PREFIX + data, PREFIX + frame(header()) + data):
        with pytest.raises(SnapshotDecodeError):
            restored(candidate)


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three rows per frame, so that a few keys and idempotency entries make several frames."""
    monkeypatch.setattr(raftkv.kv, "_FRAME_ROWS", 3)


def several_frames_snapshot() -> bytes:
    store = store_with(*[Put(f"k{n}", "v" * n, idempotency_key=f"i{n}") for n in range(7)], capacity=5)
    data = snapshot_of(store)
    assert len(frame_bodies(data)) == 1 + 3 + 2
    return data


def test_every_truncation_is_rejected(small_frames: None) -> None:
    data = several_frames_snapshot()
    for end in range(len(data)):
        with pytest.raises(SnapshotDecodeError):
            restored(data[:end])


def test_every_changed_byte_is_rejected(small_frames: None) -> None:
    data = several_frames_snapshot()
    for at in range(len(data)):
        for flip in (0x01, 0x80):
            with pytest.raises(SnapshotDecodeError):
                restored(data[:at] + bytes([data[at] ^ flip]) + data[at + 1 :])


def test_a_snapshot_of_many_frames_restores_equal() -> None:
    keys, remembered = 2500, 1200
    rows = raftkv.kv._FRAME_ROWS
    assert rows < remembered < keys  # several frames of each kind
    store = store_with(
        *[Put(f"k{n:05d}", n, idempotency_key=f"i{n}" if n < remembered else None) for n in range(keys)],
        capacity=remembered,
    )
    data = snapshot_of(store)
    assert len(frame_bodies(data)) == 1 + -(-keys // rows) + -(-remembered // rows)
    copy = restored(data)
    assert snapshot_of(copy) == data
    assert copy.range() == store.range()
    assert all(copy.get(kv.key) == kv for kv in store.range())
    for replica in (store, copy):
        assert run(replica, Put("k00007", "again", idempotency_key="i7")) == [Ok("k00007", 7, 8)]


def test_frames_are_halved_until_small_unless_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raftkv.kv, "_FRAME_BYTES", 200)
    store = store_with(*[Put(f"k{n:02d}", "v" * (n * 10)) for n in range(40)])
    data = snapshot_of(store)
    key_frames = frame_bodies(data)[1:]
    assert sum(len(f[0]) for f in key_frames) == 40
    assert all(len(frame(f)) <= 8 + 200 or len(f[0]) == 1 for f in key_frames)
    assert any(len(f[0]) > 1 for f in key_frames) and any(len(frame(f)) > 8 + 200 for f in key_frames)
    assert snapshot_of(restored(data)) == data


def test_replicas_write_identical_bytes_over_many_frames_and_chunks(
    small_chunks: None, small_frames: None
) -> None:
    rng = random.Random(5)
    history: list[bytes | None] = []
    for n in range(400):
        key, idempotency_key = f"k{rng.randrange(60)}", rng.choice([None, f"i{rng.randrange(30)}"])
        command = Delete(key) if rng.random() < 0.3 else Put(key, n, idempotency_key=idempotency_key)
        history.append(encode_command(command))
    one, two = KVStore(idempotency_capacity=8), KVStore(idempotency_capacity=8)
    apply_all(one, history)
    apply_all(two, history[:150])
    three = restored(snapshot_of(two))  # its chunks are cut where the frames were, not where splits were
    apply_all(two, history[150:])
    apply_all(three, history[150:])
    assert len(frame_bodies(snapshot_of(one))) > 10
    assert snapshot_of(one) == snapshot_of(two) == snapshot_of(three)
