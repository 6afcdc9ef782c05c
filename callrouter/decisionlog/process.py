"""`DecisionLogProcess`: the route decision log written by a child process (what the
daemon uses).

Why a child process: storing a decision costs the database layer (SQLAlchemy, the driver, SQLite, JSON) far
more CPU than routing the call did, and inside the daemon that work holds the same GIL
the FastAGI answers need: in tests/bench/route.py it took the router from ~0.9x to
~0.55x of a bare FastAGI server's throughput at 20 concurrent calls. So the daemon only
pickles each `RoutedCall` and writes it to a pipe; a child process (this module's
`main`) stores them through a `callrouter.store.writer.BatchWriter` under the decision
logs' policy (`policy.POLICY`), one transaction per batch (the decisions and the leads
they created), and acknowledges each batch.

- `submit` never blocks and never waits for the database. At most `maxsize` decisions
  are held (queued or unacknowledged); past that a decision is dropped, counted and
  logged (throttled) - memory stays bounded when the database is down.
- A decision leaves memory only when the child acknowledges its batch: stored; or
  refused by the database alone (after its batch was refused and split) and kept as a
  dead letter; or, with a spool, given up after `policy.attempts` and written to the
  spool by the child (durable when acknowledged: the daemon's drain replays it); or,
  without a spool or when the spool is full, given up (counted as failed, logged). If
  the child dies it is started again (backoff from `restart_delay`, doubling up to 30 s)
  and the unacknowledged decisions are sent again. A decision may so reach the store
  twice (a crash between a commit and its acknowledgement), and the store keeps it once:
  decisions are inserted ON CONFLICT DO NOTHING on (pbx, uniqueid, decided_at).
- With a spool, nothing held is lost at shutdown either: what is still queued or
  unacknowledged when `close()` runs out of time (the child killed if it has not
  exited) is written to the spool by the daemon; what the child already stored or
  spooled is then stored once, by the same key. A decision past `maxsize` goes to the
  spool instead of being dropped.
- `run()` is the supervisor (start the child, read its acknowledgements, restart it);
  the caller's TaskGroup owns it. `flush()` waits until everything submitted is
  acknowledged; `close()` flushes within a timeout, then closes the pipe, the child
  exits and `run()` returns.
- The child ignores SIGINT/SIGTERM (a terminal's Ctrl-C or systemd reach the whole
  process group): the daemon decides when it ends, by closing the pipe. It runs at a
  lower CPU priority (nice 10): storing a decision may wait, answering a call may not.

Wire format, daemon -> child: one JSON line (database URL, write policy, log level),
then frames: 4-byte big-endian length + pickle of a `RoutedCall` (its `__reduce__`
pickles plain values: ~3 µs a call, where its fields pickled as objects cost ~12). A frame
larger than MAX_FRAME_BYTES is refused by `submit` and skipped by the child.
Child -> daemon, on its own file descriptor (the child's stdout; anything the child
prints goes to stderr): lines `<frames> <stored> <failed> <leads> <spooled> <dead>`,
covering every frame once, in order. The pipe is private to the two processes; nothing
else can write to it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pickle
import struct
import sys
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from callrouter.childproc import run_child
from callrouter.decisionlog.policy import POLICY
from callrouter.logthrottle import throttled
from callrouter.routing.decision import RoutedCall
from callrouter.store.spool import DECISION, Spool
from callrouter.store.writer import WritePolicy

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
MAX_FRAME_BYTES = 1 << 20  # a decision is ~1 KB; anything near this is a bug, not data
MAX_RESTART_DELAY = 30.0
CHILD_CLOSE_TIMEOUT = 3.0  # s: the child's writer, at end of input, stores or spools within this


class DecisionLogProcess:
    """A `Recorder` for `FastAgiServer` that stores decisions from a child process."""

    def __init__(self, database_url: str, *, maxsize: int = 10_000, linger: float = 0.1,
                 policy: WritePolicy = POLICY, restart_delay: float = 1.0, log_level: str | None = None,
                 spool: Spool | None = None):
        self._url = database_url
        self._spool = spool
        self._spill: list[bytes] = []             # past maxsize, on their way to the spool
        self._spilling: asyncio.Task | None = None
        self._maxsize = maxsize
        self._linger = linger  # the pipe's window: one write per `linger` s, not one per call
        self._config = {"policy": dataclasses.asdict(policy),
                        "log_level": log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                        "spool": None if spool is None else {"path": str(spool.path), "max_bytes": spool.max_bytes}}
        self._restart_delay = restart_delay
        self._queued: list[bytes] = []            # frames not yet written to the pipe
        self._unacked: deque[bytes] = deque()    # written, waiting for the child's acknowledgement
        self._stdin: asyncio.StreamWriter | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = asyncio.Event()
        self._ended = asyncio.Event()
        self._running = False
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ the daemon's side
    def submit(self, call: RoutedCall) -> bool:
        if self._closing.is_set():
            self.stats["decision-failed"] += 1
            throttled(log, "decision-log-closed", logging.ERROR, "route decision log is closed: decision "
                      "for %s not stored", call.linkedid)
            return False
        full = len(self._queued) + len(self._unacked) >= self._maxsize
        if full and self._spool is None:
            self.stats["dropped"] += 1
            throttled(log, "decision-log-full", logging.ERROR, "route decision log is full (%d held): "
                      "decision for %s not stored", self._maxsize, call.linkedid)
            return False
        try:
            payload = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - one odd decision must not stop the log
            self.stats["decision-failed"] += 1
            log.exception("route decision for %s cannot be stored", call.linkedid)
            return False
        if len(payload) > MAX_FRAME_BYTES:
            self.stats["decision-failed"] += 1
            log.error("route decision for %s is %d bytes: not stored", call.linkedid, len(payload))
            return False
        if full:  # the child is behind (a hung database): straight to the spool
            throttled(log, "decision-log-full", logging.WARNING, "route decision log is full (%d held): "
                      "decisions go to the spool", self._maxsize)
            self._spill.append(payload)
            if self._spilling is None or self._spilling.done():
                self._spilling = asyncio.get_running_loop().create_task(self._spill_out())
            return True
        self._queued.append(_LENGTH.pack(len(payload)) + payload)
        self._idle.clear()
        if self._timer is None and self._stdin is not None:
            # one pipe write per `linger`, not one per call; and batches big enough that a
            # transaction's fixed cost (~1 ms) is shared by many decisions
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._send)
        return True

    @property
    def pending(self) -> int:
        """Decisions submitted and not yet acknowledged by the child (or spooled)."""
        return len(self._queued) + len(self._unacked) + len(self._spill)

    async def _spill_out(self) -> None:
        """The spill task (kept in `_spilling`, awaited by `close`): what is past maxsize to
        the spool. A spool write that fails is counted and logged here: the task never
        ends with an exception nobody reads, and `flush` is not left waiting."""
        assert self._spool is not None
        try:
            while self._spill:
                payloads, self._spill = self._spill, []
                try:
                    n = await self._spool.aput(DECISION, payloads)
                except Exception:  # noqa: BLE001 - the spool is the last resort: count what it lost
                    self.stats["dropped"] += len(payloads)
                    log.exception("route decision log: %d decision(s) past the limit could not be spooled",
                                  len(payloads))
                    continue
                self.stats["spooled"] += n
                self.stats["dropped"] += len(payloads) - n
        finally:
            if not self._queued and not self._unacked and not self._spill:
                self._idle.set()

    async def flush(self) -> None:
        """Send what is queued now and wait until nothing is pending: every decision
        acknowledged (stored or given up). Under steady traffic, that is the next lull."""
        self._send()
        await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:
        """Within `timeout` in all: flush (a child that dies meanwhile is restarted), then
        close the pipe: the child stores (or spools) what it has and exits, killed if it
        has not by the deadline; what is still unacknowledged then goes to the spool
        (without one: counted as failed and logged), and `run()` returns."""
        if self._closing.is_set():
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout

        def left() -> float:
            return max(0.0, end - loop.time())

        if self._running:
            try:
                # the child gets the rest of the time to finish once its input ends
                await asyncio.wait_for(self.flush(), max(0.0, timeout - CHILD_CLOSE_TIMEOUT - 1.0))
            except TimeoutError:
                pass
        self._closing.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        proc = self._proc
        if self._stdin is not None:
            self._send()
            self._stdin.close()  # end of input: the child finishes and exits
            self._stdin = None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), max(0.0, left() - 0.5))
            except TimeoutError:
                log.warning("route decision log process did not exit; killing it")
                proc.kill()
        if self._running:
            try:
                await asyncio.wait_for(self._ended.wait(), max(0.5, left()))
            except TimeoutError:
                log.warning("route decision log: the supervisor did not end")
        if self._spilling is not None:
            await asyncio.wait((self._spilling,), timeout=max(0.5, left()))
        await self._spool_leftovers()

    async def _spool_leftovers(self) -> None:
        frames = list(self._unacked) + self._queued + [_LENGTH.pack(len(p)) + p for p in self._spill]
        self._unacked.clear()
        self._queued, self._spill = [], []
        if not frames:
            return
        if self._spool is None:
            self.stats["decision-failed"] += len(frames)
            log.error("route decision log: %d decision(s) not stored at shutdown", len(frames))
            return
        n = await self._spool.aput(DECISION, [f[_LENGTH.size:] for f in frames])
        self.stats["spooled"] += n
        self.stats["decision-failed"] += len(frames) - n
        log.warning("route decision log: %d decision(s) not acknowledged at shutdown written to the spool "
                    "(stored once, whatever the child did with them)", n)

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
            count, stored, failed, leads, spooled, dead = (int(x) for x in line.split())
        except ValueError:
            log.error("route decision log process said %r", line[:200])
            return
        for _ in range(min(count, len(self._unacked))):
            self._unacked.popleft()
        self.stats["decisions"] += stored
        self.stats["decision-failed"] += failed
        self.stats["leads"] += leads
        self.stats["spooled"] += spooled
        self.stats["dead"] += dead
        if not self._queued and not self._unacked and not self._spill:
            self._idle.set()

    async def run(self) -> None:
        """Keep a child process writing, until `close()`."""
        self._running = True
        self._ended.clear()
        try:
            await self._supervise()
        finally:
            if self._stdin is not None:  # cancelled: the child stores what it has and exits
                self._stdin.close()
                self._stdin = None
            self._running = False
            self._ended.set()

    async def _pause(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), delay)
        except TimeoutError:
            pass

    async def _supervise(self) -> None:
        delay = self._restart_delay
        while not self._closing.is_set():
            try:
                # -c: the child imports this module and calls main() (not run as __main__)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "from callrouter.decisionlog.process import main; main()",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            except OSError as e:
                log.error("cannot start the route decision log process: %s", e)
                await self._pause(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                continue
            self._proc = proc
            assert proc.stdin is not None and proc.stdout is not None
            config = dict(self._config, database_url=self._url)
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            if self._closing.is_set():  # closed while the child was starting
                proc.stdin.close()
            else:
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
            if self._closing.is_set():
                return
            self.stats["restarts"] += 1
            log.error("route decision log process exited (code %s) with %d decisions unacknowledged; "
                      "starting it again in %.1f s", code, len(self._unacked), delay)
            await self._pause(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)


# ------------------------------------------------------------------ the child's side

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


def _decode(frame: bytes) -> RoutedCall | None:
    """A frame's RoutedCall; None (acknowledged as failed) when it is not one."""
    try:
        call = pickle.loads(frame)
    except Exception as e:  # noqa: BLE001 - one bad frame must not lose its batch
        log.error("an unreadable route decision on the pipe: %s", e)
        return None
    if not isinstance(call, RoutedCall):
        log.error("not a route decision on the pipe: %s", type(call).__name__)
        return None
    return call


