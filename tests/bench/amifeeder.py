"""The fake AMI server of a load benchmark in its own process (not a benchmark itself):
the PBX side that pushes AMI bursts to the daemon, and the polling of the store that
says when the daemon has stored a burst's records, kept off the benchmark's event loop,
where they would delay the FastAGI answers being timed (building a burst's frames alone
holds a loop for ~0.1-0.3 s; pacing 5,250 events/s wakes it 100 times a second).

    python tests/bench/amifeeder.py DATABASE_URL PBX

Driven by `DaemonRig(..., ami_process=True)` over its stdin/stdout, one JSON object a line:

    (start)                                   -> {"port": P}      the fake AMI listens on P
    {"cmd": "logins"}                         -> {"logins": N}    logins accepted so far
    {"cmd": "stored"}                         -> {"stored": N}    call records of PBX stored
    {"cmd": "prepare", "first": F, "copies": C}
        -> {"events": E, "before": N}   copies F..F+C-1 of the recorded `burst` (fresh ids)
                                        built, the records stored so far counted
    {"cmd": "burst", "rate": R, "timeout": T}
        -> {"events", "sent_s", "ingest_s", "backlog_max"}   the prepared frames pushed at
           R events/s (every 10 ms what is due); then the store polled every 50 ms until
           the burst's C x 40 records are in: ingest_s is first frame to last record seen
Ends when its stdin closes.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from daemonrig import CALLS_PER_BURST, FreshBursts, query_store  # noqa: E402
from fakeami import FakeAmi  # noqa: E402


class Feeder:
    def __init__(self, database_url: str, pbx: str):
        self.url, self.pbx = database_url, pbx
        self.ami = FakeAmi([], lists=True)
        self.bursts = FreshBursts()
        self.frames: list[bytes] = []
        self.copies = 0
        self.before = 0

    def stored(self) -> int:
        return query_store(self.url, self.pbx, "SELECT count(*) FROM calls WHERE pbx = $1")[0]

    def backlog(self) -> int:
        return sum(w.transport.get_write_buffer_size() for w in self.ami._logged_in)

    async def burst(self, rate: float, timeout: float) -> dict:
        loop = asyncio.get_running_loop()
        frames = self.frames
        backlog_max = 0
        t0 = time.perf_counter()
        start = loop.time()
        sent = 0
        while sent < len(frames):
            due = min(len(frames), int((loop.time() - start) * rate) + 1)
            if due > sent:
                self.ami.push(b"".join(frames[sent:due]))
                sent = due
                backlog_max = max(backlog_max, self.backlog())
            await asyncio.sleep(0.01)
        sent_s = time.perf_counter() - t0
        want = self.before + self.copies * CALLS_PER_BURST
        end = time.monotonic() + timeout
        while True:
            have = self.stored()  # blocking: nothing else runs on this loop meanwhile
            if have >= want:
                t_end = time.perf_counter()
                break
            if time.monotonic() > end:
                return {"error": f"{have - self.before} of {self.copies * CALLS_PER_BURST} call records "
                                 f"stored after {timeout:.0f} s"}
            await asyncio.sleep(0.05)
        return {"events": len(frames), "sent_s": sent_s, "ingest_s": t_end - t0, "backlog_max": backlog_max}

    async def handle(self, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "logins":
            return {"logins": len(self.ami.logins)}
        if cmd == "stored":
            return {"stored": self.stored()}
        if cmd == "prepare":
            first, self.copies = msg["first"], msg["copies"]
            self.frames = [f for n in range(first, first + self.copies) for f in self.bursts.frames_of(n)]
            self.before = self.stored()
            return {"events": len(self.frames), "before": self.before}
        if cmd == "burst":
            return await self.burst(msg["rate"], msg.get("timeout", 300.0))
        return {"error": f"unknown command {cmd!r}"}


async def main_async(database_url: str, pbx: str) -> None:
    loop = asyncio.get_running_loop()
    feeder = Feeder(database_url, pbx)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with feeder.ami:
        print(json.dumps({"port": feeder.ami.port}), flush=True)
        while line := await reader.readline():
            try:
                answer = await feeder.handle(json.loads(line))
            except Exception as e:  # noqa: BLE001 - reported to the benchmark, which raises
                answer = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1], sys.argv[2]))
