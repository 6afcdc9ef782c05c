"""A TCP proxy in front of the real PostgreSQL that a test controls, to play the faults a
network and a database server have (loopback only):

    async with PgProxy("127.0.0.1", 5432) as proxy:    # proxy.port: point the daemon here
        proxy.cut()          # every open connection reset now (a server restart, a network blip)
        proxy.refuse()       # ... and new ones refused (ECONNREFUSED: the server is down)
        proxy.blackhole()    # connections accepted, nothing passes either way (a dead route)
        proxy.restore()      # forwarding again

A black hole drops bytes silently, as a dead route does; when it ends the connections
that lived through it are reset (their protocol state is lost, as a TCP stack would
eventually time them out), new ones work.
"""
from __future__ import annotations

import asyncio
import contextlib


class PgProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"  # pass | refuse | blackhole
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> PgProxy:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---------------------------------------------------------------- the faults
    def cut(self) -> None:
        """Reset every open connection now."""
        for client, server in list(self._pairs):
            client.transport.abort()
            if server is not None:
                server.transport.abort()
        self._pairs.clear()

    def refuse(self) -> None:
        """Reset what is open and refuse new connections (nothing listens on the port)."""
        self.mode = "refuse"
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()

    def blackhole(self) -> None:
        """Accept connections, pass nothing, either way, on new and open connections."""
        self.mode = "blackhole"

    async def restore(self) -> None:
        if self.mode == "blackhole":
            self.cut()
        self.mode = "pass"
        if self._server is None:
            await self._listen()

    # ---------------------------------------------------------------- forwarding
    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (client_w, None)
        self._pairs.add(pair)
        try:
            while self.mode == "blackhole":  # held open, never connected upstream
                if not await client_r.read(65536):
                    return
            server_r, server_w = await asyncio.open_connection(*self.upstream)
            self._pairs.discard(pair)
            pair = (client_w, server_w)
            self._pairs.add(pair)
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except (ConnectionError, OSError):
            pass
        finally:
            self._pairs.discard(pair)
            for w in pair:
                if w is not None:
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue  # dropped on the floor
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
