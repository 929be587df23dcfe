"""Tests of the linearizability checker: hand-made histories, a brute-force oracle, the step budget, scale."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from history_builders import FAIL, OK, UNKNOWN, cas, read, write

from raftkv_harness.linearizability import (
    Op,
    OpKind,
    Outcome,
    check,
    format_report,
    history_from_jsonl,
    history_to_jsonl,
)

KINDS: tuple[OpKind, ...] = ("read", "write", "cas")


def verdict(history: Sequence[Op]) -> str:
    return check(history).verdict


# --- histories known to be linearizable ------------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    history = [
        read(0, None, 0, 1),
        write(0, 1, 2, 3),
        read(1, 1, 4, 5),
        cas(1, 1, 2, 6, 7),
        read(0, 2, 8, 9),
        write(0, None, 10, 11),
        read(1, None, 12, 13),
    ]
    result = check(history)
    assert result.verdict == "linearizable", format_report(result)
    assert result.key is None and result.ops == []


@pytest.mark.parametrize("seen", [1, 2])
def test_read_after_overlapping_writes_may_see_either(seen: int) -> None:
    history = [write(0, 1, 0, 10), write(1, 2, 1, 9), read(2, seen, 11, 12)]
    assert verdict(history) == "linearizable"


def test_read_concurrent_with_a_write_may_see_old_or_new() -> None:
    for seen in (None, 1):
        assert verdict([write(0, 1, 0, 10), read(1, seen, 2, 3)]) == "linearizable"


def test_operations_whose_intervals_touch_are_concurrent() -> None:
    assert verdict([write(0, 1, 0, 1), read(1, None, 1, 2)]) == "linearizable"


@pytest.mark.parametrize("seen", [1, 2])
def test_unknown_write_may_or_may_not_have_happened(seen: int) -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, None, UNKNOWN), read(2, seen, 5, 6)]
    assert verdict(history) == "linearizable"


def test_unknown_write_may_take_effect_after_the_client_gave_up() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, 3, UNKNOWN), read(2, 1, 4, 5), read(2, 2, 6, 7)]
    assert verdict(history) == "linearizable"


def test_unknown_write_may_take_effect_long_after_its_call() -> None:
    history = [write(1, 2, 0, None, UNKNOWN), write(0, 1, 1, 2), read(0, 1, 3, 4), read(0, 2, 100, 101)]
    assert verdict(history) == "linearizable"


def test_unknown_cas_that_applied_explains_a_read() -> None:
    history = [write(0, 1, 0, 1), cas(1, 1, 5, 2, None, UNKNOWN), read(0, 5, 3, 4)]
    assert verdict(history) == "linearizable"


def test_failed_cas_is_explained_by_a_concurrent_write() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, 6), cas(0, 1, 3, 3, 4, FAIL)]
    assert verdict(history) == "linearizable"


def test_failed_cas_is_explained_by_an_unknown_write_nobody_read() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 1.5, None, UNKNOWN), cas(0, 1, 3, 2, 3, FAIL)]
    assert verdict(history) == "linearizable"


def test_failed_writes_and_unknown_reads_are_ignored() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, 3, FAIL), read(2, 99, 4, None, UNKNOWN), read(0, 1, 5, 6)]
    assert verdict(history) == "linearizable"


def test_json_values_compare_by_content() -> None:
    history = [write(0, {"a": [1, 2], "b": None}, 0, 1), read(1, {"b": None, "a": [1, 2]}, 2, 3)]
    assert verdict(history) == "linearizable"


# --- histories known to be violations ----------------------------------------------------------------------


def test_stale_read_after_a_completed_write() -> None:
    stale = read(2, 1, 4, 5)
    overwrite = write(1, 2, 2, 3)
    result = check([write(0, 1, 0, 1), overwrite, stale])
    assert result.verdict == "violation"
    assert result.key == "k"
    assert stale in result.ops and overwrite in result.ops
    assert "process 2 read -> 1" in result.explanation


def test_read_of_a_value_never_written() -> None:
    ghost = read(1, 7, 2, 3)
    result = check([write(0, 1, 0, 1), ghost])
    assert result.verdict == "violation"
    assert result.ops == [ghost]
    assert "nothing ever wrote it" in result.explanation


def test_read_of_a_value_written_only_after_it_returned() -> None:
    early = read(1, 2, 0, 1)
    late_write = write(0, 2, 2, 3)
    result = check([early, late_write])
    assert result.verdict == "violation"
    assert result.ops == [early, late_write]


def test_sequential_reads_cannot_go_back_in_time() -> None:
    history = [
        write(0, 1, 0, 10),
        write(1, 2, 0, 10),
        read(2, 1, 11, 12),
        read(2, 2, 13, 14),
        read(3, 1, 15, 16),
    ]
    assert verdict(history) == "violation"


def test_unknown_write_once_seen_cannot_be_unseen() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, None, UNKNOWN), read(2, 2, 5, 6), read(2, 1, 7, 8)]
    assert verdict(history) == "violation"


def test_cas_that_succeeded_against_a_value_that_was_not_current() -> None:
    history = [write(0, 1, 0, 1), write(1, 2, 2, 3), cas(2, 1, 3, 4, 5)]
    assert verdict(history) == "violation"


def test_failed_cas_while_the_value_equalled_expected_throughout() -> None:
    failed = cas(1, 1, 3, 2, 3, FAIL)
    result = check([write(0, 1, 0, 1), failed, read(0, 1, 4, 5)])
    assert result.verdict == "violation"
    assert failed in result.ops


def test_failed_write_did_not_happen() -> None:
    assert verdict([write(0, 1, 0, 1), write(1, 2, 2, 3, FAIL), read(0, 2, 4, 5)]) == "violation"


def test_keys_are_checked_independently_and_the_bad_key_is_named() -> None:
    good = [write(0, 1, 0, 1, key="a"), read(1, 1, 2, 3, key="a")]
    bad = [write(0, 1, 0, 1, key="b"), write(0, 2, 2, 3, key="b"), read(1, 1, 4, 5, key="b")]
    assert verdict(good) == "linearizable"
    result = check(good + bad)
    assert result.verdict == "violation" and result.key == "b"
    assert all(op.key == "b" for op in result.ops)


# --- reports, files, validation -----------------------------------------------------------------------------


def test_report_lists_the_ops_with_times_process_kind_and_values() -> None:
    result = check([write(0, "x", 0, 1), write(3, "y", 2, 3.25), read(7, "x", 4, 5)])
    report = format_report(result)
    assert report.startswith("violation on key 'k'")
    assert 'read -> "x" ok' in report
    assert 'write("y") ok' in report
    assert "3.250000" in report
    assert any(line.split()[2] == "7" for line in report.splitlines()[3:])


def test_history_round_trips_through_jsonl() -> None:
    history = [
        write(0, {"nested": [1, "two", None]}, 0.5, 1.5),
        cas(1, None, 3, 2.0, None, UNKNOWN, key="k/é"),
        cas(2, 1, 2, 2.5, 3.5, FAIL),
        read(3, None, 4.0, 4.5),
    ]
    text = history_to_jsonl(history)
    assert len(text.splitlines()) == len(history)
    assert history_from_jsonl(text + "\n") == history


@pytest.mark.parametrize(
    ("ret", "outcome"),
    [(None, OK), (None, FAIL), (0.5, OK)],
)
def test_op_rejects_impossible_times(ret: float | None, outcome: Outcome) -> None:
    with pytest.raises(ValueError):
        read(0, None, 1.0, ret, outcome)


def test_op_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        Op(process=0, kind="delete", key="k", call=0, ret=1, outcome=OK)  # type: ignore[arg-type]


# --- cross-check against a brute-force oracle ---------------------------------------------------------------


def brute_force_linearizable(history: Sequence[Op]) -> bool:
    """Try every subset of the unknown writes and every order of the chosen operations: the definition itself."""
    required = [op for op in history if op.outcome is OK or (op.outcome is FAIL and op.kind == "cas")]
    optional = [op for op in history if op.outcome is UNKNOWN and op.kind != "read"]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(required + list(chosen)):
                if respects_real_time(order) and register_accepts(order):
                    return True
    return False


def returned_at(op: Op) -> float:
    return math.inf if op.ret is None or op.outcome is UNKNOWN else op.ret


def respects_real_time(order: Sequence[Op]) -> bool:
    return all(
        returned_at(later) >= earlier.call for i, earlier in enumerate(order) for later in order[i + 1 :]
    )


def register_accepts(order: Sequence[Op]) -> bool:
    state: dict[str, Any] = {}
    for op in order:
        current = state.get(op.key)
        if op.kind == "read" and current != op.value:
            return False
        if op.kind == "write":
            state[op.key] = op.value
        if op.kind == "cas" and op.outcome is FAIL and current == op.expected:
            return False
        if op.kind == "cas" and op.outcome is not FAIL:
            if current != op.expected:
                return False
            state[op.key] = op.value
    return True


def simulated_history(
    rng: random.Random,
    n_ops: int,
    processes: int,
    *,
    keys: Sequence[str] = ("k",),
    value_domain: int | None = None,
    unknown_rate: float = 0.1,
    integer_times: bool = False,
) -> list[Op]:
    """Clients of a correct register: each operation takes effect at an instant inside its interval.

    With ``value_domain`` the written values repeat (1..value_domain); otherwise every write is unique.
    An unknown operation takes effect or not at random. Integer times make touching intervals common.
    """
    clock = [0.0] * processes
    planned: list[tuple[float, int, Op, bool]] = []
    for sequence in range(n_ops):
        process = rng.randrange(processes)
        gap, effect, answer = (
            (rng.randint(0, 2), rng.randint(0, 2), rng.randint(0, 2))
            if integer_times
            else (rng.random(), rng.random(), rng.random())
        )
        call = clock[process] + gap
        at = call + effect
        clock[process] = at + answer
        unknown = rng.random() < unknown_rate
        kind: OpKind = rng.choice(KINDS)
        value = rng.randint(1, value_domain) if value_domain else sequence + 1
        expected = (
            rng.choice([None, value - 1, value - 2]) if value_domain is None else rng.randint(0, value_domain)
        )
        op = Op(
            process=process,
            kind=kind,
            key=rng.choice(keys),
            value=value,
            expected=expected or None,
            call=call,
            ret=None if unknown else at + answer,
            outcome=UNKNOWN if unknown else OK,
        )
        planned.append((at, sequence, op, not unknown or rng.random() < 0.5))
    state: dict[str, Any] = {}
    history = []
    for _, _, op, takes_effect in sorted(planned, key=lambda plan: (plan[0], plan[1])):
        current = state.get(op.key)
        if op.kind == "read":
            history.append(replace(op, value=current))
            continue
        applies = op.kind == "write" or current == op.expected
        if takes_effect and applies:
            state[op.key] = op.value
        if op.outcome is OK and not applies:
            history.append(replace(op, outcome=FAIL))
        else:
            history.append(op)
    return sorted(history, key=lambda op: op.call)


def mutated(rng: random.Random, history: list[Op]) -> list[Op]:
    """The same history with one operation's answer changed: often, but not always, a violation."""
    index = rng.randrange(len(history))
    op = history[index]
    if op.kind == "read" or rng.random() < 0.3:
        others = {None, 1, *(other.value for other in history if other.kind != "read")} - {op.value}
        replacement = replace(op, value=rng.choice(sorted(others, key=repr)))
    elif op.kind == "cas":
        replacement = replace(op, outcome=FAIL if op.outcome is OK else OK, ret=op.call + 1)
    else:
        replacement = replace(op, outcome=FAIL, ret=op.call + 1)
    return [*history[:index], replacement, *history[index + 1 :]]


