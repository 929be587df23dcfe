"""Short builders of ``Op`` for hand-made histories, shared by the checker's and the workload's tests."""

from __future__ import annotations

from typing import Any

from raftkv_harness.linearizability import Op, OpKind, Outcome

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def op(
    kind: OpKind,
    value: Any,
    call: float,
    ret: float | None,
    outcome: Outcome = OK,
    *,
    expected: Any = None,
    key: str = "k",
    process: int = 0,
) -> Op:
    return Op(
        process=process,
        kind=kind,
        key=key,
        value=value,
        expected=expected,
        call=call,
        ret=ret,
        outcome=outcome,
    )


def read(
    process: int, value: Any, call: float, ret: float | None, outcome: Outcome = OK, key: str = "k"
) -> Op:
    return op("read", value, call, ret, outcome, key=key, process=process)


def write(
    process: int, value: Any, call: float, ret: float | None, outcome: Outcome = OK, key: str = "k"
) -> Op:
    return op("write", value, call, ret, outcome, key=key, process=process)


def cas(
    process: int,
    expected: Any,
    new: Any,
    call: float,
    ret: float | None,
    outcome: Outcome = OK,
    key: str = "k",
) -> Op:
    return op("cas", new, call, ret, outcome, expected=expected, key=key, process=process)
