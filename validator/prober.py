"""The validator's prober (DESIGN §6): heartbeats, echo RTTs and throughput, per epoch.

Two entry points:

- ``probe_provider`` runs each probe once against one provider (CLI ``validator probe`` and
  benchmarks);
- ``EpochProber`` runs a whole epoch for the providers assigned to this validator: a heartbeat
  per round at a time jittered by the epoch seed, a few echo sessions, one down and one up
  throughput probe per provider (one at a time for the whole validator), and then turns what
  it saw into ``Observation``s.

Data plane: a data connection is opened only where ``validator.data_policy.data_address``
says (the control connection's observed address, in an address class the ``DataPolicy``
allows), and its first bytes are the session token this validator chose: a registration
cannot aim our traffic, or bytes of its choosing, at a host that is not the provider.

Time: scheduling uses trio's clock, mapped to wall time through an injected ``now()`` so the
schedule runs under ``trio.testing.MockClock``. Errors: everything a provider can cause (dial
failures, closed streams, undecodable replies, timeouts, refused or reset TCP connections) is
caught per task, counted in ``dropped`` by reason and turned into a not-ok heartbeat or a zero
rate; only our own bugs propagate.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import socket
import statistics
import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import structlog
import trio

from p2p.abc import DialError, FrameTooLarge, PeerError, Stream, Transport
from proofs import probe as wire
from proofs.challenges import NONCE_SIZE, SEED_SIZE, Keystream, verify_heartbeat
from proofs.codec import U32_MAX
from proofs.errors import BadSignature, DecodeError
from proofs.location import outside_bound
from proofs.messages import Observation, Registration
from proofs.report import Flag
from proofs.signing import public_key
from validator.data_policy import (DataHostRefused, DataPolicy, data_address,
                                   observed_address)
from validator.spec import NetworkSpec, ProbeParams

log = structlog.get_logger(__name__)

IO_SIZE = 1 << 20  # data-plane reads and writes: big buffers keep Python out of the hot path
ECHO_SESSIONS_PER_EPOCH = 3
ECHO_PAYLOAD_SIZE = 16
RESULT_SLACK_SECONDS = 2.0  # extra time the provider gets to drain and digest an upload
_TCP_INFO_SIZE = 232  # enough of Linux's struct tcp_info to reach tcpi_bytes_acked
_LAST_ACK_RECV_OFFSET = 56  # u32 tcpi_last_ack_recv, ms since the last ACK arrived
_BYTES_ACKED_OFFSET = 120  # u64 tcpi_bytes_acked (Linux >= 4.1)


class ProbeFailed(Exception):
    """A provider answered, but wrongly (declined, wrong peer, echo mismatch, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# What a provider (or the network on its side) can make a probe raise. Caught per task and
# counted; anything else is our bug and propagates.
PEER_ERRORS = (PeerError, DecodeError, BadSignature, ProbeFailed, DataHostRefused, OSError,
               trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


def drop_reason(error: BaseException) -> str:
    """A stable counter name for a peer-caused failure."""
    if isinstance(error, (ProbeFailed, DataHostRefused)):
        return error.reason
    if isinstance(error, DecodeError):
        return f"decode_{error.reason}"
    if isinstance(error, trio.TooSlowError):
        return "timeout"
    if isinstance(error, DialError):
        return "dial_failed"
    if isinstance(error, FrameTooLarge):
        return "frame_too_large"
    if isinstance(error, PeerError):
        return "stream_closed"
    if isinstance(error, BadSignature):
        return "bad_signature"
    return "connection_error"


@dataclass(frozen=True)
class ProbeTarget:
    """Where and who a provider is: its key (= libp2p identity), control and data addresses."""

    provider: bytes
    multiaddr: str  # full, with /p2p/<peer id>
    data_host: str
    data_port: int

    @property
    def peer_id(self) -> str:
        return wire.peer_id_from_public_key(self.provider)

    @classmethod
    def from_registration(cls, registration: Registration) -> "ProbeTarget":
        return cls(registration.provider, registration.multiaddr, registration.data_host,
                   registration.data_port)


@dataclass(frozen=True)
class ProbeResult:
    """One ``probe_provider`` run. ``problems`` names what went wrong (drop reasons)."""

    heartbeat_ok: bool
    rtt_median_us: int
    rtt_min_us: int
    down_kbps: int
    up_kbps: int
    flags: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Throughput:
    kbps: int
    flags: int
    byte_count: int


# -- control plane -----------------------------------------------------------------------------
class Control:
    """One control stream to a provider: request/response pairs, each under a deadline.

    ``observed`` is the remote IP of the stream's connection (``observed_address``): where
    the Noise-authenticated provider key actually is.
    """

    def __init__(self, stream: Stream, target: ProbeTarget) -> None:
        self.stream = stream
        self.target = target
        self.observed = observed_address(stream)

    @classmethod
    async def open(cls, transport: Transport, target: ProbeTarget) -> "Control":
        """Dial if needed, open a stream, and check the remote is the registered key.

        The caller bounds the time (``trio.fail_after``). Raises DialError or ProbeFailed.
        """
        peer_id = target.peer_id
        if peer_id not in transport.connected_peers():
            dialled = await transport.connect(target.multiaddr)
            if dialled != peer_id:
                raise ProbeFailed("wrong_peer", f"{target.multiaddr} is {dialled}")
        stream = await transport.open_stream(peer_id, wire.PROTOCOL)
        # The transport opened the stream to peer_id; checking what Noise authenticated keeps
        # this true for every Transport implementation, not only the ones we wrote.
        if stream.remote_peer != peer_id:
            await stream.aclose()
            raise ProbeFailed("wrong_peer", f"stream is from {stream.remote_peer}")
        return cls(stream, target)

    async def call(self, request: wire.Request, timeout: float) -> wire.Response:
        """Send ``request`` and decode the reply. An ErrorReply raises ProbeFailed."""
        with trio.fail_after(timeout):
            await self.stream.write_frame(request.encode())
            reply = wire.decode_response(await self.stream.read_frame(wire.MAX_RESPONSE_BYTES))
        if isinstance(reply, wire.ErrorReply):
            raise ProbeFailed("declined", reply.reason)
        return reply

    async def timed_call(self, request: wire.Request,
                         timeout: float) -> tuple[wire.Response, float]:
        """``call``, plus the seconds from the request having been written (handed to the
        transport, which sends it) to the reply having been read: a round trip that leaves
        out our own encoding and encryption of the request (~0.2 ms in py-libp2p)."""
        with trio.fail_after(timeout):
            await self.stream.write_frame(request.encode())
            written = trio.current_time()
            reply = wire.decode_response(await self.stream.read_frame(wire.MAX_RESPONSE_BYTES))
            elapsed = trio.current_time() - written
        if isinstance(reply, wire.ErrorReply):
            raise ProbeFailed("declined", reply.reason)
        return reply, elapsed

    async def aclose(self) -> None:
        await self.stream.aclose()


Reply = TypeVar("Reply", bound=wire.Response)


def _expect(reply: wire.Response, kind: type[Reply]) -> Reply:
    """``reply`` if it is a ``kind``; otherwise the provider answered out of turn."""
    if not isinstance(reply, kind):
        raise ProbeFailed("unexpected_reply", type(reply).__name__)
    return reply


async def check_heartbeat(transport: Transport, target: ProbeTarget, *, network_id: str,
                          epoch: int, validator_seed: bytes, timeout: float) -> bool:
    """One heartbeat with a fresh nonce, from dial to verified answer within ``timeout``.

    Returns True if answered correctly. Raises BadSignature when the answer is signed by
    another key or for another challenge (a replay); other peer errors as they come.
    """
    nonce = secrets.token_bytes(NONCE_SIZE)
    validator_key = public_key(validator_seed)
    with trio.fail_after(timeout):
        control = await Control.open(transport, target)
        try:
            reply = await control.call(wire.HeartbeatRequest(epoch, nonce, validator_key),
                                       timeout)
        finally:
            await control.aclose()
    reply = _expect(reply, wire.HeartbeatReply)
    verify_heartbeat(target.provider, network_id, epoch, nonce, validator_key, reply.signature)
    return True


async def measure_rtts(control: Control, count: int, timeout: float) -> list[int]:
    """``count`` echo round trips; RTTs in microseconds on trio's clock, each from the request
    having been written to the reply having been read (``Control.timed_call``)."""
    rtts: list[int] = []
    for _ in range(count):
        payload = secrets.token_bytes(ECHO_PAYLOAD_SIZE)
        reply, elapsed = await control.timed_call(wire.EchoRequest(payload), timeout)
        if not isinstance(reply, wire.EchoReply) or reply.payload != payload:
            raise ProbeFailed("echo_mismatch")
        rtts.append(max(1, int(elapsed * 1_000_000)))
    return rtts


# -- data plane --------------------------------------------------------------------------------
async def _open_data(address: tuple[str, int], token: bytes,
                     timeout: float) -> trio.SocketStream | None:
    """Connect to ``address`` and present our token; None if it cannot be reached."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(*address)
            try:
                await stream.send_all(token)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None
    return stream


def _window(params: ProbeParams) -> tuple[float, int]:
    """The throughput window in seconds and ms, within what a provider accepts."""
    window_ms = max(1, min(wire.MAX_WINDOW_MS, round(params.throughput_seconds * 1000)))
    return window_ms / 1000, window_ms


async def _open_session(control: Control, request: wire.Request, policy: DataPolicy,
                        timeout: float) -> int:
    """Ask for a session; its byte limit (0: none). ProbeFailed ``byte_limited`` if the
    provider caps it and the policy does not take capped sessions."""
    reply = _expect(await control.call(request, timeout), wire.SessionReply)
    if reply.byte_limit and not policy.accept_byte_limit:
        raise ProbeFailed("byte_limited", str(reply.byte_limit))
    return reply.byte_limit


async def measure_down(control: Control, params: ProbeParams,
                       rng: random.Random | None = None, *,
                       policy: DataPolicy = DataPolicy()) -> Throughput:
    """Read ``Keystream(seed)`` for one window; rate after warm-up; verify private samples.

    Once the session is granted, ``data_address`` decides where to connect (DataHostRefused
    if nowhere). A session with a byte limit ends there: a stream that ends at its limit is
    complete, and its rate counts over the span it lasted.
    Flags: DATA_PORT_UNREACHABLE (no connection), TRUNCATED_STREAM (ended inside the window),
    THROUGHPUT_FRAUD (a sampled chunk is not the keystream). Any flag scores 0.
    """
    seed = secrets.token_bytes(SEED_SIZE)
    token = secrets.token_bytes(wire.TOKEN_SIZE)
    window, window_ms = _window(params)
    limit = await _open_session(control, wire.DownRequest(seed, window_ms, token), policy,
                                params.heartbeat_timeout_seconds)
    address = await data_address(control.observed, control.target.data_host,
                                 control.target.data_port, policy)
    stream = await _open_data(address, token, params.heartbeat_timeout_seconds)
    if stream is None:
        return Throughput(0, Flag.DATA_PORT_UNREACHABLE, 0)
    sampler = wire.ChunkSampler(rng or random.SystemRandom())
    buffer = bytearray(IO_SIZE)
    view = memoryview(buffer)
    timeline: list[tuple[float, int]] = []
    total = 0
    truncated = False
    start = trio.current_time()
    try:
        with trio.move_on_at(start + window):
            while True:
                try:
                    n = await stream.socket.recv_into(buffer)
                except OSError:  # reset by the provider: same as ending early
                    n = 0
                if n == 0:
                    truncated = True
                    break
                if limit:
                    n = min(n, limit - total)  # anything past the announced end is not read
                sampler.feed(total, view[:n])
                total += n
                timeline.append((trio.current_time(), total))
                if limit and total >= limit:
                    break
    finally:
        await trio.aclose_forcefully(stream)
    flags = 0
    if truncated:
        flags |= Flag.TRUNCATED_STREAM
    if sampler.mismatches(seed):
        flags |= Flag.THROUGHPUT_FRAUD
    if flags:
        return Throughput(0, flags, total)
    span = window if not limit or total < limit else timeline[-1][0] - start
    return Throughput(wire.steady_kbps(timeline, start, span, params.warmup_fraction), 0,
                      total)


def _acked_point(sock: trio.socket.SocketType, now: float) -> tuple[float, int] | None:
    """``(time, bytes)``: what the peer's TCP had acknowledged on ``sock`` and when that
    acknowledgement arrived (Linux ``tcpi_bytes_acked`` and ``tcpi_last_ack_recv``, ms
    resolution); None where TCP_INFO does not carry them.

    Dating the count by the ACK's arrival rather than by ``now`` matters: a receiver that
    reads slowly gets delayed ACKs (up to 40-200 ms), and pairing an old count with ``now``
    would credit the bytes delivered in between twice.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError):
        return None
    if len(info) < _BYTES_ACKED_OFFSET + 8:
        return None
    since_ms = struct.unpack_from("=I", info, _LAST_ACK_RECV_OFFSET)[0]
    return now - since_ms / 1000, int(struct.unpack_from("=Q", info, _BYTES_ACKED_OFFSET)[0])


def keystream_digest(seed: bytes, length: int) -> bytes:
    """BLAKE2b-256 of the first ``length`` bytes of ``Keystream(seed)`` (CPU-bound: run it in
    a thread; about 0.25 s per Gbit)."""
    keystream = Keystream(seed)
    hasher = hashlib.blake2b(digest_size=wire.DIGEST_SIZE)
    block = bytearray(IO_SIZE)
    view = memoryview(block)
    while length > 0:
        n = min(length, IO_SIZE)
        keystream.next_into(view[:n])
        hasher.update(view[:n])
        length -= n
    return hasher.digest()


async def measure_up(control: Control, params: ProbeParams, *,
                     policy: DataPolicy = DataPolicy()) -> Throughput:
    """Write keystream bytes for one window, then compare the provider's count and digest.

    The rate counts the bytes delivered after the warm-up slice over the time until the
    provider's report confirmed them (``delivered_kbps``): the start point is what the
    provider's TCP had acknowledged at the end of the warm-up slice, dated by that ACK
    (``_acked_point``; bytes written, where the kernel does not say), so neither our own send
    buffer nor its drain is miscounted. Acknowledging early cannot help a provider (it only
    raises the start point, and the digest still needs every byte); acknowledging less than
    it holds gains at most the bytes in flight, which TCP bounds to about one window. Our
    digest of what we sent is computed after the transfer, in a thread, so hashing never
    competes with sending.
    Data address and byte limits as in ``measure_down`` (a capped upload stops at the limit).
    Flags: DATA_PORT_UNREACHABLE, TRUNCATED_STREAM (provider closed inside the window),
    UPLOAD_MISMATCH (count or digest differ). Any flag scores 0.
    """
    window, window_ms = _window(params)
    timeout = params.heartbeat_timeout_seconds
    token = secrets.token_bytes(wire.TOKEN_SIZE)
    limit = await _open_session(control, wire.UpRequest(window_ms, token), policy, timeout)
    address = await data_address(control.observed, control.target.data_host,
                                 control.target.data_port, policy)
    stream = await _open_data(address, token, timeout)
    if stream is None:
        return Throughput(0, Flag.DATA_PORT_UNREACHABLE, 0)
    seed = secrets.token_bytes(SEED_SIZE)
    keystream = Keystream(seed)
    block = bytearray(IO_SIZE)
    view = memoryview(block)
    timeline: list[tuple[float, int]] = []  # (time, bytes acknowledged, else written)
    sent = 0
    truncated = False
    start = trio.current_time()
    try:
        with trio.move_on_at(start + window):
            while not limit or sent < limit:
                keystream.next_into(block)
                end = IO_SIZE if not limit else min(IO_SIZE, limit - sent)
                offset = 0
                while offset < end:
                    try:
                        # A raw socket send is atomic under cancellation (it either sent n
                        # bytes or nothing), so ``sent`` stays exact.
                        n = await stream.socket.send(view[offset:end])
                    except OSError:
                        truncated = True
                        break
                    offset += n
                    sent += n
                    now = trio.current_time()
                    point = _acked_point(stream.socket, now)
                    if point is None:
                        timeline.append((now, sent))
                    else:  # the token came first; keep the times ascending
                        at = max(point[0], timeline[-1][0] if timeline else start)
                        timeline.append((at, max(0, min(sent, point[1] - len(token)))))
                if truncated:
                    break
        if not truncated:
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, OSError):
                truncated = True
        if truncated:
            return Throughput(0, Flag.TRUNCATED_STREAM, sent)
        # The provider answers once it has read to our EOF; keep the socket open until then.
        report = await control.call(wire.UpResultRequest(token), timeout + RESULT_SLACK_SECONDS)
        delivered_at = trio.current_time()
    finally:
        await trio.aclose_forcefully(stream)
    report = _expect(report, wire.UpReport)
    if report.byte_count != sent or report.digest != await trio.to_thread.run_sync(
            keystream_digest, seed, sent, abandon_on_cancel=True):
        return Throughput(0, Flag.UPLOAD_MISMATCH, sent)
    span = window if not limit or sent < limit else (timeline[-1][0] - start if timeline else 0)
    return Throughput(wire.delivered_kbps(timeline, start, span, params.warmup_fraction,
                                          delivered_at, total=sent), 0, sent)


