"""A TCP proxy in front of PostgreSQL that can stop forwarding without closing anything."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *gates: asyncio.Event,
    watch: Callable[[bytes], None] | None = None,
) -> None:
    """Copy ``reader`` to ``writer`` until the end, passing each chunk (and the end) only while
    every gate is open; ``watch`` sees each chunk first."""
    while data := await reader.read(65_536):
        if watch is not None:
            watch(data)
        for gate in gates:
            await gate.wait()
        writer.write(data)
        await writer.drain()
    for gate in gates:
        await gate.wait()


class StallingProxy:
    """A loopback TCP proxy to the PostgreSQL of ``database_url`` (TCP or Unix socket).

    ``freeze()`` stops forwarding, both ways, on every connection, old and new, and closes none:
    what a client sees when the database host vanishes or the network partitions. ``thaw()``
    resumes. ``stall_answers_after(marker)``: the next connection that sends bytes containing
    ``marker`` gets no answer any more (its statement reached the server; the answer is lost).
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parts = urlsplit(database_url)
        socket_dir = dict(parse_qsl(parts.query)).get("host")
        port = parts.port or 5432
        self._unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self._tcp = (parts.hostname or "127.0.0.1", port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.stalled = asyncio.Event()  # set when a connection's answers were stalled
        self._marker: bytes | None = None
        self._links: set[asyncio.Task[None]] = set()
        self.url = ""

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def stall_answers_after(self, marker: bytes) -> None:
        self._marker = marker
        self.stalled.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator["StallingProxy"]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        parts = urlsplit(self.database_url)
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc, query=query))
        try:
            async with server:
                yield self
        finally:
            self.thaw()
            for link in list(self._links):
                link.cancel()
            await asyncio.gather(*self._links, return_exceptions=True)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        to_server: asyncio.StreamWriter | None = None
        try:
            await self.flowing.wait()
            if self._unix:
                server, to_server = await asyncio.open_unix_connection(self._unix)
            else:
                server, to_server = await asyncio.open_connection(*self._tcp)
            answers = asyncio.Event()
            answers.set()

            def watch(data: bytes) -> None:
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    answers.clear()
                    self.stalled.set()

            directions = [
                asyncio.create_task(pipe(client, to_server, self.flowing, watch=watch)),
                asyncio.create_task(pipe(server, to_client, self.flowing, answers)),
            ]
            try:
                await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for direction in directions:
                    direction.cancel()
        except (OSError, asyncio.CancelledError):
            # Cancelled when the proxy stops: end quietly, as asyncio's stream server expects of
            # its handlers (it reports a cancelled one as an error).
            pass
        finally:
            for writer in (to_client, to_server):
                if writer is not None:
                    writer.close()
            self._links.discard(task)
