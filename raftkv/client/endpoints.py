"""Which member to send the next request to: the one that answered last, while it keeps answering; one that
stops is set aside for a while (as etcd's client balancer does), and the members are learned from the
cluster itself, so a client given one URL finds the rest."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

SET_ASIDE = 5.0  # seconds a member that did not answer is tried only when no other is left


class Endpoints:
    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        if not self.urls:
            raise ValueError("a client needs at least one URL")
        self._aside: dict[str, float] = {}  # url -> until when it is set aside
        self.discovered = False

    def pick(self) -> str:
        """The first member not set aside (the one that answered last comes first); if every one is, the
        one whose time runs out soonest."""
        now = time.monotonic()
        for url in self.urls:
            if self._aside.get(url, 0.0) <= now:
                return url
        return min(self.urls, key=lambda url: self._aside[url])

    def answered(self, url: str) -> None:
        self._aside.pop(url, None)
        if self.urls[0] != url:
            self.urls.remove(url)
            self.urls.insert(0, url)

    def set_aside(self, url: str) -> None:
        self._aside[url] = time.monotonic() + SET_ASIDE

    def learn(self, status: dict[str, Any]) -> None:
        """Add the members a ``/status`` or ``/cluster/members`` answer names (the leader first)."""
        self.discovered = True
        leader = status.get("leader") or {}
        named = [leader.get("url"), *(member.get("url") for member in status.get("members", []))]
        for url in named:
            if url and url.rstrip("/") not in self.urls:
                self.urls.append(url.rstrip("/"))
