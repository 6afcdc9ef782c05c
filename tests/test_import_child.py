"""The client import with the parser in a child process (callrouter.crm.parseproc): the
same rows stored and the same problems reported, in the same order, as parsing in the
importing process; a bad file refused whole from the child too; progress in bytes."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from callrouter.crm.csvimport import CsvFormatError, RowError
from callrouter.crm.importer import import_clients
from callrouter.store import Store
from callrouter.store.schema import ClientPhone, ClientRow

HEADER = "\ufeffid;name;phones;owner_extension;monthly_turnover;tier;problem;blocked\n"
ROWS = ('c-1;Иван Петров;"8 (916) 123-45-67, +7 916 765 43 21";101;1 234,56;;нет;нет\n'
        "c-2;Bad phone;12-34;101;;;;\n"
        "c-3;Unknown owner;89160000003;999;;;;\n"
        "c-4;Bad number;89160000004;;12abc;;;\n"
        "c-1;Duplicate id;89160000005;;;;;\n"
        ";No id;89160000006;;;;;\n"
        " c-7 ; Ольга ;+7 495 000-00-07;101;75 000;vip;Да;\n")


def write_file(path: Path, plain_rows: int) -> Path:
    body = HEADER + ROWS
    body += "".join(f"p-{i};Клиент {i};8 916 {i:07d};101;{i},5;;;1\n" for i in range(plain_rows))
    path.write_bytes(body.encode() + "c-8;Кодировка;89160000008;;;;;\n".encode("cp1251") + b"c-9;Too few\n")
    return path


async def run(store: Store, path: Path, in_child: bool) -> tuple[list[RowError], list[tuple[int, int]], object]:
    errors: list[RowError] = []
    progress: list[tuple[int, int]] = []
    with open(path, "rb") as source:
        summary = await import_clients(store, source, region="RU", known_owners={"101"}, on_error=errors.append,
                                       on_progress=lambda rows, pos: progress.append((rows, pos)),
                                       chunk_size=1000, in_child=in_child)
    return errors, progress, summary


async def stored(store: Store) -> tuple[list, list]:
    async with store.engine.connect() as conn:
        clients = (await conn.execute(select(ClientRow.__table__).order_by(ClientRow.id))).all()
        phones = (await conn.execute(select(ClientPhone.__table__).order_by(ClientPhone.client_id,
                                                                            ClientPhone.phone))).all()
    return [tuple(r)[:-1] for r in clients], [tuple(r) for r in phones]  # without updated_at


async def test_the_child_stores_and_reports_what_the_process_itself_does(store: Store, tmp_path: Path) -> None:
    path = write_file(tmp_path / "clients.csv", 2500)
    errors_here, _, summary_here = await run(store, path, in_child=False)
    rows_here = await stored(store)
    async with store.engine.begin() as conn:
        await conn.execute(ClientRow.__table__.delete())

    errors_child, progress, summary_child = await run(store, path, in_child=True)
    assert errors_child == errors_here
    assert [(e.row, e.field) for e in errors_child] == [
        (3, "phones"), (4, "owner_extension"), (5, "monthly_turnover"), (6, "id"), (7, "id"),
        (2509, "name"), (2510, None)]
    assert await stored(store) == rows_here
    assert len(rows_here[0]) == 2502 and ("c-7", "Ольга", "101", 75000.0, "vip", True, False) in rows_here[0]
    assert (summary_child.good, summary_child.bad_rows, summary_child.errors) == \
        (summary_here.good, summary_here.bad_rows, summary_here.errors) == (2502, 7, 7)
    # progress: rows and bytes read grow to the whole file
    assert progress[-1] == (2509, path.stat().st_size) and progress == sorted(progress)


async def test_a_bad_header_is_refused_from_the_child_too(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id;email\nc-1;a@b\n")
    with pytest.raises(CsvFormatError, match="unknown column 'email'"):
        await run(store, path, in_child=True)
