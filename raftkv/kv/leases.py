"""The granted leases and the keys on each.

Which lease a key is on is part of the key's state in the sorted table (so a snapshot capture shares it with
the keys); this registry holds the leases' ttls and an index from each lease to its keys, which a restore
rebuilds from the table. The index is a set of strings, whose order differs between processes: it is sorted
wherever its order could show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Leases:
    def __init__(self, ttls: dict[int, int] | None = None) -> None:
        """Leases ``ttls`` (id to ttl), with no keys yet."""
        self._ttls = dict(ttls or {})
        self._captured = False  # whether a capture holds ``_ttls``: the next change copies them first
        self._keys: dict[int, set[str]] = {lease: set() for lease in self._ttls}
        self.version = (
            0  # counts grants and revokes: a lease keeper looks again when it moves (not replicated)
        )

    def attach(self, attached: Iterable[tuple[str, int]]) -> None:
        """Record (key, lease) pairs of keys on no lease yet, the leases among those granted (restore's way in)."""
        keys = self._keys
        for key, lease in attached:
            keys[lease].add(key)

    def __contains__(self, lease: int) -> bool:
        return lease in self._ttls

    def __len__(self) -> int:
        return len(self._ttls)

    def grant(self, lease: int, ttl: int) -> None:
        """Add ``lease``, which must not exist, with no keys."""
        self._changing_ttls()[lease] = ttl
        self._keys[lease] = set()
        self.version += 1

    def revoke(self, lease: int) -> None:
        """Remove ``lease``, which must exist and have no keys left (the caller deleted them)."""
        del self._changing_ttls()[lease], self._keys[lease]
        self.version += 1

    def move(self, key: str, old: int | None, new: int | None) -> None:
        """Record that ``key`` left lease ``old`` for ``new`` (None: no lease; both must exist)."""
        if old == new:
            return
        if old is not None:
            self._keys[old].discard(key)
        if new is not None:
            self._keys[new].add(key)

    def lease(self, lease: int) -> tuple[int, list[str]] | None:
        """The ttl and the sorted keys of ``lease`` (None: not granted)."""
        ttl = self._ttls.get(lease)
        return None if ttl is None else (ttl, sorted(self._keys[lease]))

    def all(self) -> list[tuple[int, int]]:
        """Every lease as (id, ttl), by id."""
        return sorted(self._ttls.items())

    def ttls(self) -> Mapping[int, int]:
        """The ttls by lease id, for a snapshot capture: shared until the next grant or revoke, which copies
        them first, so that a capture costs nothing however many leases there are."""
        self._captured = True
        return self._ttls

    def _changing_ttls(self) -> dict[int, int]:
        if self._captured:
            self._ttls, self._captured = dict(self._ttls), False
        return self._ttls
