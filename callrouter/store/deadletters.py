"""Dead letters: items the database refused twice (in their batch, then alone), kept with
the error so an admin can see them (`callrouter deadletters list`) and nothing else waits.

The payload is the item as JSON with every non-ASCII character escaped (`ensure_ascii`):
a NUL or a lone surrogate, the very values a database refuses, become `\\u0000` text."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import DeadLetter as DeadLetterRow

_table = DeadLetterRow.__table__
MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    kind: str               # record | decision | webhook
    key: str                # what it was: pbx/call_id, pbx/uniqueid@decided_at
    error: str              # the database's refusal, first MAX_ERROR characters
    payload: str            # the item, ASCII-only JSON
    id: int | None = None
    created_at: datetime | None = None

    @classmethod
    def of(cls, kind: str, key: str, item: Any, error: BaseException) -> DeadLetter:
        text = f"{type(error).__name__}: {error}"
        return cls(kind, _ascii(key), _ascii(text)[:MAX_ERROR], json.dumps(item, ensure_ascii=True, default=str))


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


async def save_dead_letters(conn: AsyncConnection, letters: Sequence[DeadLetter]) -> None:
    if letters:
        await conn.execute(insert(_table), [{"kind": d.kind, "key": d.key, "error": d.error, "payload": d.payload}
                                            for d in letters])


async def list_dead_letters(conn: AsyncConnection, limit: int = 100, kind: str | None = None) -> list[DeadLetter]:
    """The newest `limit` dead letters, newest first."""
    stmt = select(_table).order_by(_table.c.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(_table.c.kind == kind)
    return [DeadLetter(r.kind, r.key, r.error, r.payload, r.id, r.created_at)
            for r in await conn.execute(stmt)]
