"""Linearizability checker for histories of a key-value store whose keys are registers.

Why: the chaos suite lets concurrent clients hammer a real cluster while it is being broken, and records when
each operation was called, when (or whether) it returned, and what it saw. The store is correct only if one
sequential order of those operations, consistent with real time, explains every answer. Keys are independent
registers, so each key is checked on its own (P-compositionality), by Wing & Gong's search with Lowe's
memoisation of (operations linearised, register value), the approach of Knossos and Porcupine.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal

OpKind = Literal["read", "write", "cas"]
Verdict = Literal["linearizable", "violation", "unknown"]

DEFAULT_MAX_STEPS_PER_KEY = 1_000_000


class Outcome(Enum):
    """What the client learned about an operation."""

    OK = "ok"
    """It took effect: a read returned ``value``, a cas found ``expected`` and wrote ``value``."""
    FAIL = "fail"
    """It definitely took no effect. For a cas this means its precondition failed (HTTP 412)."""
    UNKNOWN = "unknown"
    """Timeout, 5xx, reset: it may have taken effect at any time after its call, or never."""


@dataclass(frozen=True, kw_only=True)
class Op:
    """One client operation on one key, as recorded by the client that issued it.

    ``value`` is what a write or cas wrote, or what a read returned. None means the key is absent: a delete is a
    write of None, a cas that requires absence has ``expected=None`` (so JSON null cannot be told from absence).
    ``call`` and ``ret`` come from one clock shared by every process; ``ret`` is None when no answer came, and
    is ignored for an UNKNOWN operation, which may take effect at any time after its call.
    A FAIL cas says the value differed from ``expected`` at some instant of its interval, so record only 412s as
    FAIL; leave out operations refused for reasons that say nothing about the register (400).
    """

    process: int
    kind: OpKind
    key: str
    value: Any = None
    expected: Any = None
    call: float
    ret: float | None
    outcome: Outcome

    def __post_init__(self) -> None:
        if self.kind not in ("read", "write", "cas"):
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if not math.isfinite(self.call):
            raise ValueError(f"call time must be finite, not {self.call}")
        if self.ret is None and self.outcome is not Outcome.UNKNOWN:
            raise ValueError(f"an operation with outcome {self.outcome.value} must have a return time")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"returned at {self.ret}, before its call at {self.call}")


@dataclass
class CheckResult:
    """The verdict on a history.

    For a violation: the key, and the operations involved (the one that could not be linearized, those concurrent
    with it, and the writes and read that fixed the value it met). For "unknown": the key whose search ran out.
    ``steps`` counts the search's attempted transitions, summed over the keys checked.
    """

    verdict: Verdict
    key: str | None
    ops: list[Op]
    steps: int
    explanation: str


def check(history: Sequence[Op], *, max_steps_per_key: int = DEFAULT_MAX_STEPS_PER_KEY) -> CheckResult:
    """Decide whether ``history`` is linearizable, one key at a time.

    The first key found in violation decides the verdict. A key whose search exceeds ``max_steps_per_key``
    makes the verdict "unknown" unless another key is in violation.
    """
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    total_steps = 0
    undecided: CheckResult | None = None
    for key, ops in by_key.items():
        result = _check_key(key, ops, max_steps_per_key)
        total_steps += result.steps
        if result.verdict == "violation":
            return replace(result, steps=total_steps)
        if result.verdict == "unknown" and undecided is None:
            undecided = result
    if undecided is not None:
        return replace(undecided, steps=total_steps)
    return CheckResult(
        "linearizable",
        None,
        [],
        total_steps,
        f"{len(history)} operations on {len(by_key)} keys: linearizable",
    )


def format_report(result: CheckResult) -> str:
    """A readable account of a verdict: the explanation, then the operations involved, by call time."""
    where = f" on key {result.key!r}" if result.key is not None else ""
    lines = [f"{result.verdict}{where} ({result.steps} search steps)", result.explanation]
    if result.ops:
        lines.append(f"{'call':>14} {'return':>14}  process  operation")
        lines.extend(_format_op_row(op) for op in sorted(result.ops, key=lambda op: op.call))
    return "\n".join(lines)


def history_to_jsonl(history: Iterable[Op]) -> str:
    """One JSON object per line, so a chaos run can save its history and have it re-checked later."""
    return "".join(json.dumps(_op_to_json(op)) + "\n" for op in history)


def history_from_jsonl(text: str) -> list[Op]:
    """The inverse of :func:`history_to_jsonl`; blank lines are ignored."""
    return [_op_from_json(json.loads(line)) for line in text.splitlines() if line.strip()]


def _op_to_json(op: Op) -> dict[str, Any]:
    return {
        "process": op.process,
        "kind": op.kind,
        "key": op.key,
        "value": op.value,
        "expected": op.expected,
        "call": op.call,
        "ret": op.ret,
        "outcome": op.outcome.value,
    }


def _op_from_json(fields: dict[str, Any]) -> Op:
    return Op(
        process=int(fields["process"]),
        kind=fields["kind"],
        key=str(fields["key"]),
        value=fields.get("value"),
        expected=fields.get("expected"),
        call=float(fields["call"]),
        ret=None if fields.get("ret") is None else float(fields["ret"]),
        outcome=Outcome(fields["outcome"]),
    )


def _show(value: Any) -> str:
    return "absent" if value is None else json.dumps(value, sort_keys=True)


def _describe_action(op: Op) -> str:
    if op.kind == "read":
        return f"read -> {_show(op.value)}"
    if op.kind == "write":
        return f"write({_show(op.value)})"
    return f"cas({_show(op.expected)} -> {_show(op.value)})"


def _describe(op: Op) -> str:
    ret = "never returned" if op.ret is None else f"{op.ret:.6f}"
    return f"process {op.process} {_describe_action(op)} {op.outcome.value} [{op.call:.6f}, {ret}]"


def _format_op_row(op: Op) -> str:
    ret = "-" if op.ret is None else f"{op.ret:.6f}"
    return f"{op.call:>14.6f} {ret:>14}  {op.process:>7}  {_describe_action(op)} {op.outcome.value}"


# The register's states are interned values; these are the transitions the search knows.
_ABSENT = -1
_ILLEGAL = -2
_UNSEEN = -3
_READ, _WRITE, _CAS, _DIFFERS = range(4)


class _ValueTable:
    """Interns JSON values as small ints, so register states hash and compare cheaply and exactly."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def intern(self, value: Any) -> int:
        if value is None:
            return _ABSENT
        return self._ids.setdefault(json.dumps(value, sort_keys=True, separators=(",", ":")), len(self._ids))


