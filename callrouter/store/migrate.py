"""Schema migrations, run programmatically (no alembic.ini: works from an installed wheel)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from .engine import make_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Arbitrary constant: several daemons sharing one PostgreSQL may start together;
# the advisory lock makes their upgrades run one after the other.
_PG_LOCK_KEY = 0x63616C6C  # "call"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Config is configparser-backed: a '%' (URL-escaped password) must be doubled
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` against `url` (sqlite+aiosqlite or postgresql+asyncpg)."""
    cfg = alembic_config(url)
    engine = make_engine(url, statement_timeout=None)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            await conn.run_sync(_upgrade, cfg, revision)
    finally:
        await engine.dispose()


async def current(url: str) -> str | None:
    """The database's current revision (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


def head() -> str:
    """The newest revision shipped with this package."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def _upgrade(conn: Connection, cfg: Config, revision: str) -> None:
    # env.py picks the live connection up from here instead of opening its own engine
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


class SchemaNotCurrent(RuntimeError):
    """The database lacks this version's schema: run `callrouter db upgrade`."""


def check_revision(conn: Connection) -> None:
    """Raise SchemaNotCurrent unless the database is at (or beyond) our head.

    A revision we do not know was written by a newer callrouter sharing this
    database; migrations are additive, so an older daemon keeps working (rolling
    upgrades of several daemons on one PostgreSQL)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    rev = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory.from_config(alembic_config())
    target = script.get_current_head()
    where = conn.engine.url.render_as_string(hide_password=True)
    if rev is None:
        raise SchemaNotCurrent(f"{where}: no callrouter schema; run `callrouter db upgrade`")
    known = {s.revision for s in script.walk_revisions()}
    if rev != target and rev in known:
        raise SchemaNotCurrent(f"{where}: schema at {rev}, this version needs {target}; "
                               "run `callrouter db upgrade`")
