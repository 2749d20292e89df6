"""A TCP proxy the test controls, to put a real network outage between a client and a real server.

``cut()`` stops listening and aborts every live connection (the client sees a reset, new connects
are refused); ``restore()`` listens again on the same port. ``black_hole()`` keeps every connection open
and accepts new ones but forwards nothing any more, in either direction (a stalled network: the client
sees no error, only silence); ``restore()`` ends it. Bytes are forwarded unchanged otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.black_holed = False

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a cut)."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the live ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if server is not None:
            await server.wait_closed()  # after the aborts: on 3.12+ this waits for live connections

    async def restore(self) -> None:
        self.black_holed = False
        if self._server is None:
            await self.start()

    def black_hole(self) -> None:
        """Forward nothing from now on (connections stay open, new ones are accepted and ignored)."""
        self.black_holed = True

    async def stop(self) -> None:
        await self.cut()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self.black_holed:  # accepted, never answered
            self._writers.add(client_w)
            with contextlib.suppress(ConnectionError, OSError):
                while await client_r.read(65536):
                    pass
            self._writers.discard(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        up = asyncio.create_task(self._pump(client_r, server_w))
        down = asyncio.create_task(self._pump(server_r, client_w))
        self._tasks.update((up, down))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
                self._tasks.discard(t)
            for w in (client_w, server_w):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.black_holed:
                    continue  # swallowed
                writer.write(data)
                await writer.drain()
