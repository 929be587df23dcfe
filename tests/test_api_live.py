"""The API against its spec: schemathesis, with every check, against a follower of a live 3-node cluster of real
processes (over real HTTP: schemathesis's ASGI mode runs apps on asyncio, which a QuartTrio app cannot use).

The cluster has a cluster token and schemathesis is not given it, so every fuzzed Raft message and cluster call
is refused with 401 and the cluster under test stays undisturbed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import positive_data_acceptance

from raftkv_harness.processes import leader_url, local_cluster


@pytest.fixture(scope="module")
def cluster_urls() -> Iterator[list[str]]:
    with local_cluster(3) as urls:
        yield urls


@pytest.fixture(scope="module")
def live_schema(cluster_urls: list[str]) -> schemathesis.BaseSchema:
    follower = next(url for url in cluster_urls if url != leader_url(cluster_urls))
    return schemathesis.openapi.from_url(follower + "/openapi.json")


schema = schemathesis.pytest.from_fixture("live_schema")


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: object, value: object) -> bytes:
    """A /raft/stream body: one JSON value per line (here, the one message schemathesis made up)."""
    return json.dumps(value).encode() + b"\n"


@schema.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms_to_its_spec(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
    """Every case gets a fresh Idempotency-Key: a key reused for another body is rightly refused with 422, and a
    stateless fuzzer cannot know which keys earlier cases took. A transaction whose branch writes one key twice
    is refused with 400 (as etcd does) by a rule JSON Schema cannot state, so schema-valid transactions may be
    refused; every other check still holds for them."""
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.operation.label in ("GET /watch", "GET /kv/{key}", "GET /events"):
        case.query = {**(case.query or {}), "timeout": 1}  # a stream must end for its answer to be checked
    unstated_rules: list[CheckFunction] = (
        [positive_data_acceptance] if case.operation.label == "POST /txn" else []
    )
    case.call_and_validate(timeout=15, excluded_checks=unstated_rules)