@dataclass(frozen=True)
class ThroughputPair:
    """One down and one up probe; ``problems`` are ``direction:reason`` drop names."""

    down_kbps: int
    up_kbps: int
    flags: int
    problems: tuple[str, ...]


async def measure_throughput(control: Control, params: ProbeParams,
                             policy: DataPolicy) -> ThroughputPair:
    """Down, then up, on one control stream. Peer failures become problems, never raise.

    A data host the policy refuses (``data_address``, checked once the first session is
    granted, before any connection) ends both: they score 0 with DATA_PORT_UNREACHABLE and
    the problem ``throughput:<reason>``, and not a byte goes to that host.
    """
    kbps = {"down": 0, "up": 0}
    flags = 0
    problems: list[str] = []
    for direction in ("down", "up"):
        try:
            result = await (measure_down(control, params, policy=policy) if direction == "down"
                            else measure_up(control, params, policy=policy))
        except DataHostRefused as refused:
            flags |= Flag.DATA_PORT_UNREACHABLE
            problems.append(f"throughput:{refused.reason}")
            break
        except PEER_ERRORS as error:
            problems.append(f"{direction}:{drop_reason(error)}")
            continue
        kbps[direction] = result.kbps
        flags |= result.flags
        problems.extend(f"{direction}:{Flag.NAMES[bit]}" for bit in sorted(Flag.NAMES)
                        if result.flags & bit)
    return ThroughputPair(kbps["down"], kbps["up"], flags, tuple(problems))


