"""FastAGI server for `agi://callrouter:4573/route` (own asyncio implementation).

Per connection: read the header block (bounded by size and by the deadline), route the
caller, answer ROUTE_DIAL, ROUTE_TIMEOUT, ROUTE_FALLBACK, CLIENT_ID, CLIENT_NAME,
ROUTE_REASON - by default in one `SET VARIABLE ARRAY(...)` command, so a call waits for
one round trip instead of six (`agi.set_variables = "each"`: one SET VARIABLE per
variable, reading Asterisk's reply to each) - and close. SET VARIABLE answers 200 even
when the function does not exist, so the first call from each PBX (and one an hour)
also asks GET VARIABLE ROUTE_DIAL; a PBX where ARRAY() set nothing gets the variables
one by one, on that call and after.
Guarantees:
- an answer starts within `deadline_ms` of the connection: routing that needs the store
  gets the deadline minus a margin; on timeout or any error the configured default route
  is answered instead - never silence (Asterisk gives a FastAGI server no read timeout);
- bad input costs only its own connection: a stalled or early-closed header block, one
  past `max_header_bytes`, or a script other than `route` is dropped; a complete block
  that is not an AGI environment is answered with the default route;
- the answer (a `RoutedCall`) is handed to a recorder after the reply (the decision log,
  `callrouter.decisionlog`): the database never delays an answer, and when it falls
  behind, records are dropped and counted rather than memory growing.

Each connection is an `asyncio.Protocol` state machine (no task, no stream reader per
call): with routing answered from memory, a call costs the event loop a few callbacks.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from callrouter.agi.protocol import (AgiRequest, BadRequest, Reply, ReplyParser, channel_value, get_variable,
                                    header_end, parse_block, set_variables)
from callrouter.config import AgiConfig
from callrouter.logthrottle import throttled
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.routing.engine import default_decision
from callrouter.routing.router import Router

log = logging.getLogger(__name__)

ROUTE_SCRIPT = "route"
MAX_REPLY_BUFFER = 64 * 1024
ARRAY_RECHECK_S = 3600.0  # a PBX's modules can change: check ARRAY() again after this
# an answered call's FIN is sent in the callback that read Asterisk's last reply (write_eof),
# not on the event loop's next turn (close() alone); False only to measure what it brings
EOF_AT_ONCE = True


class Recorder(Protocol):
    def submit(self, call: RoutedCall) -> bool: ...


def hand_on(call: RoutedCall, recorder: Recorder | None,
            on_decision: Callable[[RoutedCall], None] | None) -> None:
    """An answered call to the decision log, then to `on_decision` (route log, screen-pop
    prefetch, metrics): here after the answer, or in the daemon for a routing process's."""
    if recorder is not None:
        recorder.submit(call)
    if on_decision is not None:
        try:
            on_decision(call)
        except Exception:  # noqa: BLE001 - a hook must never take an answer down
            log.exception("on_decision hook failed")


# connection states
_HEADER, _DECIDING, _ANSWERING, _DONE = range(4)


