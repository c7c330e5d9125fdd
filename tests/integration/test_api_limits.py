"""The HTTP API's connection limits against a real aiohttp server on 127.0.0.1 (port 0).

The server runs on its own asyncio loop in a thread, as in the node; clients are raw sockets,
so idle, half-sent and never-read connections are exactly what an attacker would hold. Each
test waits on the socket (a blocking read with a timeout), never sleeps for a condition.
Figures (timeouts, the cap) are the module's own constants: these tests exercise exactly
what a validator runs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.factories import make_spec
from validator import api
from validator.api import HTTP_STATISTICS, make_app, start_api
from validator.spec import NetworkSpec
from validator.store import Store

SLACK = 2.0  # seconds of scheduling slack on top of a deadline plus one sweep


class Server:
    """``start_api`` on its own loop in a thread; ``statistics()`` reads its counters."""

    def __init__(self, db: Path, spec: NetworkSpec, status: Callable[[], Mapping[str, Any]],
                 max_connections: int = api.MAX_CONNECTIONS):
        self.port = 0
        self._max_connections = max_connections
        self._app = make_app(db, spec, status)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner, self.port = self._loop.run_until_complete(
            start_api(self._app, "127.0.0.1", 0, max_connections=self._max_connections))
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def statistics(self) -> dict[str, int]:
        return self._app[HTTP_STATISTICS].statistics()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def snapshot(rpc_url: str = "http://127.0.0.1:8899", big: int = 0) -> Mapping[str, Any]:
    body: dict[str, Any] = {
        "network_id": "limits", "epoch": 3, "phase": "probing", "last_final_epoch": 2,
        "chain": {"rpc_url": rpc_url, "last_posted_epoch": 2, "last_error": None},
        "dropped": {},
    }
    if big:
        body["padding"] = "x" * big
    return body


@pytest.fixture
def server_for(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []
    db = tmp_path / "validator.sqlite"
    Store(db)  # the tables exist: /status may read them

    def start(status: Callable[[], Mapping[str, Any]] = snapshot,
              spec: NetworkSpec | None = None, max_connections: int = api.MAX_CONNECTIONS
              ) -> Server:
        server = Server(db, spec or make_spec(4)[0], status, max_connections)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_for: Callable[..., Server]) -> Server:
    return server_for()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and when it closed (time.monotonic)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic()


def get(port: int, path: str = "/status") -> tuple[int, Any]:
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data, _ = read_until_closed(sock, 10)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_idle_connections_are_closed_after_the_idle_timeout_and_counted(server: Server) -> None:
    opened = time.monotonic()
    sockets = [connect(server.port) for _ in range(20)]
    for sock in sockets:
        data, closed = read_until_closed(sock, api.IDLE_TIMEOUT_SECONDS + 10)
        assert data == b""
        assert closed - opened <= api.IDLE_TIMEOUT_SECONDS + api.SWEEP_SECONDS + SLACK
        sock.close()
    assert closed - opened >= api.IDLE_TIMEOUT_SECONDS - 0.1
    wait_for(lambda: server.statistics()["idle_timeout"] == 20, 5)
    assert get(server.port)[0] == 200


def test_half_sent_and_dribbled_requests_are_cut_at_the_header_timeout(server: Server) -> None:
    half = connect(server.port)
    half.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n")  # never the blank line
    started = time.monotonic()
    dribble = connect(server.port)
    dribble.sendall(b"G")
    closed_at = None
    for byte in b"ET /status HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 40:  # one a second
        dribble.settimeout(1.0)
        try:
            dribble.sendall(bytes([byte]))
            if dribble.recv(1) == b"":
                closed_at = time.monotonic()
                break
        except TimeoutError:
            continue  # still open: next byte
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
    assert closed_at is not None, "a request dribbled a byte a second was never cut off"
    limit = api.HEADER_TIMEOUT_SECONDS + api.SWEEP_SECONDS + SLACK
    assert closed_at - started <= limit
    data, closed = read_until_closed(half, limit)
    assert data == b"" and closed - started <= limit
    half.close()
    dribble.close()
    wait_for(lambda: server.statistics()["header_timeout"] == 2, 5)


def test_keep_alive_serves_requests_then_closes_when_idle_uncounted(server: Server) -> None:
    with connect(server.port) as sock:
        for _ in range(3):
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")
        finished = time.monotonic()
        data, closed = read_until_closed(sock, api.IDLE_TIMEOUT_SECONDS + 10)
    assert closed - finished <= api.IDLE_TIMEOUT_SECONDS + api.SWEEP_SECONDS + SLACK
    assert not any(server.statistics().values()), server.statistics()


def test_at_the_cap_the_longest_waiting_connection_makes_room(server: Server) -> None:
    held = [connect(server.port) for _ in range(api.MAX_CONNECTIONS)]
    wait_for(lambda: server.statistics()["evicted"] == 0, 1)
    for _ in range(5):  # honest requests get through while the attacker holds every slot
        assert get(server.port)[0] == 200
        held.append(connect(server.port))  # and he takes the freed slot again at once
    assert get(server.port)[0] == 200
    assert server.statistics()["evicted"] == 6  # each honest request took one slot
    for sock in held[:6]:  # the longest idle went first
        data, _ = read_until_closed(sock, 5)
        assert data == b""
    held[6].settimeout(0.2)
    with pytest.raises(TimeoutError):  # the others are still open
        held[6].recv(1)
    assert server.statistics()["connection_limit"] == 0
    for sock in held:
        sock.close()


def test_when_every_connection_is_answered_one_more_gets_a_503(
        server_for: Callable[..., Server]) -> None:
    """Every slot busy with a response its client does not read: nothing to evict."""
    big = snapshot(big=16 * 1024 * 1024)  # more than loopback's socket buffers hold
    server = server_for(lambda: big, max_connections=4)
    busy = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
        busy.append(sock)
        wait_for(lambda: sock.recv(1, socket.MSG_PEEK) != b"", 10)  # the answer has begun
    extra = connect(server.port)
    data, _ = read_until_closed(extra, 10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), data[:80]
    assert json.loads(body) == {"error": "too many connections; try again"}
    assert server.statistics()["connection_limit"] == 1
    assert server.statistics()["evicted"] == 0
    for sock in busy + [extra]:
        sock.close()


@pytest.mark.parametrize("sip", [0, 100])
def test_a_client_that_stops_reading_or_sips_is_aborted(server_for: Callable[..., Server],
                                                        sip: int) -> None:
    """A response far larger than loopback's socket buffers hold, to a client that reads
    nothing, or `sip` bytes a second (a slot held at almost no cost)."""
    big = snapshot(big=32 * 1024 * 1024)
    server = server_for(lambda: big)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
    sock.settimeout(1.0)
    deadline = time.monotonic() + api.SEND_STALL_SECONDS + 2 * api.SWEEP_SECONDS + 10
    aborted = False
    while time.monotonic() < deadline and not aborted:
        try:
            if sip:
                aborted = sock.recv(sip) == b""
            time.sleep(1.0)
        except TimeoutError:
            pass
        except ConnectionResetError:
            aborted = True
        aborted = aborted or server.statistics()["send_stalled"] == 1
    assert server.statistics()["send_stalled"] == 1
    sock.close()


@pytest.mark.parametrize("request_bytes, reason", [
    (b"GET /" + b"a" * (api.MAX_LINE_SIZE + 1) + b" HTTP/1.1\r\nHost: t\r\n\r\n", "line_too_long"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * (api.MAX_FIELD_SIZE + 1) + b"\r\n\r\n",
     "line_too_long"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(api.MAX_HEADERS + 1))
     + b"\r\n", "bad_request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n", "bad_request"),
])
def test_parser_refusals_are_json_and_counted(server: Server, request_bytes: bytes,
                                              reason: str) -> None:
    with connect(server.port) as sock:
        sock.sendall(request_bytes)
        data, _ = read_until_closed(sock, 10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] in (b"400", b"405", b"431"), head[:80]
    assert "error" in json.loads(body)
    assert server.statistics()[reason] == 1
    assert sum(server.statistics().values()) == 1


@pytest.mark.parametrize("url, shown", [
    ("https://user:key@rpc.example/path?api-key=X", "https://rpc.example/path"),
    ("https://rpc.example:8443/?token=abc#frag", "https://rpc.example:8443/"),
    ("http://127.0.0.1:8899", "http://127.0.0.1:8899"),
    ("http://[::1]:8899/x?y=1", "http://[::1]:8899/x"),
])
def test_status_shows_the_rpc_url_without_credentials_or_query(
        server_for: Callable[..., Server], url: str, shown: str) -> None:
    server = server_for(lambda: snapshot(rpc_url=url))
    code, body = get(server.port)
    assert code == 200 and body["chain"]["rpc_url"] == shown
    without_chain = server_for(lambda: {"epoch": 1, "last_final_epoch": None},
                               spec=make_spec(4, rpc_url=url)[0])
    code, body = get(without_chain.port)
    assert code == 200 and body["chain"]["rpc_url"] == shown
