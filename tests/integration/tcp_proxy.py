"""A TCP forwarder on 127.0.0.1 that a test can cut: the chain outage's switch.

``TcpProxy(target_port)`` listens on 127.0.0.1 (port 0) and runs its own asyncio loop in a
daemon thread, so synchronous tests drive it with plain calls. Modes:

| mode        | new connections                          | connections already open            |
|-------------|------------------------------------------|-------------------------------------|
| ``forward`` | relayed to the target, both directions   | relayed                             |
| ``blackhole`` | accepted; what they send is read and dropped, nothing is ever answered (a partition: the client waits for its own timeout) | relaying stops: bytes in either direction are dropped |
| ``refuse``  | accepted and reset at once (RST)         | reset                               |

Switching back to ``forward`` resets every connection opened or frozen during the cut (a
stream that lost bytes cannot be resumed); later connections are relayed again.
``statistics()`` counts connections accepted per mode and bytes relayed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter
from typing import Literal

Mode = Literal["forward", "blackhole", "refuse"]
MODES: tuple[Mode, ...] = ("forward", "blackhole", "refuse")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER 0), as a refusing middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class TcpProxy:
    """Use as a context manager: ``with TcpProxy(port) as proxy: proxy.url`` ..."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._mode: Mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._live: set[tuple[asyncio.StreamWriter, ...]] = set()  # (client, upstream?)
        self._stats: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_mode(self, mode: Mode) -> None:
        """Switch now; returns once connections that must go are reset."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        done = threading.Event()

        def switch() -> None:
            previous, self._mode = self._mode, mode
            if mode == "refuse" or (mode == "forward" and previous != "forward"):
                for writers in list(self._live):
                    for writer in writers:
                        _reset(writer)
                self._live.clear()
            done.set()

        self._loop.call_soon_threadsafe(switch)
        done.wait(10)

    def statistics(self) -> dict[str, int]:
        return dict(self._stats)

    # -- the loop's side ---------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for writers in self._live:
                for writer in writers:
                    writer.transport.abort()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._mode
        self._stats[f"accepted_{mode}"] += 1
        if mode == "refuse":
            _reset(writer)
            return
        if mode == "blackhole":
            await self._swallow(reader, (writer,))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self._live.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, "bytes_up"),
                                 self._pipe(up_reader, writer, "bytes_down"))
        finally:
            self._live.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _swallow(self, reader: asyncio.StreamReader,
                       writers: tuple[asyncio.StreamWriter, ...]) -> None:
        self._live.add(writers)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._live.discard(writers)
            for w in writers:
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    counter: str) -> None:
        try:
            while data := await reader.read(65536):
                if self._mode != "forward":
                    continue  # frozen by a cut: dropped
                self._stats[counter] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
