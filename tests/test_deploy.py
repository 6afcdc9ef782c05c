"""deploy/: the systemd unit (systemd-analyze verify where available), the compose file
(services and ports as README's Deploy section lists them), the example config (every
key of Settings, and it loads), the Asterisk dialplan (the fixes: transfer codes for the
agent side only, every DID shape matched, QUEUE_WAIT set, voicemail when nobody answers)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from callrouter.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "callrouter.service"


# ------------------------------------------------------------------ systemd

def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_runs_unprivileged_restarts_and_is_hardened():
    u = unit_settings()
    expected = {"User": ["callrouter"], "Restart": ["on-failure"], "ProtectSystem": ["strict"],
                "NoNewPrivileges": ["yes"], "PrivateTmp": ["yes"], "ReadWritePaths": ["/var/lib/callrouter"],
                "WorkingDirectory": ["/var/lib/callrouter"], "StateDirectory": ["callrouter"],
                "CapabilityBoundingSet": [""], "ExecReload": ["/bin/kill -HUP $MAINPID"]}
    assert {k: u.get(k) for k in expected} == expected
    assert u["ExecStart"] == ["/opt/callrouter/bin/callrouter --config /etc/callrouter/callrouter.toml run"]
    assert u["ExecStartPre"] == ["/opt/callrouter/bin/callrouter --config /etc/callrouter/callrouter.toml db upgrade"]


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # the unit as installed, with this checkout's `callrouter` where /opt/callrouter's would be
    exe = Path(sys.executable).parent / "callrouter"
    assert exe.exists(), "the test venv has no callrouter script (pip install -e .)"
    unit = tmp_path / "callrouter.service"
    unit.write_text(UNIT.read_text().replace("/opt/callrouter/bin/callrouter", str(exe)))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if res.returncode != 0 and "Failed to" in res.stderr and "bus" in res.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {res.stderr.strip()[:200]}")
    # verify exits 0 even for unknown keys and bad values: those are lines naming the unit
    complaints = [line for line in (res.stdout + res.stderr).splitlines() if "callrouter.service" in line]
    assert res.returncode == 0 and not complaints, res.stdout + res.stderr


# ------------------------------------------------------------------ compose

def readme_ports() -> set[tuple[str, str]]:
    """(service, published mapping or 'not published') rows of README's Deploy port table."""
    text = (ROOT / "README.md").read_text()
    deploy = text.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in deploy.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit():
            rows.add((cells[0], cells[2].strip("`")))
    return rows


