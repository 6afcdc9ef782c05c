"""REST API users: name, role, a manager's extension, and the hash of their token."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import ApiUser

Role = Literal["manager", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("manager", "supervisor", "admin")

_users = ApiUser.__table__
_COLS = (_users.c.id, _users.c.name, _users.c.role, _users.c.extension, _users.c.created_at,
         _users.c.revoked_at)


class UserExists(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    extension: str | None
    created_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _user(row) -> User:
    return User(row.id, row.name, row.role, row.extension, row.created_at, row.revoked_at)


async def add_user(conn: AsyncConnection, name: str, role: Role, extension: str | None, token_id: str,
                   token_hash: str) -> User:
    try:
        await conn.execute(insert(_users).values(name=name, role=role, extension=extension, token_id=token_id,
                                                 token_hash=token_hash))
    except IntegrityError:
        raise UserExists(f"user {name!r} already exists") from None
    row = (await conn.execute(select(*_COLS).where(_users.c.name == name))).one()
    return _user(row)


async def list_users(conn: AsyncConnection) -> list[User]:
    return [_user(r) for r in await conn.execute(select(*_COLS).order_by(_users.c.name))]


async def revoke_user(conn: AsyncConnection, name: str) -> bool:
    """True when an active user was revoked (a revoked user stays listed)."""
    res = await conn.execute(update(_users).where(_users.c.name == name, _users.c.revoked_at.is_(None))
                             .values(revoked_at=datetime.now(UTC)))
    return bool(res.rowcount)


async def user_by_token_id(conn: AsyncConnection, token_id: str) -> tuple[User, str] | None:
    row = (await conn.execute(select(*_COLS, _users.c.token_hash).where(_users.c.token_id == token_id))).first()
    return None if row is None else (_user(row), row.token_hash)


async def user_by_id(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(select(*_COLS).where(_users.c.id == user_id))).first()
    return None if row is None else _user(row)
