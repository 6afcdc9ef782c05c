"""FastAGI server for `agi://callrouter:4573/route` (own asyncio implementation).

Per connection: read the header block (bounded by size and by the deadline), route the
caller, answer with SET VARIABLE ROUTE_DIAL, ROUTE_TIMEOUT, ROUTE_FALLBACK, CLIENT_ID,
CLIENT_NAME, ROUTE_REASON (reading Asterisk's reply to each), close. Guarantees:
- an answer starts within `deadline_ms` of the connection: routing that needs the store
  gets the deadline minus a margin; on timeout or any error the configured default route
  is answered instead - never silence (Asterisk gives a FastAGI server no read timeout);
- bad input costs only its own connection: a stalled or early-closed header block, one
  past `max_header_bytes`, or a script other than `route` is dropped; a complete block
  that is not an AGI environment is answered with the default route;
- the decision is recorded after the reply, through a bounded queue and one writer
  task (`DecisionRecorder`): the database never delays an answer, and when it falls
  behind, records are dropped and counted rather than memory growing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from callrouter.agi.protocol import BadRequest, PeerGone, read_reply, read_request, set_variable
from callrouter.config import AgiConfig
from callrouter.routing.engine import RouteDecision, default_decision
from callrouter.routing.router import Routed, Router

log = logging.getLogger(__name__)

ROUTE_SCRIPT = "route"


class _Throttle:
    """Log a kind of problem at most once per `interval` s (a flood must not flood the log)."""

    def __init__(self, interval: float = 5.0):
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, kind: str, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self._interval:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        n = self._suppressed.pop(kind, 0)
        if n:
            msg += f" ({n} more like this suppressed)"
        log.log(level, msg, *args)


_throttled = _Throttle()


@dataclass(frozen=True, slots=True)
class Answered:
    """One routing answer, as handed to the recorder and to `on_decision` hooks."""
    pbx: str
    linkedid: str
    uniqueid: str
    channel: str
    caller_raw: str | None
    decision: RouteDecision
    routed: Routed | None        # None when the default route was answered (timeout/error)
    decided_at: datetime
    latency_ms: float            # connection accepted -> first SET VARIABLE written
    answer_ms: float             # ... -> last reply read
    outcome: str                 # answered | hangup | peer-gone | reply-timeout


class Recorder(Protocol):
    def submit(self, item: Answered) -> bool: ...


class FastAgiServer:
    def __init__(self, router: Router, config: AgiConfig | None = None, *, recorder: Recorder | None = None,
                 pbx: str = "main", pbx_by_peer: Mapping[str, str] | None = None,
                 clock: Callable[[], datetime] | None = None, host: str | None = None, port: int | None = None,
                 max_header_bytes: int = 16 * 1024, reply_timeout: float = 5.0, store_margin_ms: float = 30.0,
                 max_connections: int = 2000, backlog: int = 1024,
                 on_decision: Callable[[Answered], None] | None = None):
        cfg = config or AgiConfig()
        self.router = router
        self.host = host if host is not None else cfg.host
        self.port = port if port is not None else cfg.port
        self.deadline = cfg.deadline_ms / 1000.0
        self.default_dial = cfg.default_dial
        self.default_timeout = cfg.default_timeout
        self.recorder = recorder
        self.pbx = pbx
        self.pbx_by_peer = dict(pbx_by_peer or {})
        self.clock = clock or (lambda: datetime.now(UTC))
        self.max_header_bytes = max_header_bytes
        self.reply_timeout = reply_timeout
        # the store gets the deadline minus this: time left to send the default route
        self.store_margin = min(store_margin_ms / 1000.0, self.deadline / 2)
        self.max_connections = max_connections
        self.backlog = backlog
        self.on_decision = on_decision
        self.stats: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._active = 0
        self._conns: set[asyncio.Task] = set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=self.max_header_bytes, backlog=self.backlog)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI router listening on %s:%d (deadline %.0f ms)", self.host, self.port,
                 self.deadline * 1000)

    @property
    def bound_port(self) -> int:
        return self.port

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; give connections in flight `grace` s to finish, then cut them."""
        if self._server is None:
            return
        self._server.close()
        if self._conns:
            _, pending = await asyncio.wait(set(self._conns), timeout=grace)
            for t in pending:
                t.cancel()
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=grace)
        except TimeoutError:
            pass
        self._server = None

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ one connection
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + self.deadline
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self._active += 1
        peer = _peer(writer)
        abort = True
        try:
            if self._active > self.max_connections:
                self.stats["refused-overload"] += 1
                _throttled("overload", logging.WARNING, "FastAGI: %d connections open, refusing %s",
                           self._active, peer)
                return
            try:
                async with asyncio.timeout_at(deadline):
                    request = await read_request(reader, self.max_header_bytes)
            except TimeoutError:
                self.stats["dropped-stalled"] += 1
                _throttled("stalled", logging.WARNING,
                           "FastAGI %s: no complete request within %.0f ms: dropped", peer, self.deadline * 1000)
                return
            except BadRequest as e:
                self.stats[f"bad-{e.kind}"] += 1
                if e.kind == "unparseable":
                    _throttled("unparseable", logging.WARNING,
                               "FastAGI %s: unparseable request (%s): answering the default route", peer, e)
                    decision = default_decision(self.default_dial, self.default_timeout, "default:bad-request",
                                                trace=[f"bad request: {e}"])
                    await self._answer(reader, writer, decision)
                    abort = False
                else:
                    _throttled(e.kind, logging.WARNING, "FastAGI %s: %s: dropped", peer, e)
                return
            except (ConnectionError, OSError):
                self.stats["dropped-reset"] += 1
                return

            script = request.script
            if script != ROUTE_SCRIPT:
                self.stats["unknown-script"] += 1
                _throttled("script", logging.WARNING, "FastAGI %s: unknown script %r: closed (the dialplan "
                           "falls back)", peer, script[:80])
                abort = False
                return

            caller_raw = request.callerid
            decided_at = self.clock()
            routed: Routed | None = None
            try:
                routed = self.router.route_now(caller_raw, decided_at)
                if routed is None:
                    async with asyncio.timeout_at(deadline - self.store_margin):
                        routed = await self.router.route(caller_raw, decided_at)
                decision = routed.decision
            except TimeoutError:
                self.stats["default-timeout"] += 1
                _throttled("timeout", logging.WARNING, "FastAGI %s: routing took longer than the deadline: "
                           "answering the default route", peer)
                decision = default_decision(self.default_dial, self.default_timeout, "default:timeout",
                                            caller=_safe_normalize(self.router, caller_raw),
                                            trace=["routing did not finish within the deadline"])
            except Exception as e:  # noqa: BLE001 - answer the default route, never silence
                self.stats["default-error"] += 1
                log.exception("FastAGI %s: routing failed: answering the default route", peer)
                decision = default_decision(self.default_dial, self.default_timeout, "default:error",
                                            caller=_safe_normalize(self.router, caller_raw),
                                            trace=[f"routing failed: {type(e).__name__}: {e}"[:300]])

            latency_ms = (loop.time() - t0) * 1000.0
            outcome = await self._answer(reader, writer, decision)
            answer_ms = (loop.time() - t0) * 1000.0
            abort = outcome != "answered"
            self.stats[outcome] += 1
            item = Answered(
                pbx=self.pbx_by_peer.get(peer.rsplit(":", 1)[0], self.pbx), linkedid=request.linkedid,
                uniqueid=request.uniqueid, channel=request.channel, caller_raw=caller_raw, decision=decision,
                routed=routed, decided_at=decided_at, latency_ms=latency_ms, answer_ms=answer_ms, outcome=outcome)
            if self.recorder is not None:
                self.recorder.submit(item)
            if self.on_decision is not None:
                try:
                    self.on_decision(item)
                except Exception:  # noqa: BLE001
                    log.exception("on_decision hook failed")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one connection's failure must not reach the server
            self.stats["internal-error"] += 1
            log.exception("FastAGI %s: unexpected error", peer)
        finally:
            self._active -= 1
            if task is not None:
                self._conns.discard(task)
            try:
                if abort:
                    writer.transport.abort()
                else:
                    writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      decision: RouteDecision) -> str:
        """SET VARIABLE each contract variable, reading each reply. -> outcome."""
        try:
            async with asyncio.timeout(self.reply_timeout):
                for name, value in decision.variables():
                    writer.write(set_variable(name, value))
                    reply = await read_reply(reader)
                    if reply.hangup or reply.code == 511:
                        return "hangup"  # the caller is gone: nothing left to route
                    if not reply.ok:
                        _throttled("reply", logging.WARNING, "FastAGI: SET VARIABLE %s answered %d %s", name,
                                   reply.code, reply.text[:80])
            return "answered"
        except TimeoutError:
            return "reply-timeout"
        except (PeerGone, ConnectionError, OSError):
            return "peer-gone"


