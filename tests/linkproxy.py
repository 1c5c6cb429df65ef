"""A loopback TCP proxy that drops connections, as NATs and cloud load balancers do.

It forwards 127.0.0.1:<port> to an upstream (PostgreSQL at 127.0.0.1:5432) on an asyncio
loop of its own thread, so in-process daemons and subprocesses reach it alike. It closes
both sides of any connection idle for more than ``idle`` seconds (a NAT forgetting it),
:meth:`LinkProxy.drop_all` closes every connection at once (a failover), and
:meth:`LinkProxy.refuse` closes new connections as they arrive for a while (the database
unreachable).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

__all__ = ["LinkProxy"]


class _Link:
    """One proxied connection: both sides and the time of its last byte."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.last = time.monotonic()
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            side.close()


class LinkProxy:
    """Forward a loopback port to ``upstream``, dropping connections on purpose.

    Args:
        upstream: (host, port) to forward to.
        idle: close a connection after this many seconds without a byte either way
            (None: never).
    """

    def __init__(
        self, upstream: tuple[str, int] = ("127.0.0.1", 5432), *, idle: float | None = None
    ) -> None:
        self.upstream = upstream
        self.idle = idle
        #: Connections accepted, and connections this proxy closed (idle or dropped).
        self.accepted = 0
        self.dropped = 0
        self.port = 0
        self._links: set[_Link] = set()
        self._refuse_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="link-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return parts._replace(netloc=f"{user}127.0.0.1:{self.port}").geturl()

    # -- faults -------------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Close every open connection now; return how many."""
        done = asyncio.run_coroutine_threadsafe(self._drop_all(), self._loop)
        return done.result(timeout=5)

    async def _drop_all(self) -> int:
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.close()
        self.dropped += len(links)
        return len(links)

    def refuse(self, seconds: float) -> None:
        """Drop every connection, and close new ones on arrival, for ``seconds``."""
        self._refuse_until = time.monotonic() + seconds
        self.drop_all()

    @contextmanager
    def down(self) -> Iterator[None]:
        """The database unreachable until the block ends."""
        self.refuse(3600)
        try:
            yield
        finally:
            self._refuse_until = 0.0

    # -- serving --------------------------------------------------------------------------------

    def start(self) -> LinkProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the link proxy did not start")
        return self

    def stop(self) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        watchdog = asyncio.create_task(self._watch())
        self._ready.set()
        await self._stopped.wait()
        watchdog.cancel()
        self._server.close()
        await self._drop_all()
        await self._server.wait_closed()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.idle is None:
                continue
            now = time.monotonic()
            for link in [x for x in self._links if not x.closed and now - x.last > self.idle]:
                link.close()
                self.dropped += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if time.monotonic() < self._refuse_until:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, link), self._pipe(up_reader, writer, link)
            )
        finally:
            link.close()
            self._links.discard(link)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link) -> None:
        with suppress(ConnectionError, OSError):
            while not link.closed:
                data = await source.read(65536)
                if not data:
                    break
                link.last = time.monotonic()
                sink.write(data)
                await sink.drain()
        link.close()
