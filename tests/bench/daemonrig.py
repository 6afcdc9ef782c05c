"""What the load benchmarks share (not a benchmark itself): the real daemon (`callrouter run`
in its own process, as in production) between a fake AMI server and a FastAGI caller in
this process, over loopback TCP; the recorded `burst` stream with fresh ids.

    rig = DaemonRig(db_url, workdir)
    await rig.start()                 # config written, daemon started, AMI logged in, directory loaded
    rig.push(frames) / await rig.feed(frames)   # AMI events to the daemon (feed: with backpressure)
    await rig.feeder(cmd)             # ami_process=True: the fake AMI runs in its own process
                                      # (tests/bench/amifeeder.py), driven by commands
    await agi_call(rig.agi_port, request)      # one FastAGI call, seconds from connect to close
    rig.stored()                      # call records in the store for this run's PBX
    rig.rss_kb()                      # the daemon's resident memory (and its decision-log child's)
    await rig.stop()                  # SIGTERM, as systemd stops it

`patches` run in the daemon's process before it starts (a module global set to a value),
for measuring what a change brings against the same code without it, e.g.
{"callrouter.calllog.walk.YIELD_EVERY": 10**9}.
"""
from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sqlite3
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent))  # fakeami

from fakeami import FakeAmi, load_recording  # noqa: E402
from route import process_cpu  # noqa: E402

BURST = HERE.parent / "fixtures" / "asterisk" / "burst.ami.jsonl"
BURST_AGI = HERE.parent / "fixtures" / "asterisk" / "burst.agi.jsonl"
CALLS_PER_BURST = 40
_ID = re.compile(r"\b1795370(\d{3})\.(\d+)\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class FreshBursts:
    """Copies of the recorded burst (40 concurrent calls, 5,800 AMI events, their 40 FastAGI
    requests), each with its own uniqueids, linkedids and bridge ids."""

    def __init__(self) -> None:
        self.frames = load_recording(BURST)
        with open(BURST_AGI, encoding="utf-8") as f:
            self.requests = [json.loads(line)["request"] for line in f if line.strip()]
        self.run = uuid.uuid4().int % 9000 + 1000   # ids differ between runs on one store too

    def _fresh(self, n: int):
        prefix = f"{self.run}{n:06d}"
        bridges: dict[str, str] = {}

        def sub(raw: str) -> str:
            raw = _ID.sub(lambda m: f"{prefix}.{m.group(2)}", raw)
            return _UUID.sub(lambda m: bridges.setdefault(m.group(0), str(uuid.uuid4())), raw)
        return sub

    def copy(self, n: int) -> tuple[bytes, list[bytes]]:
        """Copy n: (its AMI frames as one byte string, its FastAGI requests)."""
        sub = self._fresh(n)
        frames = "".join(sub(raw) for raw in self.frames).encode()
        return frames, [sub(r).encode() for r in self.requests]

    def frames_of(self, n: int) -> list[bytes]:
        sub = self._fresh(n)
        return [sub(raw).encode() for raw in self.frames]

    @property
    def events_per_copy(self) -> int:
        return len(self.frames)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def managers_toml(extensions: range) -> str:
    return "".join(f'\n[[managers]]\nextension = "{e}"\ndevices = ["PJSIP/{e}"]\n' for e in extensions)


class _Asterisk(asyncio.Protocol):
    """Asterisk's side of one FastAGI call, as cheap as Python allows: the header block, then
    `200 result=1` to every command line (GET VARIABLE answered from what was set)."""

    def __init__(self, request: bytes, done: asyncio.Future):
        self.request, self.done = request, done
        self.tail = b""
        self.set: dict[str, str] = {}

    def connection_made(self, transport):
        self.t = transport
        transport.write(self.request)

    def data_received(self, data):
        data = self.tail + data
        if b"\n" not in data:
            self.tail = data
            return
        *lines, self.tail = data.split(b"\n")
        out = []
        for line in lines:
            if line.startswith(b"GET VARIABLE"):
                value = self.set.get(line.split()[-1].decode())
                out.append(b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode())
                continue
            m = re.match(rb'SET VARIABLE ARRAY\(([^)]*)\) "(.*)"$', line)
            if m:
                self.set[m.group(1).split(b",")[0].decode()] = m.group(2).split(b",")[0].replace(b"\\", b"").decode()
            out.append(b"200 result=1\n")
        self.t.write(b"".join(out))

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def agi_call(port: int, request: bytes, timeout: float = 10.0) -> float:
    """One FastAGI call: seconds from connect to the router's close (what Asterisk waits)."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    done = loop.create_future()
    async with asyncio.timeout(timeout):
        await loop.create_connection(lambda: _Asterisk(request, done), "127.0.0.1", port)
        await done
    return time.perf_counter() - t0


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def run_pg(url: str, sql: str, *args) -> list:
    """One row from PostgreSQL (a blocking helper for the bench, on its own connection)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)

    async def q():
        conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, database=u.database,
                                     password=u.password)
        try:
            return list(await conn.fetchrow(sql, *args))
        finally:
            await conn.close()
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as ex:  # callable from inside a running loop
        return ex.submit(asyncio.run, q()).result()


