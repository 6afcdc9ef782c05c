"""`callrouter import clients|managers` as a user runs it (a real process), beside a running
Daemon (FastAGI on port 0, one fake PBX), on SQLite and on PostgreSQL: the good rows go
in, each bad one is reported, a dry run writes nothing, importing twice changes nothing,
and the daemon routes an imported client's call to its owner within a second (and stops
once the client is deleted) - through the client change feed, not a restart."""
from __future__ import annotations

import asyncio
import csv
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, select

from agisim import agi_call, route_request
from callrouter.config import AgiConfig, ManagerConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.daemon import Daemon
from callrouter.store import Store
from callrouter.store.schema import ClientChange, ClientRow, Manager
from fakeami import FakeAmi

RULES = Path(__file__).resolve().parents[1] / "rules"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HOST = "127.0.0.1"

CLIENTS = ("\ufeffid;name;phones;owner_extension;monthly_turnover;tier;problem;blocked\n"
           'c-1;Иван Петров;"8 (916) 123-45-67, +7 916 765 43 21";101;1 234,56;;нет;нет\n'
           "c-2;Bad phone;12-34;101;;;;\n"
           "c-3;Unknown owner;89160000003;999;;;;\n"
           "c-4;Bad number;89160000004;;12abc;;;\n"
           "c-1;Duplicate id;89160000005;;;;;\n"
           ";No id;89160000006;;;;;\n"
           "c-7;Ольга;+7 495 000-00-07;102;75 000;;да;\n").encode() + \
          "c-8;Кодировка;89160000008;;;;;\n".encode("cp1251") + \
          "c-9;Без телефона;;;;;;\n".encode()
BAD = [(3, "phones"), (4, "owner_extension"), (5, "monthly_turnover"), (6, "id"), (7, "id"), (9, "name")]


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter.cli", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def _scalar(store: Store, stmt):
    async with store.engine.connect() as conn:
        return await conn.scalar(stmt)


