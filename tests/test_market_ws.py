"""KlineConnection internals that the end-to-end feed tests cannot time: cancellation inside a rotation."""

from __future__ import annotations

import asyncio

from src.market.ws import KlineConnection, WsSettings


class FakeWs:
    """Just enough of a websockets ClientConnection for KlineConnection: iteration and close()."""

    def __init__(self, block_close: bool = False) -> None:
        self.messages: asyncio.Queue[str] = asyncio.Queue()
        self.block_close = block_close
        self.close_entered = asyncio.Event()
        self.closed = False

    def __aiter__(self) -> FakeWs:
        return self

    async def __anext__(self) -> str:
        return await self.messages.get()

    async def close(self) -> None:
        self.close_entered.set()
        if self.block_close:  # a peer that never answers the close handshake (up to close_timeout)
            await asyncio.Event().wait()
        self.closed = True


class Handler:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_message(self, conn: KlineConnection, raw: str | bytes) -> None:
        self.messages.append(str(raw))

    def on_connected(self, conn: KlineConnection, reconnect: bool) -> None:
        pass

    def on_disconnected(self, conn: KlineConnection, reason: str) -> None:
        pass


async def test_a_cancel_while_rotation_closes_the_old_connection_also_closes_the_new_one() -> None:
    handler = Handler()
    conn = KlineConnection("ws-0", ["btcusdt@kline_1m"], WsSettings(rotation_overlap_s=5.0), handler)
    old, new = FakeWs(block_close=True), FakeWs()

    async def open_new() -> FakeWs:
        return new

    conn._open = open_new  # type: ignore[method-assign,assignment]
    old_reader = asyncio.create_task(conn._read(old))  # type: ignore[arg-type]
    new.messages.put_nowait("first")  # the replacement speaks: the old connection is closed next
    rotation = asyncio.create_task(conn._rotate(old, old_reader))  # type: ignore[arg-type]
    await old.close_entered.wait()
    rotation.cancel()  # shutdown while the old connection's close handshake hangs
    await asyncio.wait({rotation})
    assert rotation.cancelled()
    assert new.closed, "the replacement connection leaked"
    await asyncio.sleep(0)
    new.messages.put_nowait("after shutdown")
    await asyncio.sleep(0)
    assert handler.messages == ["first"], "the replacement's reader kept delivering after the cancel"
