"""A TCP proxy in front of an app that closes every keep-alive connection as it is reused.

Once a connection has carried one answer, the proxy closes it when the next request
arrives, without forwarding it: what a client sees when an app server's idle timeout
closes a connection at the very moment a new request goes out on it (uvicorn closes
idle connections after 5 s). It makes that race happen on every reuse, not by chance.
"""

from __future__ import annotations

import asyncio
import threading


class StaleKeepAliveProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.closed_on_reuse = 0  # requests dropped on a reused connection
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="stale-proxy", daemon=True)

    def start(self) -> "StaleKeepAliveProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            current = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        answered = asyncio.Event()  # the app has sent some of an answer on this connection
        try:
            app_reader, app_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return

        async def to_app() -> None:
            while data := await client_reader.read(65536):
                if answered.is_set():  # a second request on this connection: drop it, as a closing app would
                    self.closed_on_reuse += 1
                    break
                app_writer.write(data)
                await app_writer.drain()

        async def to_client() -> None:
            while data := await app_reader.read(65536):
                answered.set()
                client_writer.write(data)
                await client_writer.drain()

        up = asyncio.ensure_future(to_app())
        down = asyncio.ensure_future(to_client())
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for writer in (client_writer, app_writer):
                writer.close()
