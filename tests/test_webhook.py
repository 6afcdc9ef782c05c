"""Webhooks to the CRM, against a real aiohttp receiver on a loopback port: one that fails
the first attempts then accepts, one that refuses a call for good (dead letter), one that
is down across a daemon restart. Every call is delivered once per Idempotency-Key, every
signature verifies (with the helper README shows), none is lost."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from pydantic import SecretStr

from callrouter.ami.capture import read_events
from callrouter.calllog.walk import replay_records
from callrouter.cli import main as cli
from callrouter.config import AgiConfig, PbxConfig, Settings, SpoolConfig, WebConfig, WebhookConfig
from callrouter.daemon import Daemon
from callrouter.records import CallRecord
from callrouter.tracker import CallFinished
from callrouter.web.metrics import DaemonCollector
from callrouter.webhook import WebhookReporter, sign, verify
from callrouter.webhook.outbox import Outbox
from fakeami import FakeAmi, load_recording

HERE = Path(__file__).parent
FIX = HERE / "fixtures" / "asterisk"
RULES = HERE.parent / "rules"
SCENARIOS = ("answered_owner", "caller_hangs_up", "blind_transfer", "unknown_caller", "anonymous")
SECRET = "s3cret-for-tests"
HOST = "127.0.0.1"


@dataclass
class Receiver:
    """A CRM endpoint: fails each call's first `fail_first` attempts with 503, refuses the
    keys in `refuse` with 422, accepts the rest (2xx) and keeps what it accepted."""
    fail_first: int = 0
    refuse: frozenset[str] = frozenset()
    attempts: Counter[str] = field(default_factory=Counter)
    accepted: list[tuple[str, dict]] = field(default_factory=list)
    bad_signatures: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers["Idempotency-Key"]
        if not verify(SECRET, request.headers["X-Callrouter-Timestamp"], body,
                      request.headers["X-Callrouter-Signature"], now=time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.attempts[key] += 1
        if key in self.refuse:
            return web.Response(status=422, text="unknown client")
        if self.attempts[key] <= self.fail_first:
            return web.Response(status=503, text="busy")
        self.accepted.append((key, json.loads(body)))
        return web.Response(status=204)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # port 0: the one the OS chose

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def keys(self) -> list[str]:
        return [k for k, _ in self.accepted]


def records() -> list[CallRecord]:
    out = []
    for name in SCENARIOS:
        out += replay_records(read_events(FIX / f"{name}.ami.jsonl"), pbx="main")
    return out


def config(url: str, **kw) -> WebhookConfig:
    return WebhookConfig(url=url, secret=SecretStr(SECRET), retry_min=0.05, retry_max=0.3, **kw)


async def until(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, f"not reached within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.05)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"call_id": "1.2"}'
    expected = "sha256=" + __import__("hmac").new(b"k", b"1795370423." + body, "sha256").hexdigest()
    assert sign("k", 1795370423, body) == expected
    assert verify("k", "1795370423", body, expected, now=1795370423 + 10)
    assert not verify("k", "1795370423", body + b" ", expected, now=1795370423)       # body changed
    assert not verify("k", "1795370424", body, expected, now=1795370424)             # timestamp changed
    assert not verify("k", "1795370423", body, expected, now=1795370423 + 3600)      # too old: a replay


async def test_a_receiver_failing_the_first_attempts_gets_each_call_once_signed(tmp_path):
    recs = records()
    assert len({(r.pbx, r.call_id) for r in recs}) == len(recs) >= 5
    rx = Receiver(fail_first=2)
    await rx.start()
    reporter = WebhookReporter(config(rx.url), Outbox(tmp_path / "spool.db"))
    running = asyncio.create_task(reporter.run())
    try:
        for r in recs:
            assert reporter.offer(CallFinished(r))
        await until(lambda: len(rx.accepted) == len(recs), 30, "every call delivered")
    finally:
        await reporter.close(5)
        await asyncio.wait_for(running, 5)
        await rx.stop()
    assert sorted(rx.keys()) == sorted(f"main:{r.call_id}" for r in recs)          # each once
    assert set(rx.attempts.values()) == {3} and rx.bad_signatures == 0             # 2 × 503, then accepted
    by_key = dict(rx.accepted)
    for r in recs:
        assert CallRecord.model_validate(by_key[f"main:{r.call_id}"]) == r          # the record, as JSON
    assert reporter.stats["delivered"] == len(recs) and reporter.stats["retried"] == 2 * len(recs)
    assert Outbox(tmp_path / "spool.db").depth() == 0


async def test_a_call_refused_for_good_is_a_dead_letter_and_blocks_nothing(store, store_url, tmp_path):
    recs = records()
    bad = f"main:{recs[0].call_id}"
    rx = Receiver(refuse=frozenset({bad}))
    await rx.start()
    reporter = WebhookReporter(config(rx.url, max_attempts=3), Outbox(tmp_path / "spool.db"), store)
    running = asyncio.create_task(reporter.run())
    try:
        for r in recs:
            reporter.offer(CallFinished(r))
        await until(lambda: reporter.stats["dead"] == 1, 30, "the refused call is a dead letter")
    finally:
        await reporter.close(5)
        await asyncio.wait_for(running, 5)
        await rx.stop()
    assert sorted(rx.keys()) == sorted(f"main:{r.call_id}" for r in recs[1:])
    assert rx.attempts[bad] == 3
    [letter] = await store.dead_letters(kind="webhook")
    assert letter.key == bad and "HTTP 422" in letter.error and "unknown client" in letter.error
    assert CallRecord.model_validate_json(letter.payload) == recs[0]
    # and an admin sees it
    cfg = tmp_path / "callrouter.toml"
    cfg.write_text(f'database_url = "{store_url}"\n')
    args = ["--config", str(cfg), "deadletters", "list", "--kind", "webhook"]
    out = await asyncio.to_thread(CliRunner().invoke, cli, args)  # the CLI runs its own loop
    assert out.exit_code == 0 and bad in out.output and "HTTP 422" in out.output


async def test_a_receiver_down_across_a_daemon_restart_loses_nothing(store, store_url, tmp_path):
    """Daemon 1 stores the calls but cannot reach the receiver (its port refuses); it is
    stopped. The receiver comes up; daemon 2, on the same spool file, delivers them all."""
    rx = Receiver()
    await rx.start()
    port = rx.port
    await rx.stop()  # the port now refuses connections: the receiver is down
    frames = [f for name in SCENARIOS for f in load_recording(FIX / f"{name}.ami.jsonl")]
    expected = sorted(f"main:{r.call_id}" for r in records())

    def settings(ami_port: int) -> Settings:
        return Settings(database_url=store_url, rules_dir=str(RULES), agi=AgiConfig(host=HOST, port=0),
                        web=WebConfig(enabled=False), spool=SpoolConfig(path=str(tmp_path / "spool.db")),
                        pbx=(PbxConfig(name="main", host=HOST, port=ami_port),),
                        webhook=config(f"http://{HOST}:{port}/hook"))

    async with FakeAmi(frames) as ami:
        first = Daemon(settings(ami.port))
        stop = asyncio.Event()
        running = asyncio.create_task(first.run(stop))
        try:
            await asyncio.wait_for(first.started.wait(), 20)
            hook = next(r for r in first.reporters if r.name == "webhook")
            await until(lambda: first.counters().get("reporter.call record.saved", 0) == len(expected), 20,
                        "calls stored")
            await until(lambda: hook.stats["retried"] >= len(expected), 20, "every call tried and failed")
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
    assert Outbox(tmp_path / "spool.db").depth() == len(expected)

    await rx.start(port)
    try:
        async with FakeAmi([]) as ami:
            second = Daemon(settings(ami.port))
            stop = asyncio.Event()
            running = asyncio.create_task(second.run(stop))
            try:
                await asyncio.wait_for(second.started.wait(), 20)
                hook = next(r for r in second.reporters if r.name == "webhook")
                # delivered: accepted, and out of the outbox
                await until(lambda: hook.stats["delivered"] == len(expected), 30,
                            "every call delivered after the restart")
                metrics = {s.name + str(sorted(s.labels.items())): s.value
                           for m in DaemonCollector(second).collect() for s in m.samples}
                assert metrics["callrouter_reporter_items_total[('reporter', 'webhook'), ('result', 'delivered')]"] \
                    == len(expected)
            finally:
                stop.set()
                await asyncio.wait_for(running, 30)
    finally:
        await rx.stop()
    assert sorted(rx.keys()) == expected and rx.bad_signatures == 0
    assert Outbox(tmp_path / "spool.db").depth() == 0


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (408, True), (429, True),
                                               (400, False), (404, False), (410, False), (301, False)])
async def test_what_is_retried_for_ever_and_what_may_become_a_dead_letter(tmp_path, status, transient):
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/elsewhere"} if status == 301 else None)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    reporter = WebhookReporter(config(f"http://{HOST}:{port}/hook", max_attempts=1), Outbox(tmp_path / "o.db"))
    outbox = reporter.outbox
    outbox.put([("main:1.1", b"{}")])
    try:
        import aiohttp
        async with aiohttp.ClientSession() as http:
            await reporter._try(http, outbox.due(time.time(), 1)[0])
    finally:
        await runner.cleanup()
    # transient: still waiting; for good (max_attempts=1): buried, waiting for the store
    assert outbox.depth() == (1 if transient else 0)
    assert len(outbox.buried()) == (0 if transient else 1)


def test_the_outbox_hands_out_a_calls_items_in_order_and_keeps_them_across_a_reopen(tmp_path):
    outbox = Outbox(tmp_path / "spool.db")
    outbox.put([("a:1", b"a-first"), ("b:1", b"b-only"), ("a:1", b"a-second")])
    outbox.close()
    outbox = Outbox(tmp_path / "spool.db")  # a restart: still there
    assert [i.body for i in outbox.due(time.time(), 10)] == [b"a-first", b"b-only"]   # a-second waits
    first = outbox.due(time.time(), 10)[0]
    outbox.failed(first.seq, 1, time.time() + 3600, "HTTP 400")                    # a-first waits an hour...
    assert [i.body for i in outbox.due(time.time(), 10)] == [b"b-only"]              # ...and a-second with it
    outbox.delivered(first.seq)
    assert [i.body for i in outbox.due(time.time(), 10)] == [b"b-only", b"a-second"]
    assert outbox.depth() == 2


def test_a_short_secret_is_refused_and_never_echoed(tmp_path):
    from callrouter.config import ConfigError, load_settings

    cfg = tmp_path / "callrouter.toml"
    cfg.write_text('[webhook]\nurl = "https://crm.example.net/hook"\nsecret = "hunter2"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert "webhook.secret" in str(e.value) and "16 characters" in str(e.value) and "hunter2" not in str(e.value)
