"""The provider agent (``validator provide``): answers probes with the provider's own key.

What it owns:

- the key file (32-byte ed25519 seed, hex, mode 0600): the same seed is the libp2p identity,
  so a Noise-authenticated stream proves the registered key is on the other end;
- ``ProbeService``: the ``/bwpool/probe/1.0.0`` control plane (heartbeat, echo, info,
  throughput sessions) and the plain-TCP data port (keystream out, upload digest in);
- the signed ``Registration``, published on the registrations topic when peers connect and
  again every epoch;
- with ``auto_claim``, ``AutoClaimer``: once per epoch it claims what the pool owes the
  payout address (``validator.claims.claim_all`` on the asyncio side of a bridge, the
  provider key paying the fees); failures are logged as ``claim_failed`` and retried the
  next epoch, and each round logs a ``claims`` line with the counts by outcome.

Only the spec's validators (and the operator's own probe keys, and a small public pool if the
operator opens one) get heartbeats, echoes and throughput sessions: the rules and per-caller
limits are ``validator.probe_access``'s. Everything a remote peer sends is bounded (frame
sizes, requests per stream, sessions per caller and epoch, token lifetime and read deadline,
data connections with eviction of those that never authenticate, stream durations) and what
is refused is counted in ``ProbeService.dropped`` by reason (``statistics()``), logged once
per reason, and kept in ``--status-file`` as JSON if given; none of it stops the agent.
Operator mistakes (key file, payout, coordinates, ports) raise ``ProviderConfigError`` before
anything is served.

Cheating providers for the adversarial tests subclass ``ProbeService`` in tests/, overriding
``heartbeat_signature``, ``send_down`` or ``receive_up``; nothing here knows about them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import socket
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import base58
import structlog
import trio

from p2p.abc import P2PError, PeerError, Stream, StreamClosed, Transport
from proofs import probe as wire
from proofs.challenges import Keystream, sign_heartbeat
from proofs.errors import DecodeError
from proofs.messages import MAX_REGISTRATION_BYTES, MAX_TEXT, Registration
from proofs.signing import public_key
from validator import keys
from validator.addresses import provider_announce_problem
from validator.probe_access import AccessOptions, Admission, ProbeGate, Role
from validator.spec import NetworkSpec

log = structlog.get_logger(__name__)

IO_SIZE = 1 << 20
MAX_REQUESTS_PER_STREAM = 256
# A control stream idles while its data session runs (up to MAX_WINDOW_MS), then asks for the
# upload result: the idle limit must cover that.
STREAM_IDLE_SECONDS = wire.MAX_WINDOW_MS / 1000 + 15.0
TOKEN_TTL_SECONDS = 10.0  # a token must be presented (and an up result fetched) within this
# Open data connections at most; when full, a new one evicts the oldest that has not shown a
# token yet, so connections that never authenticate cannot keep a session's connection out.
MAX_DATA_CONNECTIONS = 64
TOKEN_READ_SECONDS = 1.0  # the validator writes its token as soon as it is connected
DATA_SLACK_SECONDS = 5.0  # a data session outlives its requested window by at most this
# A down stream starts after the validator's window has (the token has to reach us first), so
# it keeps the validator's pipe full to its window's end with no slack at all; one second
# covers scheduling. An upload needs the longer slack: the validator's send buffer drains
# after its window.
DOWN_SLACK_SECONDS = 1.0
PUBLISH_SETTLE_SECONDS = 1.0  # without wait_for_mesh: about one gossipsub heartbeat
MESH_WAIT_SECONDS = 10.0
PEER_POLL_SECONDS = 1.0


class ProviderConfigError(Exception):
    """The operator's input is wrong; the message says what and how to fix it."""


@dataclass(frozen=True)
class ProviderOptions:
    key_path: Path
    listen: str = "/ip4/127.0.0.1/tcp/0"
    data_host: str = "127.0.0.1"  # bound
    data_port: int = 0
    data_announce: str = ""  # the data host the registration names; "": data_host
    announce: tuple[str, ...] = ()  # control multiaddrs peers dial; (): what listen bound
    payout: str | None = None  # base58 Solana address; default: the provider key itself
    region: str = ""
    lat: float = 0.0
    lon: float = 0.0
    auto_claim: bool = False  # claim the payout's rewards once per epoch
    validator_url: str = ""  # a validator's HTTP API (needed by auto_claim)
    rpc_url: str = ""  # Solana JSON-RPC for claims; default: the validator's /network rpc_url
    allow_probe: tuple[str, ...] = ()  # peer ids probed like validators (``validator probe``)
    public_probe_bytes: int = 0  # bytes per epoch for anyone else's probes together; 0: none
    status_file: Path | None = None  # where ``write_status`` keeps statistics() as JSON


