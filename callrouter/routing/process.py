"""`RoutingProcess`: the FastAGI server and the router in a child process
(`agi.routing = "process"`, the default).

Why: the daemon's event loop also reads AMI, walks the call log and runs the reporters
(store writes, screen-pop cards, webhooks). During a burst of AMI traffic that work holds
the loop (and the GIL) for a few milliseconds at a time, and a FastAGI call that arrives
then waits its turn: in tests/bench/route_under_load.py the answer's p99 rose to 2.3-2.6x
of its idle p99 with everything on one loop. In a process of its own, answering a call
waits on nothing but the operating system's scheduler.

The daemon (this class) binds the FastAGI socket itself (a taken port is a one-line
start-up error, and the port stays open while the child is restarted: calls wait in the
listen backlog), then starts the child with the socket and a config line. The child
(`_child`) builds what routing needs from its own store connection and the rules
directory - rules, phone directory, router, `FastAgiServer` on the inherited socket - and
says when it is accepting calls. From then on:
- daemon -> child (the child's stdin), JSON lines: presence changes (`Presence.take_changes`,
  sent once per loop turn that had any, a full snapshot after every (re)start), clients
  changed (ids) or "reload the directory", "reload the rules" (SIGHUP), and "close";
- child -> daemon (the child's stdout; the child's logging goes to stderr, the daemon's),
  frames of one kind byte, a 4-byte big-endian length and the payload: `R` ready (JSON,
  the port), `D` a pickled `RoutedCall` after its answer (the daemon hands it to the
  decision log and its `on_decision`: route log, screen-pop prefetch, latency metrics,
  exactly as with routing in process), `S` the FastAGI counters (JSON, every second and
  at the end).
The child ignores SIGINT/SIGTERM (they reach the whole process group): the daemon
decides when it ends. A child that exits unasked is started again (backoff from 1 s,
doubling up to 30 s) and gets the presence snapshot again. Its phone directory loads on
its own (routing asks the store meanwhile, as in process); `wait_for_directory` makes it
wait for the load before it says ready.
Presence in the child lags the daemon's by the pipe (well under a millisecond on an idle
loop, a loop turn when the daemon is busy): the same order of lag as the AMI stream itself.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import pickle
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from callrouter.agi.server import hand_on
from callrouter.childproc import run_child
from callrouter.logthrottle import throttled
from callrouter.routing.decision import RoutedCall
from callrouter.routing.presence import Presence
from callrouter.routing.types import AgentStatus

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!cI")
READY, DECISION, STATS = b"R", b"D", b"S"
MAX_FRAME_BYTES = 1 << 20
START_TIMEOUT = 60.0        # s: the child's start (with wait_for_directory: its directory load too)
CLOSE_MARGIN = 1.0          # s: past the calls' grace, the child's own exit
MAX_RESTART_DELAY = 30.0
MAX_COMMAND_BUFFER = 4 << 20  # bytes unread by a stuck child: presence updates stop, a snapshot follows
STATS_INTERVAL = 1.0


class RoutingProcessError(Exception):
    """The routing process did not start."""


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The FastAGI socket, bound here so that a taken port fails the daemon's start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


class RoutingProcess:
    """The daemon's side: the FastAGI server's interface (`start`, `close`, `host`, `port`,
    `stats`), with the server in a child process; `run()` (in the daemon's TaskGroup)
    reads what the child sends and starts it again if it dies."""

    def __init__(self, child_config: Mapping[str, Any], *, host: str, port: int, backlog: int = 1024,
                 recorder: Any = None, on_decision: Callable[[RoutedCall], None] | None = None,
                 presence: Presence | None = None, restart_delay: float = 1.0):
        self.host = host
        self.port = port
        self._backlog = backlog
        self._config = dict(child_config)
        self._recorder = recorder
        self._on_decision = on_decision
        self._presence = presence
        self._restart_delay = restart_delay
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._closing = False
        self._running = False
        self._ready = False
        self._ended = asyncio.Event()
        self._flush_scheduled = False
        self._resync = False
        self._child_stats: Counter[str] = Counter()  # the child's FastAGI counters, as last reported
        self.own_stats: Counter[str] = Counter()     # restarts, presence updates deferred
        if presence is not None:
            presence.on_change = self._presence_changed

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def ready(self) -> bool:
        """The current child accepts calls."""
        return self._ready

    @property
    def stats(self) -> Counter[str]:
        """The child's FastAGI counters as it last reported them, and this side's own."""
        return self._child_stats + self.own_stats

    # ------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Bind (OSError: the port), start the child and wait until it accepts calls."""
        self._sock = listening_socket(self.host, self.port, self._backlog)
        self.port = self._sock.getsockname()[1]
        try:
            await self._spawn()
            await asyncio.wait_for(self._until_ready(), timeout)
        except BaseException:
            await self._kill()
            self._sock.close()
            raise

    async def _spawn(self) -> None:
        assert self._sock is not None
        fd = self._sock.fileno()
        self._ready = False
        proc = self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from callrouter.routing.process import main; main()",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(fd,),
            limit=MAX_FRAME_BYTES)
        self._write(proc, {**self._config, "fd": fd})
        self._send_snapshot(proc)

    async def _until_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            frame = await self._read_frame(proc)
            if frame is None:
                raise RoutingProcessError(f"the routing process exited ({await proc.wait()}) before it "
                                          "accepted calls; its log lines say why")
            if frame[0] == READY:
                self._ready = True
                log.info("routing process %d accepts calls on %s:%d", proc.pid, self.host, self.port)
                return
            self._handle(*frame)

    async def run(self) -> None:
        """Read the child's frames; start it again when it exits unasked; return at close."""
        delay = self._restart_delay
        self._running = True
        try:
            while True:
                proc = self._proc
                if proc is not None:
                    while (frame := await self._read_frame(proc)) is not None:
                        self._handle(*frame)
                    code = await proc.wait()
                    if self._closing:
                        return
                    log.error("the routing process exited (%s); starting it again in %.0f s (calls wait in "
                              "the listen backlog meanwhile)", code, delay)
                    self.own_stats["restarts"] += 1
                if self._closing:
                    return
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._spawn()
                    await asyncio.wait_for(self._until_ready(), START_TIMEOUT)
                    delay = self._restart_delay
                except (OSError, RoutingProcessError, TimeoutError) as e:
                    log.error("the routing process did not start again: %s", e)
                    await self._kill()
                    delay = min(delay * 2, MAX_RESTART_DELAY)
        finally:
            self._ended.set()

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; calls in flight get `grace` s; the child's last decisions are
        handed on before this returns (or the child is killed past the grace)."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._write(proc, {"close": grace})
            try:
                await asyncio.wait_for(proc.wait(), grace + CLOSE_MARGIN)
            except TimeoutError:
                log.warning("the routing process did not stop in time; killed")
                await self._kill()
            if self._running:
                try:  # run() hands on what the child wrote before it exited
                    await asyncio.wait_for(self._ended.wait(), 1.0)
                except TimeoutError:
                    pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    # ------------------------------------------------------------ what the daemon tells it
    def clients_changed(self, ids: Sequence[str] | None) -> None:
        """Clients changed in the store (None: too many to list, reload the directory)."""
        self._command({"refresh": True} if ids is None else {"clients": list(ids)})

    def reload_rules(self) -> None:
        self._command({"reload": True})

    def _presence_changed(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_presence)

    def _flush_presence(self) -> None:
        self._flush_scheduled = False
        assert self._presence is not None
        changes = self._presence.take_changes()
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return  # the next start sends the whole snapshot
        if proc.stdin.transport.get_write_buffer_size() > MAX_COMMAND_BUFFER:
            self.own_stats["presence-deferred"] += 1
            self._resync = True
            throttled(log, "routing-presence", logging.WARNING, "the routing process is not reading; presence "
                      "changes wait")
            asyncio.get_running_loop().call_later(0.1, self._presence_changed)  # try again, changes or not
            return
        if self._resync:
            self._resync = False
            self._send_snapshot(proc)
        elif changes:
            self._write(proc, {"presence": [_status(st) for st in changes]})

    def _send_snapshot(self, proc: asyncio.subprocess.Process) -> None:
        if self._presence is not None:
            self._presence.take_changes()
            self._write(proc, {"presence_all": [_status(st) for st in self._presence.snapshot().values()]})

    def _command(self, obj: dict[str, Any]) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._write(proc, obj)

    @staticmethod
    def _write(proc: asyncio.subprocess.Process, obj: dict[str, Any]) -> None:
        assert proc.stdin is not None
        if not proc.stdin.is_closing():
            proc.stdin.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    # ------------------------------------------------------------ what the child says
    @staticmethod
    async def _read_frame(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes] | None:
        assert proc.stdout is not None
        try:
            kind, size = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
            if size > MAX_FRAME_BYTES:
                log.error("the routing process sent a %d-byte frame; stopping it", size)
                proc.kill()
                return None
            return kind, await proc.stdout.readexactly(size)
        except asyncio.IncompleteReadError:
            return None

    def _handle(self, kind: bytes, payload: bytes) -> None:
        if kind == DECISION:
            try:
                call = pickle.loads(payload)
            except Exception as e:  # noqa: BLE001 - one bad frame must not stop the others
                log.error("an unreadable route decision from the routing process: %s", e)
                return
            hand_on(call, self._recorder, self._on_decision)
        elif kind == STATS:
            self._child_stats = Counter(json.loads(payload))


