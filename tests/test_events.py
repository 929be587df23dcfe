"""``GET /events``: the state of a node and its elections and traffic, as the dashboard reads them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from raftkv.api import models
from raftkv.api.events import election_steps
from raftkv.raft.types import Role
from raftkv_harness.processes import local_cluster


def state(role: Role, term: int, vote: str | None = None, leader: str | None = None) -> models.NodeState:
    return models.NodeState(
        id="n1",
        role=role,
        term=term,
        vote=vote,
        leader=leader,
        commit=0,
        applied=0,
        last_index=0,
        last_term=0,
        snapshot_index=0,
        log=[],
        members=[],
    )


def steps(before: models.NodeState, after: models.NodeState) -> list[tuple[str, str | None]]:
    return [(step.step, step.candidate or step.leader) for step in election_steps(before, after)]


def test_an_election_won_is_a_campaign_a_vote_for_itself_and_a_leadership() -> None:
    follower = state(Role.FOLLOWER, 1, leader="n2")
    assert steps(follower, state(Role.PRE_CANDIDATE, 1)) == [("pre-campaign", None)]
    assert steps(state(Role.PRE_CANDIDATE, 1), state(Role.CANDIDATE, 2, vote="n1")) == [
        ("campaign", None),
        ("voted", "n1"),
    ]
    assert steps(state(Role.CANDIDATE, 2, vote="n1"), state(Role.LEADER, 2, "n1", "n1")) == [("leader", "n1")]


def test_a_campaign_seen_only_by_its_outcome_is_still_told() -> None:
    assert steps(state(Role.FOLLOWER, 1, leader="n2"), state(Role.LEADER, 2, "n1", "n1")) == [
        ("campaign", None),
        ("voted", "n1"),
        ("leader", "n1"),
    ]


def test_a_vote_for_another_and_a_step_down_are_told_apart() -> None:
    assert steps(state(Role.FOLLOWER, 1), state(Role.FOLLOWER, 2, vote="n3")) == [("voted", "n3")]
    assert steps(state(Role.LEADER, 2, "n1", "n1"), state(Role.FOLLOWER, 3, leader="n2")) == [
        ("follower", "n2")
    ]
    assert steps(state(Role.FOLLOWER, 2, "n3"), state(Role.FOLLOWER, 2, "n3", "n3")) == []


@pytest.fixture(scope="module")
def cluster_urls() -> Iterator[list[str]]:
    with local_cluster(3) as urls:
        yield urls


def read_events(
    url: str, seconds: float, origin: str | None = None
) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    """The events of ``url``'s stream for ``seconds`` (the stream's own timeout ends it)."""
    headers = {"Origin": origin} if origin else {}
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{url}/events?timeout={seconds}", headers=headers, timeout=seconds + 10
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append({"event": kind, **json.loads(line.removeprefix("data: "))})
        return answer.headers, events


def test_the_stream_starts_with_the_state_and_counts_the_traffic(cluster_urls: list[str]) -> None:
    headers, events = read_events(cluster_urls[0], 2.5, origin=cluster_urls[1])
    first = models.NodeState.model_validate({k: v for k, v in events[0].items() if k != "event"})
    assert events[0]["event"] == "state"
    assert [member.id for member in first.members] == ["n1", "n2", "n3"]
    assert first.leader is not None and first.log and first.commit >= 1
    traffic = [
        models.Traffic.model_validate({"seconds": e["seconds"], "counts": e["counts"]})
        for e in events
        if e["event"] == "traffic"
    ]
    assert traffic, events
    assert {count.direction for count in traffic[0].counts} == {"sent", "received"}
    assert headers["access-control-allow-origin"] == cluster_urls[1]


def test_other_origins_are_not_allowed(cluster_urls: list[str]) -> None:
    headers, _ = read_events(cluster_urls[0], 0.5, origin="http://127.0.0.1:1")
    assert "access-control-allow-origin" not in headers


def test_a_bad_timeout_is_a_400(cluster_urls: list[str]) -> None:
    answer = httpx.get(f"{cluster_urls[0]}/events?timeout=soon")
    assert answer.status_code == 400
    assert "error" in answer.json()