# -- one-shot ----------------------------------------------------------------------------------
def _rtt_summary(rtts: Sequence[int]) -> tuple[int, int]:
    if not rtts:
        return 0, 0
    return min(int(statistics.median(rtts)), U32_MAX), min(min(rtts), U32_MAX)


async def probe_provider(transport: Transport, target: Registration | ProbeTarget, *,
                         network_id: str, epoch: int, validator_seed: bytes,
                         params: ProbeParams,
                         policy: DataPolicy = DataPolicy.operator()) -> ProbeResult:
    """Heartbeat, ``params.echo_count`` echoes, one down and one up probe, in that order.

    Peer failures never raise: each step that fails is named in ``problems`` and scores
    not-ok or 0, plus a flag where the failure proves cheating. ``policy`` defaults to the
    operator's (``validator probe``): private data hosts are fine, but only where the
    provider's control connection is.
    """
    if isinstance(target, Registration):
        target = ProbeTarget.from_registration(target)
    problems: list[str] = []
    flags = 0
    timeout = params.heartbeat_timeout_seconds
    heartbeat_ok = False
    try:
        heartbeat_ok = await check_heartbeat(transport, target, network_id=network_id,
                                             epoch=epoch, validator_seed=validator_seed,
                                             timeout=timeout)
    except BadSignature:
        flags |= Flag.HEARTBEAT_BAD_SIG
        problems.append("bad_signature")
    except PEER_ERRORS as error:
        problems.append(drop_reason(error))
    rtts: list[int] = []
    try:
        with trio.fail_after(timeout):
            control = await Control.open(transport, target)
    except PEER_ERRORS as error:
        problems.append(drop_reason(error))
        return ProbeResult(heartbeat_ok, 0, 0, 0, 0, flags, tuple(problems))
    try:
        try:
            rtts = await measure_rtts(control, params.echo_count, timeout)
        except PEER_ERRORS as error:
            problems.append(f"echo:{drop_reason(error)}")
        throughput = await measure_throughput(control, params, policy)
    finally:
        await control.aclose()
    flags |= throughput.flags
    problems.extend(throughput.problems)
    down, up = throughput.down_kbps, throughput.up_kbps
    median, minimum = _rtt_summary(rtts)
    return ProbeResult(heartbeat_ok, median, minimum, down, up, flags, tuple(problems))