@dataclass(frozen=True, slots=True)
class _Step:
    """An operation as the search sees it: a transition of the register and the interval it happened in."""

    op: Op
    transition: int
    expected: int
    value: int
    call: float
    ret: float  # math.inf when the operation may or may not have happened

    @property
    def optional(self) -> bool:
        return self.ret == math.inf

    def apply(self, state: int) -> int:
        """The register after this operation from ``state``, or _ILLEGAL if it cannot happen there."""
        if self.transition == _READ:
            return state if state == self.value else _ILLEGAL
        if self.transition == _WRITE:
            return self.value
        if self.transition == _CAS:
            return self.value if state == self.expected else _ILLEGAL
        return state if state != self.expected else _ILLEGAL


def _to_step(op: Op, values: _ValueTable) -> _Step | None:
    """How an operation constrains the search, or None if it tells nothing (a failed write, an unknown read)."""
    ret = math.inf if op.outcome is Outcome.UNKNOWN or op.ret is None else op.ret
    if op.kind == "read":
        if op.outcome is not Outcome.OK:
            return None
        return _Step(op, _READ, _ABSENT, values.intern(op.value), op.call, ret)
    if op.kind == "write":
        if op.outcome is Outcome.FAIL:
            return None
        return _Step(op, _WRITE, _ABSENT, values.intern(op.value), op.call, ret)
    transition = _DIFFERS if op.outcome is Outcome.FAIL else _CAS
    return _Step(op, transition, values.intern(op.expected), values.intern(op.value), op.call, ret)


