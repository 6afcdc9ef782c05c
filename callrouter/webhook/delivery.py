"""WebhookReporter: finished call records into the outbox, and the loop that POSTs them.

The reporter is a QueuedReporter (its own bounded queue: the call log never waits for it);
its `run` is two tasks in one TaskGroup, both under the daemon's TaskGroup: the queue's
writer, putting each CallFinished's record into the outbox (on disk before anything is
sent), and the delivery loop.

Delivery, per item (the oldest undelivered of its call; `concurrency` calls at a time):

    POST <url>   Content-Type: application/json     body: the call record JSON
                 X-Callrouter-Timestamp: <unix seconds>
                 X-Callrouter-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
                 Idempotency-Key: <pbx>:<call_id>

- 2xx: delivered, removed from the outbox.
- the receiver is away (no connection, a timeout, 5xx, 408, 429): the item stays, its
  attempt counted, and the whole loop pauses (retry_min doubling to retry_max; a
  Retry-After in seconds is honoured within retry_max) before trying the oldest items
  again: a receiver that is down for an hour gets every call afterwards, oldest first,
  and is not hammered meanwhile. These never become dead letters.
- refused for good (any other 4xx, a redirect): retried on its own schedule (the same
  backoff) up to `max_attempts`, then a dead letter (`dead_letters`, kind `webhook`,
  `callrouter deadletters list --kind webhook`) - it blocks nothing meanwhile.

At least once: an item is removed only after its 2xx; a stop or crash between the POST
and the removal sends it again next time, with the same Idempotency-Key.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from callrouter.calllog.reporters import QueuedReporter
from callrouter.config import WebhookConfig
from callrouter.logthrottle import throttled
from callrouter.records import CallRecord
from callrouter.store.deadletters import DeadLetter
from callrouter.store.writer import WritePolicy
from callrouter.tracker import CallFinished, Fact

from .outbox import Outbox, OutboxItem
from .signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger(__name__)

POLL = 1.0            # s: look for items whose retry time came, when nothing woke the loop
DEAD_LETTER_KIND = "webhook"
_DELIVERED = object()  # _try's answer for a 2xx: removed with the round's others, one fsync


class Transient(Exception):
    """The receiver is away or overloaded: try again later, never a dead letter."""

    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class Refused(Exception):
    """The receiver refused this call (a 4xx other than 408/429): counted toward max_attempts."""


def key_of(record: CallRecord) -> str:
    return f"{record.pbx}:{record.call_id}"


class WebhookReporter(QueuedReporter):
    name = "webhook"
    # the outbox is a local file: a failed put is retried briefly, then logged as lost
    policy = WritePolicy(batch=200, retry_min=0.2, retry_max=2.0, attempts=5)

    def __init__(self, cfg: WebhookConfig, outbox: Outbox, store: Any = None, *, maxsize: int = 10_000,
                 clock: Callable[[], float] = time.time):
        super().__init__(maxsize=maxsize)
        self.cfg = cfg
        self.outbox = outbox
        self._store = store          # for dead letters (save_dead_letters)
        self._clock = clock          # wall clock: the signature's timestamp, the outbox schedule
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    # ---------------------------------------------------------------- into the outbox
    def wants(self, fact: Fact) -> bool:
        return isinstance(fact, CallFinished)

    async def handle(self, facts: Sequence[Fact]) -> None:
        items = [(key_of(f.record), f.record.to_json().encode()) for f in facts if isinstance(f, CallFinished)]
        await asyncio.to_thread(self.outbox.put, items)
        self._wake.set()

    def failed(self, facts: Sequence[Fact], error: Exception) -> None:
        lost = [key_of(f.record) for f in facts if isinstance(f, CallFinished)]
        if lost:
            log.error("webhook: %d call(s) not put in the outbox and NOT SENT (%s): %s", len(lost), error,
                      ", ".join(lost[:10]))
        return None

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(super().run(), name="webhook-outbox")
                delivering = tg.create_task(self.deliver_forever(), name="webhook-delivery")
                await self._stopping.wait()
                delivering.cancel()  # a POST in flight is sent again next time: at least once
        finally:
            await asyncio.to_thread(self.outbox.close)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Whatever is queued goes into the outbox (within `timeout`); delivery stops."""
        try:
            await super().close(timeout)
        finally:
            self._stopping.set()

    # ---------------------------------------------------------------- delivery
    async def deliver_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
        pause = self.cfg.retry_min
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await self._bury_old()
            counted = 0.0
            while True:
                items = await asyncio.to_thread(self.outbox.due, self._clock(), self.cfg.concurrency)
                if not items or time.monotonic() - counted > POLL:  # a COUNT(*): not on every POST
                    self.stats["outbox"] = await asyncio.to_thread(self.outbox.depth)
                    counted = time.monotonic()
                if not items:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), POLL)
                    except TimeoutError:
                        await self._bury_old()  # dead letters the database did not take before
                    continue
                results = await asyncio.gather(*(self._try(http, it) for it in items))
                done = [it.seq for it, r in zip(items, results) if r is _DELIVERED]
                await asyncio.to_thread(self.outbox.delivered, *done)
                self.stats["delivered"] += len(done)
                away = [r for r in results if isinstance(r, float)]
                if not away:
                    pause = self.cfg.retry_min
                    continue
                wait = max([pause] + [min(r, self.cfg.retry_max) for r in away])
                await asyncio.sleep(wait)
                pause = min(pause * 2, self.cfg.retry_max)

    async def _try(self, http: aiohttp.ClientSession, item: OutboxItem) -> object:
        """One POST: _DELIVERED; the receiver is away: its Retry-After, or 0.0; refused: None."""
        attempts = item.attempts + 1
        try:
            await self._post(http, item)
        except Transient as e:
            self.stats["retried"] += 1
            throttled(log, "away", logging.WARNING, "webhook: %s not delivered, will retry (attempt %d): %s",
                      item.key, attempts, e)
            await asyncio.to_thread(self.outbox.failed, item.seq, attempts, 0.0, str(e))
            return e.retry_after or 0.0
        except Refused as e:
            if attempts >= self.cfg.max_attempts:
                log.error("webhook: %s refused %d times, kept as a dead letter: %s", item.key, attempts, e)
                await asyncio.to_thread(self.outbox.bury, item.seq, attempts, str(e))
                await self._bury_old()
            else:
                self.stats["refused"] += 1
                later = self._clock() + min(self.cfg.retry_min * 2 ** (attempts - 1), self.cfg.retry_max)
                log.warning("webhook: %s refused (attempt %d of %d): %s", item.key, attempts,
                            self.cfg.max_attempts, e)
                await asyncio.to_thread(self.outbox.failed, item.seq, attempts, later, str(e))
            return None
        return _DELIVERED

    async def _post(self, http: aiohttp.ClientSession, item: OutboxItem) -> None:
        ts = int(self._clock())
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                   SIGNATURE_HEADER: sign(self.cfg.secret.get_secret_value(), ts, item.body),
                   IDEMPOTENCY_HEADER: item.key, "User-Agent": "callrouter-webhook"}
        try:
            async with http.post(self.cfg.url, data=item.body, headers=headers, allow_redirects=False) as resp:
                text = (await resp.content.read(300)).decode("utf-8", "replace")
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise Transient(f"{type(e).__name__}: {e}"[:300]) from None
        if 200 <= status < 300:
            return
        what = f"HTTP {status}: {text.strip()[:200]}"
        if status >= 500 or status in (408, 429):
            raise Transient(what, float(retry_after) if retry_after.isdigit() else None)
        raise Refused(what)

    async def _bury_old(self) -> None:
        """Items given up are moved to the store's dead letters (kept in the outbox
        until the store takes them)."""
        if self._store is None:
            return
        for item in await asyncio.to_thread(self.outbox.buried):
            letter = DeadLetter(DEAD_LETTER_KIND, item.key,
                                f"not delivered after {item.attempts} attempt(s): {item.last_error or ''}"[:2000],
                                json.dumps(json.loads(item.body), ensure_ascii=True))
            try:
                await self._store.save_dead_letters([letter])
            except Exception:  # noqa: BLE001 - the database is away: stays buried in the outbox, tried again later
                throttled(log, "bury", logging.WARNING, "webhook: dead letter %s not stored yet", item.key)
                return
            await asyncio.to_thread(self.outbox.delivered, item.seq)
            self.stats["dead"] += 1
