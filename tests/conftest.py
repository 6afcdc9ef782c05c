"""Shared fixtures.

Database fixtures run every store test on SQLite and on PostgreSQL. PostgreSQL
comes from CALLROUTER_TEST_PG_URL (any database on the server; each test session
creates its own `cr_test_<random>` database there and drops it at the end, so
concurrent runs on one server do not meet). Without the variable the PostgreSQL
half is skipped.
"""
from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from callrouter.store import Store, upgrade

PG_URL_ENV = "CALLROUTER_TEST_PG_URL"

# Hypothesis (and schemathesis on it) keep their files out of the checkout
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), f"callrouter-hypothesis-{os.getuid()}"))

T = TypeVar("T")


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from a sync fixture.

    In its own thread and loop: asyncio.run() on this thread would replace the
    event loop pytest-asyncio manages for the tests."""
    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _pg_execute(url: str, *statements: str) -> None:
    # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of an empty PostgreSQL database private to this test session."""
    server_url = os.environ.get(PG_URL_ENV)
    if not server_url:
        pytest.skip(f"{PG_URL_ENV} not set")
    name = f"cr_test_{secrets.token_hex(6)}"
    run_in_thread(lambda: _pg_execute(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a connection leaked by a failed test must not keep the database alive
        run_in_thread(lambda: _pg_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """URL of an empty, not yet migrated database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url = request.getfixturevalue("pg_database")
    # one database per session; each test gets it back empty
    run_in_thread(lambda: _pg_execute(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open Store on a freshly migrated, empty database."""
    await upgrade(store_url)
    async with Store(store_url) as s:
        yield s