def _values_compared(steps: Sequence[_Step], transitions: tuple[int, ...]) -> set[int]:
    """The values that operations of these kinds compare the register against."""
    return {s.value if s.transition == _READ else s.expected for s in steps if s.transition in transitions}


def _relied_on(steps: Sequence[_Step]) -> set[int]:
    """The values some operation relies on finding: a read's result, a cas's expected value, the initial one."""
    return {_ABSENT} | _values_compared(steps, (_READ, _CAS))


def _simplify(steps: list[_Step]) -> list[_Step]:
    """Shrink the search without changing its answer.

    Values that no operation compares against all behave alike: reads and successful cas fail on them, failed
    cas succeed. They become one state, _UNSEEN. An unknown operation that writes a value nothing relies on is
    left out altogether when no failed cas ended after its call: in any linearisation that includes it, only
    writes can follow it before the value changes, so the same linearisation without it works as well.
    """
    relied_on = _relied_on(steps)
    compared = relied_on | _values_compared(steps, (_DIFFERS,))
    last_differs_ret = max((s.ret for s in steps if s.transition == _DIFFERS), default=-math.inf)
    kept = [s for s in steps if not (s.optional and s.value not in relied_on and s.call > last_differs_ret)]
    return [s if s.value in compared else replace(s, value=_UNSEEN) for s in kept]


def _check_key(key: str, ops: Sequence[Op], max_steps: int) -> CheckResult:
    values = _ValueTable()
    steps = _simplify([s for op in ops if (s := _to_step(op, values)) is not None])
    steps.sort(key=lambda s: s.call)  # so the bits of a linearised set fill from the bottom: short memo keys
    unsourced = _first_unsourced(steps)
    if unsourced is not None:
        return _unsourced_violation(key, unsourced, steps)
    outcome = _Search(steps).run(max_steps)
    if outcome.verdict == "linearizable":
        return CheckResult("linearizable", None, [], outcome.attempts, f"key {key!r}: linearizable")
    if outcome.verdict == "unknown" or outcome.deepest is None:
        explanation = (
            f"key {key!r}: undecided after {outcome.attempts} search steps "
            "(raise max_steps_per_key, or record a history with fewer concurrent operations)"
        )
        return CheckResult("unknown", key, [], outcome.attempts, explanation)
    return _search_violation(key, steps, outcome.deepest, outcome.attempts)


def _first_unsourced(steps: Sequence[_Step]) -> _Step | None:
    """The first operation that must have seen a value nothing could have written before it returned.

    A cheap necessary condition, checked before the search so that a value out of nowhere is reported plainly.
    """
    earliest_write: dict[int, float] = {}
    for s in steps:
        if s.transition in (_WRITE, _CAS):
            earliest_write[s.value] = min(earliest_write.get(s.value, math.inf), s.call)
    for s in steps:
        if s.transition not in (_READ, _CAS) or s.optional:
            continue
        needed = s.value if s.transition == _READ else s.expected
        if needed != _ABSENT and earliest_write.get(needed, math.inf) > s.ret:
            return s
    return None


def _unsourced_violation(key: str, culprit: _Step, steps: Sequence[_Step]) -> CheckResult:
    needed = culprit.value if culprit.transition == _READ else culprit.expected
    writers = [s.op for s in steps if s.transition in (_WRITE, _CAS) and s.value == needed][:1]
    seen = culprit.op.value if culprit.transition == _READ else culprit.op.expected
    later = f"; it was first written by {_describe(writers[0])}" if writers else "; nothing ever wrote it"
    explanation = (
        f"key {key!r}: {_describe(culprit.op)} saw {_show(seen)}, "
        f"which no operation called before it returned could have written{later}"
    )
    return CheckResult("violation", key, [culprit.op, *writers], 0, explanation)


