"""The live AMI source: one PBX connection whose typed events come out of an async iterator.

    async with AmiSource(pbx_cfg) as source:
        async for event in source.events():
            tracker.feed(event)

panoramisk does the AMI plumbing (actions and their response futures); we subclass it
where its defaults would hurt a daemon that must run for months:
- its protocol's buffer grows without bound and re-splits everything on each read; ours
  uses `FrameSplitter` (capped, linear);
- a frame that fails to parse, or any error while handling one, is logged, counted and
  skipped here, so it can never reach asyncio's transport and drop the connection;
- events go to a bounded queue; when it is full we pause reading the socket (TCP pushes
  back on Asterisk) instead of dropping anything;
- its manager reconnects at a fixed delay with no timeouts and never checks that a Ping
  was answered; `AmiSource` connects with a timeout, backs off exponentially with jitter,
  drops a connection whose Ping goes unanswered, and after every reconnection puts a
  `StreamGap` into the stream so the tracker knows events may be missing.

After every login the source runs its on-login hook (by default `snapshot`): it asks the
PBX for what is up now (CoreShowChannels, BridgeList, DeviceStateList, ExtensionStateList;
deploy/asterisk/manager.conf grants exactly these) through `action()`. The list items those
actions produce are events like any other: they go to the action's future *and* into the
stream, in socket order, so the tracker and presence reconcile from them purely.

Reconnect timing: the wait after a failed attempt grows exponentially with jitter up to
`reconnect_max` (login rejected or unanswered, a connection dying during login), but while
the PBX does not accept TCP at all (refused: down or restarting; or no answer within the
connect timeout) it is capped at `UNREACHABLE_RETRY_MAX` (2 s): such an attempt costs the
PBX nothing, and a PBX back from an outage of any length is logged into again within that
cap plus one connect and login (the 3 s the daemon promises). The backoff starts over after
every successful login. A rejected login (a wrong secret) is a config mistake the daemon lives
with (routing needs no AMI): one ERROR line, then again every LOGIN_RELOG_EVERY with the count
of those suppressed; every try is logged at DEBUG.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from ..config import PbxConfig
from ..logthrottle import Throttle
from .events import AmiEvent, MalformedEvent, StreamGap, frame_headers, parse_headers
from .framing import FrameSplitter, Oversized

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
# frames of one socket read handled before the event loop runs other callbacks: a read of a
# burst holds ~50-800 frames at ~30 us each; past this the rest wait for the next loop turn
# (reading paused meanwhile), so FastAGI answers do not wait behind a whole read
READ_SLICE_SECONDS = 0.0005
_clock = time.perf_counter
LOGIN_RELOG_EVERY = 600.0  # s: a login rejected again and again is logged again this often
UNREACHABLE_RETRY_MAX = 2.0  # s: longest wait between attempts while the PBX refuses TCP
SNAPSHOT_ACTIONS = ("CoreShowChannels", "BridgeList", "DeviceStateList", "ExtensionStateList")


class AmiError(Exception):
    """The PBX cannot be used. Messages name host:port and user, never the secret."""


class AmiConnectError(AmiError):
    """No TCP connection, or it died or stalled before login finished."""


class AmiUnreachable(AmiConnectError):
    """No TCP connection (refused, failed, or no answer within the connect timeout): the PBX
    or its AMI is not up."""


class AmiLoginError(AmiError):
    """The PBX answered Login with an error (wrong user or secret, ACL, ...)."""


@dataclass(frozen=True, slots=True)
class AmiStats:
    frames: int = 0  # frames read: events and responses
    events: int = 0  # typed events read from the PBX (StreamGap markers not counted)
    malformed: int = 0  # frames skipped because they could not be handled
    oversized: int = 0  # frames over max_frame_bytes, discarded
    reconnects: int = 0  # connections made after a lost one
    connect_failures: int = 0  # attempts that failed to connect or log in
    pauses: int = 0  # times reading was paused because the consumer fell behind
    peak_buffer: int = 0  # largest unfinished frame held between reads, bytes
    responses: int = 0  # frames that answered one of our actions (Login, Ping, snapshot lists...)
    snapshots: int = 0  # on-login hooks that completed


@dataclass(slots=True)
class _Counters:
    frames: int = 0
    events: int = 0
    malformed: int = 0
    oversized: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    pauses: int = 0
    peak_buffer: int = 0
    responses: int = 0
    snapshots: int = 0


# panoramisk logs actions on some error paths ('Fail to send %r'): the Login action holds
# the secret. Everything it logs passes through this filter.
_SECRET_RE = re.compile(r"""(?i)(secret['"]?\s*[:=]\s*['"]?)[^'"\r\n,}]*""")


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "ecret" in msg:
            record.msg, record.args = _SECRET_RE.sub(r"\1***", msg), ()
        return True


_panoramisk_log = logging.getLogger(__name__ + ".panoramisk")
_panoramisk_log.addFilter(_RedactSecrets())


def _log_this_one(n: int) -> bool:
    """A PBX gone wrong can send bad frames by the thousand: log the first ones, then a sample."""
    return n <= 100 or n % 1000 == 0


class Backoff:
    """Exponential backoff with jitter: the n-th wait is uniform in [lo, min(hi, lo * 2**n)].
    (tenacity retries one call until it succeeds; here a connection that worked and then
    died also needs a growing wait, reset only once a connection proved healthy.)"""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi, self.n = lo, max(lo, hi), 0

    def next(self) -> float:
        cap = min(self.hi, self.lo * 2 ** min(self.n, 62))
        self.n += 1
        return random.uniform(self.lo, cap)

    def reset(self) -> None:
        self.n = 0


class _Protocol(AMIProtocol):
    """panoramisk's protocol with our framing and per-frame error isolation."""

    def __init__(self, source: AmiSource):
        self._source = source

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # Set before Manager.connection_made wires us: a connection lost in between
        # still has to reach our manager (panoramisk would call None.connection_lost).
        self.factory = self._source._manager
        self.encoding = "utf-8"
        self.splitter = FrameSplitter(self._source._cfg.max_frame_bytes)
        self.paused = False
        self.logged_in = False
        self.reads = 0  # socket reads so far: data flowing proves the link alive (see _no_pong)
        self._backlog: deque = deque()  # frames read but not handled yet (a read cut in slices)
        self._slicing = False  # reading paused until the backlog is handled
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reason: str | None = None
        self._source._attach(self)

    def data_received(self, data: bytes) -> None:
        src, c = self._source, self._source._c
        self.reads += 1
        try:
            items = self.splitter.feed(data)
            c.peak_buffer = max(c.peak_buffer, self.splitter.pending)
        except Exception:  # a bug in framing: resync by reconnecting rather than guess
            log.exception("%s: cannot split the stream; dropping the connection", src.where)
            self.drop("stream framing failed")
            return
        self._backlog.extend(items)
        if not self._slicing:
            self._handle_backlog()

    def _handle_backlog(self, budget: float | None = None) -> None:
        """Frames read so far, in order, for at most READ_SLICE_SECONDS; the rest on a later
        loop turn (socket reading paused until then, so the order and the backpressure hold)."""
        src, c = self._source, self._source._c
        backlog = self._backlog
        clock = _clock
        end = clock() + (READ_SLICE_SECONDS if budget is None else budget)
        while backlog:
            item = backlog.popleft()
            if isinstance(item, Oversized):
                c.oversized += 1
                log.warning("%s: frame over max_frame_bytes=%d (%d bytes without a blank line), "
                            "discarded up to the next blank line; it began %r", src.where,
                            self.splitter.max_frame, item.size, item.head.decode("utf-8", "replace"))
            else:
                self._frame(item)
            if backlog and clock() >= end:
                if not self._slicing:
                    self._slicing = True
                    self.transport.pause_reading()
                asyncio.get_running_loop().call_soon(self._handle_backlog)
                return
        if self._slicing:
            self._slicing = False
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def _frame(self, raw: bytearray) -> None:
        src, c = self._source, self._source._c
        text = raw.decode(self.encoding, "replace")
        if not text.strip():
            return  # stray blank lines between frames
        c.frames += 1
        try:
            headers, view = frame_headers(text)  # parse_raw_frame's headers and parse_event's view
            if self._for_panoramisk(headers):
                c.responses += 1
                message = Message.from_line(text.strip())
                if message is not None:
                    AMIProtocol.handle_message(self, message)  # resolves the action's future
                if not any(k.lower() == "event" for k in headers):
                    return
                # a list item of our own action (CoreShowChannel, DeviceStateChange...): the
                # stream needs it too, in order, to reconcile after a reconnect
            event = parse_headers(view, fallback_time=time.time())
        except MalformedEvent as e:
            c.malformed += 1
            if _log_this_one(c.malformed):
                log.warning("%s: skipped a malformed frame (%s); %d so far", src.where, e, c.malformed)
        except Exception as e:
            c.malformed += 1
            if _log_this_one(c.malformed):
                log.warning("%s: skipped a frame that failed to handle: %s: %s; %d so far",
                            src.where, type(e).__name__, e, c.malformed, exc_info=True)
        else:
            c.events += 1
            src._offer(event)

    def _for_panoramisk(self, headers: Mapping[str, str]) -> bool:
        """Responses, and events answering one of our actions, belong to that action."""
        if "Response" in headers and "Event" not in headers:  # OriginateResponse has both
            return True
        if not self.responses:
            return False
        return any(k.lower() in ("actionid", "commandid") and v.strip() in self.responses
                   for k, v in headers.items())

    def pause(self) -> bool:
        if self.paused or self.closed:
            return False
        self.transport.pause_reading()
        self.paused = True
        return True

    def resume(self) -> None:
        if self.paused and not self.closed and not self._slicing:
            self.transport.resume_reading()
        self.paused = False

    def drop(self, reason: str) -> None:
        """Hang up now. abort(), not close(): a dead peer never drains the write buffer."""
        if self._reason is None:
            self._reason = reason
        self.close()
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._backlog:  # frames read before the loss come before it, as they always did
            self._handle_backlog(budget=float("inf"))
        self._slicing = False
        # panoramisk's version tells the manager only when it did not close the transport
        # itself, and the manager would then reconnect on its own: we do neither.
        if not self.closed:
            self.close()  # panoramisk forgets the pending actions
        if self.factory.protocol is self:  # a stale connection must not stop the current one's pinger
            self.factory.stop_timers()
        if self.splitter.pending:
            log.debug("%s: %d bytes of an unfinished frame lost with the connection",
                      self._source.where, self.splitter.pending)
        if not self.lost.done():
            self.lost.set_result(self._reason or (f"connection lost: {exc}" if exc
                                                  else "connection closed by the PBX"))


