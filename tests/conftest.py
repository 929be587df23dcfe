"""Fixtures shared by the real-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client for talking to nodes on loopback (no proxy settings from the environment)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client
