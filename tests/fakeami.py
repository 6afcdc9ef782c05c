"""A fake Asterisk Manager Interface over real TCP, for tests and benchmarks.

    async with FakeAmi(load_recording(path)) as ami:
        cfg = PbxConfig(host="127.0.0.1", port=ami.port, ...)

It speaks AMI the way Asterisk does: the banner, Login (accepted, or rejected and hung up
like Asterisk does), Ping, then the given frames after a successful login. Frames are
raw AMI (str or bytes, written byte for byte: junk included) or `(t, raw)` pairs that are
paced by `t` when `speed` is set. One cursor runs across connections: after a hang-up
(`drop_after`) the next connection resumes where the last one stopped, like a PBX whose
events went on while the client was away. Without pacing, frames are written in large
batches with drain(), so the client's reading speed (and backpressure) sets the pace.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from pathlib import Path

BANNER = "Asterisk Call Manager/11.0.0\r\n"

Raw = str | bytes
Item = Raw | tuple[float, Raw]


def load_recording(path: str | Path) -> list[str]:
    """The raw frames of a recording (`{"t": .., "raw": ..}` per line), in order."""
    return [raw for _, raw in load_timed_recording(path)]


def load_timed_recording(path: str | Path) -> list[tuple[float, str]]:
    """(t, raw) pairs of a recording, for paced replay."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                out.append((float(obj.get("t") or 0.0), obj["raw"]))
    return out


def _encode(raw: Raw) -> bytes:
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def _parse_action(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip().lower(), value.strip())
    return headers


