"""The pure core imports no IO: no event loop, no database, no network library, no
settings loader, no signal handling. Each module is imported alone in a fresh
interpreter, and what it pulled in is read from `sys.modules`."""
import json
import subprocess
import sys

import pytest

CORE = [
    "callrouter.records",
    "callrouter.phone",
    "callrouter.phonevalid",
    "callrouter.devices",
    "callrouter.ami.events",
    "callrouter.tracker",
    "callrouter.routing.rules",
    "callrouter.routing.engine",
    "callrouter.routing.decision",
    "callrouter.routing.types",
    "callrouter.routing.presence",
    "callrouter.agi.protocol",
    "callrouter.text",
    "callrouter.screenpop.model",
    "callrouter.screenpop.callbacks",
    "callrouter.periods",
]
FORBIDDEN = ["asyncio", "sqlalchemy", "aiosqlite", "asyncpg", "aiohttp", "panoramisk", "aiomqtt",
             "pydantic_settings", "signal", "alembic", "yarl"]
# the edges: a core module that loads one of these is not pure any more
EDGES = ["callrouter.config", "callrouter.store", "callrouter.daemon", "callrouter.calllog",
         "callrouter.agi.server", "callrouter.ami.client", "callrouter.routing.lookup",
         "callrouter.routing.router", "callrouter.decisionlog", "callrouter.cli"]

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_io(module):
    loaded = loaded_by(module)
    assert module in loaded
    pulled = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert pulled == [], f"{module} pulls in {pulled[:10]}"
    edges = sorted(m for m in loaded if any(m == e or m.startswith(e + ".") for e in EDGES))
    assert edges == [], f"{module} pulls in {edges}"


def test_the_probe_would_see_an_impure_import():
    """The check above can fail: the daemon does load the event loop and the database."""
    loaded = loaded_by("callrouter.daemon")
    assert "asyncio" in loaded and "sqlalchemy" in loaded