class _Manager(Manager):
    """panoramisk's Manager with the reconnect loop taken out (AmiSource owns it) and a
    Ping that must be answered."""

    def __init__(self, *, ping_interval: float, ping_timeout: float, **config):
        super().__init__(**config)
        self.ping_delay = self.ping_interval = ping_interval  # panoramisk int()s these
        self.ping_timeout = ping_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._pinged = 0  # Pings sent: the watchdog belongs to the latest

    async def open(self, timeout: float) -> _Protocol:
        async with asyncio.timeout(timeout):
            transport, protocol = await self.loop.create_connection(
                self.config["protocol_factory"], self.config["host"], self.config["port"],
                ssl=self.config["ssl"])
        done = self.loop.create_future()
        done.set_result((transport, protocol))
        self.connection_made(done)  # panoramisk wires protocol <-> manager, starts the pinger
        return protocol

    def ping(self) -> None:
        self.pinger = self.loop.call_later(self.ping_interval, self.ping)
        proto = self.protocol
        if self._watchdog is not None or proto is None or proto.closed:
            return  # the last Ping is still unanswered: its watchdog decides
        pong = proto.send({"Action": "Ping"})
        self._pinged += 1
        self._watchdog = self.loop.call_later(self.ping_timeout, self._no_pong, proto, proto.reads)
        ping = self._pinged
        pong.add_done_callback(lambda _: self._pong(ping))

    def _pong(self, ping: int) -> None:
        # the watchdog may have been re-armed since this Ping was sent (see _no_pong)
        if ping == self._pinged and self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _no_pong(self, proto: _Protocol, reads: int) -> None:
        self._watchdog = None
        if proto is not self.protocol or proto.closed:
            return
        if proto.paused or proto.reads != reads:
            # we stopped reading, or the PBX sent more meanwhile: the Pong may be waiting
            # behind events not read yet (a burst we are behind on). The link is alive;
            # dropping it would lose those events. Wait again for the Pong.
            self._watchdog = self.loop.call_later(self.ping_timeout, self._no_pong, proto, proto.reads)
            return
        proto.drop(f"no reply to Ping within {self.ping_timeout:g}s")

    def stop_timers(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def connection_lost(self, exc) -> None:
        # Unlike panoramisk's: no call_later(connect) at a fixed delay. AmiSource reconnects.
        self._connected = False
        self.stop_timers()

    def close(self) -> None:
        self.stop_timers()
        super().close()


_END = object()  # queue marker: the source is finished


class AmiSource:
    """One PBX connection; see the module docstring. Not reentrant; one instance per PBX.

    `max_attempts`: consecutive failed connection attempts (connect or login) after which
    `events()` raises the last AmiError; None (the daemon's choice) retries forever,
    logging each failure.
    """

    def __init__(self, cfg: PbxConfig, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 ping_interval: float = 10.0, ping_timeout: float = 5.0,
                 max_attempts: int | None = None,
                 on_login: Callable[[AmiSource], Awaitable[None]] | None = None,
                 snapshot_on_login: bool = True):
        """`on_login`: a coroutine run after every successful login (after the snapshot when
        `snapshot_on_login`); its failure is logged, never fatal."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._cfg = cfg
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.where = f"AMI {cfg.name} at {host}:{cfg.port}"
        self._max_attempts = max_attempts
        self._queue: asyncio.Queue = asyncio.Queue(queue_size)
        self._overflow: deque = deque()  # frames already read when the queue filled up
        self._resume_at = queue_size // 2
        self._c = _Counters()
        self._login_log = Throttle(LOGIN_RELOG_EVERY)
        self._manager = _Manager(
            host=cfg.host, port=cfg.port, protocol_factory=lambda: _Protocol(self),
            log=_panoramisk_log, ping_interval=ping_interval, ping_timeout=ping_timeout)
        self._proto: _Protocol | None = None
        self._task: asyncio.Task | None = None
        self._gap_reason: str | None = None  # set while a lost connection awaits its StreamGap
        self._error: AmiError | None = None
        self._finished = False
        self._ended = False
        self._closed = False
        self._closing: asyncio.Future | None = None
        self._on_login = on_login
        self._snapshot_on_login = snapshot_on_login
        self._hook: asyncio.Task | None = None

    # ------------------------------------------------------------ public

    async def __aenter__(self) -> AmiSource:
        if self._task is not None:
            raise RuntimeError("AmiSource is not reentrant")
        self._manager.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"ami-{self._cfg.name}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def events(self) -> AsyncIterator[AmiEvent]:
        """Typed events in arrival order, with StreamGap markers after reconnections. Ends
        when the source is closed; raises AmiError when it gave up (see max_attempts).
        May be called again after the consumer's own exception: nothing is lost."""
        while not (self._ended and self._queue.empty()):
            item = await self._queue.get()
            self._refill()
            if item is _END:
                self._ended = True
                break
            yield item
        if self._error is not None:
            raise self._error

    async def action(self, action: Mapping[str, str], timeout: float | None = None, *,
                     as_list: bool | None = None):
        """Send one AMI action on the current connection; its response (a list of messages
        for list actions). Raises AmiError when not logged in or on no answer in `timeout`
        (default: the connect timeout). List items it produces also go into `events()`.
        `as_list=False`: the first response is the answer (an asynchronous Originate, whose
        OriginateResponse event comes only when the call is answered or fails)."""
        proto = self._proto
        if proto is None or proto.closed or not proto.logged_in:
            raise AmiError(f"{self.where}: not logged in; {action.get('Action')} not sent")
        future = self._manager.send_action(dict(action), as_list=as_list)
        try:
            async with asyncio.timeout(timeout if timeout is not None else self._cfg.connect_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise AmiError(f"{self.where}: no answer to {action.get('Action')}") from None

    async def snapshot(self) -> None:
        """Ask the PBX what is up now; the items arrive in `events()` (see the module doc)."""
        for name in SNAPSHOT_ACTIONS:
            resp = await self.action({"Action": name})
            first = resp[0] if isinstance(resp, list) and resp else resp
            if first is not None and str(first.get("Response", "")).lower() == "error":
                log.warning("%s: %s refused: %s (grant the AMI user 'reporting' for it)",
                            self.where, name, first.get("Message"))

    async def _after_login(self) -> None:
        try:
            if self._snapshot_on_login:
                await self.snapshot()
            if self._on_login is not None:
                await self._on_login(self)
            self._c.snapshots += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the call log goes on without it; the records say what is missing
            log.warning("%s: on-login snapshot failed: %s: %s", self.where, type(e).__name__, e)

    def _cancel_hook(self) -> None:
        if self._hook is not None and not self._hook.done():
            self._hook.cancel()
        self._hook = None

    @property
    def stats(self) -> AmiStats:
        return AmiStats(**asdict(self._c))

    @property
    def connected(self) -> bool:
        proto = self._proto
        return proto is not None and proto.logged_in and not proto.closed

    async def aclose(self) -> None:
        """Stop reconnecting, hang up, cancel timers. Events already read are still
        delivered by events(), which then ends."""
        if self._closing is None:  # later callers wait for the same close
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        self._cancel_hook()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        proto = self._proto
        self._manager.close()
        if proto is not None:
            proto.drop("closed")
            await asyncio.shield(proto.lost)  # abort() calls connection_lost on the next loop turn
        self._finish(None)

    # ------------------------------------------------------------ queue

    def _offer(self, item) -> None:
        if self._overflow or self._queue.full():
            self._overflow.append(item)  # bounded by one socket read: reading is paused
        else:
            self._queue.put_nowait(item)
        if self._queue.full() and self._proto is not None and self._proto.pause():
            self._c.pauses += 1

    def _refill(self) -> None:
        q = self._queue
        while self._overflow and not q.full():
            q.put_nowait(self._overflow.popleft())
        proto = self._proto
        if proto is not None and proto.paused and not self._overflow and q.qsize() <= self._resume_at:
            proto.resume()

    def _finish(self, error: AmiError | None) -> None:
        if not self._finished:
            self._finished = True
            self._error = error
            self._offer(_END)

    # ------------------------------------------------------------ connection

    def _attach(self, proto: _Protocol) -> None:
        """Called from the protocol's connection_made, before any of its data is read:
        the StreamGap must come before the new connection's first event."""
        if self._closed:
            proto.transport.abort()
            return
        self._proto = proto
        if self._gap_reason is not None:
            self._c.reconnects += 1
            self._offer(StreamGap(time.time(), self._gap_reason))
            self._gap_reason = None

    async def _run(self) -> None:
        backoff = Backoff(self._cfg.reconnect_min, self._cfg.reconnect_max)
        failures = 0
        try:
            while True:
                try:
                    proto = await self._connect()
                except AmiError as e:
                    failures += 1
                    self._c.connect_failures += 1
                    level = logging.ERROR if isinstance(e, AmiLoginError) else logging.WARNING
                    if self._max_attempts is not None and failures >= self._max_attempts:
                        log.log(level, "%s; giving up after %d attempt(s)", e, failures)
                        self._finish(e)
                        return
                    delay = backoff.next()
                    if isinstance(e, AmiUnreachable):
                        delay = min(delay, UNREACHABLE_RETRY_MAX)  # see the module doc
                    if isinstance(e, AmiLoginError):
                        # a wrong secret is rejected on every try: one ERROR line, then
                        # one per LOGIN_RELOG_EVERY with the count (each try at DEBUG)
                        log.debug("%s; retrying in %.2fs", e, delay)
                        self._login_log(log, "login", level, "%s; retrying with backoff (up to %gs) "
                                        "until the PBX accepts the login", e, self._cfg.reconnect_max)
                    else:
                        log.log(level, "%s; retrying in %.2fs", e, delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                backoff.reset()  # logged in: the next incident starts from the shortest wait
                log.info("%s: logged in as %r", self.where, self._cfg.username)
                self._cancel_hook()
                self._hook = asyncio.create_task(self._after_login(), name=f"ami-{self._cfg.name}-login")
                # shield: cancelling this task (aclose) must not cancel the protocol's future
                reason = await asyncio.shield(proto.lost)
                self._cancel_hook()
                self._gap_reason = reason
                delay = backoff.next()
                log.warning("%s: %s; reconnecting in %.2fs", self.where, reason, delay)
                await asyncio.sleep(delay)
        except Exception as e:  # a bug: end the stream loudly rather than hang the consumer
            log.exception("%s: connection supervisor failed", self.where)
            self._finish(AmiError(f"{self.where}: connection supervisor failed: {type(e).__name__}"))

    async def _connect(self) -> _Protocol:
        cfg = self._cfg
        # panoramisk keeps actions pending on a lost connection to resend them later; ours
        # (the Login, a snapshot) are re-made from scratch on every connection
        self._manager.awaiting_actions.clear()
        try:
            proto = await self._manager.open(cfg.connect_timeout)
        except TimeoutError:
            raise AmiUnreachable(f"{self.where}: no connection within {cfg.connect_timeout:g}s") from None
        except OSError as e:
            raise AmiUnreachable(f"{self.where}: cannot connect: {e.strerror or e}") from None
        secret = cfg.secret.get_secret_value()
        login = self._manager.send_action(
            {"Action": "Login", "Username": cfg.username, "Secret": secret, "Events": "on"})
        # Mark the login from the future's own callback: it runs before the consumer sees the
        # events that followed the response in the same read (asyncio runs callbacks FIFO).
        login.add_done_callback(lambda f: setattr(
            proto, "logged_in", not f.cancelled() and bool(f.result().success)))
        await asyncio.wait({login, proto.lost}, timeout=cfg.connect_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if login.done() and not login.cancelled():
            resp = login.result()
            if resp.success:
                return proto
            proto.drop("login rejected")
            reason = str(resp.get("Message") or "no reason given")
            if secret:
                reason = reason.replace(secret, "***")  # a PBX must not make us log it either
            raise AmiLoginError(f"{self.where}: login as user {cfg.username!r} rejected: {reason[:200]}")
        lost = proto.lost.result() if proto.lost.done() else None
        proto.drop("no answer to Login")
        if lost is not None:
            raise AmiConnectError(f"{self.where}: {lost} during login as user {cfg.username!r}")
        raise AmiConnectError(f"{self.where}: no answer to Login as user {cfg.username!r} "
                              f"within {cfg.connect_timeout:g}s")
