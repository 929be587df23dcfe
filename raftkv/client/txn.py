"""``Txn``: a builder of the body of ``POST /txn`` (the spec's TxnRequest), and ``TxnOutcome``, its answer.

As in etcd: the comparisons all hold, or there are none, and the ``then`` operations run; otherwise the
``else`` ones do, all at one revision. A comparison is an equality, of a key's value or of its revision
(``mod_revision``; 0 means the key is absent)::

    Txn().if_value("k", 1).then_put("k", 2).else_get("k")
    Txn().if_absent("lock").then_put("lock", "me", lease=lease).else_get("lock")

Each method returns a new ``Txn``, so a prefix of a transaction can be kept and reused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

Op = dict[str, dict[str, object]]


@dataclass(frozen=True)
class Txn:
    compare: tuple[dict[str, object], ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()

    def if_value(self, key: str, value: object) -> Txn:
        """Holds when ``key`` holds ``value`` (an absent key holds none, not even null)."""
        return replace(self, compare=(*self.compare, {"key": key, "value": value}))

    def if_revision(self, key: str, revision: int) -> Txn:
        """Holds when ``key`` was last changed at ``revision`` (0: the key is absent)."""
        return replace(self, compare=(*self.compare, {"key": key, "revision": revision}))

    def if_absent(self, key: str) -> Txn:
        return self.if_revision(key, 0)

    def then_put(self, key: str, value: object, *, lease: int | None = None) -> Txn:
        return replace(self, success=(*self.success, put_op(key, value, lease)))

    def then_delete(self, key: str) -> Txn:
        return replace(self, success=(*self.success, {"delete": {"key": key}}))

    def then_get(self, key: str) -> Txn:
        return replace(self, success=(*self.success, {"get": {"key": key}}))

    def else_put(self, key: str, value: object, *, lease: int | None = None) -> Txn:
        return replace(self, failure=(*self.failure, put_op(key, value, lease)))

    def else_delete(self, key: str) -> Txn:
        return replace(self, failure=(*self.failure, {"delete": {"key": key}}))

    def else_get(self, key: str) -> Txn:
        return replace(self, failure=(*self.failure, {"get": {"key": key}}))

    def body(self) -> dict[str, object]:
        """The TxnRequest."""
        return {"compare": list(self.compare), "success": list(self.success), "failure": list(self.failure)}


def put_op(key: str, value: object, lease: int | None) -> Op:
    return {"put": {"key": key, "value": value} | ({} if lease is None else {"lease": lease})}


@dataclass(frozen=True)
class TxnOutcome:
    """The TxnResponse: which branch ran, its revision, and one result per operation of that branch (a get's
    has ``found`` and, when found, ``value`` and ``revision``)."""

    succeeded: bool
    revision: int
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, answer: dict[str, Any]) -> TxnOutcome:
        return cls(bool(answer["succeeded"]), int(answer["revision"]), list(answer["results"]))