def test_the_compose_file_has_the_services_and_ports_readme_documents():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"callrouter", "postgres", "mosquitto"}
    published = {(name, p) for name, svc in services.items() for p in svc.get("ports", [])}
    published |= {(name, "not published") for name, svc in services.items() if not svc.get("ports")}
    documented = readme_ports()
    assert documented and published == documented
    app = services["callrouter"]
    assert app["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / "Dockerfile").exists()
    assert "@postgres/callrouter" in app["environment"]["CALLROUTER_DATABASE_URL"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "host.docker.internal:host-gateway" in app["extra_hosts"]   # the PBX on the host
    assert "./callrouter.toml:/etc/callrouter/callrouter.toml:ro" in app["volumes"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "USER callrouter" in dockerfile and "EXPOSE 4573 8080" in dockerfile


# ------------------------------------------------------------------ the example config

def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a field typed Model, Model | None or tuple[Model, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for t in get_args(annotation):
        inner = _model_of(t)
        if inner is not None:
            return inner
    return None


def settings_keys() -> set[tuple[str, str]]:
    """(section, key) of every setting; section "" is the top level."""
    keys = set()
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is None:
            keys.add(("", name))
        else:
            keys |= {(name, sub) for sub in model.model_fields}
    return keys


def example_keys(text: str) -> set[tuple[str, str]]:
    """(section, key) of every key written in the file, set or commented out (`# key = ...`)."""
    section = ""
    keys = set()
    for line in text.splitlines():
        m = re.match(r"^#?\s*\[\[?([a-z_]+)\]\]?", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^(?:#\s*)?([a-z_]+)\s*=", line)
        if m:
            keys.add((section, m.group(1)))
    return keys


def test_the_example_config_names_every_key_and_loads(monkeypatch):
    text = (DEPLOY / "callrouter.example.toml").read_text()
    missing = settings_keys() - example_keys(text)
    assert not missing, f"keys of Settings not in deploy/callrouter.example.toml: {sorted(missing)}"
    unknown = example_keys(text) - settings_keys()
    assert not unknown, f"keys in the example that Settings does not have: {sorted(unknown)}"
    for var in [v for v in __import__("os").environ if v.startswith("CALLROUTER_")]:
        monkeypatch.delenv(var)
    s = load_settings(DEPLOY / "callrouter.example.toml", required=True)
    assert s.database_url.startswith("postgresql+asyncpg://") and s.rules_dir == "/etc/callrouter/rules"
    assert [p.name for p in s.pbx] == ["main"] and s.webhook is None
    # the webhook table, uncommented, loads too
    webhook = re.sub(r"(?m)^# (?!#)", "", text.split("# [webhook]", 1)[1])
    tail = "[webhook]" + webhook
    on = Settings(**__import__("tomllib").loads(text.split("# [webhook]", 1)[0] + tail))
    assert on.webhook is not None and on.webhook.url.startswith("https://") and on.webhook.max_attempts == 5


# ------------------------------------------------------------------ the Asterisk dialplan

def dialplan() -> dict[str, list[tuple[str, str, str]]]:
    """context -> [(extension, application, args)] of deploy/asterisk/extensions.conf."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    ctx, exten = "", ""
    for raw in (DEPLOY / "asterisk" / "extensions.conf").read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            ctx = line.strip("[]")
            out[ctx] = []
            continue
        m = re.match(r"^(exten|same)\s*=>\s*(.*)$", line)
        if not m:
            out[ctx].append(("", "", line))  # [globals] assignments
            continue
        parts = m.group(2).split(",", 2 if m.group(1) == "exten" else 1)
        if m.group(1) == "exten":
            exten = parts[0]
            step = parts[2]
        else:
            step = parts[1]
        app = re.match(r"^(\w+)\((.*)\)$", step)
        out[ctx].append((exten, app.group(1), app.group(2)) if app else (exten, step, ""))
    return out


def split_args(args: str) -> list[str]:
    """Top-level commas only (${IF(...)} and $[...] hold their own)."""
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def matches(pattern: str, exten: str) -> bool:
    """Asterisk's extension matching, for the pattern characters the file uses."""
    if not pattern.startswith("_"):
        return pattern == exten
    rx = ""
    for ch in re.findall(r"\[[^\]]+\]|.", pattern[1:]):
        rx += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(ch, ch if ch.startswith("[")
                                                                                   else re.escape(ch))
    return re.fullmatch(rx, exten) is not None


def test_transfer_codes_are_the_agents_only():
    """Dial/Queue option t: the called party (our manager) may transfer; T would give the
    external caller the feature codes."""
    uses = [(app, split_args(args)) for steps in dialplan().values() for _, app, args in steps
            if app in ("Dial", "Queue")]
    assert len(uses) >= 4
    for app, args in uses:
        assert len(args) > 1 and args[1 if app == "Queue" else 2] == "t", (app, args)


def test_every_did_shape_reaches_the_router():
    inbound = {e for e, _, _ in dialplan()["callrouter-inbound"]}
    for did in ("5550100", "+74951234567", "s", "74951234567"):
        assert any(matches(p, did) for p in inbound), did
    steps = dialplan()["callrouter-route"]
    assert any(app == "AGI" for _, app, _ in steps)
    assert all(app != "Goto" or args == "callrouter-route,route,1"
               for _, app, args in dialplan()["callrouter-inbound"])


def test_queue_wait_is_set_and_nobody_answering_ends_in_voicemail():
    plan = dialplan()
    globals_ = {line.split("=", 1)[0] for _, _, line in plan["globals"]}
    used = {v for steps in plan.values() for _, _, args in steps for v in re.findall(r"\$\{([A-Z_]+)\}", args)}
    assert {"QUEUE_WAIT", "DESK_VOICEMAIL", "CALLROUTER", "CALLROUTER_FALLBACK_QUEUE"} <= globals_
    assert "QUEUE_WAIT" in used
    for ctx in ("callrouter-route", "queues"):
        apps = [app for _, app, _ in plan[ctx]]
        assert "VoiceMail" in apps, ctx
    # in the route: the unanswered branch without a fallback goes to voicemail
    route = [args for _, app, args in plan["callrouter-route"] if app == "GotoIf"]
    assert any('"${ROUTE_FALLBACK}" = ""]?voicemail' in a for a in route)
    # and each queue: after Queue() returns (timeout, empty), voicemail before the hangup
    q = [app for _, app, _ in plan["queues"]]
    assert q.index("Queue") < q.index("VoiceMail") < q.index("Hangup")
