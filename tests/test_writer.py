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