async def discover_target(transport: Transport, multiaddr: str, *,
                          data: tuple[str, int] | None = None,
                          timeout: float = 5.0) -> tuple[ProbeTarget, Registration]:
    """Learn a provider's data address from its signed registration (the ``info`` request).

    The key comes from the peer id in ``multiaddr``; the registration must be signed by it.
    ``data`` overrides the advertised data host and port. Raises DecodeError (bad peer id)
    or one of PEER_ERRORS.
    """
    peer_id = multiaddr.rstrip("/").rsplit("/p2p/", 1)[-1] if "/p2p/" in multiaddr else ""
    provider = wire.public_key_from_peer_id(peer_id)
    provisional = ProbeTarget(provider, multiaddr, "", 0)
    with trio.fail_after(timeout):
        control = await Control.open(transport, provisional)
        try:
            reply = await control.call(wire.InfoRequest(), timeout)
        finally:
            await control.aclose()
    reply = _expect(reply, wire.InfoReply)
    registration = reply.registration
    if registration.provider != provider:
        raise ProbeFailed("wrong_registration", "registration is for another key")
    registration.verify()
    host, port = data if data is not None else (registration.data_host, registration.data_port)
    return ProbeTarget(provider, multiaddr, host, port), registration


# -- one epoch ---------------------------------------------------------------------------------
@dataclass
class _Tally:
    heartbeats_sent: int = 0
    heartbeats_ok: int = 0
    rtts: list[int] = field(default_factory=list)
    heartbeat_rtt_min_us: int = 0  # fastest answered heartbeat, stream open included; 0: none
    down_kbps: int = 0
    up_kbps: int = 0
    flags: int = 0
    throughput_done: bool = False


