"""The store: calls, clients, managers, route decisions and leads in SQLite or PostgreSQL."""
from __future__ import annotations

from .migrate import upgrade

__all__ = ["upgrade"]