@dataclass(frozen=True, slots=True)
class _Deepest:
    """The furthest the search got before backtracking: the context that explains a violation."""

    depth: int
    blocked: int
    last_writer: int | None
    last_reader: int | None
    rivals: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _SearchOutcome:
    verdict: Verdict
    attempts: int
    deepest: _Deepest | None


class _EventList:
    """The call and return events of the required operations not yet linearised, in time order (Lowe's list).

    A call sorts before a return at the same instant, so operations whose intervals merely touch are concurrent.
    Lifting an operation unlinks both of its events; unlifting, in reverse order, puts them back.
    """

    def __init__(self, steps: Sequence[_Step], required: Sequence[int]) -> None:
        events = sorted([(steps[i].call, 0, i) for i in required] + [(steps[i].ret, 1, i) for i in required])
        self.head = len(events)
        self.tail = len(events) + 1
        self.step_of = [i for _, _, i in events]
        self.time_of = [time for time, _, _ in events]
        self.is_call = [is_return == 0 for _, is_return, _ in events] + [False, False]
        self.next = [0] * (len(events) + 2)
        self.prev = [0] * (len(events) + 2)
        for before, after in itertools.pairwise([self.head, *range(len(events)), self.tail]):
            self.next[before] = after
            self.prev[after] = before
        self._call_event = [0] * len(steps)
        self._return_event = [0] * len(steps)
        for event, (_, is_return, i) in enumerate(events):
            (self._return_event if is_return else self._call_event)[i] = event

    def empty(self) -> bool:
        return self.next[self.head] == self.tail

    def lift(self, step: int) -> None:
        for event in (self._call_event[step], self._return_event[step]):
            self.next[self.prev[event]] = self.next[event]
            self.prev[self.next[event]] = self.prev[event]

    def unlift(self, step: int) -> None:
        for event in (self._return_event[step], self._call_event[step]):
            self.next[self.prev[event]] = event
            self.prev[self.next[event]] = event

    def window(self) -> tuple[list[int], int]:
        """The operations called before the first pending return, and that return event (never the tail)."""
        event = self.next[self.head]
        called = []
        while self.is_call[event]:
            called.append(self.step_of[event])
            event = self.next[event]
        return called, event


class _UnknownPool:
    """The unknown operations not yet linearised, grouped so that a level finds at once those worth trying.

    An unknown operation that writes a value nothing relies on can only help a failed cas that the current value
    blocks, so it is offered only then (had it happened earlier, it could as well have happened just before that
    cas). Those that write an unseen value are interchangeable: only the first is offered. Each group is in call
    order, so a scan stops at the first operation called after the horizon (the first pending return).
    """

    def __init__(self, steps: Sequence[_Step], optional: Sequence[int]) -> None:
        self.done = [False] * len(steps)
        self._calls = [s.call for s in steps]
        relied_on = _relied_on(steps)
        writes = [i for i in optional if steps[i].transition == _WRITE]
        self._unseen_writes = [i for i in writes if steps[i].value == _UNSEEN]
        self._useful_writes = [i for i in writes if steps[i].value in relied_on]
        seen_elsewhere = relied_on | {_UNSEEN}
        self._unblocking_writes = [i for i in writes if steps[i].value not in seen_elsewhere]
        self._cas_by_expected: dict[tuple[int, bool], list[int]] = {}
        for i in optional:
            if steps[i].transition == _CAS:
                group = (steps[i].expected, steps[i].value in relied_on)
                self._cas_by_expected.setdefault(group, []).append(i)

    def choices(self, state: int, horizon: float, after_optional: bool, cas_blocked: bool) -> Iterator[int]:
        """The unknown operations worth trying from ``state``; no write straight after another unknown one."""
        if not after_optional:
            yield from self._pending(self._useful_writes, horizon)
        if cas_blocked and not after_optional:
            first_unseen = next((i for i in self._unseen_writes if not self.done[i]), None)
            if first_unseen is not None and self._calls[first_unseen] <= horizon:
                yield first_unseen
            yield from self._pending(self._unblocking_writes, horizon)
        yield from self._pending(self._cas_by_expected.get((state, True), []), horizon)
        if cas_blocked:
            yield from self._pending(self._cas_by_expected.get((state, False), []), horizon)

    def _pending(self, group: list[int], horizon: float) -> Iterator[int]:
        for i in group:
            if self._calls[i] > horizon:
                return
            if not self.done[i]:
                yield i