# -- operator input ----------------------------------------------------------------------------
def load_or_create_key(path: Path) -> bytes:
    """Read the 32-byte seed (hex, mode 0600) at ``path``, or create it if missing.

    Refuses a key file that group or others can access: a leaked provider key lets anyone
    answer this provider's heartbeats. The file format is ``validator.keys``'s.
    """
    try:
        return keys.load_or_create_key(path)
    except keys.KeyFileError as error:
        raise ProviderConfigError(str(error)) from None
    except OSError as error:
        raise ProviderConfigError(f"{path}: cannot use key file ({error.strerror})") from None


def parse_payout(text: str | None, provider_key: bytes) -> bytes:
    """A base58 Solana address (32 bytes); without one, the provider key (also an address)."""
    if text is None or text == "":
        return provider_key
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ProviderConfigError(
            f"--payout {text!r}: not a base58 Solana address (32 bytes); copy it from your "
            "wallet, or leave it out to be paid at the provider key")
    return raw


def microdegrees(value: float, limit: int, name: str) -> int:
    if not math.isfinite(value) or abs(value) > limit:
        raise ProviderConfigError(f"--{name} {value}: must be between -{limit} and {limit}")
    return round(value * 1_000_000)


def build_registration(seed: bytes, network_id: str, options: ProviderOptions, multiaddr: str,
                       data_port: int, issued_at: int) -> Registration:
    """The signed registration; raises ProviderConfigError if a field cannot be encoded."""
    key = public_key(seed)
    if len(options.region) > 64:
        raise ProviderConfigError(f"--region {options.region!r}: at most 64 characters")
    data_host = options.data_announce or options.data_host
    for text, what in ((multiaddr, "control multiaddr"), (data_host, "--data-announce / --data-host")):
        if len(text) > MAX_TEXT:
            raise ProviderConfigError(f"{what} is longer than {MAX_TEXT} characters")
    registration = Registration(
        network_id=network_id, provider=key, payout=parse_payout(options.payout, key),
        region=options.region, lat_microdeg=microdegrees(options.lat, 90, "lat"),
        lon_microdeg=microdegrees(options.lon, 180, "lon"), multiaddr=multiaddr,
        data_host=data_host, data_port=data_port, issued_at=issued_at,
    ).signed_by(seed)
    if len(registration.encode()) > MAX_REGISTRATION_BYTES:
        raise ProviderConfigError("registration exceeds its size limit: shorten --region")
    return registration


def announced_multiaddr(options: ProviderOptions, bound: str, peer_id: str) -> str:
    """The registration's control multiaddr: the first ``--announce`` (with our /p2p id),
    else the bound one (which already carries it)."""
    if not options.announce:
        return bound
    return "/".join(options.announce[0].split("/")[:5]) + f"/p2p/{peer_id}"


def open_data_listener(host: str, port: int) -> trio.SocketListener:
    """One TCP listener on ``host:port`` (port 0: a free port). ProviderConfigError if taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ProviderConfigError(f"--data-host {host!r}: cannot resolve ({error})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ProviderConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --data-port "
            "or stop the process using it") from None
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


# -- sessions ----------------------------------------------------------------------------------
@dataclass
class Session:
    """A throughput session handed out on the control plane, claimed on the data port."""

    token: bytes  # chosen by the validator (``DownRequest.token`` / ``UpRequest.token``)
    peer: str
    kind: str  # "down" | "up"
    seed: bytes  # down only
    duration: float
    expires_at: float  # trio clock
    claimed: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    result: tuple[int, bytes] = (0, b"")  # up: byte count and digest
    byte_limit: int = 0  # 0: none; else the most this session carries (public probes)
    moved: int = 0  # bytes sent (down) or received (up) so far
    admission: Admission | None = None  # the gate's, released when the session ends


@dataclass
class _DataSlot:
    """One open data connection; ``authenticated`` once it presented a live session's token."""

    scope: trio.CancelScope
    host: str  # the remote IP
    authenticated: bool = False


