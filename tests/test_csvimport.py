"""The CSV parser alone (callrouter.crm.csvimport): files as a CRM export or a spreadsheet
in Russia writes them, every kind of bad row reported with its row, field and reason."""
from __future__ import annotations

import csv
import io
import random
from itertools import islice

import pytest

from callrouter.crm import csvimport
from callrouter.crm.csvimport import (
    CsvFormatError,
    RowError,
    _record,
    parse_number,
    read_client_records,
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


# ------------------------------------------------ the quick path agrees with the model

# cells of every kind per column: plain, to strip, too long, bad, odd (\x1c is whitespace
# to Python's strip but not to pydantic's), empty
FUZZ_CELLS = {
    "id": ["c-1", "c-2", "c-3", "c-4", "c-5", " c-6", "c-7 ", "", "  ", "x" * 64, "y" * 65, "\u00a0c-8", "\x1cc-9",
           "c-10\u2028"],
    "name": ["", "Иван", " Иван ", "x" * 200, "x" * 201, " ", "a\u00a0", "ООО «Ромашка»", "\x1cИван", "a;b"],
    "phones": ["", "89161234567", "8 (916) 123-45-67", "+7 916 123 45 67", "12-34", "89161234567, +79161234567",
               "a;b", ";;", "  ", "+1 650 253 0000", "0079161234567", "8916123456", "anonymous", "101",
               ";".join(f"8916123{i:04d}" for i in range(51)), ";".join(f"8916123{i:04d}" for i in range(50)),
               "+44 20 7946 0018", "+7 (495) 111-22-33\u00a0", "8" * 40, "+79161234567;+79161234567"],
    "owner_extension": ["", "101", "102", "999", " 101", "101 ", "ab cd", "x" * 33, "*1#", "  ", "1\n"],
    "monthly_turnover": ["", "0", "-1", "1 234,56", "12abc", "1" * 400, "-0", "1e5", " 100 ", "  ", "0,5",
                         "99999999999999999999", "1.234,5", "+5"],
    "tier": ["", "wholesale", " vip", "x" * 201, "  ", "\x1c"],
    "problem": ["", "да", "нет", "Yes", "NO", "maybe", " 1", "TRUE", "  ", "Да", "y", "ДА", "0"],
    "blocked": ["", "1", "0", "no", "Нет", "nope", "false "],
}
COLUMNS = list(FUZZ_CELLS)
BY_MODEL = csvimport._client_by_model


def quick_and_model(data: bytes, monkeypatch: pytest.MonkeyPatch, region: str = "RU",
                    owners: set[str] | None = {"101", "*1#"}) -> tuple[list, list, int]:
    """(read_clients as records, read_client_records, rows the quick path left to the model)"""
    by_model = [x if isinstance(x, RowError) else _record(x)
                for x in read_clients(data, region=region, known_owners=owners)]
    calls = 0

    def counted(*a, **kw):
        nonlocal calls
        calls += 1
        return BY_MODEL(*a, **kw)

    monkeypatch.setattr(csvimport, "_client_by_model", counted)
    quick = list(read_client_records(data, region=region, known_owners=owners))
    return by_model, quick, calls


def fuzz_file(rnd: random.Random, rows: int) -> bytes:
    columns = ["id"] + rnd.sample(COLUMNS[1:], rnd.randrange(len(COLUMNS)))
    rnd.shuffle(columns)
    out = io.StringIO()
    w = csv.writer(out, delimiter=rnd.choice(";,"))
    w.writerow(columns)
    for n in range(rows):
        plain = rnd.random() < 0.6  # most rows plainly well-formed (a new id), the rest anything
        w.writerow([f"p-{n}" if plain and c == "id" and rnd.random() < 0.95
                    else rnd.choice(FUZZ_CELLS[c][:4] if plain else FUZZ_CELLS[c]) if rnd.random() < 0.9
                    else "".join(rnd.choices("  01a;,+-.\u00a0\x1c\"да", k=rnd.randrange(6))) for c in columns])
    return out.getvalue().encode()


def test_the_quick_path_gives_what_the_model_gives_on_fuzzed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(15)
    model_rows = good = bad = total = 0
    for _ in range(300):
        rows = rnd.randrange(1, 40)
        by_model, quick, calls = quick_and_model(fuzz_file(rnd, rows), monkeypatch)
        assert quick == by_model
        total += rows
        model_rows += calls
        good += sum(not isinstance(x, RowError) for x in quick)
        bad += sum(isinstance(x, RowError) for x in quick)
    # both paths were taken many times, and both answers were common
    assert model_rows > 1000 and total - model_rows > 1000 and good > 1000 and bad > 1000


def test_the_quick_path_on_every_cell_of_every_column(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fuzz cell alone in a row of plain cells, in the US region and without an owner check too."""
    plain = {c: FUZZ_CELLS[c][1] for c in COLUMNS}
    out = io.StringIO()
    w = csv.writer(out, delimiter=";")
    w.writerow(COLUMNS)
    n = 0
    for c in COLUMNS:
        for cell in FUZZ_CELLS[c]:
            n += 1
            w.writerow([cell if k == c else (f"u-{n}" if k == "id" else plain[k]) for k in COLUMNS])
    data = out.getvalue().encode()
    for region, owners in (("RU", {"101"}), ("US", None)):
        by_model, quick, calls = quick_and_model(data, monkeypatch, region, owners)
        assert quick == by_model
        assert 0 < calls < n
