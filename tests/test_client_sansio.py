"""The client's rules free of I/O: the transaction builder, retries keeping a write's Idempotency-Key, typed
errors, and a watch session that resumes a dropped stream without losing or repeating a change."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from raftkv.client import (
    ClientError,
    Compacted,
    IdempotencyConflict,
    LeaseNotFound,
    NotFound,
    TooLarge,
    Txn,
    calls,
)
from raftkv.client.endpoints import Endpoints
from raftkv.client.errors import error_for
from raftkv.client.policy import Attempts, Done, Retry
from raftkv.client.watch import ServerSentEvents, WatchSession


def test_a_txn_builds_the_spec_s_txn_request() -> None:
    txn = Txn().if_value("k", 1).if_absent("lock").then_put("k", 2, lease=7).then_delete("old").else_get("k")
    assert txn.body() == {
        "compare": [{"key": "k", "value": 1}, {"key": "lock", "revision": 0}],
        "success": [{"put": {"key": "k", "value": 2, "lease": 7}}, {"delete": {"key": "old"}}],
        "failure": [{"get": {"key": "k"}}],
    }


def test_a_txn_is_immutable_so_a_prefix_can_be_reused() -> None:
    guard = Txn().if_revision("k", 5)
    assert guard.then_put("k", 1).body()["success"] == [{"put": {"key": "k", "value": 1}}]
    assert guard.else_delete("k").body()["success"] == []
    assert guard.body() == {"compare": [{"key": "k", "revision": 5}], "success": [], "failure": []}


def test_retries_of_a_write_keep_its_idempotency_key() -> None:
    attempts = Attempts(calls.put("k", 1), Endpoints(["http://a", "http://b"]), time.monotonic() + 60, {})
    sent = []
    url, arguments = attempts.request()
    sent.append((url, arguments["headers"]["Idempotency-Key"]))
    assert isinstance(attempts.failed(url, httpx.ConnectError("refused")), Retry)
    url, arguments = attempts.request()
    sent.append((url, arguments["headers"]["Idempotency-Key"]))
    assert isinstance(attempts.answered(url, httpx.Response(503, json={"error": "no leader"})), Retry)
    url, arguments = attempts.request()
    sent.append((url, arguments["headers"]["Idempotency-Key"]))
    assert [url for url, _ in sent] == ["http://a/kv/k", "http://b/kv/k", "http://b/kv/k"]
    assert len({key for _, key in sent}) == 1
    answer = httpx.Response(200, json={"key": "k", "value": 1, "revision": 1})
    assert attempts.answered(url, answer) == Done({"key": "k", "value": 1, "revision": 1})


def test_every_write_gets_a_key_of_its_own_and_reads_none() -> None:
    def key_of(call: calls.Call[Any]) -> str | None:
        headers = Attempts(call, Endpoints(["http://a"]), time.monotonic() + 1, {}).request()[1]["headers"]
        key: str | None = headers.get("Idempotency-Key")
        return key

    writes: list[calls.Call[Any]] = [
        calls.put("k", 1),
        calls.put("k", 1),
        calls.delete("k"),
        calls.txn({}),
        calls.grant_lease(5),
    ]
    assert len({key_of(call) for call in writes}) == len(writes)
    assert key_of(calls.revoke_lease(1)) is not None
    assert key_of(calls.get("k")) is None and key_of(calls.lease_info(1)) is None


@pytest.mark.parametrize(
    ("call", "status", "kind"),
    [
        (calls.get("k"), 410, Compacted),
        (calls.put("k", 1), 413, TooLarge),
        (calls.put("k", 1), 422, IdempotencyConflict),
        (calls.put("k", 1, lease=3), 404, LeaseNotFound),
        (calls.txn({}), 404, LeaseNotFound),
        (calls.keepalive(3), 404, LeaseNotFound),
        (calls.members(), 404, NotFound),
    ],
)
def test_error_answers_are_typed(call: calls.Call[Any], status: int, kind: type[Exception]) -> None:
    attempts = Attempts(call, Endpoints(["http://a"]), time.monotonic() + 1, {})
    with pytest.raises(kind):
        attempts.answered(attempts.request()[0], httpx.Response(status, json={"error": "no"}))


def test_too_large_and_idempotency_conflicts_are_client_errors() -> None:
    assert isinstance(error_for(413, {"error": "big"}), ClientError)
    assert isinstance(error_for(422, {"error": "reused"}), ClientError)
    assert error_for(410, {"error": "old", "compact_revision": 9}).compact_revision == 9  # type: ignore[attr-defined]


def test_server_sent_events_skip_comments_and_join_data_lines() -> None:
    events = ServerSentEvents()
    lines = [": keep-alive", "", "id: 3", "data: {", "data: }", "", "event: compacted", "data:x", "", ""]
    parsed = [event for line in lines if (event := events.line(line)) is not None]
    assert [(e.id, e.event, e.data) for e in parsed] == [("3", "message", "{\n}"), (None, "compacted", "x")]


def stream_of(changes: list[tuple[str, int]]) -> list[str]:
    """The lines a member sends for ``changes`` (key, revision)."""
    lines = []
    for key, revision in changes:
        data = {"type": "put", "key": key, "value": 0, "revision": revision}
        lines += [f"id: {revision}", f"data: {json.dumps(data)}", ""]
    return lines


def delivered(session: WatchSession, lines: list[str]) -> list[tuple[str, int]]:
    return [(c["key"], c["revision"]) for line in lines if (c := session.line(line)) is not None]


def test_a_session_resumes_from_the_revision_of_the_last_change_delivered() -> None:
    session = WatchSession("p/", 10)
    assert session.call().params == {"prefix": "p/", "after_revision": "10"}
    assert delivered(session, stream_of([("p/a", 11), ("p/b", 12)])[:-1]) == [("p/a", 11)]  # cut mid-event
    assert session.call().params == {"prefix": "p/", "after_revision": "10"}  # revision 11 may hold more
    assert delivered(session, stream_of([("p/a", 11), ("p/b", 12)])) == [("p/b", 12)]


def test_a_stream_cut_inside_a_transaction_loses_and_repeats_none_of_it() -> None:
    session = WatchSession("", 4)
    session.call()
    txn = [("a", 5), ("b", 5), ("c", 5)]
    assert delivered(session, stream_of(txn)[:6]) == [("a", 5), ("b", 5)]
    assert session.call().params["after_revision"] == "4"  # before the transaction, skipping what was seen
    assert delivered(session, stream_of([*txn, ("d", 6)])) == [("c", 5), ("d", 6)]
    assert session.call().params["after_revision"] == "5"
    assert delivered(session, stream_of([("d", 6), ("e", 7)])) == [("e", 7)]


def test_a_stream_that_fell_behind_raises_compacted() -> None:
    session = WatchSession("", 0)
    session.call()
    with pytest.raises(Compacted) as raised:
        for line in ["event: compacted", 'data: {"error": "gone", "compact_revision": 42}', ""]:
            session.line(line)
    assert raised.value.compact_revision == 42
