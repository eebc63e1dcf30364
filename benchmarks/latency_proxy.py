"""A TCP proxy that adds a fixed delay to every request: a local S3 made to answer like a far one.

Each time a client sends after it last received (a new request on a kept-alive connection, or a
new connection), the proxy waits ``delay_s`` before forwarding; the rest of that request's bytes
and the whole response pass at once. So every S3 request costs one round trip more, as against a
cloud endpoint 20-50 ms away, and concurrency can hide it as it would there.

    with LatencyProxy(upstream_port=8333, delay_s=0.02) as proxy:
        ...  # point the client at http://127.0.0.1:{proxy.port}
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType


class LatencyProxy:
    """Listens on a free local port and forwards to ``127.0.0.1:upstream_port`` with the delay."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        answered = asyncio.Event()
        answered.set()  # the connection's first request is delayed too

        async def requests() -> None:
            while data := await client_reader.read(1 << 16):
                if answered.is_set():  # a new request: one round trip more
                    answered.clear()
                    await asyncio.sleep(self.delay_s)
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def responses() -> None:
            while data := await upstream_reader.read(1 << 16):
                answered.set()
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        try:
            await asyncio.gather(requests(), responses())
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
