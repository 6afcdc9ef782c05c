"""The store: calls, clients, managers, route decisions and leads in SQLite or PostgreSQL.

Schema changes only through Alembic migrations (`upgrade(url)`, wired to
`callrouter db upgrade`); `Store` is the async API the daemon uses.
"""
from __future__ import annotations

from .clients import Client
from .migrate import SchemaNotCurrent, upgrade
from .store import Store

__all__ = ["Client", "SchemaNotCurrent", "Store", "upgrade"]