def query_store(database_url: str, pbx: str, sql: str) -> tuple:
    """One row of a read-only query with one parameter, `pbx` (SQLite or PostgreSQL)."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return tuple(db.execute(sql.replace("$1", "?"), (pbx,)).fetchone())
    return tuple(run_pg(database_url, sql, pbx))


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class DaemonRig:
    def __init__(self, database_url: str, workdir: Path, *, pbx: str | None = None, managers: range = range(100, 200),
                 patches: dict[str, object] | None = None, prelude: str = "", log_level: str = "INFO",
                 ami_process: bool = False, routing: str = "process"):
        """ami_process: the fake AMI server in its own process (tests/bench/amifeeder.py, driven
        by `feeder(...)`), so pushing bursts and polling the store never run on this process's
        event loop; push()/feed()/ami_backlog() are then unavailable."""
        self.database_url = database_url
        self.workdir = Path(workdir)
        self.pbx = pbx or f"load{uuid.uuid4().hex[:6]}"
        self.managers = managers
        self.patches = patches or {}
        self.prelude = prelude  # Python run in the daemon's process first (experiments)
        self.log_level = log_level
        self.ami: FakeAmi | None = None
        self.ami_process = ami_process
        self.routing = routing  # [agi] routing: "process" (the router in its own process) or "inline"
        self._feeder: asyncio.subprocess.Process | None = None
        self.ami_port = 0
        self.agi_port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "daemon.log"

    async def start(self, timeout: float = 180.0) -> None:
        from callrouter.demo.run import demo_rules

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ami_process:
            self._feeder = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "amifeeder.py"), self.database_url, self.pbx,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.ami_port = (await self._answer(timeout))["port"]
        else:
            self.ami = FakeAmi([], lists=True)
            await self.ami.__aenter__()
            self.ami_port = self.ami.port
        self.agi_port = free_port()
        rules = demo_rules(self.workdir)   # open round the clock: every call takes the full rule path
        config = self.workdir / "callrouter.toml"
        config.write_text(f'''database_url = "{self.database_url}"
rules_dir = "{rules}"
log_level = "{self.log_level}"

[[pbx]]
name = "{self.pbx}"
host = "127.0.0.1"
port = {self.ami_port}
secret = "bench"

[agi]
host = "127.0.0.1"
port = {self.agi_port}
routing = "{self.routing}"

[web]
enabled = false

[spool]
path = "{self.workdir / 'spool.db'}"
''' + managers_toml(self.managers), encoding="utf-8")
        patch = "".join(f"import {k.rsplit('.', 1)[0]} as _m; _m.{k.rsplit('.', 1)[1]} = {v!r}\n"
                        for k, v in self.patches.items()) + self.prelude + "\n"
        code = (patch + "import sys\nfrom callrouter.cli import main\n"
                f"sys.argv = ['callrouter', '--config', {str(config)!r}, 'run']\nmain()\n")
        self._log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=self.workdir,
                                                         stdout=self._log, stderr=self._log)
        end = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): see {self.log_path}")
            text = self.log_path.read_text(errors="replace")
            # with routing in its own process, that process loads its own phone directory too
            loaded = text.count("phone directory:") >= (2 if self.routing == "process" else 1)
            if await self._logins() and loaded and await self._accepts():
                break
            if time.monotonic() > end:
                raise RuntimeError(f"the daemon did not get ready in {timeout:.0f} s: see {self.log_path}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the on-login snapshot, the directory's gc.freeze

    async def _logins(self) -> int:
        if self.ami is not None:
            return len(self.ami.logins)
        return (await self.feeder({"cmd": "logins"}))["logins"]

    async def _answer(self, timeout: float | None = None) -> dict:
        assert self._feeder is not None and self._feeder.stdout is not None
        line = await asyncio.wait_for(self._feeder.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the AMI feeder exited ({await self._feeder.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the AMI feeder: {answer['error']}")
        return answer

    async def feeder(self, command: dict, timeout: float | None = None) -> dict:
        """One command to the AMI feeder process and its answer (see tests/bench/amifeeder.py)."""
        assert self._feeder is not None and self._feeder.stdin is not None
        self._feeder.stdin.write(json.dumps(command).encode() + b"\n")
        await self._feeder.stdin.drain()
        return await self._answer(timeout)

    async def _accepts(self) -> bool:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", self.agi_port)
        except OSError:
            return False
        w.close()
        return True

    # ------------------------------------------------------------ AMI side
    def push(self, data: bytes) -> None:
        """Write to the daemon's AMI connection now (no backpressure: pacing is the caller's)."""
        assert self.ami is not None
        self.ami.push(data)

    async def feed(self, data: bytes) -> None:
        """Write and wait until the socket takes it (TCP backpressure from the daemon)."""
        assert self.ami is not None
        writers = list(self.ami._logged_in)
        end = time.monotonic() + 30
        while not writers:  # a reconnection in progress
            if time.monotonic() > end:
                raise RuntimeError("the daemon is not logged in to the fake AMI")
            await asyncio.sleep(0.1)
            writers = list(self.ami._logged_in)
        for w in writers:
            w.write(data)
        await asyncio.gather(*(w.drain() for w in writers))

    def ami_backlog(self) -> int:
        """Bytes written to the daemon's AMI connection that it has not read yet (our side)."""
        assert self.ami is not None
        return sum(w.transport.get_write_buffer_size() for w in self.ami._logged_in)

    # ------------------------------------------------------------ what the daemon did
    def query(self, sql: str) -> tuple:
        """One row of a read-only query with one parameter, this run's PBX (SQLite or PostgreSQL)."""
        return query_store(self.database_url, self.pbx, sql)

    def stored(self) -> int:
        return self.query("SELECT count(*) FROM calls WHERE pbx = $1")[0]

    def stored_detail(self) -> dict[str, int]:
        row = self.query("SELECT count(*), count(DISTINCT call_id), count(*) FILTER (WHERE complete), "
                         "count(route_dial) FROM calls WHERE pbx = $1" if not self.database_url.startswith("sqlite")
                         else "SELECT count(*), count(DISTINCT call_id), sum(complete), count(route_dial) "
                         "FROM calls WHERE pbx = $1")
        return {"records": row[0], "distinct": row[1], "complete": row[2] or 0, "routed": row[3]}

    def children(self) -> list[int]:
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def rss_kb(self) -> tuple[int, int]:
        """(the daemon's RSS, its children's: the decision-log process) in KiB."""
        assert self.proc is not None
        return proc_rss_kb(self.proc.pid), sum(proc_rss_kb(c) for c in self.children())

    def cpu_s(self) -> float:
        assert self.proc is not None
        return process_cpu(self.proc.pid)

    def children_cpu_s(self) -> float:
        """CPU time of the daemon's children (the routing and decision-log processes)."""
        return sum(process_cpu(c) for c in self.children())

    async def wait_stored(self, n: int, timeout: float) -> float:
        """Poll until `n` records of this run's PBX are stored; the perf_counter when seen."""
        end = time.monotonic() + timeout
        while True:
            # in a thread: a query on this loop would delay the FastAGI calls being measured
            have = await asyncio.to_thread(self.stored)
            if have >= n:
                return time.perf_counter()
            if time.monotonic() > end:
                raise RuntimeError(f"{have} of {n} call records stored after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 30.0) -> int | None:
        code = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                code = await self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self.ami is not None:
            await self.ami.__aexit__(None, None, None)
        if self._feeder is not None and self._feeder.returncode is None:
            assert self._feeder.stdin is not None
            self._feeder.stdin.close()  # the feeder ends when its stdin closes
            try:
                await asyncio.wait_for(self._feeder.wait(), 10)
            except TimeoutError:
                self._feeder.kill()
                await self._feeder.wait()
        self._log.close()
        return code
