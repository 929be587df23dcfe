"""JSON that every replica parses alike: fixed nesting limits, and integers independent of the int-digits limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from test_kv_support import DEEPEST, nested, restored, snapshot_of, store_with

from raftkv.kv import (
    MAX_COMMAND_NESTING,
    MAX_INTEGER_DIGITS,
    MAX_VALUE_NESTING,
    Command,
    CommandDecodeError,
    CommandEncodeError,
    CompareValue,
    InvalidCommand,
    JSONValue,
    KVStore,
    Ok,
    Put,
    Txn,
    TxnPut,
    decode_command,
    encode_command,
)

WAYS_TO_CARRY_A_VALUE: list[Callable[[JSONValue], Command]] = [
    lambda value: Put("k", value),
    lambda value: Put("k", 1, prev_value=value),
    lambda value: Txn(success=(TxnPut("k", value),)),
    lambda value: Txn(failure=(TxnPut("k", value),)),
    lambda value: Txn((CompareValue("k", value),)),
]
WAYS = pytest.mark.parametrize(
    "carry", WAYS_TO_CARRY_A_VALUE, ids=["put", "prev-value", "txn-success", "txn-failure", "compare"]
)


@WAYS
def test_the_value_nesting_limit_is_the_same_wherever_a_value_is(
    carry: Callable[[JSONValue], Command],
) -> None:
    deepest = carry(DEEPEST)
    assert decode_command(encode_command(deepest)) == deepest
    with pytest.raises(CommandEncodeError):
        encode_command(carry([DEEPEST]))
    too_deep = encode_command(carry(0)).replace(b"0", json.dumps(nested(MAX_VALUE_NESTING + 1)).encode(), 1)
    with pytest.raises(CommandDecodeError):
        decode_command(too_deep)


def test_a_command_nests_at_most_its_limit_before_it_is_parsed() -> None:
    assert MAX_COMMAND_NESTING == MAX_VALUE_NESTING + 4  # a transaction's put holds its value 4 levels in
    deepest_txn = encode_command(Txn(success=(TxnPut("k", DEEPEST),)))
    assert deepest_txn.count(b"[") + deepest_txn.count(b"{") == MAX_COMMAND_NESTING
    with pytest.raises(CommandDecodeError, match="nested deeper"):
        decode_command(b"[" * (MAX_COMMAND_NESTING + 1) + b"]" * (MAX_COMMAND_NESTING + 1))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    command = Put("k[[[", "[{" * 1000 + '\\"[' * 100, prev_value=["]]]" * 100])
    assert decode_command(encode_command(command)) == command


# --- integers -------------------------------------------------------------------------------------------


def test_the_integer_limit_is_one_every_interpreter_can_convert() -> None:
    assert sys.int_info.str_digits_check_threshold >= MAX_INTEGER_DIGITS


@pytest.fixture(params=[0, sys.int_info.str_digits_check_threshold, 4300])
def int_digits_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """Each of: no limit, the least limit an interpreter accepts, the default."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(request.param)
    yield request.param
    sys.set_int_max_str_digits(before)


LONGEST = int("9" * MAX_INTEGER_DIGITS)


@pytest.mark.parametrize("longest", [LONGEST, -LONGEST], ids=["positive", "negative"])
def test_the_longest_integer_survives_whatever_the_limit(int_digits_limit: int, longest: int) -> None:
    store = KVStore()
    assert store.apply(1, b'{"op":"put","key":"k","value":[%d]}' % longest) == Ok("k", [longest], 1)
    copy = restored(snapshot_of(store))
    assert copy.get("k") == store.get("k")
    assert snapshot_of(copy) == snapshot_of(store)


@pytest.mark.parametrize(
    "literal",
    [b"1" * (MAX_INTEGER_DIGITS + 1), b"-" + b"1" * (MAX_INTEGER_DIGITS + 1), b"1" * 5000],
    ids=["641", "-641", "5000"],
)
def test_a_longer_integer_is_refused_whatever_the_limit(int_digits_limit: int, literal: bytes) -> None:
    store = store_with(Put("k", 1))
    result = store.apply(2, b'{"op":"put","key":"k","value":' + literal + b"}")
    assert isinstance(result, InvalidCommand)
    assert "digits" in result.reason


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (b'"' + b"1" * 5000 + b'"', "1" * 5000),  # digits in a string are no integer
        (b"0." + b"1" * 5000, 0.1111111111111111),
        (b"1" * 700 + b"e-690", float("1" * 700 + "e-690")),
        (b"[1.5e300," + b"2" * 640 + b"]", [1.5e300, int("2" * 640)]),
    ],
    ids=["in-a-string", "long-fraction", "long-mantissa", "float-and-longest-integer"],
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
