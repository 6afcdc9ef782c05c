"""The CSV parser alone (callrouter.crm.csvimport): files as a CRM export or a spreadsheet
in Russia writes them, every kind of bad row reported with its row, field and reason."""
from __future__ import annotations

import io
from itertools import islice

import pytest

from callrouter.crm.csvimport import (
    CsvFormatError,
    RowError,
    parse_number,
    read_clients,
    read_managers,
    split_phones,
)
from callrouter.crm.models import ClientIn, ManagerIn
from callrouter.phone import normalize

HEADER = "id;name;phones;owner_extension;monthly_turnover;tier;problem;blocked\n"


def parse(data: bytes, **kw) -> tuple[list[ClientIn], list[RowError]]:
    out = list(read_clients(data, **kw))
    return [x for x in out if isinstance(x, ClientIn)], [x for x in out if isinstance(x, RowError)]


def test_a_spreadsheet_file_with_a_bom_semicolons_and_decimal_commas() -> None:
    data = ("\ufeff" + HEADER +
            'c-1;Иван Петров;"8 (916) 123-45-67, +7 916 765 43 21";101;1 234 567,89;wholesale;да;нет\n'
            "c-2;Ольга;+7 495 000-00-01;;;;;\n").encode("utf-8")
    good, errors = parse(data, known_owners={"101"})
    assert errors == []
    assert good == [
        ClientIn(id="c-1", name="Иван Петров", phones=("+79161234567", "+79167654321"), owner_extension="101",
                 monthly_turnover=1234567.89, tier="wholesale", problem=True, blocked=False),
        ClientIn(id="c-2", name="Ольга", phones=("+74950000001",))]  # empty cells: unknown


def test_columns_in_any_order_commas_and_a_quoted_phone_list() -> None:
    data = (b'blocked,phones,id\n'
            b'yes,"89161234567;+79161234568",c-1\n'
            b'0,,c-2\n')
    good, errors = parse(data)
    assert errors == []
    assert [(c.id, c.phones, c.blocked) for c in good] == [
        ("c-1", ("+79161234567", "+79161234568"), True), ("c-2", (), False)]


def test_every_kind_of_bad_row_is_reported_and_the_good_ones_kept() -> None:
    data = ((HEADER +
             "c-1;Good;89161234567;101;100;;;\n"
             "c-2;Bad phone;12-34;101;;;;\n"
             "c-3;Unknown owner;89161234503;999;;;;\n"
             "c-4;Bad number;89161234504;;12abc;;;\n"
             "c-1;Duplicate;89161234505;;;;;\n"
             ";No id;89161234506;;;;;\n"
             "c-7;Bad flag;89161234507;;;;maybe;\n").encode()
            + "c-8;Не в UTF-8;89161234508;;;;;\n".encode("cp1251")
            + b"c-9;Too few cells\n"
            + b"c-10;Good too;+79161234510;;;;1;\n")
    good, errors = parse(data, known_owners={"101"})
    assert [c.id for c in good] == ["c-1", "c-10"]
    assert [(e.row, e.field) for e in errors] == [
        (3, "phones"), (4, "owner_extension"), (5, "monthly_turnover"), (6, "id"), (7, "id"),
        (8, "problem"), (9, "name"), (10, None)]
    reasons = {e.row: e.reason for e in errors}
    assert "'1234'" in reasons[3] and "not a dialable number" in reasons[3]
    assert "unknown owner '999'" in reasons[4]
    assert "not a number: '12abc'" in reasons[5]
    assert "duplicate id 'c-1': first on row 2" in reasons[6]
    assert "missing" in reasons[7]
    assert "'maybe'" in reasons[8]
    assert "not valid utf-8" in reasons[9] and "Не в UTF-8" in reasons[9]  # what it says in cp1251
    assert "2 cells, the header has 8" in reasons[10]


def test_a_cp1251_file_reads_when_its_encoding_is_given() -> None:
    good, errors = parse((HEADER + "c-1;Иван;89161234567;;;;да;\n").encode("cp1251"), encoding="cp1251")
    assert errors == [] and [(c.name, c.problem) for c in good] == [("Иван", True)]


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"id,name,email\n", "unknown column 'email'"),
    (b"name,phones\n", "no 'id' column"),
    (b"id,name,name\n", "'name' appear more than once"),
    ("id,имя\n".encode("cp1251"), "header row is not valid utf-8"),
])
def test_a_bad_header_stops_the_file(data: bytes, problem: str) -> None:
    with pytest.raises(CsvFormatError, match=problem):
        list(read_clients(data))


@pytest.mark.parametrize("text, value", [
    ("1 234,56", 1234.56), ("1\u00a0234,56", 1234.56), ("1234.56", 1234.56), ("1,234.56", 1234.56),
    ("1.234,56", 1234.56), ("1,234,567", 1234567.0), ("0", 0.0), ("12,5", 12.5)])
def test_numbers_as_spreadsheets_write_them(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["12abc", "1 2 3,4,5.6.7", "nan", "inf", "1e5x", "₽100"])
def test_not_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_compacting_a_phone_never_changes_what_it_normalizes_to() -> None:
    """split_phones strips formatting before normalize (its fast path): same answers."""
    forms = []
    for d in ("9161234567", "4950000001", "8001234567", "2125550100", "0123456789", "9991234567"):
        forms += [f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}", f"+7 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}",
                  f"7({d[:3]}){d[3:]}", f"8.{d}", f"00 7 {d}", f"810 7 {d}", f"+1 ({d[:3]}) {d[3:6]}-{d[6:]}",
                  f"({d[:3]}) {d[3:]}", f"+ 7 {d}", f"+7-{d}", f"1-{d}", f"{d[:2]}-{d[2:4]}", f"+44 20 {d[:8]}"]
    for raw in forms:
        [compact] = split_phones(raw)
        for region in ("RU", "US", "GB"):
            assert normalize(compact, region) == normalize(raw, region), (raw, region)


def test_rows_are_read_one_at_a_time() -> None:
    """An endless file: the first rows come out without the rest being read."""
    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0
            self.pending = HEADER.encode()

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            while len(self.pending) < len(b):
                self.n += 1
                self.pending += f"c-{self.n};x;+7916{self.n:07d};;;;;\n".encode()
            b[:] = self.pending[:len(b)]
            self.pending = self.pending[len(b):]
            return len(b)

    first = list(islice(read_clients(io.BufferedReader(Endless())), 3))
    assert [c.id for c in first] == ["c-1", "c-2", "c-3"]


def test_managers() -> None:
    data = (b"extension,name,devices\n"
            b'101,Anna,"PJSIP/101;PJSIP/101-app"\n'
            b"102,Boris,not-a-device\n"
            b"101,Anna again,\n"
            b",Nobody,PJSIP/1\n"
            b"103,,\n")
    out = list(read_managers(data))
    assert [x for x in out if isinstance(x, ManagerIn)] == [
        ManagerIn(extension="101", name="Anna", devices=("PJSIP/101", "PJSIP/101-app")), ManagerIn(extension="103")]
    assert [(e.row, e.field) for e in out if isinstance(e, RowError)] == [(3, "devices"), (4, "extension"),
                                                                       (5, "extension")]
