"""Read-only HTTP status endpoint (aiohttp, asyncio side of the bridge; DESIGN §10).

Owns routing, parsing of path and query values, status codes and the error contract. What a
response contains is built by ``validator.api_views`` from the SQLite file, read through
read-only connections in a small thread pool so no query runs on the event loop; the live
node state comes from ``status()``, an immutable snapshot the node refreshes.

Interface (operators and tools rely on it exactly; keys base58, hashes/bytes lowercase hex;
``/openapi.json`` is the same as an OpenAPI 3.1 document, ``validator.openapi``):

    GET /                             the dashboard page (``validator.dashboard``), with a
    GET /dashboard/{name}             self-only Content-Security-Policy; its script, style, icon
    GET /openapi.json                 the OpenAPI 3.1 document of every route here
    GET /status                       live snapshot (gaps filled from SQLite, see _Api.status)
    GET /network                      the spec, plus n, f, threshold, config_digest, and
                                      pool: {program_id, pool, mint, vault} (null: no pool)
    GET /epochs?limit=N&before=E      [{epoch, final, signatures, posted}], newest first
    GET /epochs/latest | /epochs/{e}  one final report: header, signatures, records, chain,
                                      pool: {address, accepted, signatures_on_chain,
                                      threshold, reserved, claimed_total, claimed_count, error}
    GET /epochs/{e}/proof/{provider}  merkle inclusion proof of the provider's record
    GET /epochs/{e}/claims/{payout}   [{index, record, path, header_sha256, record_count}]:
                                      every record of final epoch e paying that address
    GET /providers?limit=N&after=KEY  newest final report's records (+ region), by key
    GET /providers/{key}              one provider + committee observations + registration,
                                      payouts: [{epoch, index, weight, amount, claimed}] of the
                                      16 newest final epochs, and payouts_error
    GET /healthz                      200 {"ok": true, checks, reasons: [], epoch,
                                      last_final_epoch, validator_peers,
                                      validator_peers_needed, chain_failing_since} when in
                                      sync, with threshold - 1 validator peers, no chain error
                                      unanswered for long and the store readable; otherwise
                                      503, the same body with "ok": false and one line per
                                      failed check in reasons (``validator.health``)
    GET /metrics                      Prometheus text format (OpenMetrics if the Accept header
                                      asks), the node's own registry (``validator.metrics``)

The ``pool`` objects and payouts come from the chain (``validator.api_pool``: one bounded
getMultipleAccounts per request); when the chain cannot be read their chain fields are null
with an ``error`` string, never a 5xx.

Errors: every refusal is ``{"error": "<what was wrong>"}`` with a 4xx status (400 malformed
value, 404 unknown path or nothing there, 405 method other than GET/HEAD). 503 means the
SQLite file cannot be read right now. A JSON 500 ``{"error": "internal"}`` exists only as a
safety net and is logged: no input is meant to reach it. Requests aiohttp's HTTP parser
rejects before routing (a method it does not know, raw bytes, over-long lines) get the same
JSON errors from ``_Connection.handle_error``.

Resource limits (``start_api``; the table is ``_Connection``'s docstring): at most
``MAX_CONNECTIONS`` connections at once (one more evicts the connection waiting longest for
a request, or if every one is being answered, is answered 503 and closed); a connection
with no request in progress is closed after ``IDLE_TIMEOUT_SECONDS``, a request's line and
headers must arrive within ``HEADER_TIMEOUT_SECONDS`` of its first byte, a response none of
of which the client takes less than ``SEND_MIN_PROGRESS`` bytes in ``SEND_STALL_SECONDS``
is aborted; request line, header
field and header count are capped. Each refusal is counted by reason in the
``HttpStatistics`` that ``make_app`` puts in ``app[HTTP_STATISTICS]``; the node shows them
in ``/status`` ``dropped`` as ``http:<reason>``. ``/status`` shows the RPC URL without
credentials, query or fragment (``public_url``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import base58
import structlog
from aiohttp import http_exceptions, web

from validator import api_views as views
from validator import dashboard, openapi
from validator.api_pool import CHAIN_TIMEOUT, PoolReader
from validator.api_views import I64_MAX, BadRequest, Json, b58, public_url
from validator.health import HealthPolicy, assess
from validator.metrics import Telemetry, make_registry, render
from validator.spec import NetworkSpec
from validator.store import open_readonly

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_LIMIT = 1000
DEFAULT_EPOCH_LIMIT = 100
DEFAULT_PROVIDER_LIMIT = 1000
MAX_LINE_SIZE = 32 * 1024  # request line; aiohttp's default is 8190
DB_THREADS = 4

# Connection limits (see _Connection). aiohttp's defaults keep an idle or half-sent
# connection open for an hour: 1,100 of them used up a validator's file descriptors.
MAX_CONNECTIONS = 256  # open at once; the next evicts one without a request, or gets a 503
IDLE_TIMEOUT_SECONDS = 5.0  # no request in progress: fresh, or kept alive after a response
HEADER_TIMEOUT_SECONDS = 5.0  # from a request's first byte to the end of its headers
SEND_STALL_SECONDS = 10.0  # a response the client takes less than SEND_MIN_PROGRESS of
SEND_MIN_PROGRESS = 16 * 1024  # ... in this long (a reader that sips a byte at a time)
MAX_FIELD_SIZE = 8190  # one header line (aiohttp's default)
MAX_HEADERS = 32  # header lines per request (aiohttp's default: 128)
LINGER_SECONDS = 1.0  # reading an unread request body before closing (aiohttp's: 10 s)
SWEEP_SECONDS = 0.5  # how often the deadlines are checked

HTTP_REASONS = (
    "evicted",  # closed to make room: the one waiting longest for (the rest of) a request
    "connection_limit",  # MAX_CONNECTIONS open, all with a request: answered 503 and closed
    "idle_timeout",  # opened and never sent a byte within IDLE_TIMEOUT_SECONDS
    "header_timeout",  # a request line and headers not complete in HEADER_TIMEOUT_SECONDS
    "send_stalled",  # the client took < SEND_MIN_PROGRESS bytes in SEND_STALL_SECONDS
    "bad_request",  # not HTTP, or a method aiohttp does not know
    "line_too_long",  # request line over MAX_LINE_SIZE, or a header over MAX_FIELD_SIZE
)

# Validation by pattern before int()/b58decode: int() accepts "+1", " 1", "1_0" and non-ASCII
# digits, and both int() and b58decode are superlinear on long input.
_UINT = re.compile(r"[0-9]{1,20}")
_LIMIT = re.compile(r"[0-9]{1,7}")
_BASE58_KEY = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")  # 32 bytes encode to 32..44 chars


# -- input parsing -----------------------------------------------------------------------------
def parse_epoch(text: str, what: str = "epoch") -> int:
    """A decimal epoch number 0..2**63-1 (SQLite's range); BadRequest otherwise."""
    if not _UINT.fullmatch(text):
        raise BadRequest(f"{what} must be a decimal integer >= 0")
    value = int(text)
    if value > I64_MAX:
        raise BadRequest(f"{what} out of range (0..{I64_MAX})")
    return value


def parse_key(text: str, what: str = "provider") -> bytes:
    """A 32-byte public key in canonical base58; BadRequest otherwise."""
    if _BASE58_KEY.fullmatch(text):
        raw = base58.b58decode(text)
        # Round trip as a guard against decoder leniency: one key, one spelling.
        if len(raw) == 32 and b58(raw) == text:
            return raw
    raise BadRequest(f"{what} must be a base58-encoded 32-byte public key")


def _query_one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values[0] if values else None


def query_limit(request: web.Request, default: int) -> int:
    text = _query_one(request, "limit")
    if text is None:
        return default
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer 1..{MAX_LIMIT}")
    return int(text)


# -- snapshot serialisation --------------------------------------------------------------------
def plain(value: Any) -> Any:
    """The status snapshot as JSON types: mappings -> dicts, sequences -> lists, bytes -> hex."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class HttpStatistics:
    """Connections the API refused or cut off, by reason (``HTTP_REASONS``).

    Counted on the API's asyncio loop, read from any thread: the keys are fixed at creation,
    so a copy never sees the dict change size.
    """

    def __init__(self) -> None:
        self._counts = dict.fromkeys(HTTP_REASONS, 0)

    def count(self, reason: str) -> None:
        self._counts[reason] += 1

    def statistics(self) -> dict[str, int]:
        return dict(self._counts)


HTTP_STATISTICS = web.AppKey("http_statistics", HttpStatistics)


# -- SQLite off the event loop -----------------------------------------------------------------
class _ReadPool:
    """Read-only SQLite connections, one per worker thread, so queries never block the loop.

    Each call runs in one read transaction: a WAL snapshot, so e.g. a report and its chain
    row are read consistently while the node writes. A connection that hits an SQLite error
    is dropped and reopened on next use (the file may not exist yet at startup).
    """

    def __init__(self, path: Path, threads: int = DB_THREADS) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="api-db")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: set[sqlite3.Connection] = set()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")  # nothing to commit: ends the read snapshot
        except sqlite3.Error:
            self._drop(conn)
            raise

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_readonly(self._path)
            conn.isolation_level = None  # we issue BEGIN/ROLLBACK ourselves
            with self._lock:
                self._conns.add(conn)
            self._local.conn = conn
        return conn

    def _drop(self, conn: sqlite3.Connection) -> None:
        self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        conn.close()

    async def encode(self, body: Any) -> bytes:
        """JSON-encode ``body`` in a worker thread (a report with many records is big)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _dumps, body)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