# -- the service -------------------------------------------------------------------------------
class ProbeService:
    """Serves the probe protocol and the data port for one provider key.

    Who may ask for what is ``validator.probe_access.ProbeGate``'s business (validators of
    ``spec``, ``access.allow_probe`` keys, and a public pool when ``access.public_probe_bytes``
    is set); this class is the shell that asks it, streams, and counts what it refused.
    ``now`` is wall time (unix seconds), for epochs; timeouts run on trio's clock.
    """

    def __init__(self, seed: bytes, spec: NetworkSpec, registration: Registration | None = None,
                 *, access: AccessOptions = AccessOptions(),
                 now: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.spec = spec
        self.network_id = spec.network_id
        self.registration = registration
        self.gate = ProbeGate(spec, access)
        self.dropped: dict[str, int] = {}
        self._now = now
        self._sessions: dict[bytes, Session] = {}
        self._slots: dict[int, _DataSlot] = {}  # open data connections, oldest first

    def statistics(self) -> dict[str, int]:
        """Drops by reason, plus the sessions held and the data connections open now."""
        return dict(self.dropped, sessions=len(self._sessions),
                    data_connections=len(self._slots))

    def _drop(self, reason: str, peer: str = "") -> None:
        count = self.dropped.get(reason, 0) + 1
        self.dropped[reason] = count
        if count == 1:
            log.info(reason, peer=peer)

    # -- hooks a (test) subclass may override ------------------------------------------------
    def heartbeat_signature(self, request: wire.HeartbeatRequest) -> bytes:
        return sign_heartbeat(self.seed, self.network_id, request.epoch, request.nonce,
                              request.validator_key)

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        """Stream ``Keystream(seed)`` until the reader closes, the session's time is up or
        its byte limit is reached; ``session.moved`` counts what was sent."""
        keystream = Keystream(session.seed)
        block = bytearray(IO_SIZE)
        view = memoryview(block)
        left = session.byte_limit or -1
        with trio.move_on_after(session.duration + DOWN_SLACK_SECONDS):
            while left != 0:
                keystream.next_into(block)
                end = IO_SIZE if left < 0 else min(IO_SIZE, left)
                offset = 0
                while offset < end:
                    n = await stream.socket.send(view[offset:end])
                    offset += n
                    session.moved += n
                if left > 0:
                    left -= end

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        """Read to EOF (or the session's time limit); the byte count and BLAKE2b-256 digest.

        With a byte limit, a sender that goes past it is cut off there (``upload_over_limit``)
        and the result covers the bytes up to the limit.
        """
        hasher = hashlib.blake2b(digest_size=wire.DIGEST_SIZE)
        buffer = bytearray(IO_SIZE)
        view = memoryview(buffer)
        limit = session.byte_limit
        with trio.move_on_after(session.duration + DATA_SLACK_SECONDS):
            while True:
                # Past the limit, read one byte more: EOF there is fine, a byte is not.
                want = IO_SIZE if not limit else min(IO_SIZE, limit - session.moved + 1)
                n = await stream.socket.recv_into(buffer, want)
                if not n:
                    break
                if limit and session.moved + n > limit:
                    n = limit - session.moved
                    hasher.update(view[:n])
                    session.moved += n
                    self._drop("upload_over_limit", session.peer)
                    break
                hasher.update(view[:n])
                session.moved += n
        return session.moved, hasher.digest()

    # -- control plane -----------------------------------------------------------------------
    async def handle_stream(self, stream: Stream) -> None:
        """Answer requests on one stream until it ends, idles out or hits its request limit.

        A caller without the right to what it asked for gets an ``ErrorReply`` with the reason;
        an outsider's stream then ends (each refused request costs it a new stream).
        """
        peer = stream.remote_peer
        for _ in range(MAX_REQUESTS_PER_STREAM):
            try:
                with trio.fail_after(STREAM_IDLE_SECONDS):
                    frame = await stream.read_frame(wire.MAX_REQUEST_BYTES)
            except StreamClosed:
                return  # the prober is done: the normal end
            except (PeerError, trio.TooSlowError) as error:
                self._drop("stream_" + type(error).__name__, peer)
                return
            try:
                request = wire.decode_request(frame)
            except DecodeError as error:
                self._drop(f"decode_{error.reason}", peer)
                await self._reply(stream, wire.ErrorReply("malformed"))
                return
            reply = await self.answer(request, peer)
            if not await self._reply(stream, reply):
                return
            if isinstance(reply, wire.ErrorReply) and self.gate.role(peer) is Role.OUTSIDER:
                return
        self._drop("requests_per_stream", peer)

    async def _reply(self, stream: Stream, reply: wire.Response) -> bool:
        try:
            await stream.write_frame(reply.encode())
        except PeerError:
            self._drop("reply_failed", stream.remote_peer)
            return False
        return True

    def _refuse(self, reason: str, peer: str) -> wire.ErrorReply:
        self._drop(reason, peer)
        return wire.ErrorReply(reason)

    async def answer(self, request: wire.Request, peer: str) -> wire.Response:
        """The reply to one decoded request from ``peer`` (an ``ErrorReply`` if refused)."""
        if isinstance(request, wire.InfoRequest):
            if self.registration is None:
                return wire.ErrorReply("not_registered")
            return wire.InfoReply(self.registration)
        if isinstance(request, wire.HeartbeatRequest):
            refused = self.gate.heartbeat(peer, request.epoch, request.validator_key,
                                          self._now())
            if refused:
                return self._refuse(refused, peer)
            return wire.HeartbeatReply(self.heartbeat_signature(request))
        if isinstance(request, wire.EchoRequest):
            refused = self.gate.echo(peer)
            if refused:
                return self._refuse(refused, peer)
            return wire.EchoReply(request.payload)
        if isinstance(request, wire.DownRequest):
            return self._new_session(peer, "down", request.seed, request.duration_ms,
                                     request.token)
        if isinstance(request, wire.UpRequest):
            return self._new_session(peer, "up", b"", request.duration_ms, request.token)
        return await self._up_result(request, peer)

    def _new_session(self, peer: str, kind: str, seed: bytes, duration_ms: int,
                     token: bytes) -> wire.Response:
        now = trio.current_time()
        for stale in [s for s in self._sessions.values()
                      if s.expires_at < now and not (s.claimed and not s.done.is_set())]:
            self._end(stale)
        if token in self._sessions:
            return self._refuse("token_in_use", peer)
        admission = self.gate.admit(peer, duration_ms, self._now())
        if isinstance(admission, str):
            return self._refuse(admission, peer)
        duration = duration_ms / 1000
        # An up session stays until its result is fetched, at most TTL after its data ends.
        ttl = TOKEN_TTL_SECONDS + (duration + DATA_SLACK_SECONDS if kind == "up" else 0)
        self._sessions[token] = Session(token, peer, kind, seed, duration, now + ttl,
                                        byte_limit=admission.byte_limit, admission=admission)
        return wire.SessionReply(admission.byte_limit)

    def _end(self, session: Session) -> None:
        """Forget ``session`` and give its place back to the gate (once)."""
        if self._sessions.get(session.token) is session:
            del self._sessions[session.token]
        if session.admission is not None:
            self.gate.release(session.admission, session.moved)
            session.admission = None

    async def _up_result(self, request: wire.UpResultRequest, peer: str) -> wire.Response:
        session = self._sessions.get(request.token)
        if session is None or session.peer != peer or session.kind != "up":
            return self._refuse("unknown_token", peer)
        # Normally the upload has ended when this arrives; a slow link may still be draining.
        with trio.move_on_after(session.duration + DATA_SLACK_SECONDS):
            await session.done.wait()
        if not session.done.is_set():
            return wire.ErrorReply("upload_unfinished")
        self._end(session)
        count, digest = session.result
        return wire.UpReport(count, digest)

    # -- data plane --------------------------------------------------------------------------
    async def serve_data(self, listener: trio.SocketListener, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_listeners(self._handle_data, [listener], task_status=task_status)

    def _make_room(self) -> bool:
        """Room for one more data connection: under the cap, or by evicting a connection that
        has not presented a token yet: the oldest one from the address holding the most of
        them (a flood from one host evicts itself first). False if every open connection
        belongs to a session."""
        if len(self._slots) < MAX_DATA_CONNECTIONS:
            return True
        pending = [(key, slot) for key, slot in self._slots.items() if not slot.authenticated]
        if not pending:
            return False
        per_host: dict[str, int] = {}
        for _, slot in pending:
            per_host[slot.host] = per_host.get(slot.host, 0) + 1
        most = max(per_host.values())
        key, victim = next((k, s) for k, s in pending if per_host[s.host] == most)
        del self._slots[key]
        victim.scope.cancel()
        self._drop("data_evicted_unauthenticated", victim.host)
        return True

    async def _handle_data(self, stream: trio.SocketStream) -> None:
        if not self._make_room():
            self._drop("data_connections_full")
            await trio.aclose_forcefully(stream)
            return
        try:
            host = str(stream.socket.getpeername()[0])
        except OSError:  # already reset
            await trio.aclose_forcefully(stream)
            return
        slot = _DataSlot(trio.CancelScope(), host)
        key = id(slot)
        self._slots[key] = slot
        session: Session | None = None
        try:
            with slot.scope:
                token = await self._read_token(stream)
                session = self._claim(token)
                if session is None:
                    return
                slot.authenticated = True
                if session.kind == "down":
                    await self.send_down(stream, session)
                else:
                    session.result = await self.receive_up(stream, session)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            # The reader hung up (the normal end of a down stream) or the link failed.
            pass
        finally:
            self._slots.pop(key, None)
            if session is not None:
                session.done.set()
                if session.kind == "down":
                    self._end(session)
            await trio.aclose_forcefully(stream)

    async def _read_token(self, stream: trio.SocketStream) -> bytes:
        """The first TOKEN_SIZE bytes, within TOKEN_READ_SECONDS; b"" (counted) otherwise."""
        token = b""
        with trio.move_on_after(TOKEN_READ_SECONDS):
            while len(token) < wire.TOKEN_SIZE:
                chunk = await stream.receive_some(wire.TOKEN_SIZE - len(token))
                if not chunk:
                    self._drop("data_token_eof")
                    return b""
                token += chunk
            return token
        self._drop("data_token_timeout")
        return b""

    def _claim(self, token: bytes) -> Session | None:
        """The session for ``token`` if it exists, is unexpired and not yet used (single use)."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None or session.claimed or session.expires_at < trio.current_time():
            self._drop("bad_token")
            return None
        session.claimed = True
        return session


# -- registration gossip -----------------------------------------------------------------------
async def publish_registrations(transport: Transport, spec: NetworkSpec,
                                make_registration: Callable[[], Registration],
                                on_new: Callable[[Registration], None],
                                now: Callable[[], float]) -> None:
    """Publish a freshly signed registration when a validator connects and at every epoch.

    Subscribing first lets gossipsub graft us into the topic mesh; what arrives on the topic is
    other providers' business, so it is drained and discarded. Only validators count as
    "peers connected": probers with ephemeral identities come and go.
    """
    topic = spec.topic("registrations")
    validators = {v.identity for v in spec.validators} | {
        addr.rsplit("/p2p/", 1)[1] for v in spec.validators for addr in v.addrs
        if "/p2p/" in addr}
    channel = await transport.subscribe(topic, lambda _peer, _data: True, MAX_REGISTRATION_BYTES)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_discard, channel)
        known: set[str] = set()
        next_epoch = spec.epoch_start(spec.epoch_at(now()) + 1)
        while True:
            peers = set(transport.connected_peers()) & validators
            due = now() >= next_epoch
            if peers and (peers - known or due):
                await _wait_meshed(transport, peers - known, topic)
                registration = make_registration()
                on_new(registration)
                try:
                    await transport.publish(topic, registration.encode())
                    log.info("registration_published", peers=len(peers))
                except P2PError as error:
                    log.info("registration_publish_failed", error=str(error))
            known = peers
            if due:
                next_epoch = spec.epoch_start(spec.epoch_at(now()) + 1)
            await trio.sleep(PEER_POLL_SECONDS)


async def _wait_meshed(transport: Transport, peers: set[str], topic: str) -> None:
    """Give new peers time to join our topic mesh, so the publication reaches them.

    ``wait_for_mesh`` is not in ``p2p.abc`` (the libp2p transport has it); without it, or
    if the mesh does not form in time, publish anyway: the next epoch publishes again.
    """
    wait_for_mesh = getattr(transport, "wait_for_mesh", None)
    with trio.move_on_after(MESH_WAIT_SECONDS):
        if wait_for_mesh is None:
            await trio.sleep(PUBLISH_SETTLE_SECONDS)
            return
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(wait_for_mesh, peer, topic)


async def _discard(channel: trio.MemoryReceiveChannel[Any]) -> None:
    async for _ in channel:
        pass


# -- auto-claim --------------------------------------------------------------------------------
CLAIM_ROUND_LIMIT_SECONDS = 300.0  # a round is cut off after this (each step has its own timeout)


class AutoClaimer:
    """Claims the payout address's rewards once per epoch, on trio's clock.

    A round runs ``claim_all`` through an asyncio bridge; it never raises: a round that
    fails as a whole, or a claim that fails, is logged (``claim_failed`` with ``epoch`` and
    ``reason``) and counted, and the next epoch tries again. Epochs where nothing more can
    be claimed are remembered, so later rounds ask the validator only about the rest.
    """

    def __init__(self, spec: NetworkSpec, seed: bytes, payout: bytes, validator_url: str,
                 rpc_url: str = "", now: Callable[[], float] = time.time) -> None:
        if not validator_url:
            raise ProviderConfigError("--auto-claim needs --validator URL (a validator's HTTP API)")
        self.spec, self.validator_url, self.rpc_url, self._now = spec, validator_url, rpc_url, now
        self._seed, self._payout = seed, payout
        self._settled: set[int] = set()
        self.outcomes: dict[str, int] = {}
        self.rounds = 0
        self.rounds_failed = 0
        self.amount_paid = 0

    def statistics(self) -> dict[str, int]:
        """Claims by outcome (``validator.claims.STATUSES``), rounds, failed rounds and the
        base units paid (``amount_paid``), all cumulative."""
        return dict(self.outcomes, rounds=self.rounds, rounds_failed=self.rounds_failed,
                    amount_paid=self.amount_paid)

    async def run(self) -> None:
        """One round now, then one per ``spec.epoch_seconds``, until cancelled."""
        from validator.bridge import open_asyncio_bridge

        async with open_asyncio_bridge() as bridge:
            while True:
                await self.round(bridge)
                await trio.sleep(self.spec.epoch_seconds)

    async def round(self, bridge: Any) -> None:
        """One ``claim_all`` through ``bridge`` (an ``AsyncioBridge``), logged and counted."""
        from solders.keypair import Keypair
        from solders.pubkey import Pubkey

        from validator.claims import FAILED, ClaimsError, claim_all
        from validator.pool_client import PoolClientError

        epoch = self.spec.epoch_at(self._now())
        self.rounds += 1
        payer, payout = Keypair.from_seed(self._seed), Pubkey.from_bytes(self._payout)
        try:
            with trio.fail_after(CLAIM_ROUND_LIMIT_SECONDS):
                results = await bridge.run(lambda: claim_all(self.validator_url, payout, payer,
                                                              rpc_url=self.rpc_url or None,
                                                              settled=self._settled))
        except (ClaimsError, PoolClientError, trio.TooSlowError) as error:
            self.rounds_failed += 1
            reason = str(error) or type(error).__name__
            log.warning("claim_failed", epoch=epoch, reason=reason)
            return
        except Exception as error:  # a bug must not stop the agent: logged in full, retried
            self.rounds_failed += 1
            log.exception("claim_failed", epoch=epoch, reason=f"{type(error).__name__}: {error}")
            return
        for result in results:
            self.outcomes[result.status] = self.outcomes.get(result.status, 0) + 1
            self.amount_paid += result.amount
            if result.status == FAILED:
                log.warning("claim_failed", epoch=result.epoch, index=result.index, reason=result.error)
        log.info("claims", epoch=epoch, amount_paid=sum(r.amount for r in results),
                 this_round={s: sum(r.status == s for r in results) for s in sorted({r.status for r in results})},
                 total=self.statistics())


# -- the agent ---------------------------------------------------------------------------------
STATUS_PERIOD_SECONDS = 1.0


async def write_status(service: ProbeService, path: Path, now: Callable[[], float],
                       period: float = STATUS_PERIOD_SECONDS) -> None:
    """Every ``period`` s, ``path`` := ``{"written_at", "statistics"}`` as JSON (what the agent
    refused, by reason, readable without parsing logs); renamed into place, never half a file.
    An unwritable path is logged once."""
    temporary = path.with_name(path.name + ".tmp")
    failed = False
    while True:
        body = json.dumps({"written_at": now(), "statistics": service.statistics()},
                          sort_keys=True)
        try:
            temporary.write_text(body + "\n")
            os.replace(temporary, path)
        except OSError as error:
            if not failed:
                log.warning("status_file_unwritable", path=str(path), error=str(error))
            failed = True
        await trio.sleep(period)


HostOpener = Callable[..., AbstractAsyncContextManager[Transport]]


async def run_provider(options: ProviderOptions, spec: NetworkSpec, *,
                       task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
                       now: Callable[[], float] = time.time,
                       open_host: HostOpener | None = None,
                       service_factory: Callable[..., ProbeService] = ProbeService) -> None:
    """Run the provider agent until cancelled; ``task_status.started(multiaddr)`` once serving.

    ``open_host`` defaults to ``p2p.host.open_libp2p_host`` (the memory network can be passed
    in simulations); ``service_factory`` lets adversarial tests plug in a cheating service: it
    is called as ``ProbeService`` is, ``(seed, spec, access=AccessOptions, now=now)``.
    Raises ProviderConfigError for operator mistakes, before serving anything.
    """
    seed = load_or_create_key(options.key_path)
    payout = parse_payout(options.payout, public_key(seed))
    for peer in options.allow_probe:
        try:
            wire.public_key_from_peer_id(peer)
        except DecodeError:
            raise ProviderConfigError(f"--allow-probe {peer!r}: not an ed25519 peer id "
                                      "(12D3KooW...)") from None
    if options.public_probe_bytes < 0:
        raise ProviderConfigError("--public-probe-bytes must be >= 0 (0: no public probes)")
    microdegrees(options.lat, 90, "lat")
    microdegrees(options.lon, 180, "lon")
    claimer = (AutoClaimer(spec, seed, payout, options.validator_url, options.rpc_url, now)
               if options.auto_claim else None)
    if open_host is None:
        from p2p.host import open_libp2p_host

        open_host = open_libp2p_host
    problem = provider_announce_problem(options.listen, options.announce, options.data_host,
                                        options.data_announce)
    if problem is not None:
        raise ProviderConfigError(problem)
    bootstrap: Sequence[str] = [a for v in spec.validators for a in v.addrs]
    listener = open_data_listener(options.data_host, options.data_port)
    announce = {"announce": options.announce} if options.announce else {}  # identify's addrs
    try:
        async with open_host(seed, options.listen, bootstrap=bootstrap, **announce) as transport:
            addrs = transport.listen_addrs()
            if not addrs:  # an injected transport may not listen; p2p.host raises instead
                raise ProviderConfigError(
                    f"cannot listen on {options.listen} (address in use?); choose another "
                    "port in --listen or stop the process using it")
            multiaddr = announced_multiaddr(options, addrs[0], transport.peer_id)
            data_port = listener.socket.getsockname()[1]
            access = AccessOptions(frozenset(options.allow_probe), options.public_probe_bytes)
            service = service_factory(seed, spec, access=access, now=now)

            def make_registration() -> Registration:
                return build_registration(seed, spec.network_id, options, multiaddr, data_port,
                                          int(now()))

            def adopt(registration: Registration) -> None:
                service.registration = registration

            adopt(make_registration())
            transport.set_stream_handler(wire.PROTOCOL, service.handle_stream)
            async with trio.open_nursery() as nursery:
                await nursery.start(service.serve_data, listener)
                nursery.start_soon(publish_registrations, transport, spec, make_registration,
                                   adopt, now)
                if claimer is not None:
                    nursery.start_soon(claimer.run, name="auto_claim")
                if options.status_file is not None:
                    nursery.start_soon(write_status, service, options.status_file, now)
                log.info("provider_serving", multiaddr=multiaddr, data_port=data_port,
                         auto_claim=claimer is not None)
                task_status.started(multiaddr)
    finally:
        await listener.aclose()