class _Connection(asyncio.Protocol):
    __slots__ = ("srv", "loop", "transport", "t0", "state", "buf", "timer", "peer", "request", "caller_raw",
                 "decided_at", "decision", "commands", "sent", "parser", "t_answer", "task",
                 "record", "outcome", "verify")

    def __init__(self, srv: FastAgiServer):
        self.srv = srv
        self.loop = srv._loop
        self.transport: asyncio.Transport | None = None
        self.state = _HEADER
        self.buf = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.request: AgiRequest | None = None
        self.decision: RouteDecision | None = None
        self.commands: Sequence[bytes] = ()
        self.sent = 0
        self.parser = ReplyParser()
        self.record = False
        self.outcome = ""
        self.peer = ""
        self.verify = -1  # index of the GET VARIABLE that checks ARRAY() worked, if sent

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = self._peer_host()
        srv = self.srv
        self.t0 = self.loop.time()
        srv._conns.add(self)
        if len(srv._conns) > srv.max_connections:
            srv.stats["refused-overload"] += 1
            throttled(log, "overload", logging.WARNING, "FastAGI: %d connections open, refusing one",
                       len(srv._conns))
            self._drop()
            return
        self.timer = self.loop.call_at(self.t0 + srv.deadline, self._header_deadline)

    def data_received(self, data: bytes) -> None:
        if self.state == _HEADER:
            buf = self.buf
            buf += data
            if buf[:1] in (b"\n", b"\r"):
                del buf[:len(buf) - len(buf.lstrip(b"\r\n"))]  # stray newlines before the block
            end = header_end(buf)
            if end is None:
                if len(buf) > self.srv.max_header_bytes:
                    self._bad("oversized", f"no blank line in the first {self.srv.max_header_bytes} bytes")
                return
            pos, seplen = end
            if pos + seplen > self.srv.max_header_bytes:
                self._bad("oversized", f"header block larger than {self.srv.max_header_bytes} bytes")
                return
            block = bytes(buf[:pos])
            rest = bytes(buf[pos + seplen:])
            self.buf = bytearray(rest)
            self._cancel_timer()
            try:
                request = parse_block(block)
            except BadRequest as e:
                self._bad(e.kind, str(e))
                return
            self._route(request)
        elif self.state == _ANSWERING:
            self.buf += data
            self._replies()
        elif self.state == _DECIDING:
            self.buf += data  # Asterisk sends nothing here; keep it bounded anyway
            if len(self.buf) > MAX_REPLY_BUFFER:
                self._drop()

    def eof_received(self) -> bool | None:
        if self.state == _HEADER:
            self._bad("incomplete", f"closed after {len(self.buf)} bytes, before the blank line")
        elif self.state == _ANSWERING:
            self._finish("peer-gone")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.state == _HEADER and self in self.srv._conns:
            self.srv.stats["bad-incomplete" if exc is None else "dropped-reset"] += 1
        elif self.state == _ANSWERING:
            self._finish("peer-gone", close=False)
        self.state = _DONE
        self.srv._conns.discard(self)

    # ------------------------------------------------------------ steps
    def _header_deadline(self) -> None:
        self.timer = None
        if self.state == _HEADER:
            self.srv.stats["dropped-stalled"] += 1
            throttled(log, "stalled", logging.WARNING, "FastAGI %s: no complete request within %.0f ms: dropped",
                       self._peer(), self.srv.deadline * 1000)
            self._drop()

    def _bad(self, kind: str, detail: str) -> None:
        srv = self.srv
        self._cancel_timer()
        srv.stats[f"bad-{kind}"] += 1
        if kind == "unparseable":
            throttled(log, "unparseable", logging.WARNING,
                       "FastAGI %s: unparseable request (%s): answering the default route", self._peer(), detail)
            self._answer(default_decision(srv.default_dial, srv.default_timeout, "default:bad-request",
                                          trace=[f"bad request: {detail}"[:300]]), record=False)
        else:
            throttled(log, kind, logging.WARNING, "FastAGI %s: %s: %s: dropped", self._peer(), kind, detail)
            self._drop()

    def _route(self, request: AgiRequest) -> None:
        srv = self.srv
        script = request.script
        if script != ROUTE_SCRIPT:
            srv.stats["unknown-script"] += 1
            throttled(log, "script", logging.WARNING, "FastAGI %s: unknown script %r: closed (the dialplan "
                       "falls back)", self._peer(), script[:80])
            self.state = _DONE
            self.transport.close()  # type: ignore[union-attr]
            return
        self.request = request
        self.caller_raw = request.callerid
        self.decided_at = srv.clock()
        try:
            decision = srv.router.route_now(self.caller_raw, self.decided_at)
        except Exception as e:  # noqa: BLE001 - answer the default route, never silence
            self._failed(e)
            return
        if decision is not None:
            self._answer(decision)
            return
        # the lookup needs the store: bounded by the deadline minus the margin
        self.state = _DECIDING
        self.task = self.loop.create_task(srv.router.route(self.caller_raw, self.decided_at))
        self.task.add_done_callback(self._decided)
        self.timer = self.loop.call_at(self.t0 + srv.deadline - srv.store_margin, self._decide_deadline)

    def _decided(self, task: asyncio.Task) -> None:
        if self.state != _DECIDING:
            return
        self._cancel_timer()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed(exc)
            return
        self._answer(task.result())

    def _decide_deadline(self) -> None:
        self.timer = None
        if self.state != _DECIDING:
            return
        srv = self.srv
        if self.task is not None:
            self.task.cancel()
        srv.stats["default-timeout"] += 1
        throttled(log, "timeout", logging.WARNING, "FastAGI %s: routing took longer than the deadline: "
                   "answering the default route", self._peer())
        self._answer(default_decision(srv.default_dial, srv.default_timeout, "default:timeout",
                                      caller=_safe_normalize(srv.router, self.caller_raw),
                                      trace=["routing did not finish within the deadline"]))

    def _failed(self, e: BaseException) -> None:
        srv = self.srv
        srv.stats["default-error"] += 1
        log.error("FastAGI %s: routing failed: answering the default route", self._peer(), exc_info=e)
        self._answer(default_decision(srv.default_dial, srv.default_timeout, "default:error",
                                      caller=_safe_normalize(srv.router, self.caller_raw),
                                      trace=[f"routing failed: {type(e).__name__}: {e}"[:300]]))

    def _answer(self, decision: RouteDecision, record: bool = True) -> None:
        if self.transport is None or self.transport.is_closing():
            self.state = _DONE
            return
        self.state = _ANSWERING
        self.decision = decision
        self.record = record
        srv = self.srv
        works = srv.array_works(self.peer) if srv.one_command else False
        self.commands = set_variables(decision.variables(), one_command=works is not False)
        if works is None and len(self.commands) == 1 and decision.dial:
            # SET VARIABLE answers 200 whether or not ARRAY() exists on this PBX: ask once
            self.commands.append(get_variable("ROUTE_DIAL"))
            self.verify = 1
        self.t_answer = self.loop.time()
        self.timer = self.loop.call_later(self.srv.reply_timeout, self._reply_deadline)
        self.sent = 1
        self.transport.write(self.commands[0])
        if self.buf:
            self._replies()

    def _replies(self) -> None:
        buf = self.buf
        while self.state == _ANSWERING:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_REPLY_BUFFER:
                    self._finish("peer-gone")
                return
            if buf.startswith(b"200 ") and self.parser.idle and self.sent - 1 != self.verify:
                del buf[:nl + 1]  # the usual "200 result=1"
            else:
                line = bytes(buf[:nl + 1]).decode("utf-8", "replace")
                del buf[:nl + 1]
                reply = self.parser.feed(line)
                if reply is None:
                    continue
                if reply.hangup or reply.code == 511:
                    self._finish("hangup")  # the caller is gone: nothing left to route
                    return
                if not reply.ok:
                    throttled(log, "reply", logging.WARNING, "FastAGI %s: %s answered %d %s", self._peer(),
                               self.commands[self.sent - 1][:40].decode(errors="replace").strip(), reply.code,
                               reply.text[:80])
                    if self.sent == 1 and self.commands[0].startswith(b"SET VARIABLE ARRAY("):
                        self.srv.stats["array-refused"] += 1
                        self._one_by_one()
                elif self.sent - 1 == self.verify:
                    self._array_checked(reply)
            if self.sent >= len(self.commands):
                self._finish("answered")
                return
            self.transport.write(self.commands[self.sent])  # type: ignore[union-attr]
            self.sent += 1

    def _array_checked(self, reply: Reply) -> None:
        dial = channel_value(self.decision.dial)  # type: ignore[union-attr]
        if reply.text.strip() == f"result=1 ({dial})":
            self.srv.array_checked(self.peer, True)
            return
        throttled(log, "array", logging.WARNING, "FastAGI %s: SET VARIABLE ARRAY(...) did not set ROUTE_DIAL "
                  "(GET VARIABLE answered %r; func_strings not loaded?): setting variables one by one for "
                  "this PBX", self._peer(), reply.text[:80])
        self._one_by_one()

    def _one_by_one(self) -> None:
        """ARRAY() was refused or set nothing: this call and this PBX's later ones get
        one SET VARIABLE per variable."""
        self.srv.array_checked(self.peer, False)
        self.commands = set_variables(self.decision.variables(), one_command=False)  # type: ignore[union-attr]
        self.sent = 0
        self.verify = -1

    def _reply_deadline(self) -> None:
        self.timer = None
        if self.state == _ANSWERING:
            self._finish("reply-timeout")

    def _finish(self, outcome: str, close: bool = True) -> None:
        if self.state != _ANSWERING:
            return
        self.state = _DONE
        self._cancel_timer()
        srv = self.srv
        srv.stats[outcome] += 1
        if close and self.transport is not None:
            if outcome == "answered":
                # the FIN now (the write buffer is empty: Asterisk has replied to the last
                # command), not on the loop's next turn as close() alone would: Asterisk
                # goes on with the dialplan at EOF, and a busy loop's turn takes milliseconds
                if EOF_AT_ONCE and self.transport.can_write_eof():
                    self.transport.write_eof()
                self.transport.close()
            else:
                self.transport.abort()
        if not self.record or self.request is None or self.decision is None:
            return
        now = self.loop.time()
        req = self.request
        try:
            call = RoutedCall(srv.pbx_for(self.peer, req), req.linkedid, req.uniqueid,
                              req.channel, self.caller_raw, self.decision, self.decided_at,
                              (self.t_answer - self.t0) * 1000.0, (now - self.t0) * 1000.0, outcome)
        except ValueError:  # a naive clock: the call is answered, its record cannot be kept
            log.exception("FastAGI: the answer for %s cannot be recorded", req.linkedid)
            return
        hand_on(call, srv.recorder, srv.on_decision)

    def _drop(self) -> None:
        self._cancel_timer()
        self.state = _DONE
        self.srv._conns.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _peer_host(self) -> str:
        try:
            p = self.transport.get_extra_info("peername")  # type: ignore[union-attr]
            return str(p[0]) if p else ""
        except Exception:  # noqa: BLE001
            return ""

    def _peer(self) -> str:
        try:
            p = self.transport.get_extra_info("peername")  # type: ignore[union-attr]
            return f"{p[0]}:{p[1]}" if p else "?"
        except Exception:  # noqa: BLE001
            return "?"


