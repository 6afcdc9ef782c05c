"""Config and start-up mistakes through the real CLI (`callrouter` as a subprocess): each is
one line on stderr naming the problem, a nonzero exit, and never a secret anywhere in the
output (issue 14, item 5). The traceback only with --debug. A refused AMI login is the one
fault the daemon lives with: one ERROR line, retries with backoff, routing goes on."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callrouter.config import ConfigError, load_settings
from fakeami import FakeAmi

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
EXE = Path(sys.executable).parent / "callrouter"
SECRET = "Sekr3t-Value-0042"           # an AMI secret
PG_PASSWORD = "Pg-Passw0rd-7781"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, cwd=cwd)


def assert_one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in out
    for w in words:
        assert w in lines[0], lines[0]
    for secret in (SECRET, PG_PASSWORD):
        assert secret not in out, out
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_config(tmp_path: Path, *, db: str | None = None, extra: str = "") -> Path:
    db = db or f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    cfg = tmp_path / "callrouter.toml"
    cfg.write_text(f'database_url = "{db}"\nlog_level = "WARNING"\nrules_dir = "{RULES}"\n'
                   f'[spool]\npath = "{tmp_path / "spool.db"}"\n{extra}')
    return cfg


# ------------------------------------------------------------------ config shapes

@pytest.mark.parametrize("toml, words", [
    (f'[pbx]\nname = "main"\nsecret = "{SECRET}"\n', ["pbx", "[[pbx]]"]),
    (f'pbx = "{SECRET}"\n', ["pbx", "list of tables"]),
    (f'[[pbx]]\nsecret = "{SECRET}"\nport = "five"\n', ["pbx.0.port", "integer", "'five'"]),
    (f'[[pbx]]\nsecret = ["{SECRET}"]\n', ["pbx.0.secret"]),
    (f'[agi]\nsecret = "{SECRET}"\n', ["agi.secret", "unknown key"]),
    (f'[web]\nport = {{ secret = "{SECRET}" }}\n', ["web.port"]),
    (f'[webhook]\nurl = "ftp://x"\nsecret = "{SECRET}"\n', ["webhook.url"]),
    (f'[[pbx]]\nsecret = "{SECRET}"\nport = 5038\nport = 5039\n', ["not valid TOML"]),
])
def test_a_wrongly_shaped_file_is_one_line_without_the_secret(tmp_path, toml, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    res = cli("--config", str(cfg), "route", "+79161234567")
    assert_one_line_error(res, "bad.toml", *words)


@pytest.mark.parametrize("env, words", [
    ({"CALLROUTER_PBX__0__SECRET": SECRET, "CALLROUTER_PBX__0__PORT": "x"},
     ["pbx.0.port", "CALLROUTER_PBX__0__PORT"]),
    ({"CALLROUTER_PBX__SECRET": SECRET}, ["CALLROUTER_PBX__SECRET", "CALLROUTER_PBX__0__"]),
    ({"CALLROUTER_PBX__5__SECRET": SECRET}, ["CALLROUTER_PBX__5__SECRET", "index 1"]),
    ({"CALLROUTER_PBX": f'{{"secret": "{SECRET}", "port": "x"}}'}, ["CALLROUTER_PBX", "list of tables"]),
    ({"CALLROUTER_PBX": f'[{{"secret": "{SECRET}", "port": 1'}, ["CALLROUTER_PBX", "JSON"]),
    ({"CALLROUTER_PBX": f'[{{"secret": "{SECRET}", "prot": 1}}]'}, ["pbx.0.prot", "unknown key"]),
    ({"CALLROUTER_WEBHOOK": f'{{"url": "https://crm.example", "secret": "{SECRET}", "timeout": "x"}}'},
     ["webhook.timeout"]),
    ({"CALLROUTER_WEBHOOK__SECRET": SECRET, "CALLROUTER_WEBHOOK__URL": "nope"}, ["webhook.url"]),
])
def test_a_wrong_environment_is_one_line_without_the_secret(tmp_path, env, words):
    cfg = base_config(tmp_path)
    res = cli("--config", str(cfg), "route", "+79161234567", env=env)
    assert_one_line_error(res, *words)


def test_an_unreadable_or_missing_config_file_is_one_line(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'secret = "\xff\xfe"\n')
    assert_one_line_error(cli("--config", str(binary), "route", "+79161234567"), "binary.toml", "not UTF-8")
    assert_one_line_error(cli("--config", str(tmp_path / "gone.toml"), "route", "+79161234567"),
                          "gone.toml", "not found")


def test_per_field_settings_from_the_environment_merge_onto_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[pbx]]\nname = "main"\nhost = "10.0.0.1"\n[[pbx]]\nname = "branch"\nhost = "10.0.1.5"\n'
                   '[[managers]]\nextension = "101"\n')
    for k in [k for k in os.environ if k.startswith("CALLROUTER_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CALLROUTER_PBX__0__SECRET", SECRET)
    monkeypatch.setenv("CALLROUTER_PBX__1__PORT", "5039")
    monkeypatch.setenv("CALLROUTER_PBX__1__AGI_SOURCES", '["10.0.1.6"]')
    monkeypatch.setenv("CALLROUTER_PBX__2__NAME", "third")          # index = length: a new entry
    monkeypatch.setenv("CALLROUTER_MANAGERS__0__DEVICES", '["PJSIP/101"]')
    s = load_settings(cfg)
    assert [(p.name, p.host, p.port) for p in s.pbx] == [("main", "10.0.0.1", 5038), ("branch", "10.0.1.5", 5039),
                                                         ("third", "127.0.0.1", 5038)]
    assert s.pbx[0].secret.get_secret_value() == SECRET and s.pbx[1].agi_sources == ("10.0.1.6",)
    assert s.managers[0].devices == ("PJSIP/101",)
    # no file at all: index 0 is the default PBX
    monkeypatch.delenv("CALLROUTER_PBX__1__PORT")
    monkeypatch.delenv("CALLROUTER_PBX__1__AGI_SOURCES")
    monkeypatch.delenv("CALLROUTER_PBX__2__NAME")
    monkeypatch.delenv("CALLROUTER_MANAGERS__0__DEVICES")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert [(p.name, p.secret.get_secret_value()) for p in s.pbx] == [("main", SECRET)]
    # a whole list from JSON, then one field on top of it
    monkeypatch.setenv("CALLROUTER_PBX", '[{"name": "a"}, {"name": "b"}]')
    monkeypatch.setenv("CALLROUTER_PBX__1__HOST", "10.9.9.9")
    s = load_settings(cfg)
    assert [(p.name, p.host) for p in s.pbx] == [("a", "127.0.0.1"), ("b", "10.9.9.9")]
    monkeypatch.setenv("CALLROUTER_PBX__1__AGI_SOURCES", "10.0.0.1")  # not JSON
    with pytest.raises(ConfigError, match="CALLROUTER_PBX__1__AGI_SOURCES: not a JSON list"):
        load_settings(cfg)


# ------------------------------------------------------------------ start-up

def test_an_unreachable_database_is_one_line_without_the_password(tmp_path):
    port = free_port()  # nothing listens there
    cfg = base_config(tmp_path, db=f"postgresql+asyncpg://callrouter:{PG_PASSWORD}@127.0.0.1:{port}/x",
                      extra=f'[[pbx]]\nsecret = "{SECRET}"\n[agi]\nport = 0\n[web]\nport = 0\n')
    line = assert_one_line_error(cli("--config", str(cfg), "run"), "cannot open the database", f":{port}/x",
                                 "connection refused")
    assert "***" in line
    # a SQLite file in a directory that does not exist
    cfg = base_config(tmp_path, db=f"sqlite+aiosqlite:///{tmp_path / 'nodir' / 'x.db'}",
                      extra='[agi]\nport = 0\n[web]\nport = 0\n')
    assert_one_line_error(cli("--config", str(cfg), "run"), "cannot open the database", "database_url")


def test_debug_prints_the_traceback(tmp_path):
    cfg = base_config(tmp_path, db=f"sqlite+aiosqlite:///{tmp_path / 'nodir' / 'x.db'}",
                      extra='[agi]\nport = 0\n[web]\nport = 0\n')
    res = cli("--debug", "--config", str(cfg), "run")
    assert res.returncode != 0 and "Traceback" in res.stderr and "StartupError" in res.stderr


@pytest.fixture
def db_ready(tmp_path: Path) -> Path:
    cfg = base_config(tmp_path)
    res = cli("--config", str(cfg), "db", "upgrade")
    assert res.returncode == 0, res.stderr
    return cfg


@pytest.mark.parametrize("section, key, what", [("agi", "agi.port", "FastAGI"), ("web", "web.port", "web API")])
def test_a_taken_port_is_one_line(tmp_path, db_ready, section, key, what):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"agi": 0, "web": 0, section: port}
        cfg = base_config(tmp_path, extra=f'[[pbx]]\nport = {free_port()}\nsecret = "{SECRET}"\n'
                          f'[agi]\nhost = "127.0.0.1"\nport = {ports["agi"]}\n'
                          f'[web]\nhost = "127.0.0.1"\nport = {ports["web"]}\n')
        assert_one_line_error(cli("--config", str(cfg), "run"), what, f"127.0.0.1:{port}", key, "in use")


def test_invalid_rules_are_one_line(tmp_path, db_ready):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-bad.yaml").write_text("rules:\n  - name: x\n    when: {caller: [unclosed\n")
    cfg = base_config(tmp_path, extra=f'[[pbx]]\nsecret = "{SECRET}"\n[agi]\nport = 0\n[web]\nport = 0\n')
    cfg.write_text(cfg.read_text().replace(f'rules_dir = "{RULES}"', f'rules_dir = "{rules}"'))
    assert_one_line_error(cli("--config", str(cfg), "run"), "rules", "10-bad.yaml", "not valid YAML")
    cfg.write_text(cfg.read_text().replace(f'rules_dir = "{rules}"', f'rules_dir = "{tmp_path / "none"}"'))
    assert_one_line_error(cli("--config", str(cfg), "run"), "rules directory not found")


async def test_a_refused_ami_login_is_one_error_line_and_the_daemon_keeps_routing(tmp_path, db_ready):
    """Decided: the daemon does not exit (routing needs no AMI); it logs the rejection once as
    ERROR, retries with backoff and logs it again every LOGIN_RELOG_EVERY (10 min)."""
    from agisim import agi_call

    async with FakeAmi([], secret="the-right-one") as ami:
        agi_port = free_port()
        cfg = base_config(tmp_path, extra=f'[[pbx]]\nport = {ami.port}\nsecret = "{SECRET}"\n'
                          f'reconnect_min = 0.05\nreconnect_max = 0.1\n'
                          f'[agi]\nhost = "127.0.0.1"\nport = {agi_port}\n[web]\nport = 0\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")}
        proc = await asyncio.create_subprocess_exec(str(EXE), "--config", str(cfg), "run", env=env,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(30):
                while ami.rejected < 4:
                    await asyncio.sleep(0.05)
            request = (b"agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1/route\n"
                       b"agi_channel: PJSIP/trunk-00000001\nagi_uniqueid: 1700000000.1\n"
                       b"agi_callerid: 79161234567\nagi_extension: 4950000000\n\n")
            answer = await agi_call("127.0.0.1", agi_port, request)
            assert answer.variables["ROUTE_DIAL"]  # routing goes on without AMI
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                out, err = await proc.communicate()
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "rejected" in errors[0] and f"127.0.0.1:{ami.port}" in errors[0], stderr
    assert "Traceback" not in stderr
    assert SECRET not in stderr + out.decode()