class _Memo:
    """Lowe's memo of the configurations explored, extended to dominance over unknown operations.

    A configuration is the required operations linearised, the unknown ones linearised, and the register value.
    One that repeats an explored configuration with extra unknown operations linearised cannot succeed where that
    one failed: those operations could have been left out, or used later.
    """

    def __init__(self) -> None:
        self._optional_sets: dict[tuple[int, int, int], list[int]] = {}

    def visit(self, required: int, optional: int, state: int) -> bool:
        """Record a configuration; False if it adds nothing to one already explored."""
        done_prefix = (~required & (required + 1)).bit_length() - 1  # stored as a count, so keys stay small
        explored = self._optional_sets.setdefault((done_prefix, required >> done_prefix, state), [])
        if any(earlier & ~optional == 0 for earlier in explored):
            return False
        explored.append(optional)
        return True


class _Search:
    """Wing & Gong's depth-first search for a linearisation of one key, pruned by Lowe's memo.

    Each level offers the required operations called before the first pending return, then the unknown
    operations that could apply; a level is a suspended generator, resumed when its child backtracks. The search
    succeeds when every required operation is linearised: unknown operations may stay out. Two choices are
    skipped because another choice does at least as well: a write straight after an unknown operation (leaving
    that operation out reaches the same state with more to spare), and everything else at a level where a read
    or a failed cas fits the current value (taking it first changes nothing for the others).
    """

    def __init__(self, steps: Sequence[_Step]) -> None:
        self.steps = steps
        required = [i for i, s in enumerate(steps) if not s.optional]
        optional = [i for i, s in enumerate(steps) if s.optional]
        self.events = _EventList(steps, required)
        self.pool = _UnknownPool(steps, optional)
        self.bit = [0] * len(steps)
        for group in (required, optional):
            for slot, i in enumerate(group):
                self.bit[i] = 1 << slot

    def choices(self, state: int, after_optional: bool) -> Iterator[int]:
        """What to try next. The candidates are fixed for a level: its children put everything back."""
        called, first_return = self.events.window()
        for index in called:
            step = self.steps[index]
            if step.transition in (_READ, _DIFFERS) and step.apply(state) != _ILLEGAL:
                yield index  # it leaves the value as it is, so taking it at once loses nothing
                return
        for index in called:
            if not (after_optional and self.steps[index].transition == _WRITE):
                yield index
        cas_blocked = any(self.steps[index].transition == _DIFFERS for index in called)
        yield from self.pool.choices(state, self.events.time_of[first_return], after_optional, cas_blocked)

    def run(self, max_attempts: int) -> _SearchOutcome:
        steps, events, pool, bit = self.steps, self.events, self.pool, self.bit
        memo = _Memo()
        state = _ABSENT
        required_done = optional_done = 0
        last_writer: int | None = None
        after_optional = False
        path: list[tuple[int, int, int | None, bool, Iterator[int]]] = []
        deepest: _Deepest | None = None
        attempts = 0
        if events.empty():
            return _SearchOutcome("linearizable", attempts, deepest)
        level = self.choices(state, after_optional)
        while True:
            index = next(level, None)
            if index is None:
                if deepest is None or len(path) > deepest.depth:
                    called, first_return = events.window()
                    blocked = events.step_of[first_return]
                    rivals = tuple(i for i in called if i != blocked)
                    last = path[-1][0] if path else None
                    last_reader = last if last is not None and steps[last].transition == _READ else None
                    deepest = _Deepest(len(path), blocked, last_writer, last_reader, rivals)
                if not path:
                    return _SearchOutcome("violation", attempts, deepest)
                index, state, last_writer, after_optional, level = path.pop()
                if steps[index].optional:
                    optional_done ^= bit[index]
                    pool.done[index] = False
                else:
                    required_done ^= bit[index]
                    events.unlift(index)
                continue
            step = steps[index]
            new_state = step.apply(state)
            if new_state == _ILLEGAL:
                continue
            if attempts == max_attempts:
                return _SearchOutcome("unknown", attempts, deepest)
            attempts += 1
            required_next = required_done if step.optional else required_done | bit[index]
            optional_next = optional_done | bit[index] if step.optional else optional_done
            if not memo.visit(required_next, optional_next, new_state):
                continue
            path.append((index, state, last_writer, after_optional, level))
            required_done, optional_done = required_next, optional_next
            if step.optional:
                pool.done[index] = True
            else:
                events.lift(index)
                if events.empty():
                    return _SearchOutcome("linearizable", attempts, deepest)
            state = new_state
            if step.transition in (_WRITE, _CAS):
                last_writer = index
            after_optional = step.optional
            level = self.choices(state, after_optional)