@pytest.mark.parametrize("value_domain", [3, None], ids=["repeated-values", "unique-values"])
def test_check_agrees_with_brute_force_on_random_small_histories(value_domain: int | None) -> None:
    verdicts = {"linearizable": 0, "violation": 0}
    for seed in range(300):
        rng = random.Random(seed)
        history = simulated_history(
            rng,
            rng.randint(1, 7),
            rng.randint(1, 3),
            keys=("k", "j") if seed % 5 == 0 else ("k",),
            value_domain=value_domain,
            unknown_rate=0.3,
            integer_times=True,
        )
        if seed % 2:
            history = mutated(rng, history)
        expected = "linearizable" if brute_force_linearizable(history) else "violation"
        result = check(history)
        assert result.verdict == expected, f"seed {seed}\n{history_to_jsonl(history)}{format_report(result)}"
        verdicts[result.verdict] += 1
    assert min(verdicts.values()) >= 60, verdicts


# --- budget and scale ----------------------------------------------------------------------------------------


def racing_writes_then_impossible_reads(writers: int) -> list[Op]:
    """Many fully concurrent writes, then reads in an order no linearisation allows: exponential to refute."""
    writes = [write(p, p, 0, 10) for p in range(writers)]
    return [*writes, read(0, 0, 11, 12), read(0, 1, 13, 14)]


