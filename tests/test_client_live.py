"""The synchronous client and the ``raftkv`` key and lease commands against a real cluster: transactions,
pages, long-polls, leases, idempotent writes and a watch. Every call is bounded by the client's deadline."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import cli
from raftkv.client import (
    Client,
    IdempotencyConflict,
    LeaseNotFound,
    TooLarge,
    Txn,
    calls,
)

DEADLINE = 20.0  # seconds one call may take, retries included


@pytest.fixture
def kv(cluster_urls: list[str]) -> Iterator[Client]:
    with Client(cluster_urls[1:2], deadline=DEADLINE) as client:  # one member; it learns the others
        yield client


def test_a_txn_round_trip_runs_the_branch_its_comparisons_choose(kv: Client) -> None:
    kv.put("txn/k", 1)
    swap = Txn().if_value("txn/k", 1).then_put("txn/k", 2).then_get("txn/k").else_get("txn/k")
    first = kv.txn(swap)
    assert first.succeeded
    assert first.results == [
        {"key": "txn/k", "value": 2, "revision": first.revision},
        {"key": "txn/k", "value": 2, "revision": first.revision, "found": True},
    ]
    again = kv.txn(swap)
    assert not again.succeeded and again.revision == first.revision
    assert again.results == [{"key": "txn/k", "value": 2, "revision": first.revision, "found": True}]
    create = Txn().if_absent("txn/new").if_revision("txn/k", first.revision).then_put("txn/new", "x")
    assert kv.txn(create).succeeded
    assert not kv.txn(create.else_delete("txn/k")).succeeded
    assert kv.get("txn/k") is None


def test_keys_reads_every_page(kv: Client) -> None:
    names = [f"page/{i:02d}" for i in range(7)]
    for name in names:
        kv.put(name, name)
    first = kv.list_keys("page/", limit=3)
    assert [item["key"] for item in first["items"]] == names[:3] and first["next"] == names[2]
    assert [item["key"] for item in kv.keys("page/", page_size=3)] == names
    assert [item["value"] for item in kv.keys("page/", page_size=100)] == names


def test_a_lease_s_keys_go_with_it(kv: Client) -> None:
    lease = kv.grant_lease(60)["id"]
    kv.put("lease/a", 1, lease=lease)
    assert kv.keepalive(lease) == {"id": lease, "ttl": 60}
    assert kv.lease_info(lease)["keys"] == ["lease/a"]
    assert {"id": lease, "ttl": 60} in kv.list_leases()["leases"]
    assert kv.revoke_lease(lease)["deleted"] == 1
    assert kv.get("lease/a") is None
    for call in (kv.keepalive, kv.lease_info, kv.revoke_lease):
        with pytest.raises(LeaseNotFound):
            call(lease)
    with pytest.raises(LeaseNotFound):
        kv.put("lease/b", 1, lease=lease)
    assert kv.grant_lease(30, id=lease) == {"id": lease, "ttl": 30}  # its number is free again
    kv.revoke_lease(lease)


def test_wait_answers_the_next_change_or_none_in_time(kv: Client) -> None:
    revision = kv.put("wait/k", "before")["revision"]
    kv.put("wait/k", "after")
    assert kv.wait("wait/k", after_revision=revision) == {
        "type": "put",
        "key": "wait/k",
        "value": "after",
        "revision": revision + 1,
    }
    assert kv.wait("wait/k", timeout=0.2) is None


def test_a_write_retried_with_its_key_applies_once_and_a_reused_key_is_refused(kv: Client) -> None:
    put = dataclasses.replace(calls.put("idem/k", 1), idempotency_key="idem-test-key")
    first = kv.call(put)
    kv.put("idem/k", 2)
    assert kv.call(put) == first  # the first answer again; the value stays 2
    assert kv.get("idem/k") == {"key": "idem/k", "value": 2, "revision": first["revision"] + 1}  # type: ignore[index]
    with pytest.raises(IdempotencyConflict):
        kv.call(dataclasses.replace(calls.put("idem/k", 3), idempotency_key="idem-test-key"))


def test_a_value_over_the_limit_is_too_large(kv: Client) -> None:
    with pytest.raises(TooLarge):
        kv.put("big", "x" * (1 << 20))


def test_a_watch_yields_each_change_after_a_revision_in_order(kv: Client) -> None:
    start = kv.put("watch/a", 1)["revision"]
    kv.txn(Txn().then_put("watch/b", 2).then_delete("watch/a"))
    kv.put("elsewhere", 0)
    kv.put("watch/c", 3)
    changes = list(itertools.islice(kv.watch("watch/", after_revision=start - 1), 4))
    assert [(c["type"], c["key"], c["revision"]) for c in changes] == [
        ("put", "watch/a", start),
        ("put", "watch/b", start + 1),
        ("delete", "watch/a", start + 1),
        ("put", "watch/c", start + 3),
    ]


# --- the command ------------------------------------------------------------------------------------------


def raftkv(urls: list[str], capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    """Run ``raftkv ARGV --endpoints ...``; its answer (printed JSON)."""
    cli.main([*argv, "--endpoints", ",".join(urls)])
    return json.loads(capsys.readouterr().out)


def test_the_key_commands(cluster_urls: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    put = raftkv(cluster_urls, capsys, "put", "cli/k", '{"a": [1]}')
    assert put == {"key": "cli/k", "value": {"a": [1]}, "revision": put["revision"]}  # type: ignore[index]
    assert raftkv(cluster_urls, capsys, "put", "cli/s", "plain text")["value"] == "plain text"  # type: ignore[index]
    assert raftkv(cluster_urls, capsys, "get", "cli/k") == put
    assert raftkv(cluster_urls, capsys, "del", "cli/s")["deleted"] is True  # type: ignore[index]
    for missing in (("get", "cli/s"), ("del", "cli/s")):
        with pytest.raises(SystemExit) as exit:
            raftkv(cluster_urls, capsys, *missing)
        assert exit.value.code == 1
        assert capsys.readouterr().err == "error: 404: key 'cli/s' not found\n"


def test_the_txn_command_reads_a_txn_request(
    cluster_urls: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = tmp_path / "txn.json"
    request.write_text(
        json.dumps(Txn().if_absent("cli/txn").then_put("cli/txn", 1).else_get("cli/txn").body())
    )
    first = raftkv(cluster_urls, capsys, "txn", "--file", str(request))
    assert first["succeeded"] is True  # type: ignore[index]
    second = raftkv(cluster_urls, capsys, "txn", "--file", str(request))
    assert second["succeeded"] is False and second["results"][0]["value"] == 1  # type: ignore[index]
    request.write_text("{not json")
    with pytest.raises(SystemExit) as exit:
        raftkv(cluster_urls, capsys, "txn", "--file", str(request))
    assert exit.value.code == 1 and capsys.readouterr().err.startswith("error: the transaction is not JSON")


def test_the_lease_commands(cluster_urls: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    lease = raftkv(cluster_urls, capsys, "lease", "grant", "60")["id"]  # type: ignore[index]
    raftkv(cluster_urls, capsys, "put", "cli/leased", "1", "--lease", str(lease))
    assert raftkv(cluster_urls, capsys, "lease", "keepalive", str(lease)) == {"id": lease, "ttl": 60}
    assert raftkv(cluster_urls, capsys, "lease", "get", str(lease))["keys"] == ["cli/leased"]  # type: ignore[index]
    assert {"id": lease, "ttl": 60} in raftkv(cluster_urls, capsys, "lease", "list")["leases"]  # type: ignore[index]
    assert raftkv(cluster_urls, capsys, "lease", "revoke", str(lease))["deleted"] == 1  # type: ignore[index]
    with pytest.raises(SystemExit) as exit:
        raftkv(cluster_urls, capsys, "lease", "revoke", str(lease))
    assert exit.value.code == 1 and capsys.readouterr().err == f"error: 404: lease {lease} not found\n"


def test_get_reads_at_the_consistency_asked(
    cluster_urls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    put = raftkv(cluster_urls, capsys, "put", "cli/c", "1")
    for consistency in ("linearizable", "lease"):
        assert raftkv(cluster_urls, capsys, "get", "cli/c", "--consistency", consistency) == put
