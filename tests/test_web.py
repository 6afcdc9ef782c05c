"""The REST API over real HTTP on 127.0.0.1, served by a running Daemon (SQLite and
PostgreSQL stores): every role boundary, validation naming the field, browser sessions
with CSRF, clients reaching routing at once, calls with their decisions, CSV, health
and metrics."""
from __future__ import annotations

import csv
import io

import aiohttp
import pytest

from agisim import agi_call, route_request
from webfixture import Api, running_api


@pytest.fixture
async def api(store_url: str):
    async with running_api(store_url) as a:
        yield a


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


# ------------------------------------------------------------------ who may ask

async def test_no_token_is_401_everywhere_but_health(api: Api, http) -> None:
    for path in ("/api/clients", "/api/calls", "/api/managers", "/metrics", "/openapi.json", "/api/me"):
        async with http.get(api.url + path) as r:
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(api.url + "/api/clients", headers={"Authorization": "Bearer cr_nope_nope"}) as r:
        assert r.status == 401
    async with http.get(api.url + "/health") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "database": True, "pbx": {"lab": True}, "spool_depth": 0}


async def test_a_revoked_token_is_401(api: Api, http) -> None:
    async with http.get(api.url + "/api/calls", headers=api.auth("rex")) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "token revoked"
    # revoked while in use: the next request is refused (the row is read every time)
    async with http.get(api.url + "/api/me", headers=api.auth("sue")) as r:
        assert r.status == 200
    await api.daemon.store.revoke_user("sue")
    async with http.get(api.url + "/api/me", headers=api.auth("sue")) as r:
        assert r.status == 401


async def test_a_manager_sees_only_their_own_calls_and_clients(api: Api, http) -> None:
    ann = api.auth("ann")
    async with http.get(api.url + "/api/calls", headers=ann) as r:
        assert [c["call_id"] for c in (await r.json())["items"]] == ["1700000001.1"]
    async with http.get(api.url + "/api/calls/lab/1700000002.1", headers=ann) as r:
        assert r.status == 404                      # bob's call: not 403, it does not exist for ann
    async with http.get(api.url + "/api/calls/lab/1700000001.1", headers=ann) as r:
        assert r.status == 200
    async with http.get(api.url + "/api/clients/c-bob", headers=ann) as r:
        assert r.status == 404
    async with http.get(api.url + "/api/clients/c-ann", headers=ann) as r:
        assert (await r.json())["owner_extension"] == "101"
    async with http.get(api.url + "/api/clients", headers=ann) as r:
        assert [c["id"] for c in (await r.json())["items"]] == ["c-ann"]
    async with http.get(api.url + "/api/clients", params={"owner": "102"}, headers=ann) as r:
        assert (await r.json())["items"] == []
    async with http.put(api.url + "/api/managers/102/dnd", json={"dnd": True}, headers=ann) as r:
        assert r.status == 404
    async with http.put(api.url + "/api/clients/c-ann", json={"name": "x"}, headers=ann) as r:
        assert r.status == 403                      # managers read; supervisors and admins write
    # a supervisor sees both
    async with http.get(api.url + "/api/calls", headers=api.auth("sue")) as r:
        assert sorted(c["call_id"] for c in (await r.json())["items"]) == ["1700000001.1", "1700000002.1"]
    async with http.put(api.url + "/api/managers/103", json={"name": "New"}, headers=api.auth("sue")) as r:
        assert r.status == 403                      # managers are the admin's


# ------------------------------------------------------------------ bodies

