"""The route decision log: every answered decision (and a lead for an unknown caller)
stored off the answer path.

`DecisionLogProcess` (what the daemon uses) writes from a child process;
`DecisionRecorder` writes from the event loop (tests, tools, stores given as objects).
Both turn an `Answered` into the same `LoggedDecision`, and that into the same row.

Why a child process: storing a decision costs the database layer (SQLAlchemy, the driver, SQLite, JSON) far
more CPU than routing the call did, and inside the daemon that work holds the same GIL
the FastAGI answers need: in tests/bench/route.py it took the router from ~0.9x to
~0.55x of a bare FastAGI server's throughput at 20 concurrent calls. So the daemon only
pickles each decision and writes it to a pipe; a child process (this module's
`main`) stores them in batches, one transaction per batch (the
decisions and the leads they created), and acknowledges each batch.

- `submit` never blocks and never waits for the database. At most `maxsize` decisions
  are held (queued or unacknowledged); past that a decision is dropped, counted and
  logged (throttled) - memory stays bounded when the database is down.
- A decision leaves memory only when the child acknowledges its batch: stored, or
  given up after `retries` (counted as failed, logged). If the child dies it is
  started again and the unacknowledged decisions are sent again, so a decision is
  stored at least once (a crash between a commit and its acknowledgement stores that
  batch twice).
- `flush()` waits until everything submitted is acknowledged; `close()` flushes
  within a timeout, then closes the pipe and the child exits.
- The child ignores SIGINT/SIGTERM (a terminal's Ctrl-C or systemd reach the whole
  process group): the daemon decides when it ends, by closing the pipe. It runs at a
  lower CPU priority (nice 10): storing a decision may wait, answering a call may not.

Wire format, daemon -> child: one JSON line (database URL, batch size, retry policy),
then frames: 4-byte big-endian length + pickle of a `LoggedDecision` (a tuple of plain
values: pickling one costs ~1 µs where the row dataclass cost ~15). Child -> daemon:
one line per batch, `<frames> <stored> <failed> <leads>`. The pipe is private to the
two processes; nothing else can write to it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import struct
import sys
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from callrouter.agi.server import Answered, throttled

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
MAX_FRAME_BYTES = 1 << 20  # a decision is ~1 KB; anything near this is a bug, not data


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class LoggedDecision(NamedTuple):
    """What the log keeps of one answer: plain values, cheap to build and to pickle on
    the answer path; `row()` and `lead()` make the store's types from it."""
    pbx: str
    linkedid: str
    uniqueid: str
    channel: str
    caller_raw: str | None
    decided_at: float            # POSIX timestamp (UTC)
    latency_ms: float
    answer_ms: float
    outcome: str
    rule: str
    reason: str
    dial: str
    timeout: int
    fallback: str
    client_id: str | None
    client_name: str
    caller: str | None
    lead_wanted: bool
    candidates: tuple[str, ...]
    owner: str | None
    steps: tuple[str, ...]
    rules_version: int | None
    lookup: str | None

    @classmethod
    def of(cls, item: Answered) -> LoggedDecision:
        d = item.decision
        routed = item.routed
        return cls(item.pbx, item.linkedid or item.uniqueid or "unknown", item.uniqueid, item.channel,
                   item.caller_raw, item.decided_at.timestamp(), round(item.latency_ms, 3),
                   round(item.answer_ms, 3), item.outcome, d.rule, d.reason, d.dial, d.timeout, d.fallback,
                   d.client_id, d.client_name, d.caller, d.lead, tuple(d.candidates), d.owner, tuple(d.trace),
                   routed.rules_version if routed else None, routed.lookup.source if routed else None)

    def row(self) -> Any:
        from callrouter.store import RouteDecisionRow

        return RouteDecisionRow(
            pbx=self.pbx, linkedid=self.linkedid, decided_at=datetime.fromtimestamp(self.decided_at, UTC),
            caller_raw=self.caller_raw, caller_number=self.caller, client_id=self.client_id,
            rule=self.rule or None, reason=self.reason, dial=self.dial, timeout=self.timeout,
            fallback=self.fallback or None, latency_ms=self.latency_ms,
            trace={"steps": list(self.steps), "candidates": list(self.candidates), "lead": self.lead_wanted,
                   "owner": self.owner, "client_name": self.client_name, "uniqueid": self.uniqueid,
                   "channel": self.channel, "outcome": self.outcome, "answer_ms": self.answer_ms,
                   "rules_version": self.rules_version, "lookup": self.lookup})

    def lead(self) -> tuple[str, str, str | None, str | None] | None:
        """(pbx, phone, raw, call_id) for an unknown caller with a number, else None."""
        if self.lead_wanted and self.caller:
            return (self.pbx, self.caller, self.caller_raw, self.linkedid if self.linkedid != "unknown" else None)
        return None


