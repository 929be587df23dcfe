"""Bank transfers: clients move random amounts between accounts with one transaction each -- compare both
accounts' revisions as just read, then put both new balances -- and audit all accounts in one transaction of
gets now and then. The total must never change and no balance go negative (``checks.transfers``).

A transfer whose answer did not come is retried with its Idempotency-Key, so a retry of one that was applied
gets its first answer back instead of failing the comparison.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from raftkv_harness.checks.transfers import Audit
from raftkv_harness.features.retrying import send_until_answered

PREFIX = "x/acct/"
INITIAL_BALANCE = 100
AUDIT_SHARE = 0.2  # of a client's steps
GIVE_UP_AFTER = 20.0
SETUP_TIMEOUT = 60.0


@dataclass
class TransferCounts:
    committed: int = 0
    conflicted: int = 0  # a comparison failed: another transfer came first
    unanswered: int = 0
    retried: int = 0


class Transfers:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        clients: int,
        accounts: int,
        seed: int,
        timeout: float,
        now: Callable[[], float],
    ) -> None:
        self.urls = list(urls)
        self.clients = clients
        self.accounts = [f"{PREFIX}{i}" for i in range(accounts)]
        self.seed = seed
        self.timeout = timeout
        self.now = now  # the workload's clock: seconds since the run started
        self.total = INITIAL_BALANCE * accounts
        self.audits: list[Audit] = []
        self.counts = TransferCounts()

    async def open_accounts(self) -> None:
        """Every account with the initial balance, in one transaction (before any fault)."""
        body = {"success": [{"put": {"key": key, "value": INITIAL_BALANCE}} for key in self.accounts]}
        with trio.fail_after(SETUP_TIMEOUT):
            async with httpx.AsyncClient(trust_env=False) as client:
                answer = await self._txn(client, random.Random(self.seed), body, f"chaos-{self.seed}-open")
                if answer is None:
                    raise RuntimeError("could not open the accounts")

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(self.clients):
                nursery.start_soon(self._client, index, stop)

    async def final_audit(self) -> None:
        """One audit retried until it succeeds (after the faults are healed)."""
        rng = random.Random(f"{self.seed}:final-audit")
        with trio.fail_after(SETUP_TIMEOUT):
            async with httpx.AsyncClient(trust_env=False) as client:
                while not await self._audit(client, rng):
                    await trio.sleep(0.1)

    async def _client(self, index: int, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}:transfers{index}")
        async with httpx.AsyncClient(trust_env=False) as client:
            for serial in itertools.count():
                if stop.is_set():
                    return
                if rng.random() < AUDIT_SHARE:
                    await self._audit(client, rng)
                else:
                    await self._transfer(client, rng, f"chaos-{self.seed}-t{index}-{serial}")

    async def _audit(self, client: httpx.AsyncClient, rng: random.Random) -> bool:
        call = self.now()
        results = await self._read(client, rng, self.accounts)
        if results is None:
            return False
        revision, balances = results
        self.audits.append(Audit(call, revision, {key: value for key, (value, _) in balances.items()}))
        return True

    async def _transfer(self, client: httpx.AsyncClient, rng: random.Random, idempotency_key: str) -> None:
        source, target = rng.sample(self.accounts, 2)
        read = await self._read(client, rng, [source, target])
        if read is None:
            return
        balances = read[1]
        (have, source_revision), (other, target_revision) = balances[source], balances[target]
        if not isinstance(have, int) or not isinstance(other, int) or have <= 0:
            return
        amount = rng.randint(1, have)
        body = {
            "compare": [
                {"key": source, "revision": source_revision},
                {"key": target, "revision": target_revision},
            ],
            "success": [
                {"put": {"key": source, "value": have - amount}},
                {"put": {"key": target, "value": other + amount}},
            ],
        }
        answer = await self._txn(client, rng, body, idempotency_key)
        if answer is None:
            self.counts.unanswered += 1
        elif answer["succeeded"]:
            self.counts.committed += 1
        else:
            self.counts.conflicted += 1

    async def _read(
        self, client: httpx.AsyncClient, rng: random.Random, keys: Sequence[str]
    ) -> tuple[int, dict[str, tuple[Any, int]]] | None:
        """One attempt at reading ``keys`` in a transaction of gets: its revision and per key (value,
        revision), an absent key as (None, 0); None without a definite answer."""
        body = {"success": [{"get": {"key": key}} for key in keys]}
        answer = await self._txn(client, rng, body, None, give_up_after=self.timeout)
        if answer is None:
            return None
        results = {r["key"]: (r.get("value"), r.get("revision") or 0) for r in answer["results"]}
        return answer["revision"], results

    async def _txn(
        self,
        client: httpx.AsyncClient,
        rng: random.Random,
        body: dict[str, Any],
        idempotency_key: str | None,
        give_up_after: float = GIVE_UP_AFTER,
    ) -> dict[str, Any] | None:
        answer = await send_until_answered(
            client,
            self.urls,
            rng,
            "POST",
            "/txn",
            json=body,
            idempotency_key=idempotency_key,
            timeout=self.timeout,
            give_up_after=give_up_after,
        )
        if answer.attempts > 1 and idempotency_key is not None:
            self.counts.retried += 1
        if answer.status != 200:
            return None
        result: dict[str, Any] = answer.body()
        return result
