"""Managers (configured agents), their devices, and the DND flag presence keeps current."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.config import ManagerConfig

from ._upsert import insert_for
from .schema import Manager, ManagerDevice

_managers = Manager.__table__
_devices = ManagerDevice.__table__


async def upsert_managers(conn: AsyncConnection, managers: Iterable[ManagerConfig]) -> None:
    """Insert or update managers and replace their device lists. `dnd` is live state
    (from the PBX), so a config reload never resets it. Managers absent from the
    input are left alone: several daemons may each know only their own PBX's staff."""
    by_ext = {m.extension: m for m in managers}
    if not by_ext:
        return
    ins = insert_for(conn.dialect, _managers)
    await conn.execute(
        ins.on_conflict_do_update(index_elements=["extension"],
                                  set_={"name": ins.excluded.name, "updated_at": func.now()}),
        [{"extension": m.extension, "name": m.name} for m in by_ext.values()])
    devices = {d: m.extension for m in by_ext.values() for d in m.devices}
    # a device moved from another manager is taken from them (device is unique)
    await conn.execute(delete(_devices).where(or_(
        _devices.c.extension.in_(by_ext.keys()), _devices.c.device.in_(devices.keys()))))
    if devices:
        await conn.execute(insert(_devices), [{"device": d, "extension": e} for d, e in devices.items()])


async def set_dnd(conn: AsyncConnection, extension: str, on: bool) -> None:
    # Upsert: the PBX may report DND for an extension not (yet) in the config, and
    # routing must still respect it.
    ins = insert_for(conn.dialect, _managers)
    await conn.execute(ins.values(extension=extension, dnd=on).on_conflict_do_update(
        index_elements=["extension"], set_={"dnd": ins.excluded.dnd, "updated_at": func.now()}))


async def dnd_extensions(conn: AsyncConnection) -> set[str]:
    return set((await conn.scalars(select(_managers.c.extension).where(_managers.c.dnd))).all())
