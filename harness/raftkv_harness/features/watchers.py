"""Watch streams on the feature keys that survive faults: a watcher reads ``GET /watch`` from one node and,
when the stream breaks or stalls, resumes on another node with ``Last-Event-ID``, until it has seen the fence
(a last write made after every other client stopped).

On a resume it asks again for the revision of the last event it received and drops what it had of that
revision: the events of one transaction share a revision, and a stream cut between them must not pass for a
gap. A 410, or ``event: compacted``, means the stream fell behind the node's history: the watcher records the
revisions it skips as a resync gap and goes on from the compact revision.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Sequence
from typing import Any

import httpx
import trio

from raftkv_harness.checks.events import ChangeEvent
from raftkv_harness.checks.watch_completeness import WatchRecord

PREFIX = "x/"
STALL_TIMEOUT = 2.0  # seconds without a line before the stream counts as stalled (a paused node)
RECONNECT_PAUSE = 0.1


class Fence:
    """The last write of a run: a watcher that has seen it has seen everything before it."""

    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value
        self.revision: int | None = None

    def is_it(self, event: ChangeEvent) -> bool:
        return event.key == self.key and event.value == self.value


class Watcher:
    def __init__(self, name: str, urls: Sequence[str], *, seed: int, fence: Fence, timeout: float) -> None:
        self.urls = list(urls)
        self.rng = random.Random(f"{seed}:{name}")
        self.fence = fence
        self.timeout = timeout
        self.record = WatchRecord(name, after=0, end=None)

    async def run(self) -> None:
        """Watch until the fence is seen (cancel to stop sooner: ``record.end`` stays None)."""
        async with httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(self.timeout, read=STALL_TIMEOUT)
        ) as client:
            while self.record.end is None:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    await self._stream(client)  # a broken, stalled or garbled stream: resume elsewhere
                if self.record.end is None:
                    self.record.reconnects += 1
                    await trio.sleep(RECONNECT_PAUSE)

    def resume_point(self) -> int:
        """The revision to watch after: the one before the last event's, whose events are dropped (unless a
        resync gap already starts at or after it)."""
        events = self.record.events
        skipped_to = max([self.record.after, *(high for _, high in self.record.resyncs)])
        if not events or events[-1].revision <= skipped_to:
            return max(skipped_to, events[-1].revision if events else 0)
        last = events[-1].revision
        while events and events[-1].revision == last:
            events.pop()
        return last - 1

    async def _stream(self, client: httpx.AsyncClient) -> None:
        after = self.resume_point()
        headers = {"Last-Event-ID": str(after)}
        url = f"{self.rng.choice(self.urls)}/watch"
        async with client.stream("GET", url, params={"prefix": PREFIX}, headers=headers) as response:
            if response.status_code == 410:
                self._resync(after, int(json.loads(await response.aread())["compact_revision"]))
                return
            if response.status_code != 200:
                return
            kind, data = "message", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data += line.partition(":")[2].strip()
                elif line == "" and data:
                    if self._take(kind, json.loads(data), after):
                        return
                    kind, data = "message", ""

    def _take(self, kind: str, data: dict[str, Any], after: int) -> bool:
        """Record one event; True when the stream is done with (the fence seen, or compacted)."""
        if kind == "compacted":
            self._resync(
                self.record.events[-1].revision if self.record.events else after,
                int(data["compact_revision"]),
            )
            return True
        event = ChangeEvent.from_json(data)
        self.record.events.append(event)
        if self.fence.is_it(event):
            self.record.end = event.revision
            return True
        return False

    def _resync(self, seen: int, compact_revision: int) -> None:
        self.record.resyncs.append((seen, compact_revision))