async def _child(ack: Any) -> int:
    from callrouter.store import SchemaNotCurrent, Store
    from callrouter.store.spool import decision_dead_letter, encode_decision
    from callrouter.store.writer import BatchWriter

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    config = json.loads(await reader.readline())
    logging.basicConfig(level=config.get("log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s callrouter.decisionlog: %(message)s")
    policy = WritePolicy(**config["policy"])
    spool = None if config.get("spool") is None else Spool(config["spool"]["path"], config["spool"]["max_bytes"])

    store = Store(config["database_url"])
    opened = False

    async def open_store() -> None:
        # Opened on first use, and again after a failure: a child started while the
        # database is down (a restart during an outage) must still take decisions and
        # spool them. Only a database without our schema ends the child (SchemaNotCurrent).
        nonlocal opened
        if not opened:
            await store.__aenter__()
            opened = True

    try:
        await open_store()
    except SchemaNotCurrent:
        raise
    except Exception as e:  # noqa: BLE001 - the writer's policy (retries, the spool) takes it from here
        log.warning("the database is not reachable (%s: %s); decisions wait in the spool", type(e).__name__, e)
    try:
        async def save(batch: list[RoutedCall | None]) -> None:
            calls = [c for c in batch if c is not None]
            if calls:
                await open_store()
                await store.save_routing_batch(calls)

        # every frame is acknowledged once, in the order it came: stored (an unreadable
        # frame: failed), a dead letter, spooled, or failed
        def written(batch: list[RoutedCall | None], ok: bool) -> None:
            calls = [c for c in batch if c is not None]
            leads = sum(1 for c in calls if c.lead() is not None)
            ack.write(f"{len(batch)} {len(calls)} {len(batch) - len(calls)} {leads} 0 0\n".encode())

        async def failed(batch: Sequence[RoutedCall | None], error: Exception) -> None:
            calls = [c for c in batch if c is not None]
            n = 0 if spool is None else await spool.aput(DECISION, [encode_decision(c) for c in calls])
            ack.write(f"{len(batch)} 0 {len(batch) - n} 0 {n} 0\n".encode())

        async def dead(call: RoutedCall | None, error: Exception) -> None:
            assert call is not None
            await open_store()
            await store.save_dead_letters([decision_dead_letter(call, error)])
            ack.write(b"1 0 0 0 0 1\n")

        writer: BatchWriter[RoutedCall | None] = BatchWriter(
            save, policy, what="route decision", on_written=written, on_failed=failed, on_dead=dead,
            backlog=None if spool is None else (lambda: spool.has(DECISION)),
            describe=lambda c: f"decision for {c.linkedid}" if c is not None else "an unreadable frame")
        buf = bytearray()
        state = {"skip": 0}
        async with asyncio.TaskGroup() as tg:
            tg.create_task(writer.run(), name="route-decision-writer")
            while data := await reader.read(1 << 20):
                buf += data
                frames, skipped = _frames(buf, state)
                for frame in frames:
                    await writer.put(_decode(frame))  # a full queue stops reading: the pipe fills
                for _ in range(skipped):
                    await writer.put(None)
            # end of input: store (or spool) what is queued, then run() returns
            await writer.close(CHILD_CLOSE_TIMEOUT)
    finally:
        await store.close()
        if spool is not None:
            spool.close()
    return 0 if not buf else 3  # a partial frame at the end: the daemon died mid-write


CHILD_NICENESS = 10


def main() -> None:
    # background work: when a core is contended, answering calls goes first
    run_child(_child, "route decision log process", niceness=CHILD_NICENESS)
