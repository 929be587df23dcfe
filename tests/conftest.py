"""Fixtures shared by the real-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from raftkv_harness.processes import local_cluster


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client for talking to nodes on loopback (no proxy settings from the environment)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(scope="session")
def cluster_urls() -> Iterator[list[str]]:
    """The URLs of one three-node cluster shared by the tests that only read and write keys (each test
    keeps to keys of its own)."""
    with local_cluster(3) as urls:
        yield urls