def test_step_budget_gives_unknown_instead_of_hanging() -> None:
    result = check(racing_writes_then_impossible_reads(24), max_steps_per_key=20_000)
    assert result.verdict == "unknown"
    assert result.key == "k"
    assert result.steps == 20_000


def test_a_violation_on_one_key_outranks_an_undecided_key() -> None:
    undecided = racing_writes_then_impossible_reads(24)
    stale = [write(0, 1, 0, 1, key="b"), write(0, 2, 2, 3, key="b"), read(1, 1, 4, 5, key="b")]
    result = check([*undecided, *stale], max_steps_per_key=1000)
    assert result.verdict == "violation" and result.key == "b"


def test_the_same_shape_is_refuted_when_small() -> None:
    assert verdict(racing_writes_then_impossible_reads(6)) == "violation"


@pytest.mark.parametrize(
    ("processes", "unknown_rate", "keys"),
    [(5, 0.03, ("k",)), (10, 0.1, ("k",)), (20, 0.05, ("k",)), (10, 0.05, tuple("abcdefgh"))],
)
def test_large_valid_history_is_linearizable(
    processes: int, unknown_rate: float, keys: tuple[str, ...]
) -> None:
    history = simulated_history(
        random.Random(processes), 5000, processes, unknown_rate=unknown_rate, keys=keys
    )
    result = check(history)
    assert result.verdict == "linearizable", format_report(result)


def test_large_history_with_one_stale_read_is_a_violation() -> None:
    history = simulated_history(random.Random(8), 3000, 5, unknown_rate=0.03)
    writes = [op for op in history if op.kind == "write" and op.outcome is OK]
    overwritten = writes[len(writes) // 2]
    assert overwritten.ret is not None
    overwriting = next(op for op in writes if op.call > overwritten.ret)
    assert overwriting.ret is not None
    stale = read(99, overwritten.value, overwriting.ret + 0.0001, overwriting.ret + 0.0002)
    result = check([*history, stale])
    assert result.verdict == "violation"
    assert stale in result.ops
