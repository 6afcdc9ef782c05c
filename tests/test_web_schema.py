"""schemathesis against the running daemon's own /openapi.json: every operation, with
data generated from the document (valid and invalid), as the admin over real HTTP.
No answer may be a 5xx, and every answer must match the document: status code,
content type, headers, body schema. Bounded: a few dozen examples per operation and
mode, no shrinking, on SQLite and PostgreSQL: about 27 s here in all."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings

import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from conftest import _pg_execute, run_in_thread
from webfixture import Api, running_api

EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@contextmanager
def api_in_thread(store_url: str) -> Iterator[Api]:
    """The daemon on its own loop in a thread, so schemathesis (sync, requests) can
    drive it from the test's thread."""
    ready: dict = {}
    started = threading.Event()

    async def main() -> None:
        try:
            async with running_api(store_url) as api:
                stop = asyncio.Event()
                ready.update(api=api, stop=stop, loop=asyncio.get_running_loop())
                started.set()
                await stop.wait()
        except BaseException as e:
            ready["error"] = e
            started.set()
            raise

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="daemon", daemon=True)
    thread.start()
    try:
        assert started.wait(60), "daemon did not start"
        if "error" in ready:
            raise ready["error"]
        yield ready["api"]
    finally:
        if "loop" in ready:
            ready["loop"].call_soon_threadsafe(ready["stop"].set)
        thread.join(30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory) -> Iterator[tuple[Api, dict]]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('schema') / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        run_in_thread(lambda: _pg_execute(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    with api_in_thread(url) as api:
        doc = requests.get(api.url + "/openapi.json", headers=api.auth("adam"), timeout=10).json()
        yield api, doc


def _operations(doc: dict) -> list[str]:
    return [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_to_the_document(served, mode: GenerationMode) -> None:
    api, doc = served
    schema = schemathesis.openapi.from_dict(doc)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in ops} == set(_operations(doc))
    session = requests.Session()
    tried: dict[str, int] = {}

    for op in ops:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def exercise(case) -> None:
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            case.call_and_validate(base_url=api.url, session=session, headers=api.auth("adam"), checks=checks,
                                   timeout=10)
            tried[op.label] = tried.get(op.label, 0) + 1

        try:
            exercise()
        except Exception as e:
            # schemathesis rejects generating some negative cases (nothing to negate)
            if mode is GenerationMode.NEGATIVE and "Unsatisfiable" in type(e).__name__:
                continue
            raise
    if mode is GenerationMode.POSITIVE:
        assert set(tried) == set(_operations(doc)), "an operation was never called"
    assert tried, "no request was made"
    # the daemon is still up and well after all of it
    assert requests.get(api.url + "/health", timeout=10).status_code == 200
