"""The follower's side of write forwarding: one batch in flight, the next growing meanwhile; lost or late
answers never wedge it."""

from __future__ import annotations

import random

from raftkv.forwarding import MAX_FORWARDED, Forward, Forwarder, ForwardReply


class Follower:
    """A Forwarder with its callbacks recorded."""

    def __init__(self, leader: tuple[str, int] | None = ("n1", 3)) -> None:
        self.leader = leader
        self.sent: list[Forward] = []
        self.placed: dict[str, tuple[int, int]] = {}
        self.refused: dict[str, str] = {}
        self.forwarder = Forwarder(
            "n2",
            random.Random(0),
            lambda: self.leader,
            self.sent.append,
            lambda write, index, term: self.placed.__setitem__(str(write), (index, term)),
            lambda write, reason: self.refused.__setitem__(str(write), reason),
        )

    def reply(self, forward: Forward, index: int | None, term: int = 3) -> None:
        self.forwarder.answer(
            ForwardReply(term=term, src=forward.dst, dst="n2", seq=forward.seq, index=index)
        )


def test_writes_that_arrive_while_a_batch_is_out_form_the_next_one() -> None:
    f = Follower()
    for i in range(5):
        f.forwarder.submit(b"c%d" % i, f"w{i}")
    assert [len(forward.commands) for forward in f.sent] == [1]  # the first went at once, alone
    f.reply(f.sent[0], index=10)
    assert [forward.commands for forward in f.sent[1:]] == [(b"c1", b"c2", b"c3", b"c4")]
    f.reply(f.sent[1], index=11)
    assert f.placed == {"w0": (10, 3), "w1": (11, 3), "w2": (12, 3), "w3": (13, 3), "w4": (14, 3)}


def test_a_batch_holds_at_most_max_forwarded_commands() -> None:
    f = Follower()
    for i in range(MAX_FORWARDED + 2):
        f.forwarder.submit(b"c", i)
    f.reply(f.sent[0], index=1)
    assert [len(forward.commands) for forward in f.sent] == [1, MAX_FORWARDED]


def test_a_refusal_fails_its_batch_and_the_next_goes_on() -> None:
    f = Follower()
    f.forwarder.submit(b"a", "a")
    f.forwarder.submit(b"b", "b")
    f.reply(f.sent[0], index=None)
    assert "a" in f.refused and "not leading" in f.refused["a"] and len(f.sent) == 2


def test_a_late_answer_to_an_abandoned_batch_is_ignored_and_the_next_batch_is_not_held_up() -> None:
    f = Follower()
    f.forwarder.submit(b"a", "a")
    f.forwarder.submit(b"b", "b")
    f.forwarder.abandon("a")  # its deadline passed: the batch in flight is given up on
    assert len(f.sent) == 2 and f.sent[1].commands == (b"b",)
    f.reply(f.sent[0], index=7)  # the lost answer turns up after all
    assert f.placed == {} and "a" not in f.refused
    f.reply(f.sent[1], index=8)
    assert f.placed == {"b": (8, 3)}


def test_a_new_leader_refuses_the_batch_in_flight_to_the_old_one_at_once_and_takes_what_waits() -> None:
    f = Follower()
    f.forwarder.submit(b"a", "a")
    f.forwarder.submit(b"b", "b")
    f.forwarder.leader_changed()  # the same leader: nothing happens
    assert f.refused == {} and len(f.sent) == 1
    f.leader = ("n3", 4)  # n1 died; n3 leads term 4
    f.forwarder.leader_changed()
    assert "a" in f.refused and "outcome is unknown" in f.refused["a"]
    assert f.sent[1].dst == "n3" and f.sent[1].commands == (b"b",)
    f.reply(f.sent[0], index=7)  # n1's answer turns up after all: too late, ignored
    assert f.placed == {}


def test_answers_of_an_earlier_incarnation_are_not_taken() -> None:
    before, after = Follower(), Follower()
    after.forwarder = Forwarder(
        "n2", random.Random(1), lambda: after.leader, after.sent.append, lambda *a: None, lambda *a: None
    )
    before.forwarder.submit(b"x", "x")
    after.forwarder.submit(b"y", "y")
    assert before.sent[0].seq != after.sent[0].seq


def test_without_a_leader_writes_are_refused_at_once() -> None:
    f = Follower(leader=None)
    f.forwarder.submit(b"a", "a")
    assert f.sent == [] and "no other node" in f.refused["a"]
