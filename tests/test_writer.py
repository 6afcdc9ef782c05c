"""store/writer.py: what flush() and close() promise, at the edges found while moving the
decision log onto it."""
import asyncio

from callrouter.store.writer import BatchWriter, WritePolicy


async def test_flush_waits_for_a_batch_still_lingering():
    saved = []

    async def save(batch):
        saved.extend(batch)

    writer = BatchWriter(save, WritePolicy(linger=0.2), what="thing")
    running = asyncio.create_task(writer.run())
    writer.offer(1)
    await asyncio.sleep(0.05)           # run() has taken it and lingers for more
    assert writer.pending == 1
    await asyncio.wait_for(writer.flush(), 2)
    assert saved == [1] and writer.pending == 0
    await writer.close(1)
    await asyncio.wait_for(running, 1)


async def test_close_ends_run_even_when_the_queue_is_full_and_the_database_down():
    failed = []

    async def save(batch):
        raise OSError("down")

    writer = BatchWriter(save, WritePolicy(batch=1, retry_min=0.05), what="thing", maxsize=2,
                         on_failed=lambda batch, e: failed.extend(batch))
    running = asyncio.create_task(writer.run())
    for n in range(3):
        writer.offer(n)                 # 0 and 1 queued, 2 refused (full)
    await asyncio.sleep(0.1)            # run() retries 0 for good (attempts=None); 1 waits
    writer.offer(3)                     # the queue is full again
    await writer.close(0.2)
    await asyncio.wait_for(running, 1)  # close() ends run(): nothing is retried past the timeout
    assert sorted(failed) == [0, 1, 2, 3] and writer.stats["dropped"] == 1 and writer.stats["failed"] == 3


def test_a_throttled_kind_is_per_logger(caplog):
    import logging

    from callrouter.logthrottle import Throttle

    throttled = Throttle()
    with caplog.at_level(logging.WARNING):
        for name in ("callrouter.a", "callrouter.b", "callrouter.a"):
            throttled(logging.getLogger(name), "timeout", logging.WARNING, "slow in %s", name)
    assert [r.getMessage() for r in caplog.records] == ["slow in callrouter.a", "slow in callrouter.b"]


# ------------------------------------------------------------------ refusals, dead letters, the spool's hooks

class Refusing:
    """A database that refuses any batch holding a poison item (as PostgreSQL refuses a
    whole INSERT for one NUL), and stores the others."""

    def __init__(self, poison):
        self.poison = poison
        self.stored = []
        self.tries = 0

    async def save(self, batch):
        self.tries += 1
        if any(i in self.poison for i in batch):
            raise ValueError("invalid byte sequence for encoding \"UTF8\": 0x00")
        self.stored.extend(batch)


async def test_a_refused_batch_is_split_the_poison_dead_lettered_and_the_rest_stored():
    db = Refusing({3, 7})
    dead, failed = [], []

    async def on_dead(item, error):
        dead.append((item, str(error)))

    writer = BatchWriter(db.save, WritePolicy(batch=10), what="thing", on_dead=on_dead,
                         on_failed=lambda batch, e: failed.extend(batch))
    running = asyncio.create_task(writer.run())
    for n in range(10):
        writer.offer(n)
    await asyncio.wait_for(writer.flush(), 2)
    assert db.stored == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [i for i, _ in dead] == [3, 7] and "0x00" in dead[0][1]
    assert failed == [] and writer.stats["saved"] == 8 and writer.stats["dead"] == 2
    assert db.tries == 1 + 10  # the batch once (a refusal is not retried), then each item alone
    writer.offer(11)               # and the writer goes on
    await asyncio.wait_for(writer.flush(), 2)
    assert db.stored[-1] == 11
    await writer.close(1)
    await asyncio.wait_for(running, 1)


async def test_when_the_dead_letter_cannot_be_written_the_rest_is_handed_on_not_lost():
    db = Refusing({1})

    async def on_dead(item, error):
        raise OSError("the database went away")

    failed = []
    writer = BatchWriter(db.save, WritePolicy(batch=10), what="thing", on_dead=on_dead,
                         on_failed=lambda batch, e: failed.extend(batch))
    running = asyncio.create_task(writer.run())
    for n in range(4):
        writer.offer(n)
    await asyncio.wait_for(writer.flush(), 2)
    assert db.stored == [0] and failed == [1, 2, 3]
    await writer.close(1)
    await asyncio.wait_for(running, 1)


async def test_with_a_backlog_batches_go_to_the_spool_hook_untried_and_in_order():
    db = Refusing(set())
    spooled = []

    async def to_spool(batch, error):
        await asyncio.sleep(0.01)  # an fsync in a thread
        spooled.append((list(batch), type(error).__name__))

    backlog = True
    writer = BatchWriter(db.save, WritePolicy(batch=2), what="thing", on_failed=to_spool,
                         backlog=lambda: backlog)
    running = asyncio.create_task(writer.run())
    for n in range(3):
        writer.offer(n)
    await asyncio.wait_for(writer.flush(), 2)
    backlog = False
    writer.offer(3)
    await asyncio.wait_for(writer.flush(), 2)
    assert spooled == [([0, 1], "Backlogged"), ([2], "Backlogged")] and db.stored == [3] and db.tries == 1
    await writer.close(1)
    await asyncio.wait_for(running, 1)


async def test_close_abandons_a_save_that_hangs_and_hands_its_batch_on():
    """A black-holed database: the save never returns. close(timeout) does not wait for
    the driver's own timeout; the batch goes to on_failed (the spool)."""
    hung = asyncio.Event()

    async def save(batch):
        hung.set()
        await asyncio.sleep(3600)

    failed = []
    writer = BatchWriter(save, WritePolicy(), what="thing", on_failed=lambda batch, e: failed.append((list(batch), e)))
    running = asyncio.create_task(writer.run())
    writer.offer(1)
    await asyncio.wait_for(hung.wait(), 1)
    writer.offer(2)
    await writer.close(0.2)
    await asyncio.wait_for(running, 3)
    assert sorted(i for batch, _ in failed for i in batch) == [1, 2]
    assert all(type(e).__name__ == "WriterClosed" for _, e in failed)


def test_what_counts_as_a_refusal():
    from sqlalchemy import exc

    from callrouter.store.writer import is_refusal

    class PgError(Exception):
        sqlstate = "22021"  # character_not_in_repertoire: a NUL in text

    assert is_refusal(exc.DBAPIError("INSERT", {}, PgError()))
    assert is_refusal(UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed"))
    assert is_refusal(exc.IntegrityError("INSERT", {}, Exception()))
    assert not is_refusal(exc.OperationalError("INSERT", {}, Exception("connection refused")))
    assert not is_refusal(ConnectionResetError()) and not is_refusal(TimeoutError())
    lost = exc.DBAPIError("INSERT", {}, PgError(), connection_invalidated=True)
    assert not is_refusal(lost)