async def _routed_within(port: int, caller: str, want: dict[str, str], seconds: float) -> dict[str, str]:
    """Ask the router until the answer has `want`, for at most `seconds`; the last answer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        got = (await agi_call(HOST, port, route_request(caller, linkedid="9.1"))).variables
        if all(got.get(k) == v for k, v in want.items()) or loop.time() > end:
            return got
        await asyncio.sleep(0.02)


async def test_import_beside_a_running_daemon(store: Store, store_url: str, tmp_path: Path) -> None:
    managers = (ManagerConfig(extension="101", devices=("PJSIP/101",)),
                ManagerConfig(extension="102", devices=("PJSIP/102",)))
    config = tmp_path / "callrouter.toml"
    config.write_text(f'database_url = "{store_url}"\n'
                      + "".join(f'[[managers]]\nextension = "{m.extension}"\n' for m in managers))
    src = tmp_path / "clients.csv"
    src.write_bytes(CLIENTS)
    async with FakeAmi([]) as ami:
        settings = Settings(database_url=store_url, rules_dir=str(RULES), agi=AgiConfig(host=HOST, port=0),
                            web=WebConfig(enabled=False), spool=SpoolConfig(path=str(tmp_path / "spool.db")),
                            managers=managers, pbx=(PbxConfig(name="office", host=HOST, port=ami.port),))
        daemon = Daemon(settings, clock=lambda: MONDAY_10, wait_for_directory=True)
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.started.wait(), 20)
            port = daemon.agi.port
            unknown = (await agi_call(HOST, port, route_request("89161234567", linkedid="9.0"))).variables
            assert unknown["ROUTE_REASON"] == "unknown-caller" and unknown["CLIENT_ID"] == ""

            # a dry run checks every row and writes nothing
            rc, out, _ = await _cli(config, "import", "clients", str(src), "--dry-run")
            assert rc == 1 and "3 rows would be imported" in out and "6 rows with errors" in out
            assert await _scalar(store, select(func.count()).select_from(ClientRow.__table__)) == 0

            rc, out, err = await _cli(config, "import", "clients", str(src))
            loop = asyncio.get_running_loop()
            imported_at = loop.time()
            assert rc == 1, err  # some rows were not imported
            assert "clients: 3 rows imported, 6 rows with errors" in out
            routed = await _routed_within(port, "89161234567", {"CLIENT_ID": "c-1"}, 1.0)
            assert loop.time() - imported_at <= 1.0
            assert (routed["CLIENT_ID"], routed["ROUTE_REASON"], routed["ROUTE_DIAL"]) == ("c-1", "owner", "PJSIP/101")

            report = src.with_name("clients.errors.csv")
            with open(report, encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
            assert [(int(r["row"]), r["field"]) for r in rows] == BAD
            assert all(r["reason"] for r in rows)
            assert "Кодировка" in rows[-1]["reason"]  # how the cp1251 bytes would read
            assert set(await store.get_clients(["c-1", "c-7", "c-9", "c-2", "c-3"])) == {"c-1", "c-7", "c-9"}

            # importing the same file again changes nothing, not even a timestamp
            changes = await _scalar(store, select(func.count()).select_from(ClientChange.__table__))
            stamp = await _scalar(store, select(ClientRow.__table__.c.updated_at).where(ClientRow.__table__.c.id == "c-1"))
            before = await store.get_clients(["c-1", "c-7", "c-9"])
            rc, out, _ = await _cli(config, "import", "clients", str(src), "--errors", str(tmp_path / "again.csv"))
            assert rc == 1 and "clients: 3 rows imported" in out
            assert await store.get_clients(["c-1", "c-7", "c-9"]) == before
            assert await _scalar(store, select(func.count()).select_from(ClientChange.__table__)) == changes
            assert await _scalar(store, select(ClientRow.__table__.c.updated_at)
                                 .where(ClientRow.__table__.c.id == "c-1")) == stamp

            # a delete by another process reaches the daemon too
            async with store.engine.begin() as conn:
                await conn.execute(delete(ClientRow.__table__).where(ClientRow.__table__.c.id == "c-1"))
            deleted_at = loop.time()
            routed = await _routed_within(port, "89161234567", {"CLIENT_ID": ""}, 1.0)
            assert loop.time() - deleted_at <= 1.0
            assert routed["ROUTE_REASON"] == "unknown-caller"
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)


async def test_import_managers_then_clients_owned_by_them(store: Store, store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "callrouter.toml"
    config.write_text(f'database_url = "{store_url}"\n')
    managers = tmp_path / "managers.csv"
    managers.write_text("extension;name;devices\n201;Анна;PJSIP/201, PJSIP/201-app\n202;Борис;bad\n",
                        encoding="utf-8")
    rc, out, _ = await _cli(config, "import", "managers", str(managers))
    assert rc == 1 and "managers: 1 rows imported, 1 rows with errors" in out
    assert await _scalar(store, select(Manager.__table__.c.name).where(Manager.__table__.c.extension == "201")) == "Анна"

    clients = tmp_path / "clients.csv"
    clients.write_text("id,owner_extension\nc-1,201\nc-2,202\n", encoding="utf-8")
    rc, out, _ = await _cli(config, "import", "clients", str(clients))
    assert rc == 1 and "clients: 1 rows imported, 1 rows with errors" in out
    assert (await store.get_clients(["c-1"]))["c-1"].owner_extension == "201"
    report = (tmp_path / "clients.errors.csv").read_text(encoding="utf-8-sig")
    assert "3,owner_extension,unknown owner '202'" in report

    # every row good: exit 0, an empty report
    clients.write_text("id,owner_extension\nc-3,201\n", encoding="utf-8")
    rc, out, _ = await _cli(config, "import", "clients", str(clients))
    assert rc == 0 and "1 rows imported, 0 rows with errors" in out


async def test_a_file_that_is_not_a_client_list_is_refused_whole(store: Store, store_url: str,
                                                                 tmp_path: Path) -> None:
    config = tmp_path / "callrouter.toml"
    config.write_text(f'database_url = "{store_url}"\n')
    src = tmp_path / "clients.csv"
    src.write_text("client,phone\nc-1,89161234567\n", encoding="utf-8")
    rc, _, err = await _cli(config, "import", "clients", str(src))
    assert rc == 1 and "unknown column 'client'" in err and str(src) in err
    rc, _, err = await _cli(config, "import", "clients", str(src), "--encoding", "klingon")
    assert rc == 2 and "unknown encoding 'klingon'" in err
