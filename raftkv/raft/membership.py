"""Cluster membership: who votes, who only listens, and how a configuration may change (chapter 4 of the thesis).

A ``Membership`` is the configuration a server acts on. It lives in the replicated log as entries of kind
``MEMBERSHIP`` (and in every snapshot, as of the snapshot's index), and a server uses the latest one in its log,
committed or not (thesis §4.1): a configuration takes effect the moment it is appended, and a server whose log is
truncated falls back to the configuration before it. The core therefore never waits for a change to be applied.

- ``voters`` elect leaders and make up the quorums that commit entries and confirm reads.
- ``outgoing`` is non-empty only in a joint configuration, C_old,new (§4.3): the voters of C_old, while
  ``voters`` are those of C_new. A quorum is then a majority of each, for elections and commitment alike.
- ``learners`` receive the log but neither vote nor count towards any quorum (§4.2.1, catching up new servers);
  those in ``promote`` become voters once they have caught up with the leader.
- ``addresses`` say where each member can be reached; the core carries them for the node and never reads them.

The rules for changing it live in ``check_change``; the core applies them before it appends a configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from raftkv.raft.types import NodeId


class MembershipError(ValueError):
    """A configuration that cannot exist, or a change that is not allowed now; the message says why."""


@dataclass(frozen=True, slots=True)
class Membership:
    voters: frozenset[NodeId] = frozenset()
    outgoing: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    promote: frozenset[NodeId] = frozenset()
    addresses: tuple[tuple[NodeId, str], ...] = ()  # sorted by id; see ``address``

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise MembershipError(
                f"{sorted(self.voters & self.learners)} cannot be voters and learners at once"
            )
        if not self.promote <= self.learners:
            raise MembershipError(
                f"only learners can wait for promotion, not {sorted(self.promote - self.learners)}"
            )
        if list(self.addresses) != sorted(dict(self.addresses).items()):
            raise MembershipError("addresses must be sorted by id, one per member")

    @classmethod
    def of(
        cls,
        voters: Iterable[NodeId],
        addresses: Mapping[NodeId, str] | None = None,
        *,
        learners: Iterable[NodeId] = (),
        promote: Iterable[NodeId] = (),
        outgoing: Iterable[NodeId] = (),
    ) -> Membership:
        return cls(
            frozenset(voters),
            frozenset(outgoing),
            frozenset(learners),
            frozenset(promote),
            tuple(sorted((addresses or {}).items())),
        )

    # --- who is what -------------------------------------------------------------------------------------

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    @property
    def members(self) -> frozenset[NodeId]:
        """Everyone the leader replicates to: voters old and new, and learners."""
        return self.voters | self.outgoing | self.learners

    def is_voter(self, node: NodeId) -> bool:
        """Votes in elections and counts in quorums (in either half of a joint configuration)."""
        return node in self.voters or node in self.outgoing

    def address(self, node: NodeId) -> str | None:
        return dict(self.addresses).get(node)

    # --- quorums ------------------------------------------------------------------------------------------

    def _halves(self) -> tuple[frozenset[NodeId], ...]:
        return (self.voters, self.outgoing) if self.joint else (self.voters,)

    def has_quorum(self, nodes: Iterable[NodeId]) -> bool:
        """Whether ``nodes`` hold a majority of the voters -- of both halves while joint (§4.3)."""
        present = set(nodes)
        return all(len(half & present) >= quorum_size(len(half)) for half in self._halves())

    def can_still_reach_quorum(self, rejected: Iterable[NodeId]) -> bool:
        """Whether a quorum may still form without ``rejected`` (an election is lost once it cannot)."""
        refused = set(rejected)
        return all(len(half - refused) >= quorum_size(len(half)) for half in self._halves())

    def committed_index(self, match: Mapping[NodeId, int]) -> int:
        """The highest index that a quorum has stored, ``match`` giving each voter's last stored index."""
        return min(_majority_index(half, match) for half in self._halves())

    # --- changes (each returns the configuration to propose; ``check_change`` says if it may follow) -------

    def with_learner(self, node: NodeId, address: str, *, promote: bool) -> Membership:
        """``node`` added as a learner, to be promoted once caught up if ``promote``."""
        return replace(
            self,
            learners=self.learners | {node},
            promote=self.promote | {node} if promote else self.promote,
            addresses=_sorted({**dict(self.addresses), node: address}),
        )

    def promoted(self, node: NodeId) -> Membership:
        """The learner ``node`` made a voter."""
        return replace(
            self, voters=self.voters | {node}, learners=self.learners - {node}, promote=self.promote - {node}
        )

    def without(self, node: NodeId) -> Membership:
        """``node`` removed, voter or learner."""
        return replace(
            self,
            voters=self.voters - {node},
            learners=self.learners - {node},
            promote=self.promote - {node},
            addresses=_sorted(_without(self.addresses, frozenset({node}))),
        )

    def replaced_by(self, voters: Mapping[NodeId, str], learners: Mapping[NodeId, str]) -> Membership:
        """Exactly these voters and learners: directly when at most one voter changes, else through the joint
        configuration whose old half is the current voters (the leader then leaves it by itself)."""
        addresses = {node: address for node, address in self.addresses if node in self.voters}
        target = Membership.of(voters, {**addresses, **voters, **learners}, learners=learners)
        if len(self.voters ^ target.voters) <= 1:
            return replace(target, addresses=_sorted({**voters, **learners}))
        return replace(target, outgoing=self.voters)

    def leave_joint(self) -> Membership:
        """C_new, once C_old,new is committed: the old voters that are not new voters leave (learners stay)."""
        gone = self.outgoing - self.voters - self.learners
        return replace(
            self, outgoing=frozenset(), addresses=tuple(sorted(_without(self.addresses, gone).items()))
        )

    # --- log form -----------------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The bytes of a MEMBERSHIP entry: canonical JSON, so every node encodes equal memberships alike."""
        return json.dumps(
            {
                "voters": sorted(self.voters),
                "outgoing": sorted(self.outgoing),
                "learners": sorted(self.learners),
                "promote": sorted(self.promote),
                "addresses": dict(self.addresses),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """The membership ``encode`` wrote; MembershipError for anything else."""
        try:
            fields: Any = json.loads(data)
            lists = {name: fields.pop(name) for name in ("voters", "outgoing", "learners", "promote")}
            addresses = fields.pop("addresses")
            if fields or not all(
                isinstance(v, list) and all(isinstance(i, str) for i in v) for v in lists.values()
            ):
                raise ValueError("unknown fields or ids that are not strings")
            if not isinstance(addresses, dict) or not all(isinstance(a, str) for a in addresses.values()):
                raise ValueError("addresses must map ids to strings")
            return cls.of(
                lists["voters"],
                addresses,
                learners=lists["learners"],
                promote=lists["promote"],
                outgoing=lists["outgoing"],
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise MembershipError(f"not a membership entry: {e}") from None


def quorum_size(voters: int) -> int:
    """A majority: any two of them share a server, which is what makes a Raft quorum (§5.2)."""
    return voters // 2 + 1


def _majority_index(voters: frozenset[NodeId], match: Mapping[NodeId, int]) -> int:
    """The highest index stored by a majority of ``voters``: the ``quorum_size``-th highest match."""
    indices = sorted((match.get(voter, 0) for voter in voters), reverse=True)
    return indices[quorum_size(len(voters)) - 1] if indices else 0


def _without(addresses: tuple[tuple[NodeId, str], ...], gone: frozenset[NodeId]) -> dict[NodeId, str]:
    return {node: address for node, address in addresses if node not in gone}


def _sorted(addresses: Mapping[NodeId, str]) -> tuple[tuple[NodeId, str], ...]:
    return tuple(sorted(addresses.items()))


def check_change(current: Membership, target: Membership) -> None:
    """Raise MembershipError unless ``target`` may directly follow ``current`` in the log (§4.2, §4.3):

    - a simple configuration changes the voters by one server at most (one added or one removed), so any
      majority of the old voters overlaps any majority of the new ones and no two leaders can be elected
      in one term from disjoint majorities; learners may come and go freely, as they never count;
    - several voters at once go through a joint configuration: ``target.outgoing`` must be exactly the
      current voters, and only a simple configuration can enter one;
    - a joint configuration is left only by ``leave_joint`` (to C_new, which overlaps C_old,new in C_new);
    - there is always at least one voter, and every member has an address.

    Whether a change may be *proposed now* (one at a time, and not before the leader committed an entry of
    its term) depends on the log, so the core checks that itself.
    """
    if not target.voters:
        raise MembershipError("a configuration needs at least one voter")
    unaddressed = target.members - {node for node, _ in target.addresses}
    if unaddressed:
        raise MembershipError(f"no address for {sorted(unaddressed)}")
    if current.joint:
        if target != current.leave_joint():
            raise MembershipError("a joint configuration can only be left for its new configuration")
        return
    if target.joint:
        if target.outgoing != current.voters:
            raise MembershipError("a joint configuration must start from the current voters")
        return
    changed = current.voters ^ target.voters
    if len(changed) > 1:
        raise MembershipError(
            f"{sorted(changed)} would change at once: one voter at a time, or all through joint consensus"
        )
