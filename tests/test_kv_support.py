"""What the tests of the state machine (tests/test_kv*.py) share: helpers, strategies and random histories.

It holds no tests of its own; its name keeps it among the files of the state machine's tests.
"""

from __future__ import annotations

import io
import json
import random
from typing import Final

import pytest
from hypothesis import strategies as st

import raftkv.kv.frames
import raftkv.kv.table
from raftkv.kv import (
    MAX_LEASE_ID,
    MAX_LEASE_TTL,
    MAX_VALUE_NESTING,
    UNSET,
    Command,
    CompareRevision,
    CompareValue,
    Delete,
    JSONValue,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Result,
    Txn,
    TxnDelete,
    TxnGet,
    TxnOp,
    TxnPut,
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


def apply_all(store: KVStore, entries: list[bytes | None]) -> list[Result | None]:
    return [store.apply(store.applied_index + 1, entry) for entry in entries]


def store_with(*commands: Command, capacity: int = 10) -> KVStore:
    store = KVStore(idempotency_capacity=capacity)
    run(store, *commands)
    return store


def assert_only_index_advanced(store: KVStore, before: bytes) -> None:
    """``store`` is the state ``before`` plus no-ops: nothing but ``applied_index`` changed."""
    expected = restored(before)
    apply_all(expected, [None] * (store.applied_index - expected.applied_index))
    assert snapshot_of(store) == snapshot_of(expected)


def small_chunks(monkeypatch: pytest.MonkeyPatch, keys: int = 2) -> None:
    """Few keys per chunk, so that a few keys span many chunks and every split, merge and copy on write of
    the sorted table happens at test sizes."""
    monkeypatch.setattr(raftkv.kv.table, "CHUNK_KEYS", keys)


def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three rows per frame, so that a few keys, leases, idempotency entries and events make several frames."""
    monkeypatch.setattr(raftkv.kv.frames, "FRAME_ROWS", 3)


def nested(levels: int) -> JSONValue:
    """A value of ``levels`` arrays, one in another."""
    value: JSONValue = []
    for _ in range(levels - 1):
        value = [value]
    return value


DEEPEST: Final = nested(MAX_VALUE_NESTING)

# --- strategies -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
keys = st.text(min_size=1).filter(lambda k: not any(0xD800 <= ord(c) <= 0xDFFF for c in k))
revisions = st.none() | st.integers(min_value=0)
idempotency_keys = st.none() | st.text(min_size=1)
lease_ids = st.integers(min_value=1, max_value=MAX_LEASE_ID)
ttls = st.integers(min_value=1, max_value=MAX_LEASE_TTL)
txn_ops = st.lists(
    st.builds(TxnPut, keys, json_values, st.none() | lease_ids)
    | st.builds(TxnGet, keys)
    | st.builds(TxnDelete, keys),
    max_size=5,
    unique_by=lambda op: (type(op) is TxnGet, op.key),  # a branch writes each key at most once
).map(tuple)
commands = st.one_of(
    st.builds(
        Put,
        keys,
        json_values,
        st.just(UNSET) | json_values,
        revisions,
        idempotency_keys,
        st.none() | lease_ids,
    ),
    st.builds(Delete, keys, revisions, idempotency_keys),
    st.builds(
        Txn,
        st.lists(
            st.builds(CompareValue, keys, json_values) | st.builds(CompareRevision, keys, st.integers(0)),
            max_size=5,
        ).map(tuple),
        txn_ops,
        txn_ops,
        idempotency_keys,
    ),
    st.builds(LeaseGrant, lease_ids, ttls, idempotency_keys),
    st.builds(LeaseRevoke, lease_ids, idempotency_keys),
)

# --- entries that are not commands ----------------------------------------------------------------------

GARBAGE: Final = [
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
    b'{"op":"put","key":"k","value":' + b"1" * 641 + b"}",  # over MAX_INTEGER_DIGITS
    b'{"op":"put","key":"k","value":-' + b"1" * 641 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"op":"put","key":"k","value":'
    + b"[" * (MAX_VALUE_NESTING + 1)
    + b"]" * (MAX_VALUE_NESTING + 1)
    + b"}",
    b'{"op":"put","key":"k","value":1,"lease":0}',
    b'{"op":"put","key":"k","value":1,"lease":9223372036854775808}',  # 2**63
    b'{"op":"put","key":"k","value":1,"lease":"7"}',
    b'{"op":"lease_grant","lease":1}',
    b'{"op":"lease_grant","lease":1,"ttl":0}',
    b'{"op":"lease_grant","lease":1,"ttl":2592001}',  # over MAX_LEASE_TTL
    b'{"op":"lease_grant","lease":-1,"ttl":5}',
    b'{"op":"lease_grant","lease":1.0,"ttl":5}',
    b'{"op":"lease_revoke"}',
    b'{"op":"lease_revoke","lease":true}',
    b'{"op":"txn","compare":{}}',
    b'{"op":"txn","success":[{"put":{"key":"k"}}]}',
    b'{"op":"txn","success":[{"put":{"key":"k","value":1,"prev_revision":1}}]}',
    b'{"op":"txn","success":[{"merge":{"key":"k"}}]}',
    b'{"op":"txn","success":[{"get":{"key":"k"},"put":{"key":"k","value":1}}]}',
    b'{"op":"txn","success":[{"get":["k"]}]}',
    b'{"op":"txn","success":["get"]}',
    b'{"op":"txn","success":[{"put":{"key":"k","value":1}},{"delete":{"key":"k"}}]}',  # k written twice
    b'{"op":"txn","compare":[{"key":"k"}]}',
    b'{"op":"txn","compare":[{"key":"k","value":1,"revision":1}]}',
    b'{"op":"txn","compare":[{"key":"k","revision":-1}]}',
    b'{"op":"txn","compare":[{"key":"k","mod_revision":1}]}',
    b'{"op":"txn","success":[' + b",".join([b'{"get":{"key":"k"}}'] * 65) + b"]}",
    b'{"op":"txn","success":['
    + b",".join([b'{"get":{"key":"k"}}'] * 33)
    + b'],"failure":['
    + b",".join([b'{"get":{"key":"k"}}'] * 32)
    + b"]}",
    b'{"op":"txn","compare":[' + b",".join([b'{"key":"k","revision":0}'] * 65) + b"]}",
    b'{"op":"txn","success":[{"put":{"key":"k","value":'
    + json.dumps(nested(MAX_VALUE_NESTING + 1)).encode()
    + b"}}}]}",
    b'{"op":"txn","compare":[{"key":"k","value":'
    + json.dumps(nested(MAX_VALUE_NESTING + 1)).encode()
    + b"}]}",
]


def short_id(data: bytes) -> str:
    return repr(data) if len(data) <= 40 else f"{data[:30]!r}...({len(data)} bytes)"


# --- random histories -----------------------------------------------------------------------------------

KEY_SPACE: Final = ["a", "a/b", "a/c", "b", "é", "\U0001f600"]
VALUES: Final[list[JSONValue]] = [
    None,
    0,
    1,
    1.0,
    True,
    False,
    "",
    "x",
    [],
    [1, None],
    {},
    {"a": [1]},
    {"a": None},
]
LEASE_SPACE: Final = [1, 2, 3, MAX_LEASE_ID]


class RandomEntries:
    """A plausible mix of entries: writes with and without preconditions, leases, transactions, retries
    (the same command again, or another one under a used idempotency key), no-ops and garbage. A scratch
    store applies them as they are made, so that preconditions sometimes hold."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.scratch = small_store()
        self.keyed: list[bytes] = []

    def entry(self) -> bytes | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            return None
        if roll < 0.07:
            return rng.choice(GARBAGE[:8])
        if roll < 0.12 and self.keyed:
            return rng.choice(self.keyed)  # a retry
        command = self.command(roll)
        data = encode_command(command)
        if command.idempotency_key is not None:
            self.keyed.append(data)
        return data

    def command(self, roll: float) -> Command:
        rng = self.rng
        idempotency_key = rng.choice([None, None, f"r{rng.randint(0, 20)}"])
        if roll < 0.17:
            return LeaseGrant(rng.choice(LEASE_SPACE), rng.randint(1, 60), idempotency_key)
        if roll < 0.20:
            return LeaseRevoke(rng.choice(LEASE_SPACE), idempotency_key)
        if roll < 0.35:
            return Txn(
                tuple(self.compare() for _ in range(rng.randint(0, 2))),
                self.branch(),
                self.branch(),
                idempotency_key,
            )
        key = rng.choice(KEY_SPACE)
        current = self.scratch.get(key)
        current_revision = None if current is None else current.mod_revision
        prev_revision = rng.choice(
            [None, None, 0, rng.randint(0, self.scratch.revision + 1), current_revision]
        )
        if roll < 0.5:
            return Delete(key, prev_revision, idempotency_key)
        current_value = None if current is None else current.value
        prev_value = rng.choice([UNSET, UNSET, rng.choice(VALUES), current_value])
        return Put(key, rng.choice(VALUES), prev_value, prev_revision, idempotency_key, self.lease())

    def lease(self) -> int | None:
        return self.rng.choice([None, None, *LEASE_SPACE])

    def compare(self) -> CompareValue | CompareRevision:
        rng = self.rng
        key = rng.choice(KEY_SPACE)
        current = self.scratch.get(key)
        if rng.random() < 0.5:
            return CompareValue(
                key, rng.choice([rng.choice(VALUES), None if current is None else current.value])
            )
        return CompareRevision(
            key, rng.choice([0, 1, self.scratch.revision, 0 if current is None else current.mod_revision])
        )

    def branch(self) -> tuple[TxnOp, ...]:
        rng = self.rng
        ops: list[TxnOp] = []
        written: set[str] = set()
        for key in rng.choices(KEY_SPACE, k=rng.randint(0, 4)):
            kind = rng.choice([TxnGet, TxnPut, TxnDelete])
            if kind is TxnGet or key in written:  # a branch writes each key at most once
                ops.append(TxnGet(key))
                continue
            written.add(key)
            ops.append(TxnPut(key, rng.choice(VALUES), self.lease()) if kind is TxnPut else TxnDelete(key))
        return tuple(ops)


def random_history(seed: int, length: int) -> list[bytes | None]:
    entries = RandomEntries(seed)
    history = []
    for index in range(1, length + 1):
        entry = entries.entry()
        entries.scratch.apply(index, entry)
        history.append(entry)
    return history


def small_store() -> KVStore:
    """A store whose idempotency table and history fill up within a random history."""
    return KVStore(idempotency_capacity=8, idempotency_window=40, history_capacity=30)