def _peer(writer: asyncio.StreamWriter) -> str:
    try:
        p = writer.get_extra_info("peername")
        return f"{p[0]}:{p[1]}" if p else "?"
    except Exception:  # noqa: BLE001
        return "?"


def _safe_normalize(router: Router, raw: str | None) -> str | None:
    try:
        return router.normalize(raw)
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------ recording

class DecisionStore(Protocol):
    async def save_route_decision(self, row: Any) -> None: ...
    async def save_lead(self, pbx: str, phone: str, raw: str | None, call_id: str | None) -> bool: ...


class DecisionRecorder:
    """Stores every answered decision (and a lead for an unknown caller) off the answer
    path: `submit` never blocks; one writer task drains a bounded queue."""

    def __init__(self, store: DecisionStore, *, maxsize: int = 10_000, retries: int = 2,
                 retry_delay: float = 0.5):
        self._store = store
        self._queue: asyncio.Queue[Answered] = asyncio.Queue(maxsize)
        self._retries = retries
        self._retry_delay = retry_delay
        self._task: asyncio.Task | None = None
        self.stats: Counter[str] = Counter()

    def submit(self, item: Answered) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            _throttled("recorder-full", logging.ERROR, "route decision log is full (%d queued): decision for "
                       "%s not stored", self._queue.qsize(), item.linkedid)
            return False

    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="route-decision-writer")
        return self._task

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._save(item)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored (or given up)."""
        await self._queue.join()

    async def close(self, timeout: float = 5.0) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("route decision log: %d decisions not stored at shutdown", self._queue.qsize())
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _save(self, item: Answered) -> None:
        from callrouter.store import RouteDecisionRow

        d = item.decision
        row = RouteDecisionRow(
            pbx=item.pbx, linkedid=item.linkedid or item.uniqueid or "unknown", decided_at=item.decided_at,
            caller_raw=item.caller_raw, caller_number=d.caller, client_id=d.client_id, rule=d.rule or None,
            reason=d.reason, dial=d.dial, timeout=d.timeout, fallback=d.fallback or None,
            latency_ms=round(item.latency_ms, 3),
            trace={"steps": list(d.trace), "candidates": list(d.candidates), "lead": d.lead, "owner": d.owner,
                   "client_name": d.client_name, "uniqueid": item.uniqueid, "channel": item.channel,
                   "outcome": item.outcome, "answer_ms": round(item.answer_ms, 3),
                   "rules_version": item.routed.rules_version if item.routed else None,
                   "lookup": item.routed.lookup.source if item.routed else None})
        await self._attempt("decision", lambda: self._store.save_route_decision(row), item)
        if d.lead and d.caller:
            await self._attempt("lead", lambda: self._store.save_lead(item.pbx, d.caller, item.caller_raw,
                                                                       item.linkedid or None), item)

    async def _attempt(self, what: str, op: Callable[[], Any], item: Answered) -> None:
        for attempt in range(self._retries + 1):
            try:
                await op()
                self.stats[f"{what}s"] += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                if attempt == self._retries:
                    self.stats[f"{what}-failed"] += 1
                    _throttled(f"save-{what}", logging.ERROR, "could not store route %s for %s: %s", what,
                               item.linkedid, e)
                    return
                await asyncio.sleep(self._retry_delay * (attempt + 1))
