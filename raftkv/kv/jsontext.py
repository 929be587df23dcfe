"""JSON text parsed so that the outcome depends on the bytes alone, and written back compactly.

``json.loads`` has two limits that belong to the process, not to the text: its recursion depth (the caller's
stack) and the interpreter's int-digits limit (``PYTHONINTMAXSTRDIGITS``). Replicas must accept and refuse the
same entries, so ``load_json`` checks both on the bytes first, against fixed limits.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, TypeAlias

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

MAX_INTEGER_DIGITS: Final = 640
"""Longest integer literal (digits, sign not counted) that JSON text here may hold.

CPython converts an integer to or from decimal text only within the int-digits limit, which each process sets
for itself (``PYTHONINTMAXSTRDIGITS``, ``sys.set_int_max_str_digits``). 640 is the least limit it accepts
(``sys.int_info.str_digits_check_threshold``; 0 means no limit), so every node parses such a literal and
writes it back whatever its setting, and every node refuses a longer one.
"""

_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS_TO_PARENS: Final = bytes.maketrans(b"[{]}", b"(())")
_ALL_BUT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_DIGITS_TO_ZEROS: Final = bytes(ord("0") if b in b"0123456789" else ord(" ") for b in range(256))
_TOO_MANY_DIGITS: Final = b"0" * (MAX_INTEGER_DIGITS + 1)


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (unbalanced text counts as too deep).

    Runs at C speed: the common case (few brackets) is two ``count`` calls; otherwise strings are cut out,
    brackets become parentheses, and each pass of ``replace`` peels off one level of nesting.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    parens = _JSON_STRING.sub(b"", data).translate(_BRACKETS_TO_PARENS, _ALL_BUT_BRACKETS)
    for _ in range(limit):
        if not parens:
            return False
        parens = parens.replace(b"()", b"")
    return bool(parens)


def _finite_float(text: str) -> float:
    """Parse a JSON number as a float, refusing ``1e999``: infinity is not JSON and could not be written back."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text}")
    return number


def _reject_constant(name: str) -> float:
    """Refuse the non-JSON literals ``NaN``, ``Infinity`` and ``-Infinity`` that ``json.loads`` accepts."""
    raise ValueError(f"not JSON: {name}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"integer literal longer than {MAX_INTEGER_DIGITS} digits")
    return int(text)


# Built once: ``json.loads`` with arguments builds a decoder per call, which costs more than a small command's
# parse. A decoder keeps no state between calls (``json.loads`` itself shares one among all threads).
_DECODER: Final = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
_DECODER_OF_BOUNDED_INTS: Final = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, parse_int=_bounded_int
)


def load_json(data: bytes, nesting_limit: int, errors: str) -> Any:
    """Parse strict JSON whose outcome depends only on ``data`` (raises ValueError).

    Only text with a run of more than ``MAX_INTEGER_DIGITS`` digits somewhere (perhaps inside a string) can
    hold a literal too long, so the common case pays one C-speed scan and the stdlib's own integer parsing.
    """
    if nesting_exceeds(data, nesting_limit):
        raise ValueError(f"nested deeper than {nesting_limit} levels, or unbalanced")
    long_digit_run = len(data) > MAX_INTEGER_DIGITS and _TOO_MANY_DIGITS in data.translate(_DIGITS_TO_ZEROS)
    decoder = _DECODER_OF_BOUNDED_INTS if long_digit_run else _DECODER
    return decoder.decode(data.decode("utf-8", errors))


def dump_json(value: object, errors: str) -> bytes:
    """Compact JSON as UTF-8 (``errors`` says what a lone surrogate does); raises ValueError, TypeError or
    RecursionError for what is not JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8", errors
    )


def same_json(a: JSONValue, b: JSONValue) -> bool:
    """JSON equality: object member order does not matter, but types do (Python says ``True == 1 == 1.0``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