class DecisionStore(Protocol):
    async def save_route_decision(self, row: Any) -> None: ...
    async def save_lead(self, pbx: str, phone: str, raw: str | None, call_id: str | None) -> bool: ...


class DecisionRecorder:
    """Stores every answered decision (and a lead for an unknown caller) from the event
    loop, off the answer path: `submit` never blocks; one writer task drains a bounded queue, in batches when
    the store offers `save_route_decisions(rows)` / `save_leads([(pbx, phone, raw,
    call_id)])` (one transaction per batch), else row by row."""

    def __init__(self, store: DecisionStore, *, maxsize: int = 10_000, retries: int = 2,
                 retry_delay: float = 0.5, batch: int = 500, linger: float = 0.02):
        self._store = store
        # with a batch API, wait this long after the first decision so that one
        # transaction carries many (a row-by-row store gains nothing from waiting)
        self._linger = linger if hasattr(store, "save_route_decisions") else 0.0
        self._queue: asyncio.Queue[tuple[Any, tuple | None]] = asyncio.Queue(maxsize)
        self._retries = retries
        self._retry_delay = retry_delay
        self._batch = batch
        self._task: asyncio.Task | None = None
        self.stats: Counter[str] = Counter()

    def submit(self, item: Answered) -> bool:
        # the row is built here, a call at a time: built in one go at write time, a batch of
        # hundreds would stall the event loop (and every call waiting on it) for milliseconds
        try:
            logged = LoggedDecision.of(item)
            entry = (logged.row(), logged.lead())
        except Exception:  # noqa: BLE001 - one odd decision must not stop the log
            self.stats["decision-failed"] += 1
            log.exception("route decision for %s cannot be stored", item.linkedid)
            return False
        try:
            self._queue.put_nowait(entry)
            return True
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            throttled("recorder-full", logging.ERROR, "route decision log is full (%d queued): decision for "
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
        q = self._queue
        while True:
            items = [await q.get()]
            if self._linger > 0 and q.qsize() < self._batch - 1:
                await asyncio.sleep(self._linger)  # a backlog is written at once, without waiting
            while len(items) < self._batch and not q.empty():
                items.append(q.get_nowait())
            try:
                await self._save(items)
            finally:
                for _ in items:
                    q.task_done()

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
        await _cancelled(self._task)
        self._task = None

    async def _save(self, items: list[tuple[Any, tuple | None]]) -> None:
        rows = [row for row, _ in items]
        save_many = getattr(self._store, "save_route_decisions", None)
        if save_many is not None and len(rows) > 1:
            await self._attempt("decision", lambda: save_many(rows), rows[0].linkedid, len(rows))
        else:
            for row in rows:
                await self._attempt("decision", lambda row=row: self._store.save_route_decision(row), row.linkedid)
        leads = [lead for _, lead in items if lead is not None]
        save_leads = getattr(self._store, "save_leads", None)
        if save_leads is not None and len(leads) > 1:
            await self._attempt("lead", lambda: save_leads(leads), leads[0][3] or "", len(leads))
        else:
            for lead in leads:
                await self._attempt("lead", lambda lead=lead: self._store.save_lead(*lead), lead[3] or "")

    async def _attempt(self, what: str, op: Callable[[], Any], linkedid: str, n: int = 1) -> None:
        for attempt in range(self._retries + 1):
            try:
                await op()
                self.stats[f"{what}s"] += n
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                if attempt == self._retries:
                    self.stats[f"{what}-failed"] += n
                    throttled(f"save-{what}", logging.ERROR, "could not store route %s for %s%s: %s", what,
                               linkedid, f" and {n - 1} more" if n > 1 else "", e)
                    return
                await asyncio.sleep(self._retry_delay * (attempt + 1))


class DecisionLogProcess:
    """A `Recorder` for `FastAgiServer` that stores decisions from a child process."""

    def __init__(self, database_url: str, *, maxsize: int = 10_000, linger: float = 0.1, batch: int = 500,
                 retries: int = 2, retry_delay: float = 0.5, restart_delay: float = 1.0,
                 log_level: str | None = None):
        self._url = database_url
        self._maxsize = maxsize
        self._linger = linger
        self._config = {"batch": batch, "retries": retries, "retry_delay": retry_delay,
                        "log_level": log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        self._restart_delay = restart_delay
        self._queued: list[bytes] = []            # frames not yet written to the pipe
        self._unacked: deque[bytes] = deque()    # written, waiting for the child's acknowledgement
        self._stdin: asyncio.StreamWriter | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ the daemon's side
    def submit(self, item: Answered) -> bool:
        if len(self._queued) + len(self._unacked) >= self._maxsize:
            self.stats["dropped"] += 1
            throttled("decision-log-full", logging.ERROR, "route decision log is full (%d held): decision for "
                       "%s not stored", self._maxsize, item.linkedid)
            return False
        try:
            payload = pickle.dumps(tuple(LoggedDecision.of(item)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - one odd decision must not stop the log
            self.stats["decision-failed"] += 1
            log.exception("route decision for %s cannot be stored", item.linkedid)
            return False
        if len(payload) > MAX_FRAME_BYTES:
            self.stats["decision-failed"] += 1
            log.error("route decision for %s is %d bytes: not stored", item.linkedid, len(payload))
            return False
        self._queued.append(_LENGTH.pack(len(payload)) + payload)
        self._idle.clear()
        if self._timer is None and self._stdin is not None:
            # one pipe write per `linger`, not one per call; and batches big enough that a
            # transaction's fixed cost (~1 ms) is shared by many decisions
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._send)
        return True

    @property
    def pending(self) -> int:
        """Decisions submitted and not yet acknowledged by the child."""
        return len(self._queued) + len(self._unacked)

    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="route-decision-log")
        return self._task

    async def flush(self) -> None:
        """Send what is queued now and wait until nothing is pending: every decision
        acknowledged (stored or given up). Under steady traffic, that is the next lull."""
        self._send()
        await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)  # a child that dies meanwhile is restarted
        except TimeoutError:
            log.warning("route decision log: %d decisions not stored at shutdown", self.pending)
        self._closing = True
        proc = self._proc
        if self._stdin is not None:
            self._stdin.close()  # end of input: the child finishes and exits
            self._stdin = None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("route decision log process did not exit; killing it")
                proc.kill()
        await _cancelled(self._task)
        self._task = None

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # when flush() sends before the window ends
            self._timer = None
        if not self._queued or self._stdin is None or self._stdin.is_closing():
            return  # nothing to send, or no child: sent (again) when one is up
        frames, self._queued = self._queued, []
        self._unacked.extend(frames)
        self._stdin.write(b"".join(frames))

    def _acknowledged(self, line: bytes) -> None:
        try:
            count, stored, failed, leads = (int(x) for x in line.split())
        except ValueError:
            log.error("route decision log process said %r", line[:200])
            return
        for _ in range(min(count, len(self._unacked))):
            self._unacked.popleft()
        self.stats["decisions"] += stored
        self.stats["decision-failed"] += failed
        self.stats["leads"] += leads
        if not self._queued and not self._unacked:
            self._idle.set()

    async def _supervise(self) -> None:
        delay = self._restart_delay
        while True:
            try:
                # -c, not -m: callrouter.agi imports this module, and runpy warns on -m
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "from callrouter.agi.decisionlog import main; main()",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            except OSError as e:
                log.error("cannot start the route decision log process: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._proc = proc
            assert proc.stdin is not None and proc.stdout is not None
            config = dict(self._config, database_url=self._url)
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            if self._unacked:  # a previous child died before acknowledging these
                self.stats["resent"] += len(self._unacked)
                proc.stdin.write(b"".join(self._unacked))
            self._stdin = proc.stdin
            self._send()
            while line := await proc.stdout.readline():
                self._acknowledged(line)
                delay = self._restart_delay  # it works: a later failure starts the backoff afresh
            self._stdin = None
            code = await proc.wait()
            self._proc = None
            if self._closing:
                return
            self.stats["restarts"] += 1
            log.error("route decision log process exited (code %s) with %d decisions unacknowledged; "
                      "starting it again in %.1f s", code, len(self._unacked), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


# ------------------------------------------------------------------ the child's side

async def _write(store: Any, frames: list[bytes], retries: int, retry_delay: float) -> tuple[int, int, int]:
    """Store one batch: (stored, failed, leads)."""
    rows, leads = [], []
    for frame in frames:
        try:
            logged = LoggedDecision(*pickle.loads(frame))
            row, lead = logged.row(), logged.lead()
        except Exception as e:  # noqa: BLE001 - one bad frame must not lose its batch
            log.error("an unreadable route decision on the pipe: %s", e)
            continue
        rows.append(row)
        if lead is not None:
            leads.append(lead)
    bad = len(frames) - len(rows)
    if not rows:
        return 0, bad, 0
    for attempt in range(retries + 1):
        try:
            await store.save_routing_batch(rows, leads)
            return len(rows), bad, len(leads)
        except Exception as e:  # noqa: BLE001
            if attempt == retries:
                log.error("could not store %d route decisions (first %s): %s", len(rows), rows[0].linkedid, e)
                break
            await asyncio.sleep(retry_delay * (attempt + 1))
    return 0, len(frames), 0


def _frames(buf: bytearray, state: dict[str, int]) -> tuple[list[bytes], int]:
    """Complete frames at the front of `buf` (consumed from it), and how many oversized
    ones were skipped. A frame larger than MAX_FRAME_BYTES cannot come from the daemon
    (it refuses them); it is skipped, not fatal: a poison frame resent to every new
    child would stop the log for good."""
    frames: list[bytes] = []
    skipped = 0
    pos = 0
    while True:
        if state["skip"]:
            n = min(state["skip"], len(buf) - pos)
            pos += n
            state["skip"] -= n
            if state["skip"]:
                break
        if len(buf) - pos < 4:
            break
        (size,) = _LENGTH.unpack_from(buf, pos)
        if size > MAX_FRAME_BYTES:
            log.error("a %d-byte frame on the decision pipe: skipped", size)
            skipped += 1
            state["skip"] = size
            pos += 4
            continue
        if len(buf) - pos - 4 < size:
            break
        frames.append(bytes(buf[pos + 4:pos + 4 + size]))
        pos += 4 + size
    del buf[:pos]
    return frames, skipped


async def _child(ack: Any) -> int:
    from callrouter.store import Store

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    config = json.loads(await reader.readline())
    logging.basicConfig(level=config.get("log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s callrouter.decisionlog: %(message)s")
    batch, retries, retry_delay = int(config["batch"]), int(config["retries"]), float(config["retry_delay"])
    buf = bytearray()
    state = {"skip": 0}
    async with Store(config["database_url"]) as store:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                return 0 if not buf else 3  # a partial frame at the end: the daemon died mid-write
            buf += data
            frames, skipped = _frames(buf, state)
            if skipped:
                ack.write(f"{skipped} 0 {skipped} 0\n".encode())
            for k in range(0, len(frames), batch):
                chunk = frames[k:k + batch]
                stored, failed, leads = await _write(store, chunk, retries, retry_delay)
                ack.write(f"{len(chunk)} {stored} {failed} {leads}\n".encode())


CHILD_NICENESS = 10


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # background work: when a core is contended, answering calls goes first
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    # acknowledgements get stdout to themselves: anything else printed goes to stderr
    ack = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    try:
        code = asyncio.run(_child(ack))
    except Exception:  # noqa: BLE001 - tell the daemon's log why, then let it restart us
        logging.getLogger(__name__).exception("route decision log process failed")
        code = 1
    os._exit(code)