class EpochProber:
    """Measures the providers assigned to this validator for one epoch.

    ``seed`` is the epoch seed: it jitters heartbeat times inside each round and spreads echo
    and throughput probes over the epoch, so providers cannot predict them. ``now()`` gives
    wall time (unix seconds); trio's clock does the waiting. ``throughput_lock`` is shared by
    every prober of one validator (epochs overlap at their edges) so throughput probes never
    run concurrently and never measure each other.
    """

    def __init__(self, transport: Transport, spec: NetworkSpec, *, epoch: int,
                 validator_seed: bytes, providers: Sequence[Registration], seed: bytes,
                 now: Callable[[], float], throughput_lock: trio.Lock | None = None,
                 echo_sessions: int = ECHO_SESSIONS_PER_EPOCH) -> None:
        self._transport = transport
        self._spec = spec
        self._params = spec.probes
        self._epoch = epoch
        self._validator_seed = validator_seed
        self._seed = seed
        self._now = now
        self._lock = throughput_lock or trio.Lock()
        self._echo_sessions = echo_sessions
        self._targets = {r.provider: ProbeTarget.from_registration(r) for r in providers}
        self._tally = {key: _Tally() for key in self._targets}
        self._claims = {r.provider: (r.lat_microdeg, r.lon_microdeg) for r in providers}
        self._home = spec.member(public_key(validator_seed))  # None: not in the spec
        self._location_counted: set[bytes] = set()
        self._logged: set[tuple[bytes, str]] = set()
        self._policy = DataPolicy.for_spec(spec)
        self.dropped: dict[str, int] = {}

    # -- the table of contents ---------------------------------------------------------------
    async def run(self, epoch_start: float, epoch_end: float) -> None:
        """Probe from ``epoch_start`` until ``epoch_end`` (wall times), then return.

        Probes still running at ``epoch_end`` are cancelled and count for nothing (neither
        sent nor failed): the provider is not blamed for our deadline.
        """
        with trio.move_on_at(self._deadline(epoch_end)):
            async with trio.open_nursery() as nursery:
                for provider in sorted(self._targets):
                    nursery.start_soon(self._heartbeat_loop, nursery, provider, epoch_start,
                                       epoch_end)
                    nursery.start_soon(self._echo_loop, provider, epoch_start, epoch_end)
                nursery.start_soon(self._throughput_worker, epoch_start, epoch_end)
            await trio.sleep_until(self._deadline(epoch_end))
        skipped = sum(1 for t in self._tally.values() if not t.throughput_done)
        if skipped:
            self._drop(None, "throughput_not_reached", count=skipped)

    def observations(self) -> tuple[Observation, ...]:
        """One observation per assigned provider, sorted by provider key.

        Adds LOCATION_MISMATCH where ``_location_flag`` says so (counted and logged once per
        provider however often this is called).
        """
        result = []
        for provider in sorted(self._tally):
            t = self._tally[provider]
            median, minimum = _rtt_summary(t.rtts)
            flags = t.flags | self._location_flag(provider, t)
            result.append(Observation(provider, t.heartbeats_sent, t.heartbeats_ok, median,
                                      minimum, t.down_kbps, t.up_kbps, flags))
        return tuple(result)

    def _location_flag(self, provider: bytes, tally: _Tally) -> int:
        """LOCATION_MISMATCH if the provider's claimed location is farther from this validator
        than the fastest round trip measured to it allows (``proofs.location``).

        The fastest of the echo RTTs and of the answered heartbeats (which include opening a
        stream, so they can only widen the bound). No RTT measured, no judgement: absence is
        uptime's business. A validator missing from the spec has no known location: no flag.
        """
        measured = [*tally.rtts, tally.heartbeat_rtt_min_us]
        fastest = min((rtt for rtt in measured if rtt > 0), default=0)
        if self._home is None or fastest == 0:
            return 0
        lat, lon = self._claims[provider]
        if not outside_bound(self._home.lat, self._home.lon, lat, lon, fastest):
            return 0
        if provider not in self._location_counted:
            self._location_counted.add(provider)
            self._drop(provider, "location_mismatch")
        return Flag.LOCATION_MISMATCH

    # -- loops -------------------------------------------------------------------------------
    def _deadline(self, wall: float) -> float:
        """The trio-clock time at which ``now()`` reads ``wall``."""
        return trio.current_time() + (wall - self._now())

    async def _sleep_until_wall(self, wall: float) -> None:
        await trio.sleep_until(self._deadline(wall))

    async def _heartbeat_loop(self, nursery: trio.Nursery, provider: bytes, epoch_start: float,
                              epoch_end: float) -> None:
        """One heartbeat per round at its jittered time; each runs as its own task, because
        a slow answer (up to the timeout) may outlast the round. Rounds whose check time has
        already passed are skipped rather than fired in a burst."""
        round_seconds = float(self._spec.round_seconds)
        index = 0
        while (round_start := epoch_start + index * round_seconds) < epoch_end:
            length = min(round_seconds, epoch_end - round_start)
            due = round_start + wire.heartbeat_offset(self._seed, provider, index, length)
            index += 1
            if due < self._now():
                continue  # started late (restart mid-epoch): that check time has passed
            await self._sleep_until_wall(due)
            nursery.start_soon(self._one_heartbeat, provider)

    async def _one_heartbeat(self, provider: bytes) -> None:
        tally = self._tally[provider]
        ok = False
        started = trio.current_time()
        try:
            ok = await check_heartbeat(self._transport, self._targets[provider],
                                       network_id=self._spec.network_id, epoch=self._epoch,
                                       validator_seed=self._validator_seed,
                                       timeout=self._params.heartbeat_timeout_seconds)
        except BadSignature:
            tally.flags |= Flag.HEARTBEAT_BAD_SIG
            self._drop(provider, "heartbeat_bad_sig")
        except PEER_ERRORS as error:
            self._drop(provider, f"heartbeat_{drop_reason(error)}")
        tally.heartbeats_sent += 1
        tally.heartbeats_ok += int(ok)
        if ok:
            rtt = max(1, int((trio.current_time() - started) * 1_000_000))
            if not tally.heartbeat_rtt_min_us or rtt < tally.heartbeat_rtt_min_us:
                tally.heartbeat_rtt_min_us = rtt

    async def _echo_loop(self, provider: bytes, epoch_start: float, epoch_end: float) -> None:
        """``echo_sessions`` echo sessions, one somewhere in each equal slice of the epoch."""
        sessions = self._echo_sessions
        slice_seconds = (epoch_end - epoch_start) / max(1, sessions)
        timeout = self._params.heartbeat_timeout_seconds
        for i in range(sessions):
            label = b"echo" + bytes([i % 256])
            due = epoch_start + i * slice_seconds + wire.spread_offset(
                self._seed, provider, label, slice_seconds)
            await self._sleep_until_wall(due)
            try:
                with trio.fail_after(timeout):
                    control = await Control.open(self._transport, self._targets[provider])
                try:
                    self._tally[provider].rtts.extend(
                        await measure_rtts(control, self._params.echo_count, timeout))
                finally:
                    await control.aclose()
            except PEER_ERRORS as error:
                self._drop(provider, f"echo_{drop_reason(error)}")

    async def _throughput_worker(self, epoch_start: float, epoch_end: float) -> None:
        """Down then up for each provider, one provider at a time, spread over the epoch.

        Providers are ordered by ``H(seed || provider)`` and each gets an equal slot; a probe
        that overruns its slot only delays the next one.
        """
        order = sorted(self._targets, key=lambda p: wire.spread_offset(
            self._seed, p, b"throughput", 1.0))
        if not order:
            return
        slot = (epoch_end - epoch_start) / len(order)
        for i, provider in enumerate(order):
            await self._sleep_until_wall(epoch_start + i * slot)
            async with self._lock:
                await self._throughput_one(provider)

    async def _throughput_one(self, provider: bytes) -> None:
        tally = self._tally[provider]
        try:
            with trio.fail_after(self._params.heartbeat_timeout_seconds):
                control = await Control.open(self._transport, self._targets[provider])
        except PEER_ERRORS as error:
            self._drop(provider, f"throughput_{drop_reason(error)}")
            tally.throughput_done = True
            return
        try:
            result = await measure_throughput(control, self._params, self._policy)
        finally:
            await control.aclose()
        tally.down_kbps, tally.up_kbps = result.down_kbps, result.up_kbps
        tally.flags |= result.flags
        for problem in result.problems:
            self._drop(provider, problem.replace(":", "_"))
        tally.throughput_done = True

    def _drop(self, provider: bytes | None, reason: str, count: int = 1) -> None:
        """Count a peer failure; log the first of each reason per provider."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        key = (provider or b"", reason)
        if key not in self._logged:
            self._logged.add(key)
            log.info(reason, epoch=self._epoch, provider=provider or None,  # base58 in logs
                     count=count)
