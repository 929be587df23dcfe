"""The Raft consensus algorithm as a sans-IO state machine (Figure 2 of the Raft paper, plus §6 and §9.6).

``Raft`` is fed ``tick()``, ``step(message)``, ``propose(data)`` and ``read_index(ctx)``; it never sleeps, reads a
clock, does I/O or draws randomness it was not given. Its effects accumulate until the driver calls ``ready()``,
which returns them as one ``Ready`` batch (see its docstring for the order in which to carry them out). Calls that
arrive between two ``ready()`` calls share one batch: that is how many proposals share one fsync and one
AppendEntries round (group commit).

Beyond the paper's Figure 2 this implements: pre-vote and check-quorum (§9.6), the leader's no-op on election,
the conflict hint for fast log backtracking (§5.3), pipelined replication with a bounded window per follower,
ReadIndex for linearizable reads (§6.4), snapshots (§7), leadership transfer (§3.10 of the thesis) and
membership changes (chapter 4: learners, single-server changes and joint consensus).

Membership: configurations are log entries and take effect when *appended*, not when committed (thesis §4.1),
so every decision -- who may campaign, whose votes count, what a quorum is, who is replicated to -- uses the
latest configuration in this server's log (``self.membership``); a truncated configuration stops counting
with the entry. That choice keeps the safety argument the thesis's own, and needs only these rules (§4.2):

- one change at a time: no configuration is appended while an earlier one is uncommitted, and a change of
  voters is one server at a time unless it goes through a joint configuration (``check_change``);
- no change before the leader has committed an entry of its own term (Ongaro's fix of 2015): an uncommitted
  configuration of an earlier leader may still be in force on some servers, and must be settled first;
- while joint (C_old,new), elections and commitment need a majority of C_old *and* of C_new; the leader
  appends C_new on its own once C_old,new is committed;
- a leader that is not a voter in its configuration replicates and commits without counting itself, and once
  that configuration is committed it hands leadership to a voter and steps down (§4.2.2);
- a server that is a voter neither in its latest configuration nor in its committed one (a learner, or one
  whose removal is committed) never campaigns; removed servers that do not know it yet are kept from
  disrupting the cluster by the leader lease of check-quorum (§4.2.3).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum

from raftkv.raft.log import RaftLog
from raftkv.raft.membership import Membership, MembershipError, check_change
from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    NodeId,
    PersistentState,
    ReadIndexReply,
    ReadIndexRequest,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteReply,
    Role,
    Snapshot,
    TimeoutNow,
)


@dataclass(frozen=True, slots=True)
class Config:
    """Static settings of one node. Times are in ticks; the driver decides how long a tick is. Who the other
    members are is not a setting: it is the configuration in the log (see ``bootstrap``)."""

    id: NodeId
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_batch_entries: int = 512
    max_batch_bytes: int = 1 << 20
    max_inflight: int = 8
    pre_vote: bool = True
    check_quorum: bool = True

    @property
    def lease_ticks(self) -> int:
        """How long after a heartbeat is sent the leader may count on it for lease reads: the election
        timeout, less the clock-drift margin (``MAX_CLOCK_DRIFT``) and one tick for the rounding."""
        return int(self.election_ticks * (1 - MAX_CLOCK_DRIFT)) - 1

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")


def bootstrap(membership: Membership) -> PersistentState:
    """The persistent state of a member of a new cluster: an empty log whose first configuration is
    ``membership`` (a snapshot at index 0, which holds no state). Every founding member starts from the same
    voters; a server that joins later starts from nothing and learns the configuration from the leader."""
    return PersistentState(snapshot=Snapshot(0, 0, membership))


MAX_CLOCK_DRIFT = 0.1
"""Lease reads are safe while no two servers' clocks run more than this fraction apart over an election
timeout (a follower that heard from the leader ignores candidates for one election timeout of *its* clock;
the leader stops trusting that after the same span of *its* clock, shortened by this much)."""


@dataclass(frozen=True, slots=True)
class _RemoteRead:
    """A read a follower asked for: answered with a ReadIndexReply rather than a ReadState."""

    follower: NodeId
    seq: int


class MembershipChangeRefused(Exception):
    """A configuration change that cannot be made now (or ever); the message says why."""


class NotLeader(Exception):
    """Raised by calls only a leader can serve; ``leader`` is the leader this node knows of, if any."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class ProgressState(Enum):
    PROBE = "probe"  # one AppendEntries at a time until the follower's match is found
    REPLICATE = "replicate"  # optimistic pipelining, up to max_inflight batches in flight
    SNAPSHOT = "snapshot"  # waiting for an InstallSnapshot to be acknowledged


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower (§5.3 nextIndex/matchIndex plus flow control)."""

    next: int
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    paused: bool = False  # probe/snapshot: a message is out, wait for its answer or the next heartbeat
    inflight: deque[int] = field(default_factory=deque)  # last index of each batch in flight
    recent_active: bool = False
    acked_seq: int = 0
    match_at_heartbeat: int = -1  # match at the previous heartbeat, to spot a follower that stalled
    stalled_heartbeats: int = 0
    sent_commit: int = 0  # the highest commit index sent to it (as far as its log is known to go)

    def become_probe(self, next_index: int) -> None:
        self.state, self.next, self.paused = ProgressState.PROBE, max(next_index, self.match + 1), False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state, self.next, self.paused = ProgressState.REPLICATE, self.match + 1, False
        self.inflight.clear()


@dataclass(slots=True)
class _PendingRead:
    ctx: object
    index: int | None  # None: the read failed (leadership was lost before it was confirmed)


@dataclass(slots=True)
class _ReadRequest:
    """The reads a follower has asked the leader about, in one ReadIndexRequest."""

    seq: int
    ctxs: list[object]
    age: int = 0  # ticks since it was sent


class Raft:
    """One Raft participant. Not thread-safe: the driver serialises every call."""

    def __init__(self, config: Config, state: PersistentState, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self.rng = rng
        hs = state.hard_state
        self.term, self.vote = hs.term, hs.vote
        self.log = RaftLog(state.snapshot, state.entries, hs.commit)
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.transfer_target: NodeId | None = None
        self.seq = 0  # numbers each heartbeat round; followers echo it (ReadIndex rounds and the lease)
        self.ticks = 0  # ticks since start: the leader's clock for the lease
        # A restarted server may have acknowledged a leader just before it went down: it must not help elect
        # another until that leader's lease is surely over. A fresh one (term 0) acknowledged nobody.
        self.quiet_ticks = config.election_ticks if config.check_quorum and hs.term > 0 else 0
        self.sent_at: dict[int, int] = {}  # seq -> the tick its heartbeat round went out (recent ones)
        self.round_seq = 0  # the first heartbeat round that confirms the reads in pending_reads
        self.pending_reads: list[_PendingRead] = []  # the reads of the confirmation round in flight
        self.next_reads: list[object] = []  # arrived while a round was in flight: they join the next one
        self.waiting_reads: list[object] = []  # arrived before this leader committed an entry of its term
        self.read_round_requested = False
        self.replicate_requested = False
        # Numbers this follower's ReadIndexRequests, from a base drawn anew at each start: a late answer to a
        # request of an earlier incarnation must not pass for one to a request of this one.
        self.read_requests = rng.getrandbits(48) << 16
        self.asked: _ReadRequest | None = None  # a follower's request in flight to the leader
        self.to_ask: list[object] = []  # reads that arrived meanwhile: they go in the next request
        self._messages: list[AnyMessage] = []
        self._read_states: list[ReadState] = []
        self._persisted_hs = hs
        # The end of the log as last handed to the driver in a Ready, and as it has since reported durable
        # (``persisted``): a leader counts its own log towards commit only as far as the second goes.
        self._handed_out = self._durable = self.log.last_index
        self._reset_election_timer()

    # --- public API ------------------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The configuration this server acts on: the latest in its log (thesis §4.1)."""
        return self.log.membership

    @property
    def peers(self) -> tuple[NodeId, ...]:
        """Every other member, voter or learner: whom a leader replicates to."""
        return tuple(sorted(self.membership.members - {self.id}))

    @property
    def promotable(self) -> bool:
        """Whether this server may campaign: a voter of its latest configuration, or of the configuration
        committed in its log. The second clause is for a leader that removed itself and lost its leadership
        (a crash, or check-quorum) before that removal committed: the servers left may still need its vote or
        its longer log to elect anyone, so it must be able to win, commit the change and hand over. Who may
        campaign never affects safety -- votes are always counted against the latest configuration."""
        return self.membership.is_voter(self.id) or self.log.membership_at(self.log.committed).is_voter(
            self.id
        )

    @property
    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def tick(self) -> None:
        """Advance logical time by one tick: elections for followers, heartbeats and check-quorum for leaders."""
        self.ticks += 1
        if self.asked is not None:
            self.asked.age += 1
            if self.asked.age >= self.config.election_ticks:  # lost, or the leader is gone: give up on it
                self._answer_asked(self.asked.seq, None)
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self.promotable:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout:
                self._start_election(transfer=False)
        else:
            self.election_elapsed += 1  # a learner still tracks how recently it heard from a leader

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command to the leader's log; returns its (index, term). It is committed when an entry with
        that index *and* term is applied; a different term at that index means the proposal was lost."""
        self._check_leading()
        entry = Entry(index=self.log.last_index + 1, term=self.term, data=data)
        self._append_own([entry])
        return entry.index, entry.term

    def change_membership(self, target: Membership) -> tuple[int, int]:
        """Append ``target`` as the next configuration; returns its (index, term), like ``propose``. Raises
        NotLeader, or MembershipChangeRefused when the change is not allowed now (see the module docstring)."""
        self._check_leading()
        refusal = self._change_refusal()
        if refusal is not None:
            raise MembershipChangeRefused(refusal)
        try:
            check_change(self.membership, target)
        except MembershipError as e:
            raise MembershipChangeRefused(str(e)) from None
        return self._append_membership(target)

    def read_index(self, ctx: object) -> None:
        """Ask for a linearizable read point (thesis §6.4): a ReadState for ``ctx`` appears in a later Ready
        once a quorum has confirmed the leader's leadership. On a follower (§6.4.1) the leader is asked, one
        request at a time for all the reads waiting here; the read may then be served here once applied."""
        if self.role is Role.LEADER:
            self._read_on_leader(ctx)
        elif self.role is Role.FOLLOWER and self.leader_id is not None:
            self.to_ask.append(ctx)
            if self.asked is None:
                self._ask_leader()
        else:
            raise NotLeader(self.leader_id)

    def lease_read_index(self, ctx: object) -> None:
        """Like ``read_index`` on the leader, without a round of messages while the leader lease holds: a
        quorum acknowledged a heartbeat sent less than ``lease_ticks`` ago, so none of them will elect anyone
        else before the lease ends (they ignore candidates for an election timeout after hearing from us).
        Only with check-quorum, and never while handing over leadership; otherwise a round, as ReadIndex."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self._lease_holds():
            self._read_states.append(ReadState(ctx, self.log.committed))
        else:
            self._read_on_leader(ctx)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` once its log is caught up (proposals pause meanwhile)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if target not in self.progress or not self.membership.is_voter(target):
            raise ValueError(f"{target!r} is not a voting peer")
        self.transfer_target = target  # abandoned at the next check-quorum boundary if it has not happened
        if self.progress[target].match == self.log.last_index:
            self._send(TimeoutNow(term=self.term, src=self.id, dst=target))
        else:
            self._send_append(target)

    def report_unreachable(self, peer: NodeId) -> None:
        """The driver could not deliver a message to ``peer``: stop pipelining to it and probe instead."""
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe(pr.match + 1)

    def still_replicating(self, index: int) -> bool:
        """Whether a follower that is being replicated to (not one that is down or being probed) has yet to be
        sent the entry at ``index``: compacting the log past it now would cost that follower a whole snapshot
        instead of a few entries."""
        return self.role is Role.LEADER and any(
            pr.state is ProgressState.REPLICATE and pr.next <= index for pr in self.progress.values()
        )

    def snapshot_at(self, index: int) -> Snapshot:
        """The description of a snapshot of the state machine at ``index`` (applied already): the caller
        writes the state machine's data under it, then calls ``compact``."""
        return self.log.snapshot_at(index)

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the log up to the snapshot's index by the snapshot; the caller persists it."""
        self.log.compact(snapshot)

    def persisted(self) -> bool:
        """The driver reports that the entries (or snapshot) of the last Ready are durable. True when that
        committed more (a leader that may count its own copy now): the next ``ready`` then has work."""
        self._durable = self._handed_out
        return self.role is Role.LEADER and self._maybe_commit()

    def ready(self) -> Ready:
        """Collect everything that happened since the last call; the driver must carry it out in order."""
        if self.replicate_requested:
            self.replicate_requested = False
            for peer in self.peers:
                self._send_append(peer)
        if self.read_round_requested:
            self.read_round_requested = False
            self._broadcast_heartbeat()
        if self.role is Role.LEADER:
            self._tell_commit()
        hs = self.hard_state
        eager: list[AnyMessage] = []
        later: list[AnyMessage] = []
        for m in self._messages:
            (eager if self._may_precede_persist(m, hs) else later).append(m)
        ready = Ready(
            hard_state=hs if hs != self._persisted_hs else None,
            snapshot=self.log.unstable_snapshot,
            entries=self.log.take_unstable(),
            eager_messages=eager,
            messages=later,
            committed=self.log.take_committed(),
            read_states=self._read_states,
        )
        self._persisted_hs = hs
        self._handed_out = self.log.last_index  # a snapshot that replaced the log included
        self.log.unstable_snapshot = None
        self._messages, self._read_states = [], []
        return ready

    def _may_precede_persist(self, m: AnyMessage, hs: HardState) -> bool:
        """Thesis §10.2.1: a leader sends its AppendEntries without waiting for its own fsync, so that its disk
        and its followers' work at once. That is safe because it counts its own copy towards commit only
        once the driver reports it durable (``persisted``, see ``_own_match``): an entry is still committed
        only when a quorum holds it durably. Every other message waits for the persist, since each one
        promises durable state: a vote its term and vote, an acknowledgement its entries. So does every
        message of a Ready that changes the term or vote (the node is then no longer this leader)."""
        return (
            isinstance(m, AppendEntries)
            and self.role is Role.LEADER
            and (hs.term, hs.vote) == (self._persisted_hs.term, self._persisted_hs.vote)
        )

    def step(self, m: AnyMessage) -> None:
        """Handle one message from a peer (any order, duplicates and stale ones included)."""
        if m.dst != self.id or m.src == self.id:
            return
        if m.term > self.term:
            if isinstance(m, RequestVote) and not m.transfer and self._in_lease():
                return  # §9.6: a leader we heard from recently is alive; do not let this node disrupt it
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(m, RequestVoteReply) and m.pre_vote and m.granted:
                pass  # granted pre-votes carry the term the candidate asked for
            else:
                leader = m.src if isinstance(m, AppendEntries | InstallSnapshot) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | InstallSnapshot):
                # A stale leader: tell it our term so it steps down (it may be cut off from everyone else).
                self._send(
                    AppendEntriesReply(term=self.term, src=self.id, dst=m.src, success=False, match_index=0)
                )
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    RequestVoteReply(term=self.term, src=self.id, dst=m.src, granted=False, pre_vote=True)
                )
            return  # anything else from an older term (late vote replies included) is ignored
        self._dispatch(m)

    # --- message handlers ------------------------------------------------------------------------------

    def _dispatch(self, m: AnyMessage) -> None:
        if isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif isinstance(m, RequestVoteReply):
            self._handle_vote_reply(m)
        elif isinstance(m, AppendEntries):
            self._handle_append(m)
        elif isinstance(m, AppendEntriesReply):
            self._handle_append_reply(m)
        elif isinstance(m, InstallSnapshot):
            self._handle_snapshot(m)
        elif isinstance(m, ReadIndexRequest):
            if self.role is Role.LEADER:
                self._read_on_leader(_RemoteRead(m.src, m.seq))
        elif isinstance(m, ReadIndexReply):
            self._answer_asked(m.seq, m.index)
        elif isinstance(m, TimeoutNow) and self.role is not Role.LEADER:
            self._start_election(transfer=True)  # ignored by a learner, which cannot campaign

    def _handle_request_vote(self, m: RequestVote) -> None:
        """Grant a vote (Figure 2, RequestVote receiver), clause by clause:

        - a request of an older term was already answered with our term in ``step``; one of a newer term made
          us a follower of that term there, so here ``m.term == self.term`` (for a real vote);
        - we vote at most once per term: only if we have not voted yet, or voted for this very candidate (a
          retransmitted request must get the same answer) -- §5.2;
        - only for a candidate whose log is at least as up to date as ours, so that a leader always holds every
          committed entry (§5.4.1, the election restriction);
        - a pre-vote (thesis §9.6) changes nothing here: it is granted for a term above ours on the same log
          rule, and neither records a vote nor moves our term, so asking costs the cluster nothing;
        - granting a vote resets our election timer, so we do not start a competing election at once.
        """
        up_to_date = self._log_up_to_date(m)
        if m.pre_vote:
            granted = m.term > self.term and up_to_date
        else:
            granted = self.vote in (None, m.src) and up_to_date and m.term == self.term
            if granted:
                self.vote = m.src
                self.election_elapsed = 0
        self._send(
            RequestVoteReply(
                term=m.term if (m.pre_vote and granted) else self.term,
                src=self.id,
                dst=m.src,
                granted=granted,
                pre_vote=m.pre_vote,
            )
        )

    def _log_up_to_date(self, m: RequestVote) -> bool:
        return self.log.is_up_to_date(m.last_log_index, m.last_log_term)

    def _handle_vote_reply(self, m: RequestVoteReply) -> None:
        if m.pre_vote:
            if self.role is not Role.PRE_CANDIDATE or (m.granted and m.term != self.term + 1):
                return
        elif self.role is not Role.CANDIDATE:
            return
        self.votes[m.src] = m.granted
        self._count_votes(pre_vote=m.pre_vote)

    def _count_votes(self, *, pre_vote: bool) -> None:
        """Won with the votes of a quorum of our configuration (both halves while joint, §4.3); lost once
        the refusals leave no quorum possible. Votes of servers outside the configuration count for nothing."""
        membership = self.membership
        if membership.has_quorum(voter for voter, granted in self.votes.items() if granted):
            if pre_vote:
                self._campaign(transfer=False)
            else:
                self._become_leader()
        elif not membership.can_still_reach_quorum(
            voter for voter, granted in self.votes.items() if not granted
        ):
            self._become_follower(self.term, None)

    def _handle_append(self, m: AppendEntries) -> None:
        self._accept_leader(m.src)
        reply = AppendEntriesReply(
            term=self.term, src=self.id, dst=m.src, success=True, match_index=0, seq=m.seq
        )
        if m.prev_index < self.log.committed:
            # Everything up to our commit index matches any leader's log; resume from there.
            self._send(replace(reply, match_index=self.log.committed))
            return
        if not self.log.matches(m.prev_index, m.prev_term):
            hint_index, hint_term = self._conflict_hint(m.prev_index)
            self._send(
                replace(
                    reply,
                    success=False,
                    match_index=m.prev_index,
                    conflict_index=hint_index,
                    conflict_term=hint_term,
                )
            )
            return
        self.log.merge(m.entries)
        last_new = m.prev_index + len(m.entries)
        self.log.commit_to(min(m.commit, last_new))
        if m.reply:  # a commit notice teaches the leader nothing: heartbeats carry the acknowledgements
            self._send(replace(reply, match_index=last_new))

    def _conflict_hint(self, prev_index: int) -> tuple[int, int]:
        """(first index of the conflicting term, that term), or (our log end + 1, 0) when we are too short."""
        if prev_index > self.log.last_index:
            return self.log.last_index + 1, 0
        return self.log.first_index_of_term(prev_index), self.log.term_at(prev_index) or 0

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        """Take the leader's snapshot (§7, InstallSnapshot receiver), in one of three ways:

        - it covers nothing we have not committed: ignore it (our state is at least as new) and tell the leader
          our commit index, from which it resumes with entries;
        - we hold its last entry (same index and term): by log matching everything up to it is the leader's
          too, so commit up to it and keep the entries after it, which may be valid (receiver step 6);
        - otherwise our log is behind or diverges there: discard the whole log and restore from the snapshot
          (receiver steps 7 and 8); the driver then persists it and rebuilds the state machine from it.
        """
        self._accept_leader(m.src)
        snap = m.snapshot
        if snap.index <= self.log.committed:
            match = self.log.committed
        elif self.log.matches(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we hold its last entry: the log after it stays valid
            match = snap.index
        else:
            self.log.restore(snap)
            match = snap.index
        self._send(
            AppendEntriesReply(
                term=self.term, src=self.id, dst=m.src, success=True, match_index=match, seq=m.seq
            )
        )

    def _handle_append_reply(self, m: AppendEntriesReply) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.seq > pr.acked_seq:
            pr.acked_seq = m.seq
            self._release_reads()
        if m.success:
            self._on_append_success(m.src, pr, m.match_index)
        else:
            self._on_append_reject(m.src, pr, m)

    def _on_append_success(self, peer: NodeId, pr: Progress, match: int) -> None:
        if match > pr.match:
            pr.match = match
            while pr.inflight and pr.inflight[0] <= match:
                pr.inflight.popleft()
            if pr.state is ProgressState.REPLICATE:
                pr.next = max(pr.next, match + 1)
            else:
                pr.become_replicate()
            self._maybe_commit()  # followers learn a new commit index at the next ``ready`` (_tell_commit)
            if self.role is not Role.LEADER or peer not in self.progress:
                return  # the commit ended our leadership, or removed this peer from the configuration
            if peer == self.transfer_target and pr.match == self.log.last_index:
                self._send(TimeoutNow(term=self.term, src=self.id, dst=peer))
            if peer in self.membership.promote:
                self._maybe_promote(peer, pr)
        elif pr.state is ProgressState.PROBE:
            pr.paused = False  # a snapshot stays paused: resending it per heartbeat would flood the link
        self._send_append(peer)

    def _on_append_reject(self, peer: NodeId, pr: Progress, m: AppendEntriesReply) -> None:
        """Back ``next`` up after a rejected AppendEntries (§5.3), a whole term per round trip.

        A rejection that does not answer our latest probe (an older one, reordered) is ignored. Otherwise the
        follower's hint says where its log diverges: ``conflict_term`` is the term it holds at the rejected
        ``prev_index`` and ``conflict_index`` the first index it holds of that term (or, with term 0, its log
        end + 1). If our log has that term too, resume just after our last entry of it; if not, resume at the
        follower's first index of it, skipping the whole run. Worked example -- our log holds terms
        ``1 1 1 4 4 5 5`` at indices 1..7, the follower's ``1 1 1 2 2 2 3 3``; we probe at prev 7 (term 5):

        - the follower holds term 3 at 7, whose first index is 7: hint (7, term 3). We have no term 3, so
          next = 7 and we probe at prev 6 (term 5);
        - it holds term 2 at 6, first at 4: hint (4, term 2). We have no term 2: next = 4, prev 3 (term 1);
        - it holds term 1 at 3: a match. It takes our 4..7 and drops its own 4..8.

        Three round trips instead of five; ``min(..., rejected)`` keeps ``next`` from ever moving forward.
        """
        rejected = m.match_index
        stale = rejected <= pr.match or (pr.state is ProgressState.PROBE and rejected != pr.next - 1)
        if stale:
            return
        next_index = m.conflict_index
        if m.conflict_term:
            ours = self.log.last_index_of_term(m.conflict_term)
            if ours is not None:
                next_index = ours + 1
        pr.become_probe(min(next_index, rejected))
        self._send_append(peer)

    # --- roles -----------------------------------------------------------------------------------------

    def _maybe_promote(self, learner: NodeId, pr: Progress) -> None:
        """A learner added to become a voter is promoted once within one batch of our last index (§4.2.1:
        a new server catches up as a learner first, so adding it does not stall commitment)."""
        if (
            pr.match + self.config.max_batch_entries < self.log.last_index
            or self._change_refusal() is not None
        ):
            return
        current = self.membership
        promoted = replace(
            current,
            voters=current.voters | {learner},
            learners=current.learners - {learner},
            promote=current.promote - {learner},
        )
        self._append_membership(promoted)

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self._fail_reads()
        self.role, self.leader_id = Role.FOLLOWER, leader
        self.transfer_target = None
        self._reset_election_timer()

    def _start_election(self, *, transfer: bool) -> None:
        if not self.promotable:
            return  # a learner, or a server removed from the configuration: it never campaigns
        if self.config.pre_vote and not transfer:
            self._fail_reads()
            self.role, self.leader_id = Role.PRE_CANDIDATE, None
            self._reset_election_timer()
            self._request_votes(term=self.term + 1, pre_vote=True, transfer=False)
        else:
            self._campaign(transfer=transfer)

    def _campaign(self, *, transfer: bool) -> None:
        self._fail_reads()
        self.term += 1
        self.vote, self.role, self.leader_id = self.id, Role.CANDIDATE, None
        self._reset_election_timer()
        self._request_votes(term=self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, *, term: int, pre_vote: bool, transfer: bool) -> None:
        self.votes = {self.id: True}
        if self.membership.has_quorum([self.id]):  # a cluster of one
            self._count_votes(pre_vote=pre_vote)
            return
        for peer in self.peers:
            if not self.membership.is_voter(peer):
                continue  # learners do not vote
            self._send(
                RequestVote(
                    term=term,
                    src=self.id,
                    dst=peer,
                    last_log_index=self.log.last_index,
                    last_log_term=self.log.last_term,
                    pre_vote=pre_vote,
                    transfer=transfer,
                )
            )

    def _become_leader(self) -> None:
        self.role, self.leader_id = Role.LEADER, self.id
        self.heartbeat_elapsed = self.election_elapsed = 0
        self.transfer_target = None
        self.progress = {}
        self._track_members(first_to_send=self.log.last_index + 1)  # the no-op below is what they get first
        self._append_own([Entry(index=self.log.last_index + 1, term=self.term, data=None)])

    def _track_members(self, first_to_send: int) -> None:
        """Keep one Progress per member of the current configuration (a leader replicates to exactly them);
        a new one is probed from ``first_to_send``, and backs up from there like any follower (§5.3)."""
        members = set(self.peers)
        for gone in self.progress.keys() - members:
            del self.progress[gone]
        for new in sorted(
            members - self.progress.keys()
        ):  # sorted: the order messages go out in is replayable
            self.progress[new] = Progress(next=first_to_send)

    def _accept_leader(self, leader: NodeId) -> None:
        """A valid AppendEntries/InstallSnapshot of our term: its sender is the leader (§5.2)."""
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, leader)
        self.leader_id = leader
        self.election_elapsed = 0

    def _in_lease(self) -> bool:
        """Whether to ignore a candidate for the sake of a leader (§4.2.3, and what the leader lease relies
        on): one heard from in the last election timeout -- or, in the first election timeout after a
        restart, whichever leader we may have acknowledged just before it (we cannot know, so we assume one)."""
        if not self.config.check_quorum:
            return False
        heard_lately = self.leader_id is not None and self.election_elapsed < self.config.election_ticks
        return heard_lately or self.ticks < self.quiet_ticks

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        ticks = self.config.election_ticks
        self.randomized_timeout = self.rng.randint(ticks, 2 * ticks - 1)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            self.transfer_target = None
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)
                return
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._probe_stalled()
            self._broadcast_heartbeat()

    def _probe_stalled(self) -> None:
        """Behind with no progress for an election timeout: a batch, probe or snapshot, or its answer, was
        lost without the driver noticing (it reports the losses it sees: report_unreachable). Probe afresh:
        the reply to the next heartbeat resends from the match point. Counted in heartbeats of the ticker
        only, so read rounds (which also send heartbeats) do not hurry it."""
        for pr in self.progress.values():
            stalled = pr.match < self.log.last_index and pr.match == pr.match_at_heartbeat
            pr.stalled_heartbeats = pr.stalled_heartbeats + 1 if stalled else 0
            pr.match_at_heartbeat = pr.match
            if pr.stalled_heartbeats >= self.config.election_ticks // self.config.heartbeat_ticks:
                pr.become_probe(pr.match + 1)
                pr.stalled_heartbeats = 0

    def _quorum_active(self) -> bool:
        """Check-quorum (thesis §6.2): a quorum heard from us, counting ourselves, in the last election timeout."""
        active = [self.id, *(peer for peer, pr in self.progress.items() if pr.recent_active)]
        for pr in self.progress.values():
            pr.recent_active = False
        return self.membership.has_quorum(active)

    # --- replication -----------------------------------------------------------------------------------

    def _check_leading(self) -> None:
        if self.role is not Role.LEADER or self.transfer_target is not None:
            raise NotLeader(self.leader_id if self.role is not Role.LEADER else None)

    def _append_own(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        if any(entry.kind is EntryKind.MEMBERSHIP for entry in entries):
            self._track_members(first_to_send=self.log.last_index)
        self.replicate_requested = True
        self._maybe_commit()  # a cluster of one commits once the entries are durable (``persisted``)

    def _append_membership(self, membership: Membership) -> tuple[int, int]:
        entry = Entry(self.log.last_index + 1, self.term, membership.encode(), EntryKind.MEMBERSHIP)
        self._append_own([entry])
        return entry.index, entry.term

    def _change_refusal(self) -> str | None:
        """Why no configuration may be appended now, or None (one change at a time, after a commit in our term)."""
        if self.log.term_at(self.log.committed) != self.term:
            return "the leader has not yet committed an entry of its term; retry in a moment"
        if self.log.last_config_index > self.log.committed:
            return "another membership change is in progress"
        return None

    def _maybe_commit(self) -> bool:
        """Commit the highest index stored on a quorum of the current configuration (both halves while joint),
        but only by counting entries of the current term (§5.4.2, Figure 8); earlier entries commit with it.
        A leader that is not a voter (it is removing itself) does not count its own log; one that is counts it
        only as far as it is durable (``_own_match``)."""
        match = {peer: pr.match for peer, pr in self.progress.items()}
        if self.promotable:
            match[self.id] = self._own_match()
        candidate = self.membership.committed_index(match)
        if candidate <= self.log.committed or not self._may_commit(candidate):
            return False
        first_in_term = self.log.term_at(self.log.committed) != self.term
        self.log.commit_to(candidate)
        if first_in_term:
            for ctx in self.waiting_reads:
                self._queue_read(ctx)
            self.waiting_reads = []
        if self.log.committed >= self.log.last_config_index:
            self._on_config_committed()
        return True

    def _on_config_committed(self) -> None:
        """The latest configuration is committed: leave a joint one for its new half (§4.3), or, if it no
        longer has us as a voter, hand over to its most caught-up voter and step down (§4.2.2)."""
        membership = self.membership
        if membership.joint:
            self._append_membership(membership.leave_joint())
        elif not membership.is_voter(self.id):
            successor = max(
                (peer for peer in self.progress if membership.is_voter(peer)),
                key=lambda peer: self.progress[peer].match,
                default=None,
            )
            if successor is not None and self.progress[successor].match == self.log.last_index:
                self._send(TimeoutNow(term=self.term, src=self.id, dst=successor))
            self._become_follower(self.term, None)

    def _own_match(self) -> int:
        """How much of its own log a leader may count towards commit: what the driver reported durable."""
        return min(self.log.last_index, self._durable)

    def _may_commit(self, index: int) -> bool:
        return self.log.term_at(index) == self.term

    def _send_append(self, peer: NodeId) -> None:
        """Send what ``peer`` is missing, as far as its flow-control window allows."""
        pr = self.progress[peer]
        while not pr.paused and len(pr.inflight) < self.config.max_inflight:
            if pr.next < self.log.first_index:
                self._send_snapshot(peer, pr)
                return
            if pr.next > self.log.last_index:
                return  # nothing new: heartbeats carry the commit index from here
            entries = self.log.slice(pr.next, self.config.max_batch_entries, self.config.max_batch_bytes)
            self._send_entries(peer, pr.next - 1, entries, self.log.committed)
            if pr.state is ProgressState.REPLICATE:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
            else:
                pr.paused = True

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snapshot = self.log.snapshot
        assert snapshot is not None
        self._send(InstallSnapshot(term=self.term, src=self.id, dst=peer, snapshot=snapshot, seq=self.seq))
        pr.state, pr.paused = ProgressState.SNAPSHOT, True
        pr.inflight.clear()

    def _broadcast_heartbeat(self) -> None:
        """An empty AppendEntries anchored at each follower's known match point: it always passes the
        consistency check, so it never disturbs pipelined batches, and carries the commit index and a new
        ``seq``, whose acknowledgements confirm read rounds and the lease."""
        self.seq += 1
        self.sent_at[self.seq] = self.ticks
        for old in [
            seq for seq, tick in self.sent_at.items() if tick + self.config.lease_ticks <= self.ticks
        ]:
            del self.sent_at[old]  # too old to hold a lease up
        for peer, pr in self.progress.items():
            anchor = pr.match if self.log.term_at(pr.match) is not None else 0  # index 0 matches every log
            self._send_entries(peer, anchor, (), min(pr.match, self.log.committed))

    def _tell_commit(self) -> None:
        """Send each follower a commit index it has not been sent, in an empty AppendEntries anchored at its
        match point (which always passes the consistency check), rather than leave it to the next batch or
        heartbeat: a follower serving reads, or answering a write it forwarded, waits for it. Batches already
        going out in this Ready carry it, so they need no extra message. The follower does not answer such a
        notice (``reply`` False): its answer would repeat the match the leader knows, and cost both ends a
        message per write."""
        for peer, pr in self.progress.items():
            commit = min(pr.match, self.log.committed)
            if commit > pr.sent_commit and self.log.term_at(pr.match) is not None:
                self._send_entries(peer, pr.match, (), commit, reply=False)

    def _send_entries(
        self, peer: NodeId, prev: int, entries: tuple[Entry, ...], commit: int, reply: bool = True
    ) -> None:
        prev_term = self.log.term_at(prev)
        assert prev_term is not None, f"entry {prev} is compacted"
        pr = self.progress[peer]
        pr.sent_commit = max(pr.sent_commit, min(commit, prev + len(entries)))
        self._send(
            AppendEntries(
                term=self.term,
                src=self.id,
                dst=peer,
                prev_index=prev,
                prev_term=prev_term,
                entries=entries,
                commit=commit,
                seq=self.seq,
                reply=reply,
            )
        )

    # --- linearizable reads (ReadIndex) ----------------------------------------------------------------

    def _read_on_leader(self, ctx: object) -> None:
        if self.log.term_at(self.log.committed) != self.term:
            self.waiting_reads.append(ctx)  # commit index may be stale until our no-op commits
            return
        self._queue_read(ctx)

    def _queue_read(self, ctx: object) -> None:
        if self.membership.has_quorum([self.id]):  # a cluster of one confirms itself
            self._release([_PendingRead(ctx, self.log.committed)])
            return
        self.next_reads.append(ctx)
        if not self.pending_reads:
            self._start_read_round()

    def _start_read_round(self) -> None:
        """Confirm leadership for every queued read with the next heartbeat round. One round at a time: reads
        that arrive meanwhile share the next round, so a burst of reads costs a round, not a round each."""
        self.round_seq = (
            self.seq + 1
        )  # acknowledgements of that round (or later) were sent after these reads came
        self.pending_reads = [_PendingRead(ctx, self.log.committed) for ctx in self.next_reads]
        self.next_reads = []
        self.read_round_requested = True

    def _release_reads(self) -> None:
        if not self.pending_reads:
            return
        acks = [self.id, *(peer for peer, pr in self.progress.items() if pr.acked_seq >= self.round_seq)]
        if not self.membership.has_quorum(acks):
            return
        reads, self.pending_reads = self.pending_reads, []
        self._release(reads)
        if self.next_reads:
            self._start_read_round()

    def _release(self, reads: list[_PendingRead]) -> None:
        """Hand confirmed reads out: ReadStates for our own, ReadIndexReplies for the followers'."""
        for read in reads:
            if isinstance(read.ctx, _RemoteRead):
                self._send(ReadIndexReply(self.term, self.id, read.ctx.follower, read.ctx.seq, read.index))
            else:
                self._read_states.append(ReadState(read.ctx, read.index))

    def _lease_holds(self) -> bool:
        """A quorum acknowledged a heartbeat round sent less than ``lease_ticks`` ago (see lease_read_index)."""
        if not self.config.check_quorum or self.transfer_target is not None:
            return False
        if self.log.term_at(self.log.committed) != self.term:
            return False
        acked = [seq for seq in self.sent_at if self._acked_by_quorum(seq)]
        return bool(acked) and self.ticks < self.sent_at[max(acked)] + self.config.lease_ticks

    def _acked_by_quorum(self, seq: int) -> bool:
        return self.membership.has_quorum(
            [self.id, *(p for p, pr in self.progress.items() if pr.acked_seq >= seq)]
        )

    def _fail_reads(self) -> None:
        unconfirmed = [read.ctx for read in self.pending_reads] + self.next_reads + self.waiting_reads
        self._release([_PendingRead(ctx, None) for ctx in unconfirmed])
        self.pending_reads, self.next_reads, self.waiting_reads = [], [], []
        self.read_round_requested = False
        self._fail_asked()

    # --- reads asked of a follower (thesis §6.4.1) -------------------------------------------------------

    def _ask_leader(self) -> None:
        assert self.leader_id is not None
        self.read_requests += 1
        self.asked = _ReadRequest(self.read_requests, self.to_ask)
        self.to_ask = []
        self._send(ReadIndexRequest(self.term, self.id, self.leader_id, self.read_requests))

    def _answer_asked(self, seq: int, index: int | None) -> None:
        """The leader's answer to our request ``seq`` (None: it could not confirm, or we gave up waiting)."""
        if self.asked is None or self.asked.seq != seq:
            return  # a late answer to an earlier request
        self._read_states.extend(ReadState(ctx, index) for ctx in self.asked.ctxs)
        self.asked = None
        if self.to_ask and self.role is Role.FOLLOWER and self.leader_id is not None:
            self._ask_leader()

    def _fail_asked(self) -> None:
        """Our leader may have changed: what we asked, and what waits to be asked, fail (the client retries)."""
        waiting = ([] if self.asked is None else self.asked.ctxs) + self.to_ask
        self._read_states.extend(ReadState(ctx, None) for ctx in waiting)
        self.asked, self.to_ask = None, []

    def _send(self, m: AnyMessage) -> None:
        self._messages.append(m)
