"""Transfers keep the total: money moved between accounts by compare-and-put transactions is never created,
lost or overdrawn, so every audit (a transaction that reads all accounts at one revision) sees the initial
total and no negative balance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Audit:
    time: float
    revision: int
    balances: Mapping[str, Any]  # account -> balance read (None: the account was absent)


def check_transfers(audits: Sequence[Audit], accounts: Sequence[str], total: int) -> list[str]:
    problems = []
    for audit in audits:
        where = f"audit at revision {audit.revision} ({audit.time:.1f} s)"
        read: list[Any] = [audit.balances.get(account) for account in accounts]
        if not all(isinstance(balance, int) for balance in read):
            problems.append(f"{where}: accounts missing or not integers: {dict(audit.balances)}")
            continue
        balances = [int(balance) for balance in read]
        if sum(balances) != total:
            problems.append(f"{where}: total {sum(balances)}, expected {total}: {dict(audit.balances)}")
        if any(balance < 0 for balance in balances):
            problems.append(f"{where}: a negative balance: {dict(audit.balances)}")
    return problems