class FastAgiServer:
    def __init__(self, router: Router, config: AgiConfig | None = None, *, recorder: Recorder | None = None,
                 pbx: str = "main", pbx_by_peer: Mapping[str, str] | None = None,
                 pbx_names: Sequence[str] = (),
                 clock: Callable[[], datetime] | None = None, host: str | None = None, port: int | None = None,
                 max_header_bytes: int = 16 * 1024, reply_timeout: float = 5.0, store_margin_ms: float = 30.0,
                 max_connections: int = 2000, backlog: int = 1024,
                 on_decision: Callable[[RoutedCall], None] | None = None, sock: socket.socket | None = None):
        cfg = config or AgiConfig()
        self.router = router
        self.host = host if host is not None else cfg.host
        self.port = port if port is not None else cfg.port
        self.deadline = cfg.deadline_ms / 1000.0
        self.default_dial = cfg.default_dial
        self.default_timeout = cfg.default_timeout
        self.one_command = cfg.set_variables == "array"
        self.recorder = recorder
        self.pbx = pbx
        self.pbx_by_peer = dict(pbx_by_peer or {})
        self.pbx_names = frozenset(pbx_names) or frozenset({pbx})
        self.clock = clock or (lambda: datetime.now(UTC))
        self.max_header_bytes = max_header_bytes
        self.reply_timeout = reply_timeout
        # the store gets the deadline minus this: time left to send the default route
        self.store_margin = min(store_margin_ms / 1000.0, self.deadline / 2)
        self.max_connections = max_connections
        self.backlog = backlog
        self.on_decision = on_decision
        self.sock = sock  # a socket already listening (the daemon's, in a routing process)
        self.stats: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Connection] = set()
        self._array: dict[str, tuple[bool, float]] = {}  # peer host -> (ARRAY() works, when checked)

    def pbx_for(self, peer_host: str, request: AgiRequest | None = None) -> str:
        """Which PBX asked: the `pbx=` of the AGI URL when it names a configured one
        (`agi://callrouter:4573/route?pbx=east`), else the PBX whose address the request
        came from, else - with one PBX - that one. A request that says neither, with
        several PBXs configured, is attributed to the first and logged: its decision
        would not join its call record if it came from another PBX."""
        named = request.param("pbx") if request is not None else ""
        if named:
            if named in self.pbx_names:
                return named
            self.stats["pbx-unknown"] += 1
            throttled(log, "pbx-name", logging.WARNING, "FastAGI %s: the AGI URL names pbx=%r, which is no "
                      "[[pbx]] name (%s); attributing the request by its address", peer_host, named[:40],
                      ", ".join(sorted(self.pbx_names)))
        by_peer = self.pbx_by_peer.get(peer_host)
        if by_peer is not None:
            return by_peer
        if len(self.pbx_names) > 1:
            self.stats["pbx-unknown"] += 1
            throttled(log, "pbx-source", logging.WARNING, "FastAGI request from %s: no pbx= in its AGI URL and "
                      "the address is no [[pbx]]'s host or agi_sources; attributed to %r (its decision joins "
                      "no call record of another PBX)", peer_host, self.pbx)
        return self.pbx

    def array_works(self, peer_host: str) -> bool | None:
        """Whether SET VARIABLE ARRAY(...) sets variables on this PBX: None when not
        known (never checked, or checked more than ARRAY_RECHECK_S ago)."""
        seen = self._array.get(peer_host)
        if seen is None or time.monotonic() - seen[1] > ARRAY_RECHECK_S:
            return None
        return seen[0]

    def array_checked(self, peer_host: str, works: bool) -> None:
        self._array[peer_host] = (works, time.monotonic())
        self.stats["array-checked" if works else "array-unsupported"] += 1

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await self._loop.create_server(lambda: _Connection(self), sock=self.sock,
                                                          backlog=self.backlog)
        else:
            self._server = await self._loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                          backlog=self.backlog)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI router listening on %s:%d (deadline %.0f ms)", self.host, self.port,
                 self.deadline * 1000)

    @property
    def active(self) -> int:
        return len(self._conns)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; give connections in flight `grace` s to finish, then cut them."""
        if self._server is None:
            return
        self._server.close()
        end = time.monotonic() + grace
        while self._conns and time.monotonic() < end:
            await asyncio.sleep(0.01)
        for c in list(self._conns):
            c._drop()
        self._server = None

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _safe_normalize(router: Router, raw: str | None) -> str | None:
    try:
        return router.normalize(raw)
    except Exception:  # noqa: BLE001
        return None
