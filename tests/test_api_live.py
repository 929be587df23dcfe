"""The API against its spec: every route in the app is in openapi.yaml and the reverse, and schemathesis, with
every check, against a live 3-node cluster of real processes (STACK.md: from_asgi cannot drive QuartTrio)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis

from raftkv.api.app import create_app
from raftkv.api.docs import spec_operations
from raftkv.config import NodeConfig
from raftkv.node import RaftNode
from raftkv.storage import MemoryStorage
from raftkv.testing.processes import local_cluster
from raftkv.transport import Transport

TOKEN = "schemathesis-token"  # keeps fuzzed Raft messages (401) from disturbing the cluster under test


def app_operations() -> set[tuple[str, str]]:
    node = RaftNode(NodeConfig(id="n1"), MemoryStorage(), Transport({}, 1.0), random.Random(0))
    app = create_app(node)
    operations = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        operations |= {(method, path) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    return operations


def test_app_routes_match_the_spec() -> None:
    assert app_operations() == spec_operations()


@pytest.fixture(scope="module")
def cluster_urls() -> Iterator[list[str]]:
    with local_cluster(3, extra_args=("--token", TOKEN)) as urls:
        yield urls


@pytest.fixture(scope="module")
def live_schema(cluster_urls: list[str]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(cluster_urls[1] + "/openapi.json")


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms_to_its_spec(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
    case.call_and_validate(timeout=15)
