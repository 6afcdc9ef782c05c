"""Engine creation: one place that knows how SQLite and PostgreSQL differ at connect time."""
from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Default bound on any single statement. The AGI path has its own 300 ms deadline
# (it cancels the awaiting task); this one protects the database side: a statement
# stuck behind a lock must fail, not hold a pooled connection forever.
DEFAULT_STATEMENT_TIMEOUT = 15.0


def make_engine(url: str, *, statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
                connect_timeout: float = 5.0) -> AsyncEngine:
    """An AsyncEngine for `sqlite+aiosqlite://` or `postgresql+asyncpg://` URLs.

    `statement_timeout=None` lifts the per-statement bound (migrations: building an
    index on a large `calls` table may legitimately take minutes)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, busy_timeout=statement_timeout or 60.0)
    if backend == "postgresql":
        return _pg_engine(url, statement_timeout, connect_timeout)
    raise ValueError(f"unsupported database {backend!r}: use sqlite+aiosqlite or postgresql+asyncpg")


def _sqlite_engine(url: str, busy_timeout: float) -> AsyncEngine:
    # sqlite3's `timeout` is the busy timeout: a writer waits for the lock this long
    # instead of failing at once with "database is locked".
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL: readers (dashboard, lookups) never block the writer (call logging).
        # synchronous=NORMAL is durable across process crashes in WAL mode, and
        # avoids an fsync per commit on the hot path.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        # SQLite ignores foreign keys (and ON DELETE CASCADE) unless asked per connection
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _pg_engine(url: str, statement_timeout: float | None, connect_timeout: float) -> AsyncEngine:
    server_settings = {"application_name": "callrouter"}
    connect_args: dict[str, Any] = {"timeout": connect_timeout, "server_settings": server_settings}
    if statement_timeout is not None:
        ms = str(int(statement_timeout * 1000))
        # server side: the statement is cancelled and its locks released;
        # client side (command_timeout): a dead network does not hang the await.
        server_settings["statement_timeout"] = ms
        server_settings["lock_timeout"] = ms
        server_settings["idle_in_transaction_session_timeout"] = str(int(statement_timeout * 4000))
        connect_args["command_timeout"] = statement_timeout + 1.0
    return create_async_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,          # survive a PostgreSQL restart without a failed call log
        pool_timeout=connect_timeout,  # waiting for a free pooled connection is bounded too
    )