async def test_a_bad_body_is_400_naming_the_field(api: Api, http) -> None:
    sue = api.auth("sue")
    cases = [
        ("/api/clients/c-9", {"name": "X", "phones": ["+7 916 123", "12"]}, "phones"),
        ("/api/clients/c-9", {"name": "X", "owner_extension": "999"}, "owner_extension"),
        ("/api/clients/c-9", {"name": "X", "monthly_turnover": "lots"}, "monthly_turnover"),
        ("/api/clients/c-9", {"name": "X", "colour": "red"}, "colour"),
        ("/api/clients/c-9", {"id": "c-10", "name": "X"}, "id"),
    ]
    for path, body, fld in cases:
        async with http.put(api.url + path, json=body, headers=sue) as r:
            out = await r.json()
            assert r.status == 400, (body, out)
            assert out["field"] == fld, out
            assert fld in out["error"]
    bulk = {"clients": [{"id": "c-1", "phones": ["8 (916) 000-00-01"]}, {"id": "c-2", "phones": ["not a phone"]}]}
    async with http.post(api.url + "/api/clients/bulk", json=bulk, headers=sue) as r:
        out = await r.json()
        assert (r.status, out["field"]) == (400, "clients.1.phones")
        assert "'not a phone'" in out["error"]
    async with http.post(api.url + "/api/clients/bulk", data="id,name\n", headers={**sue, "Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with http.get(api.url + "/api/clients", params={"phone": "12"}, headers=sue) as r:
        assert (r.status, (await r.json())["field"]) == (400, "phone")
    async with http.get(api.url + "/api/calls", params={"outcome": "happy"}, headers=sue) as r:
        assert (r.status, (await r.json())["field"]) == (400, "outcome")
    # nothing of the refused bulk was stored
    assert await api.daemon.store.get_clients(["c-1", "c-9"]) == {}


# ------------------------------------------------------------------ browser sessions

async def test_a_cookie_session_needs_the_csrf_token_to_change_anything(api: Api) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for a bare IP
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.post(api.url + "/login", json={"token": api.tokens["sue"]}) as r:
            assert r.status == 200
            csrf = (await r.json())["csrf_token"]
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with browser.get(api.url + "/api/me") as r:          # reading needs no CSRF token
            assert (await r.json())["name"] == "sue"
        body = {"name": "Via Browser", "phones": ["+79160000001"]}
        async with browser.put(api.url + "/api/clients/c-web", json=body) as r:
            assert r.status == 403
            assert "CSRF" in (await r.json())["error"]
        async with browser.put(api.url + "/api/clients/c-web", json=body, headers={"X-CSRF-Token": "guess"}) as r:
            assert r.status == 403
        assert await api.daemon.store.get_clients(["c-web"]) == {}
        async with browser.put(api.url + "/api/clients/c-web", json=body, headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200
        async with browser.post(api.url + "/logout", headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 204
        async with browser.get(api.url + "/api/me") as r:
            assert r.status == 401
    async with aiohttp.ClientSession() as s:   # Bearer requests need no CSRF token
        async with s.delete(api.url + "/api/clients/c-web", headers=api.auth("sue")) as r:
            assert r.status == 204
    async with aiohttp.ClientSession() as s:
        async with s.post(api.url + "/login", json={"token": api.tokens["rex"]}) as r:
            assert r.status == 401


# ------------------------------------------------------------------ clients reach routing

async def test_a_client_put_through_the_api_is_routed_to_its_owner_at_once(api: Api, http) -> None:
    caller = "89167770011"
    before = await agi_call("127.0.0.1", api.agi_port, route_request(caller, linkedid="1.1"))
    assert before.variables["CLIENT_ID"] == ""               # unknown caller: a lead
    body = {"name": "Новый Клиент", "phones": ["8 (916) 777-00-11"], "owner_extension": "102"}
    async with http.put(api.url + "/api/clients/c-new", json=body, headers=api.auth("sue")) as r:
        assert r.status == 200
        assert (await r.json())["phones"] == ["+79167770011"]
    # the first call after the answer already sees it: no directory refresh waited for
    after = await agi_call("127.0.0.1", api.agi_port, route_request(caller, linkedid="1.2"))
    assert after.variables["CLIENT_ID"] == "c-new"
    assert after.variables["ROUTE_DIAL"] == "PJSIP/102"
    assert after.variables["ROUTE_REASON"] == "owner"
    # and a delete is seen at once too
    async with http.delete(api.url + "/api/clients/c-new", headers=api.auth("adam")) as r:
        assert r.status == 204
    gone = await agi_call("127.0.0.1", api.agi_port, route_request(caller, linkedid="1.3"))
    assert gone.variables["CLIENT_ID"] == ""


async def test_bulk_upsert_and_search_by_name_phone_and_owner(api: Api, http) -> None:
    sue = api.auth("sue")
    bulk = {"clients": [{"id": f"b-{i:02}", "name": f"Bulk {i}", "phones": [f"8 916 100-00-{i:02}"],
                         "owner_extension": "101" if i % 2 else None} for i in range(10)]}
    async with http.post(api.url + "/api/clients/bulk", json=bulk, headers=sue) as r:
        assert (r.status, await r.json()) == (200, {"written": 10})
    async with http.get(api.url + "/api/clients", params={"phone": "+7 (916) 100-00-07"}, headers=sue) as r:
        assert [c["id"] for c in (await r.json())["items"]] == ["b-07"]
    async with http.get(api.url + "/api/clients", params={"name": "bulk", "owner": "101", "limit": "3"},
                        headers=sue) as r:
        page = await r.json()
    assert [c["id"] for c in page["items"]] == ["b-01", "b-03", "b-05"]
    async with http.get(api.url + "/api/clients", params={"name": "bulk", "owner": "101", "limit": "3",
                                                          "cursor": page["next_cursor"]}, headers=sue) as r:
        assert [c["id"] for c in (await r.json())["items"]] == ["b-07", "b-09"]
    async with http.get(api.url + "/api/clients", params={"name": "анна"}, headers=sue) as r:
        names = [c["id"] for c in (await r.json())["items"]]
    # PostgreSQL folds Cyrillic case; SQLite's LIKE folds ASCII only (documented)
    assert names in (["c-ann"], [])
    async with http.get(api.url + "/api/clients", params={"name": "Анна"}, headers=sue) as r:
        assert [c["id"] for c in (await r.json())["items"]] == ["c-ann"]


async def test_bulk_upsert_takes_the_import_csv_format_all_or_nothing(api: Api, http) -> None:
    sue = {**api.auth("sue"), "Content-Type": "text/csv"}
    good = ("\ufeffid;name;phones;owner_extension;monthly_turnover\n"
            "csv-1;Ivan;8 (916) 200-00-01;101;\"1 234,5\"\n"
            "csv-2;Olga;\"8 916 200-00-02, +7 916 200-00-03\";;\n")
    async with http.post(api.url + "/api/clients/bulk", data=good.encode(), headers=sue) as r:
        assert (r.status, await r.json()) == (200, {"written": 2})
    got = await api.daemon.store.get_clients(["csv-1", "csv-2"])
    assert got["csv-1"].monthly_turnover == 1234.5 and got["csv-1"].owner_extension == "101"
    assert got["csv-2"].phones == ("+79162000002", "+79162000003")
    bad = "id,phones\ncsv-3,8 916 200-00-04\ncsv-4,not a phone\ncsv-3,8 916 200-00-05\n"
    async with http.post(api.url + "/api/clients/bulk", data=bad.encode(), headers=sue) as r:
        out = await r.json()
    assert r.status == 400 and out["field"] == "row 3: phones"
    assert [e["field"] for e in out["errors"]] == ["row 3: phones", "row 4: id"]
    assert await api.daemon.store.get_clients(["csv-3"]) == {}


async def test_a_manager_without_an_extension_sees_nothing(api: Api, http) -> None:
    for path in ("/api/calls", "/api/clients", "/api/clients/c-ann"):
        async with http.get(api.url + path, headers=api.auth("nix")) as r:
            assert r.status == 403, path
            assert "no extension" in (await r.json())["error"]


async def test_a_csv_body_in_an_unknown_or_binary_charset_is_400_not_500(api: Api, http) -> None:
    for charset in ("nonexistent", "zlib_codec", "utf-16"):
        headers = {**api.auth("sue"), "Content-Type": f"text/csv; charset={charset}"}
        async with http.post(api.url + "/api/clients/bulk", data=b"id,name\nx-1,X\n", headers=headers) as r:
            assert r.status == 400, (charset, await r.text())


# ------------------------------------------------------------------ managers

async def test_managers_list_upsert_and_dnd_reach_presence(api: Api, http) -> None:
    async with http.put(api.url + "/api/managers/103", json={"name": "Vera", "devices": ["PJSIP/103"]},
                        headers=api.auth("adam")) as r:
        assert (await r.json()) == {"extension": "103", "name": "Vera", "dnd": False, "devices": ["PJSIP/103"]}
    async with http.put(api.url + "/api/managers/101/dnd", json={"dnd": True}, headers=api.auth("ann")) as r:
        assert (await r.json())["dnd"] is True
    assert api.daemon.presence.snapshot()["101"].dnd is True
    # routing sees it: ann's client now goes to the desk, not to ann
    answer = await agi_call("127.0.0.1", api.agi_port, route_request("+79161234567", linkedid="2.1"))
    assert answer.variables["ROUTE_DIAL"] != "PJSIP/101"
    async with http.get(api.url + "/api/managers", headers=api.auth("bob")) as r:
        assert [(m["extension"], m["dnd"]) for m in await r.json()] == [("101", True), ("102", False), ("103", False)]
    async with http.put(api.url + "/api/managers/999/dnd", json={"dnd": True}, headers=api.auth("sue")) as r:
        assert r.status == 404


# ------------------------------------------------------------------ calls

async def test_one_call_with_legs_transfers_and_its_routing_decision(api: Api, http) -> None:
    async with http.get(api.url + "/api/calls/lab/1700000001.1", headers=api.auth("sue")) as r:
        detail = await r.json()
    assert detail["call"]["legs"][0]["agent"] == "101"
    assert detail["call"]["transfers"] == [{"kind": "blind", "from": "101", "to": "102"}]
    [decision] = detail["decisions"]
    assert (decision["rule"], decision["dial"], decision["client_id"]) == ("owner", "PJSIP/101", "c-ann")
    assert decision["trace"]["steps"] == ["owner: client c-ann owned by 101, available"]


async def test_call_filters_pages_and_csv(api: Api, http) -> None:
    sue = api.auth("sue")
    async with http.get(api.url + "/api/calls", params={"manager": "102"}, headers=sue) as r:
        assert [c["call_id"] for c in (await r.json())["items"]] == ["1700000002.1"]
    async with http.get(api.url + "/api/calls", params={"since": "2026-11-23T10:03:00+03:00"}, headers=sue) as r:
        assert [c["call_id"] for c in (await r.json())["items"]] == ["1700000002.1"]
    async with http.get(api.url + "/api/calls", params={"client": "c-ann", "complete": "true", "outcome": "answered",
                                                        "direction": "in"}, headers=sue) as r:
        assert [c["call_id"] for c in (await r.json())["items"]] == ["1700000001.1"]
    async with http.get(api.url + "/api/calls", params={"limit": "1"}, headers=sue) as r:
        first = await r.json()
    async with http.get(api.url + "/api/calls", params={"limit": "1", "cursor": first["next_cursor"]},
                        headers=sue) as r:
        second = await r.json()
    assert [c["call_id"] for c in first["items"] + second["items"]] == ["1700000002.1", "1700000001.1"]
    async with http.get(api.url + "/api/calls", params={"cursor": "garbage"}, headers=sue) as r:
        assert (r.status, (await r.json())["field"]) == (400, "cursor")
    async with http.get(api.url + "/api/calls", headers={**sue, "Accept": "text/csv"}) as r:
        assert r.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert [(x["call_id"], x["answered_by"], x["legs"], x["transfers"]) for x in rows] == [
        ("1700000002.1", "102", "102:answered", ""), ("1700000001.1", "101", "101:answered", "blind:101>102")]
    async with http.get(api.url + "/api/clients", params={"format": "csv"}, headers=api.auth("ann")) as r:
        rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert [(x["id"], x["phones"]) for x in rows] == [("c-ann", "+79161234567")]


# ------------------------------------------------------------------ operations and docs

async def test_metrics_count_events_calls_decisions_and_route_latency(api: Api, http) -> None:
    await agi_call("127.0.0.1", api.agi_port, route_request("+79161234567", linkedid="3.1"))
    async with http.get(api.url + "/metrics", headers=api.auth("sue")) as r:
        text = await r.text()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines["callrouter_route_latency_seconds_count"]) == 1.0
    assert float(lines['callrouter_ami_connected{pbx="lab"}']) == 1.0
    assert float(lines['callrouter_ami_events_total{pbx="lab"}']) == 0.0     # the fake PBX sent none
    assert float(lines['callrouter_calls_in_progress{pbx="lab"}']) == 0.0
    assert float(lines['callrouter_reporter_queue_depth{reporter="call record"}']) == 0.0
    assert float(lines['callrouter_decisions_total{result="dropped"}']) == 0.0
    assert float(lines["callrouter_decision_log_pending"]) + float(lines['callrouter_decisions_total{result="stored"}']) == 1.0
    assert float(lines["callrouter_spool_items"]) == 0.0


async def test_the_document_and_the_docs_page_are_served_locally(api: Api, http) -> None:
    async with http.get(api.url + "/openapi.json", headers=api.auth("bob")) as r:
        doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    assert {"/api/clients", "/api/clients/{id}", "/api/clients/bulk", "/api/managers/{extension}/dnd", "/api/calls",
            "/api/calls/{pbx}/{call_id}", "/health", "/metrics", "/login"} <= set(doc["paths"])
    put = doc["paths"]["/api/clients/{id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ClientPut"}
    assert "phones" in doc["components"]["schemas"]["ClientPut"]["properties"]
    bulk = doc["paths"]["/api/clients/bulk"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert doc["components"]["schemas"]["BulkClientsIn"]["properties"]["clients"]["items"] == {
        "$ref": "#/components/schemas/ClientIn"} and bulk == {"$ref": "#/components/schemas/BulkClientsIn"}
    async with http.get(api.url + "/docs") as r:
        page = await r.text()
    assert r.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in page and "http://" not in page and "https://" not in page


# ------------------------------------------------------------------ the users command

def test_users_add_shows_the_token_once_and_stores_only_its_hash(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner
    from sqlalchemy import create_engine, text

    from callrouter.cli import main

    db = tmp_path / "users.db"
    monkeypatch.setenv("CALLROUTER_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    assert run(main, ["db", "upgrade"]).exit_code == 0
    added = run(main, ["users", "add", "ann", "--role", "manager", "--extension", "101"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith("cr_")
    refused = run(main, ["users", "add", "bob", "--role", "manager"])
    assert refused.exit_code != 0 and "--extension is required" in refused.output
    with create_engine(f"sqlite:///{db}").connect() as conn:
        stored = conn.execute(text("select token_id, token_hash from api_users")).one()
    secret = token.split("_", 2)[2]
    assert stored.token_hash.startswith("scrypt$") and secret not in stored.token_hash
    assert run(main, ["users", "revoke", "ann"]).exit_code == 0
    listed = run(main, ["users", "list"]).stdout
    assert listed.startswith("ann\tmanager\t101\t") and "revoked" in listed
    assert run(main, ["users", "revoke", "ann"]).exit_code != 0   # already revoked: said so