class FakeAmi:
    def __init__(self, frames: Iterable[Item] = (), *, secret: str | None = None,
                 answer_ping: bool = True, drop_after: Iterable[int] = (),
                 speed: float | None = None, batch_bytes: int = 256 * 1024,
                 banner: str = BANNER, lists: bool = False):
        """secret: when set, a Login with another secret is rejected (None accepts any).
        drop_after: frame counts (across connections) after which the server hangs up, once each.
        speed: pace `(t, raw)` frames at t/speed seconds; None writes as fast as possible.
        lists: answer CoreShowChannels / BridgeList / DeviceStateList / ExtensionStateList from
        what the PBX has produced so far (else they are unknown commands, as for a user
        without the 'reporting' write class)."""
        self._frames: list[tuple[float | None, bytes]] = [
            (float(it[0]), _encode(it[1])) if isinstance(it, tuple) else (None, _encode(it))
            for it in frames]
        self.secret = secret
        self.lists = lists
        self.answer_ping = answer_ping
        self._drops = set(drop_after)
        self.speed = speed
        self.batch_bytes = batch_bytes
        self.banner = banner.encode("ascii")
        self.port: int = 0
        self.cursor = 0  # frames written so far, across connections
        self.connections = 0
        self.logins: list[str] = []  # usernames that logged in (the secret is not kept)
        self.rejected = 0
        self.pings = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._logged_in: set[asyncio.StreamWriter] = set()
        # what is up at the PBX now, from every frame it has produced (written or not):
        # what CoreShowChannels / BridgeList / DeviceStateList / ExtensionStateList answer
        self.channels: dict[str, dict[str, str]] = {}  # uniqueid -> latest snapshot headers
        self.created: dict[str, float] = {}            # uniqueid -> when its Newchannel happened
        self.bridge_of: dict[str, str] = {}            # uniqueid -> bridge id
        self.device_states: dict[str, str] = {}
        self.extension_states: dict[tuple[str, str], dict[str, str]] = {}
        self.actions: list[str] = []                   # every action name received
        self.originates: list[dict[str, str]] = []     # every Originate's headers (lower-case keys)
        self.refuse_originate: str | None = None       # set: Originate answered Error with this message
        self.login_times: list[float] = []             # loop.time() of each accepted Login

    async def __aenter__(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """The PBX goes down: connections dropped, nothing accepted (connects are refused)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()

    async def start_listening(self) -> None:
        """The PBX is back, on the same port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def emit(self, raw: Raw) -> None:
        """Something happens at the PBX now: its state follows, and every logged-in client gets
        the frame (nobody does while the PBX is unreachable: the event is lost to us)."""
        data = _encode(raw)
        self._apply(data)
        for w in list(self._logged_in):
            w.write(data)

    def _apply(self, data: bytes) -> None:
        h = _parse_action(data.split(b"\r\n\r\n", 1)[0])
        event, uid = h.get("event", "").lower(), h.get("uniqueid", "")
        if event == "newchannel":
            self.created[uid] = time.time()
        if event == "newchannel" or (uid in self.channels and "channel" in h and event != "hangup"):
            self.channels[uid] = h
        if event == "hangup":
            self.channels.pop(uid, None)
            self.bridge_of.pop(uid, None)
        elif event == "bridgeenter" and uid in self.channels:
            self.bridge_of[uid] = h.get("bridgeuniqueid", "")
        elif event == "bridgeleave":
            self.bridge_of.pop(uid, None)
        elif event == "devicestatechange":
            self.device_states[h.get("device", "")] = h.get("state", "")
        elif event == "extensionstatus":
            self.extension_states[(h.get("exten", ""), h.get("context", ""))] = h

    def _list(self, aid: str, items: list[str], complete: str, message: str) -> bytes:
        """A list action's answer as manager.c sends it: Success with EventList: start, the
        items, then <X>Complete with EventList: Complete and ListItems."""
        out = [f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: {message}\r\n\r\n"]
        out += [item.replace("\r\n", f"\r\nActionID: {aid}\r\n", 1) + "\r\n" for item in items]
        out.append(f"Event: {complete}\r\nActionID: {aid}\r\nEventList: Complete\r\n"
                   f"ListItems: {len(items)}\r\n\r\n")
        return "".join(out).encode()

    def _snapshot_answer(self, name: str, aid: str) -> bytes | None:
        def fields(h: dict[str, str], keys: tuple[str, ...]) -> str:
            canon = {k.lower(): k for k in keys}
            return "".join(f"{canon[k]}: {v}\r\n" for k, v in h.items() if k in canon)

        if name == "coreshowchannels":  # main/manager.c action_coreshowchannels
            keys = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                    "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
                    "Exten", "Priority", "Uniqueid", "Linkedid")
            def duration(uid: str) -> str:
                s = int(time.time() - self.created.get(uid, time.time()))
                return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
            # listed in no particular order (a hash container in Asterisk): newest first here
            items = [f"Event: CoreShowChannel\r\n{fields(h, keys)}BridgeId: {self.bridge_of.get(uid, '')}\r\n"
                     f"Application: Dial\r\nApplicationData: \r\nDuration: {duration(uid)}\r\n"
                     for uid, h in reversed(self.channels.items())]
            return self._list(aid, items, "CoreShowChannelsComplete", "Channels will follow")
        if name == "bridgelist":  # manager_bridges.c manager_bridges_list
            counts: dict[str, int] = {}
            for b in self.bridge_of.values():
                counts[b] = counts.get(b, 0) + 1
            items = [f"Event: BridgeListItem\r\nBridgeUniqueid: {b}\r\nBridgeType: basic\r\n"
                     f"BridgeTechnology: simple_bridge\r\nBridgeNumChannels: {n}\r\n" for b, n in counts.items()]
            return self._list(aid, items, "BridgeListComplete", "Bridge listing will follow")
        if name == "devicestatelist":  # main/devicestate.c action_devicestatelist
            items = [f"Event: DeviceStateChange\r\nDevice: {d}\r\nState: {st}\r\n"
                     for d, st in self.device_states.items()]
            return self._list(aid, items, "DeviceStateListComplete", "Device State Changes will follow")
        if name == "extensionstatelist":  # main/manager.c action_extensionstatelist
            items = ["Event: ExtensionStatus\r\n" + fields(h, ("Exten", "Context", "Hint", "Status", "StatusText"))
                     for h in self.extension_states.values()]
            return self._list(aid, items, "ExtensionStateListComplete", "Extension Statuses will follow")
        return None

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Abort rather than cancel: start_server's handler tasks log a cancellation as an
        # error (3.11), and abort() also frees a writer stuck in drain() on a paused client.
        for w in list(self._writers):
            w.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def done(self) -> bool:
        """Every frame has been written."""
        return self.cursor >= len(self._frames)

    def push(self, raw: Raw) -> None:
        """Write raw bytes to every connected client now (junk, an extra event...)."""
        data = _encode(raw)
        for w in list(self._writers):
            w.write(data)

    def hang_up(self) -> None:
        """Drop every connection now, as a PBX restart would."""
        for w in list(self._writers):
            w.close()

    # ------------------------------------------------------------ per connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        replay: list[asyncio.Task] = []
        try:
            writer.write(self.banner)
            await self._answer(reader, writer, replay)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away
        finally:
            for r in replay:
                r.cancel()
            await asyncio.gather(*replay, return_exceptions=True)
            self._writers.discard(writer)
            self._logged_in.discard(writer)
            writer.close()
            self._tasks.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      replay: list[asyncio.Task]) -> None:
        """Answer actions until the client or we hang up; start the replay after Login."""
        while True:
            action = _parse_action(await reader.readuntil(b"\r\n\r\n"))
            name, aid = action.get("action", "").lower(), action.get("actionid", "")
            self.actions.append(name)
            listed = self._snapshot_answer(name, aid) if self.lists and writer in self._logged_in else None
            if listed is not None:
                writer.write(listed)
            elif name == "login":
                if self.secret is not None and action.get("secret") != self.secret:
                    self.rejected += 1
                    writer.write(f"Response: Error\r\nActionID: {aid}\r\n"
                                 "Message: Authentication failed\r\n\r\n".encode())
                    await writer.drain()
                    return  # Asterisk hangs up after a failed login
                self.logins.append(action.get("username", ""))
                self.login_times.append(asyncio.get_running_loop().time())
                self._logged_in.add(writer)
                writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                             "Message: Authentication accepted\r\n\r\n".encode())
                if not replay:
                    replay.append(asyncio.create_task(self._replay(writer)))
            elif name == "ping":
                self.pings += 1
                if self.answer_ping:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                                 f"Timestamp: {time.time():.6f}\r\n\r\n".encode())
            elif name == "originate" and writer in self._logged_in:
                # Async: true is queued at once, as Asterisk answers it (the call follows as events)
                self.originates.append(action)
                if self.refuse_originate is not None:
                    writer.write(f"Response: Error\r\nActionID: {aid}\r\n"
                                 f"Message: {self.refuse_originate}\r\n\r\n".encode())
                else:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                                 "Message: Originate successfully queued\r\n\r\n".encode())
            elif name == "logoff":
                writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n"
                             "Message: Thanks for all the fish.\r\n\r\n".encode())
                return
            else:
                writer.write(f"Response: Error\r\nActionID: {aid}\r\n"
                             "Message: Invalid/unknown command\r\n\r\n".encode())

    async def _replay(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        batch: list[bytes] = []
        size = 0
        started = loop.time()
        first_t: float | None = None

        async def flush() -> None:
            nonlocal size
            if batch:
                writer.write(b"".join(batch))
                batch.clear()
                size = 0
            await writer.drain()

        try:
            while self.cursor < len(self._frames):
                t, data = self._frames[self.cursor]
                if self.speed and t is not None:
                    first_t = t if first_t is None else first_t
                    wait = started + (t - first_t) / self.speed - loop.time()
                    if wait > 0:
                        await flush()
                        await asyncio.sleep(wait)
                batch.append(data)
                self._apply(data)
                size += len(data)
                self.cursor += 1
                if self.cursor in self._drops:
                    self._drops.discard(self.cursor)
                    await flush()
                    writer.close()  # flushes what was written, then FIN
                    return
                if size >= self.batch_bytes:
                    await flush()
            await flush()
        except ConnectionError:
            pass  # the client went away; the cursor says how far we got