# -- handlers ----------------------------------------------------------------------------------
class _Api:
    def __init__(self, pool: _ReadPool, spec: NetworkSpec,
                 status: Callable[[], Mapping[str, Any]], chain: PoolReader | None, *,
                 telemetry: Telemetry = lambda: None,
                 health_policy: HealthPolicy = HealthPolicy()) -> None:
        self._pool = pool
        self._spec = spec
        self._status = status
        self._chain = chain
        self._telemetry = telemetry
        self._health_policy = health_policy
        self._registry = make_registry(spec, status, telemetry, health_policy)
        self._network = network_json(spec)
        self._network_bytes = _dumps({**self._network, "pool": None})  # no pool: fixed
        self._files = dashboard.read_files()
        self._openapi = _dumps(openapi.document(openapi.package_version()))

    async def _view(self, fn: Callable[[sqlite3.Connection], Any]) -> web.Response:
        # JSON encoding runs in the worker too: an epoch with many records is a big document.
        body = await self._pool.run(lambda conn: _dumps(fn(conn)))
        return web.Response(body=body, content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        """The node's snapshot; ``last_final_epoch`` and ``chain.last_posted_epoch`` are read
        from SQLite when the snapshot lacks them or has null (the store is the record of
        both), and a missing ``chain`` object starts from the spec's ``rpc_url``. The RPC URL
        is shown by ``public_url`` whatever the snapshot holds."""
        snapshot = self._status()
        key = snapshot.get("signing_key")
        body: Json = plain(snapshot)
        if isinstance(key, (bytes, bytearray)):
            body["signing_key"] = b58(bytes(key))  # keys are base58, not the bytes default
        chain = body.get("chain")
        if not isinstance(chain, dict):
            chain = body["chain"] = {"rpc_url": self._spec.rpc_url, "last_posted_epoch": None,
                                     "last_error": None}
        if isinstance(chain.get("rpc_url"), str):
            chain["rpc_url"] = public_url(chain["rpc_url"])
        if body.get("last_final_epoch") is None or chain.get("last_posted_epoch") is None:
            last_final, last_posted = await self._pool.run(views.store_status)
            if body.get("last_final_epoch") is None:
                body["last_final_epoch"] = last_final
            if chain.get("last_posted_epoch") is None:
                chain["last_posted_epoch"] = last_posted
        return _json(body)

    async def _encoded(self, body: Any) -> web.Response:
        return web.Response(body=await self._pool.encode(body), content_type="application/json")

    async def page(self, request: web.Request) -> web.Response:
        return self._file(dashboard.INDEX)

    async def page_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in dashboard.ASSETS:
            raise views.NotFound("no such dashboard file")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], headers={
            "Content-Type": dashboard.FILES[name], **dashboard.HEADERS})

    async def openapi_document(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def network(self, request: web.Request) -> web.Response:
        if self._chain is None:
            return web.Response(body=self._network_bytes, content_type="application/json")
        return _json({**self._network, "pool": await self._chain.pool_info()})

    async def healthz(self, request: web.Request) -> web.Response:
        """``validator.health`` over the snapshots and one store read: 200 or 503."""
        store_error = None
        try:
            await self._pool.run(views.healthz)
        except sqlite3.Error as exc:
            store_error = f"database unavailable ({exc})"
        health = assess(threshold=self._spec.threshold, status=self._status(),
                        telemetry=self._telemetry(), policy=self._health_policy,
                        now=time.time(), store_error=store_error)
        return _json(health.to_json(), 200 if health.ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = render(self._registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def epochs(self, request: web.Request) -> web.Response:
        limit = query_limit(request, DEFAULT_EPOCH_LIMIT)
        text = _query_one(request, "before")
        before = None if text is None else parse_epoch(text, "before")
        return await self._view(lambda conn: views.epoch_list(conn, limit, before))

    async def epoch(self, request: web.Request) -> web.Response:
        text = request.match_info.get("epoch")  # /epochs/latest has none
        epoch = None if text is None else parse_epoch(text)
        body = await self._pool.run(lambda conn: views.epoch_detail(conn, epoch))
        body["pool"] = None if self._chain is None else await self._chain.epoch(
            body["epoch"], bytes.fromhex(body["header_sha256"]))
        return await self._encoded(body)

    async def claims(self, request: web.Request) -> web.Response:
        epoch = parse_epoch(request.match_info["epoch"])
        payout = parse_key(request.match_info["payout"], "payout")
        return await self._view(lambda conn: views.epoch_claims(conn, epoch, payout))

    async def proof(self, request: web.Request) -> web.Response:
        epoch = parse_epoch(request.match_info["epoch"])
        provider = parse_key(request.match_info["provider"])
        return await self._view(lambda conn: views.epoch_proof(conn, epoch, provider))

    async def evidence(self, request: web.Request) -> web.Response:
        limit = query_limit(request, DEFAULT_EPOCH_LIMIT)
        text = _query_one(request, "before")
        before = None if text is None else parse_epoch(text, "before")
        return await self._view(lambda conn: views.evidence_list(conn, limit, before))

    async def providers(self, request: web.Request) -> web.Response:
        limit = query_limit(request, DEFAULT_PROVIDER_LIMIT)
        text = _query_one(request, "after")
        after = None if text is None else parse_key(text, "after")
        return await self._view(lambda conn: views.provider_list(conn, limit, after))

    async def provider(self, request: web.Request) -> web.Response:
        provider = parse_key(request.match_info["key"])
        body, rows = await self._pool.run(lambda conn: (
            views.provider_detail(conn, self._spec, provider), views.recent_records(conn, provider)))
        if self._chain is None:
            body["payouts"], body["payouts_error"] = [views.payout_entry(row) for row in rows], None
        else:
            body["payouts"], body["payouts_error"] = await self._chain.payouts(rows)
        return _json(body)


def network_json(spec: NetworkSpec) -> Json:
    body = spec.to_dict()
    body.update(n=spec.n, f=spec.f, threshold=spec.threshold,
                config_digest=spec.config_digest.hex(), weight_formula=views.weight_formula(spec))
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _track(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection a request is being handled (no idle or header deadline then)."""
    connection = request.protocol
    if not isinstance(connection, _Connection):  # a test client's transport, say
        return await handler(request)
    connection.request_started()
    try:
        return await handler(request)
    finally:
        connection.request_finished()


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as ``{"error": ...}``; the 500 is a logged safety net, not a path."""
    try:
        return await handler(request)
    except views.ApiError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:  # the router's 404 and 405
        if exc.status == 404:
            return _error(404, "no such path")
        if exc.status == 405:
            resp = _error(405, "method not allowed: use GET or HEAD")
            resp.headers["Allow"] = exc.headers.get("Allow", "GET,HEAD")
            return resp
        if exc.status >= 400:
            return _error(exc.status, exc.reason.lower())
        raise
    except sqlite3.OperationalError as exc:  # file missing, locked past busy_timeout, ...
        log.warning("api_db_unavailable", error=str(exc))
        return _error(503, "database unavailable")
    except Exception:
        log.exception("api_internal_error", method=request.method[:16],
                      path=request.raw_path[:200])
        return _error(500, "internal")


def make_app(db_path: Path, spec: NetworkSpec, status: Callable[[], Mapping[str, Any]], *,
             rpc_url: str | None = None, chain_timeout: float = CHAIN_TIMEOUT,
             telemetry: Telemetry = lambda: None,
             health_policy: HealthPolicy = HealthPolicy()) -> web.Application:
    """The API over the SQLite file at ``db_path``. Only GET and HEAD routes exist.

    Chain reads (when the spec names a pool) go to ``rpc_url``, default the spec's
    ``rpc_url``, each bounded by ``chain_timeout`` seconds. ``app[HTTP_STATISTICS]`` counts
    the connections ``start_api`` refuses or cuts off. ``telemetry`` (the node's
    ``NodeTelemetry`` snapshot; None: not counted yet) and ``health_policy`` feed
    ``/metrics`` and ``/healthz``.
    """
    pool = _ReadPool(db_path)
    chain = PoolReader.for_spec(spec, rpc_url, chain_timeout)
    api = _Api(pool, spec, status, chain, telemetry=telemetry, health_policy=health_policy)
    app = web.Application(middlewares=[_track, _errors])
    app[HTTP_STATISTICS] = HttpStatistics()
    for path, handler in (
            ("/", api.page), ("/dashboard/{name}", api.page_file),
            ("/openapi.json", api.openapi_document),
            ("/status", api.status), ("/network", api.network), ("/healthz", api.healthz),
            ("/epochs", api.epochs), ("/epochs/latest", api.epoch), ("/epochs/{epoch}", api.epoch),
            ("/epochs/{epoch}/proof/{provider}", api.proof),
            ("/epochs/{epoch}/claims/{payout}", api.claims),
            ("/providers", api.providers), ("/providers/{key}", api.provider),
            ("/evidence", api.evidence), ("/metrics", api.metrics)):
        app.router.add_get(path, handler)  # GET also answers HEAD

    async def close_pool(_: web.Application) -> None:
        if chain is not None:
            await chain.aclose()
        await asyncio.get_running_loop().run_in_executor(None, pool.close)

    app.on_cleanup.append(close_pool)
    return app


class _Connections:
    """The live connections of one site: the cap, the deadlines' sweep, the statistics."""

    def __init__(self, stats: HttpStatistics, max_connections: int = MAX_CONNECTIONS) -> None:
        self.stats = stats
        self._max = max_connections
        self._live: set[_Connection] = set()

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, connection: _Connection) -> bool:
        """Room for ``connection``: at the cap, the connection that has waited longest
        without a request being answered (idle or reading) is evicted for it, so holding
        every slot idle keeps nobody out for longer than it takes to send a request. False
        when every connection is being answered."""
        if len(self._live) >= self._max:
            waiting = [c for c in self._live if c.waiting]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c.waiting_since)
            self._live.discard(oldest)
            self.stats.count("evicted")
            oldest.force_close()
        self._live.add(connection)
        return True

    def remove(self, connection: _Connection) -> None:
        self._live.discard(connection)

    def sweep(self, now: float) -> None:
        for connection in list(self._live):
            connection.check(now)

    async def sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(loop.time())


# Answer to a connection over MAX_CONNECTIONS, written before any request was read.
_BUSY_BODY = _dumps({"error": "too many connections; try again"})
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n" + _BUSY_BODY)

IDLE, READING, HANDLING = "idle", "reading", "handling"


class _Connection(web.RequestHandler):
    """One HTTP connection: aiohttp's request handler, our limits, and JSON parser errors.

    At ``MAX_CONNECTIONS`` a new connection evicts the idle or reading connection that has
    waited longest (``evicted``); if every connection is being handled, the new one is
    answered 503 and closed in ``connection_made``, before aiohttp sees it
    (``connection_limit``). Otherwise it is in one of three states, whose deadlines
    ``_Connections.sweep`` checks every ``SWEEP_SECONDS``:

    | state    | entered when                        | deadline                        | then                  |
    |----------|-------------------------------------|---------------------------------|-----------------------|
    | idle     | it opens; a request's handler ends  | ``IDLE_TIMEOUT_SECONDS`` later  | closed; counted       |
    |          |                                     |                                 | ``idle_timeout`` only |
    |          |                                     |                                 | if it never sent data |
    | reading  | a byte arrives while idle           | ``HEADER_TIMEOUT_SECONDS`` later| closed,               |
    |          |                                     |                                 | ``header_timeout``    |
    | handling | the handler starts (``_track``)     | none: handlers are bounded      |                       |

    In every state, a response whose buffered bytes shrink by less than ``SEND_MIN_PROGRESS``
    in ``SEND_STALL_SECONDS`` (the client stopped reading, or sips) is aborted,
    ``send_stalled``; while bytes are leaving, an idle connection's deadline moves with them. aiohttp's own keep-alive timer stays on as
    a backstop, later than ours.

    Parser refusals (a method aiohttp does not know, raw bytes in the request line, a line
    over ``MAX_LINE_SIZE`` or a header over ``MAX_FIELD_SIZE``, not HTTP at all) come to
    ``handle_error`` before routing and middlewares; aiohttp would answer them in plain text
    echoing the request line. They are answered in the same JSON as everything else, without
    the echo, counted ``bad_request`` or ``line_too_long``, and the connection is closed.
    """

    __slots__ = ("_registry", "_state", "_since", "_used", "_buffered", "_buffered_since",
                 "_refused")

    def __init__(self, manager: web.Server, *, registry: _Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._registry = registry
        self._state = IDLE
        self._since = 0.0
        self._used = False  # it sent at least one byte
        self._buffered = 0
        self._buffered_since = 0.0
        self._refused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._registry.admit(self):
            self._refused = True
            self._registry.stats.count("connection_limit")
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        self._since = self._loop.time()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._registry.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if data:
            self._used = True
            if self._state == IDLE:
                self._state, self._since = READING, self._loop.time()
        super().data_received(data)

    # -- the request's life (from the _track middleware) -------------------------------------
    @property
    def waiting(self) -> bool:
        """Idle or reading a request, nothing of ours left to send: evictable."""
        transport = self.transport
        return (self._state != HANDLING and isinstance(transport, asyncio.WriteTransport)
                and not transport.get_write_buffer_size())

    @property
    def waiting_since(self) -> float:
        return self._since

    def request_started(self) -> None:
        self._state = HANDLING

    def request_finished(self) -> None:
        self._state, self._since = IDLE, self._loop.time()

    def check(self, now: float) -> None:
        """Apply the deadlines of the table above at time ``now`` (the loop's clock)."""
        transport = self.transport
        if transport is None or not isinstance(transport, asyncio.WriteTransport):
            return
        buffered = transport.get_write_buffer_size()
        if buffered:
            # The mark (_buffered at _buffered_since) moves when more was written or enough
            # has left since; a response that has not left by then is stalled.
            if (not self._buffered or buffered > self._buffered
                    or buffered <= self._buffered - SEND_MIN_PROGRESS):
                self._buffered, self._buffered_since = buffered, now
            elif now - self._buffered_since >= SEND_STALL_SECONDS:
                self._registry.stats.count("send_stalled")
                log.info("http_dropped", reason="send_stalled", buffered=buffered)
                transport.abort()
                return
            if self._state == IDLE:
                self._since = now  # the last response is still leaving
            return
        self._buffered = 0
        if self._state == IDLE and now - self._since >= IDLE_TIMEOUT_SECONDS:
            if not self._used:
                self._registry.stats.count("idle_timeout")
            self.force_close()
        elif self._state == READING and now - self._since >= HEADER_TIMEOUT_SECONDS:
            self._registry.stats.count("header_timeout")
            self.force_close()

    # -- parser refusals ---------------------------------------------------------------------
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("response already started")
        if status >= 500:
            log.error("api_internal_error", exc_info=exc)
            resp = _error(500, "internal")
        elif isinstance(exc, http_exceptions.BadHttpMethod):
            self._registry.stats.count("bad_request")
            resp = _error(405, "method not allowed: use GET or HEAD")
            resp.headers["Allow"] = "GET,HEAD"
        elif isinstance(exc, http_exceptions.LineTooLong):
            self._registry.stats.count("line_too_long")
            resp = _error(status, "request line or header too long")
        else:
            self._registry.stats.count("bad_request")
            resp = _error(status, "malformed HTTP request")
        resp.force_close()
        return resp


class _Site(web.BaseSite):
    """A TCP site whose connections are ``_Connection``s (``web.TCPSite`` otherwise), with
    the sweep of their deadlines running while it does."""

    __slots__ = ("_host", "_port", "_registry", "_sweeper")

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 registry: _Connections) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._registry = registry
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None  # runner.setup() ran: BaseSite checks it
        registry = self._registry
        self._server = await loop.create_server(
            lambda: _Connection(
                server, loop=loop, registry=registry, max_line_size=MAX_LINE_SIZE,
                max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS,
                lingering_time=LINGER_SECONDS,
                keepalive_timeout=IDLE_TIMEOUT_SECONDS + HEADER_TIMEOUT_SECONDS + 1),
            self._host, self._port, backlog=self._backlog, reuse_address=True)
        self._sweeper = loop.create_task(registry.sweep_forever(), name="api-deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        await super().stop()


async def start_api(app: web.Application, host: str = "127.0.0.1", port: int = 0, *,
                    max_connections: int = MAX_CONNECTIONS) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (port 0 picks one); returns the runner and bound port.

    The connection limits of ``_Connection`` apply, with ``max_connections`` open at once;
    refusals are counted in
    ``app[HTTP_STATISTICS]`` (created here if ``app`` did not come from ``make_app``).
    Stop with ``await runner.cleanup()``. A port in use raises OSError from here.
    """
    if HTTP_STATISTICS not in app:
        app[HTTP_STATISTICS] = HttpStatistics()
    registry = _Connections(app[HTTP_STATISTICS], max_connections)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await _Site(runner, host, port, registry).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]