def _status(st: AgentStatus) -> list[Any]:
    return [st.extension, st.state, st.dnd, st.detail]


# ---------------------------------------------------------------- the child


class _Frames:
    """The child's stdout: frames written without blocking the child's loop."""

    def __init__(self, transport: asyncio.WriteTransport):
        self.transport = transport

    def send(self, kind: bytes, payload: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(_HEADER.pack(kind, len(payload)) + payload)

    def submit(self, call: RoutedCall) -> bool:
        """The FastAGI server's recorder: each answered call to the daemon."""
        try:
            payload = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001
            log.exception("route decision for %s cannot be sent to the daemon", call.linkedid)
            return False
        if len(payload) > MAX_FRAME_BYTES:
            log.error("route decision for %s is %d bytes: not sent", call.linkedid, len(payload))
            return False
        self.send(DECISION, payload)
        return True

    async def drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.transport.get_write_buffer_size() and loop.time() < end:
            await asyncio.sleep(0.005)


async def _child(out: Any) -> int:
    from callrouter.agi.server import FastAgiServer
    from callrouter.config import AgiConfig
    from callrouter.routing.lookup import PhoneDirectory
    from callrouter.routing.presence import PresenceCopy
    from callrouter.routing.router import Router
    from callrouter.routing.rules import RuleSet
    from callrouter.store import Store

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, out)
    frames = _Frames(transport)
    config = json.loads(await reader.readline())
    logging.basicConfig(level=config.get("log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s callrouter.routing: %(message)s")
    sock = socket.socket(fileno=config["fd"])
    agi = AgiConfig(**config["agi"])
    presence = PresenceCopy()
    rules = RuleSet(config["rules_dir"], config["region"])
    async with Store(config["database_url"]) as store:
        directory = PhoneDirectory(store)
        router = Router(rules, directory, presence, region=config["region"], devices=config["devices"],
                        default_dial=agi.default_dial, default_timeout=agi.default_timeout)
        server = FastAgiServer(router, agi, recorder=frames, pbx=config["pbx"], pbx_names=config["pbx_names"],
                               pbx_by_peer=config["pbx_by_peer"], sock=sock)
        tasks: set[asyncio.Task] = set()

        def later(coro: Any) -> None:
            t = loop.create_task(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        async def first_load() -> None:
            try:
                await directory.load()
            except Exception:  # noqa: BLE001 - routing asks the store until a refresh works
                log.exception("phone directory: first load failed; routing asks the store until a refresh works")
            # what start-up made lives as long as the process: out of the collector's reach
            gc.collect()
            gc.freeze()

        async def load_then_refresh() -> None:
            await first_load()
            await directory.run_refresher(config["directory_refresh"])

        if config.get("wait_for_directory"):
            await first_load()
            later(directory.run_refresher(config["directory_refresh"]))
        else:
            later(load_then_refresh())
        await server.start()
        frames.send(READY, json.dumps({"port": server.port}).encode())

        def report() -> None:
            frames.send(STATS, json.dumps(dict(server.stats)).encode())

        def tick() -> None:
            report()
            nonlocal ticker
            ticker = loop.call_later(STATS_INTERVAL, tick)

        ticker = loop.call_later(STATS_INTERVAL, tick)
        grace = 0.0
        while line := await reader.readline():
            cmd = json.loads(line)
            if "presence" in cmd:
                presence.update(AgentStatus(*s) for s in cmd["presence"])
            elif "presence_all" in cmd:
                presence.replace(AgentStatus(*s) for s in cmd["presence_all"])
            elif "clients" in cmd:
                later(directory.refresh_clients(cmd["clients"]))
            elif "refresh" in cmd:
                later(directory.refresh())
            elif "reload" in cmd:
                rules.reload()
            elif "close" in cmd:
                grace = float(cmd["close"])
                break
        ticker.cancel()
        await server.close(grace)  # end of input without "close": the daemon is gone
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report()
        await frames.drain(CLOSE_MARGIN / 2)
    return 0


def main() -> None:
    run_child(_child, "routing process")
