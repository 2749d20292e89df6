"""Shared fixtures: the real Postgres and Redis services.

Locally a missing service skips its tests; with REQUIRE_SERVICES=1 (CI) it fails them instead.
"""

from __future__ import annotations

import glob
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") == "1"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _need(url: str, port: int, what: str) -> str:
    if not _reachable(url, port):
        msg = f"{what} not reachable at {url}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{msg} (REQUIRE_SERVICES=1: services must be present)")
        pytest.skip(msg)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """DSN of the real test Postgres (fails under REQUIRE_SERVICES=1 when absent)."""
    yield _need(TEST_DATABASE_URL, 5432, "PostgreSQL")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of the real test Redis (fails under REQUIRE_SERVICES=1 when absent)."""
    yield _need(TEST_REDIS_URL, 6379, "Redis")


@pytest.fixture(autouse=True)
def no_dpytest_files_left() -> Iterator[None]:
    """dpytest writes every attachment to ./dpytest_<n>.dat and never deletes it: remove the new ones."""
    before = set(glob.glob("dpytest_*.dat"))
    yield
    for path in set(glob.glob("dpytest_*.dat")) - before:
        os.remove(path)