def _search_violation(key: str, steps: Sequence[_Step], deepest: _Deepest, attempts: int) -> CheckResult:
    blocked = steps[deepest.blocked]
    rivals = [steps[i].op for i in deepest.rivals]
    writer = None if deepest.last_writer is None else steps[deepest.last_writer].op
    reader = None if deepest.last_reader is None else steps[deepest.last_reader].op
    state = "absent" if writer is None else f"{_show(writer.value)}, written by {_describe(writer)}"
    if reader:
        state += f" and then read by {_describe(reader)}"
    around = (
        f"no order of the {len(rivals)} operations concurrent with it helps"
        if rivals
        else "nothing concurrent with it could change that"
    )
    explanation = (
        f"key {key!r}: {_describe(blocked.op)} cannot be linearized. The longest linearizable prefix found "
        f"({deepest.depth} operations) leaves the value {state}; {around}."
    )
    evidence = _last_source_and_overwrite(blocked, steps)
    if evidence:
        source, *overwrite = evidence
        explanation += f" The value it needs was last written by {_describe(source)}"
        explanation += f", then {_describe(overwrite[0])} came in between." if overwrite else "."
    involved = [blocked.op, *rivals, *[op for op in (writer, reader) if op], *evidence]
    return CheckResult(
        "violation", key, list({id(op): op for op in involved}.values()), attempts, explanation
    )


def _last_source_and_overwrite(blocked: _Step, steps: Sequence[_Step]) -> list[Op]:
    """For an operation that needed a value: the last write of it, and a write wholly between that one and it."""
    if blocked.transition not in (_READ, _CAS):
        return []
    needed = blocked.value if blocked.transition == _READ else blocked.expected
    sources = [
        s for s in steps if s.transition in (_WRITE, _CAS) and s.value == needed and s.call <= blocked.ret
    ]
    if not sources:
        return []
    source = max(sources, key=lambda s: s.call)
    between = [
        s
        for s in steps
        if s.transition in (_WRITE, _CAS) and not s.optional and s.call > source.ret and s.ret < blocked.call
    ]
    if not between:
        return [source.op]
    return [source.op, max(between, key=lambda s: s.ret).op]
