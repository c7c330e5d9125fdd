"""The validator service: the trio shell around ``ValidatorCore`` (DESIGN §10).

``Validator.run()`` is one nursery whose body lists the service's loops. The shell reads the
clock, moves bytes and writes the store; every decision is the core's. The HTTP API and the
chain poster live on the asyncio side of one bridge and see only immutable snapshots.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import base58
import structlog
import trio
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from p2p.abc import GossipMessage, PeerError, Stream, Transport
from p2p.host import open_libp2p_host, peer_id_from_seed
from proofs.codec import pack
from proofs.errors import DecodeError
from proofs.messages import (FetchRequest, Message, Observation, Registration, Vote,
                             decode_message)
from validator import assignment
from validator import core as c
from validator.api_views import public_url, redact
from validator.bridge import open_asyncio_bridge
from validator.chain import ChainLedger, ChainPoster, ReportPost
from validator.config import NodeConfig
from validator.keys import read_key
from validator.prober import EpochProber
from validator.spec import NetworkSpec
from validator.store import RegistrationWriter, SlashingRefused, Store, StoredFinal, VoteRefused
from validator.telemetry import NodeCounters, NodeTelemetry

log = structlog.get_logger("validator")

FETCH_PROTOCOL = "/bwpool/fetch/1.0.0"
TICK_SECONDS = 0.25
FETCH_QUEUE = 1024  # a notice per validator per epoch, each a bundle fetch
FETCH_WORKERS = 8  # fetches in flight at once: bundles arrive together at each epoch's end
POST_QUEUE = 64
REGISTRATION_WRITE_QUEUE = 8192  # registration writes waiting for the writer thread
REGISTRATION_WRITE_BATCH = 2048  # written in one transaction at most
MIN_PAYER_LAMPORTS = 100_000_000


OpenTransport = Callable[[bytes, str, Sequence[str]], AbstractAsyncContextManager[Transport]]
# (validator, epoch, providers, epoch seed, start, end) -> (observations, drops by reason)
Measure = Callable[["Validator", int, Sequence[Registration], bytes, float, float],
                   Awaitable[tuple[tuple[Observation, ...], dict[str, int]]]]


def _libp2p(seed: bytes, listen: str, bootstrap: Sequence[str], announce: Sequence[str] = ()
            ) -> AbstractAsyncContextManager[Transport]:
    return open_libp2p_host(seed, listen, bootstrap=bootstrap, announce=announce)


async def probe_epoch(node: "Validator", epoch: int, providers: Sequence[Registration],
                      seed: bytes, start: float, end: float
                      ) -> tuple[tuple[Observation, ...], dict[str, int]]:
    """The real measurement: heartbeats, echo and throughput over the network."""
    assert node.transport is not None
    prober = EpochProber(node.transport, node.spec, epoch=epoch,
                         validator_seed=node.keys.signing, providers=providers, seed=seed,
                         now=node.now, throughput_lock=node.throughput_lock)
    await prober.run(start, end)
    return prober.observations(), dict(prober.dropped)


@dataclass(frozen=True)
class Environment:
    """What the shell takes from the world. The defaults are the real ones; simulations pass
    the in-memory network, trio's (virtual) clock and synthetic measurements."""

    open_transport: OpenTransport = _libp2p
    clock: Callable[[], float] = time.time
    measure: Measure = probe_epoch
    asyncio_services: bool = True  # the HTTP API and the chain poster, behind the bridge
    identity: Callable[[bytes], str] = field(default=peer_id_from_seed)


@dataclass(frozen=True)
class Keys:
    identity: bytes
    signing: bytes
    payer: bytes


def load_keys(config: NodeConfig) -> Keys:
    """The three keys; each file in either format ``validator.keys`` reads (the payer's may
    be a solana-keygen keypair)."""
    return Keys(read_key(config.identity_key), read_key(config.signing_key),
                read_key(config.payer_key))


class Validator:
    def __init__(self, config: NodeConfig, spec: NetworkSpec, keys: Keys,
                 env: Environment = Environment()) -> None:
        self.env = env
        self.now = env.clock
        self.config = config
        self.spec = spec
        self.keys = keys
        self.core = c.ValidatorCore(spec, keys.signing)
        self.store = Store(config.db_path)
        self.store.claim_network(spec.config_digest)  # NetworkMismatch: another network's
        # Only what the core still uses: bundles inside its window, finals for seeds, the hash
        # chain and catch-up answers. Older rows stay in SQLite for the HTTP API.
        current = max(0, spec.epoch_at(self.now()))
        self.core.restore(self.store.registrations(),
                          self.store.bundles_since(current - 2 * c.WINDOW_EPOCHS),
                          self.store.finals(since_epoch=current - c.CATCH_UP_EPOCHS - 4),
                          self.store.signed_headers(),
                          self.store.votes_since(current - 2 * c.WINDOW_EPOCHS))
        self.rpc_url = config.rpc_url or spec.rpc_url
        self.identity = env.identity(keys.identity)
        self.transport: Transport | None = None
        self.phase = "starting"
        self.http_port: int | None = None
        self._checked: OrderedDict[bytes, Message] = OrderedDict()
        self._fetch_send, self._fetch_recv = trio.open_memory_channel[FetchRequest](FETCH_QUEUE)
        self._post_send, self._post_recv = trio.open_memory_channel[int](POST_QUEUE)
        self._ledger = ChainLedger(config.db_path)
        self._status: dict[str, Any] = {}  # replaced whole, never mutated: the API reads it
        # For /metrics and /healthz: counted here, frozen into _telemetry with each status.
        self._counters = NodeCounters(v.identity for v in spec.validators)
        self._telemetry: NodeTelemetry | None = None
        self._poster: ChainPoster | None = None
        self._payer_lamports: int | None = None
        self._http_statistics: Callable[[], dict[str, int]] = dict  # the API's, once it runs
        self._members_by_identity = {v.identity for v in spec.validators}
        self._identity_by_key = {v.signing_key: v.identity for v in spec.validators}
        self._recent_fetches: dict[FetchRequest, float] = {}
        self._more_signatures: dict[int, tuple[tuple[bytes, bytes], ...]] = {}
        # ("put", (provider, issued_at, data)) / ("drop", hash), for _registration_writes
        self._registration_send, self._registration_recv = \
            trio.open_memory_channel[tuple[str, object]](REGISTRATION_WRITE_QUEUE)
        self.throughput_lock = trio.Lock()  # one throughput probe at a time: they share a link
        self._queued_posts: set[int] = set()  # epochs in the post queue: each at most once
        self._rescan_now = trio.Event()  # set after a post: rescan without waiting an epoch

    # -- the table of contents ------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        bootstrap = [a for v in self.spec.validators if v.signing_key != self.core.me
                     for a in v.addrs]
        # Bind `listen`; tell peers `announce` (passed only when set: a simulation's
        # transport has no addresses to announce).
        announce = {"announce": self.config.announce} if self.config.announce else {}
        async with self.env.open_transport(self.keys.identity, self.config.listen,
                                           bootstrap, **announce) as transport, \
                trio.open_nursery() as nursery:
            self.transport = transport
            transport.set_stream_handler(FETCH_PROTOCOL, self._serve_fetch)
            for topic in c.TOPICS:
                channel = await transport.subscribe(self.spec.topic(topic),
                                                    self._validator_for(topic),
                                                    c.MAX_BYTES[topic])
                nursery.start_soon(self._gossip_loop, topic, channel)
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._registration_writes)
            nursery.start_soon(self._probe_loop)
            for _ in range(FETCH_WORKERS):
                nursery.start_soon(self._fetch_loop)
            nursery.start_soon(self._catch_up)
            if self.env.asyncio_services:
                await nursery.start(self._asyncio_services)
            self._refresh_status()
            log.info("validator_started", identity=self.identity,
                     signing_key=base58.b58encode(self.core.me).decode(),
                     listen=transport.listen_addrs(), announce=list(self.config.announce),
                     http=f"http://{self.config.http_host}:{self.http_port}")
            task_status.started(self.http_port)

    def _announce_addrs(self) -> list[str]:
        """What peers are told to dial: config.toml's announce (with our /p2p id), else what
        listen bound."""
        if self.config.announce:
            return [f"{'/'.join(a.split('/')[:5])}/p2p/{self.identity}" for a in self.config.announce]
        return self.transport.listen_addrs() if self.transport else []

    # -- actions --------------------------------------------------------------------------
    def _store_signatures(self, actions: list[c.Action]) -> list[c.Action]:
        """Slashing protection first, before any await: each ``SignHeader`` is written to the
        store, and the core told the outcome; what it answers takes the action's place (on
        success: publish our signature, maybe a final; on refusal: nothing). The core holds
        our signature only from ``on_signed_stored`` on, so a refused one can never leave the
        process (no publish, fetch answer, final report or chain post carries it)."""
        if not any(isinstance(a, (c.SignHeader, c.CastVote)) for a in actions):
            return actions
        out: list[c.Action] = []
        for action in actions:
            if isinstance(action, c.CastVote):
                out += self._store_signatures(self._store_vote(action.vote))
                continue
            if not isinstance(action, c.SignHeader):
                out.append(action)
                continue
            try:
                self.store.record_signed_header(action.epoch, action.header_hash)
            except SlashingRefused as exc:
                log.error("slashing_refused", epoch=action.epoch, detail=str(exc))
                stored = self.store.signed_headers().get(action.epoch)
                out += self._store_signatures(
                    self.core.on_signed_refused(action.epoch, action.header_hash, stored))
                continue
            log.info("header_signed", epoch=action.epoch, header=action.header_hash.hex()[:16])
            out += self._store_signatures(
                self.core.on_signed_stored(action.epoch, action.header_hash, self.now()))
        return out

    def _store_vote(self, vote: Vote) -> list[c.Action]:
        """Our agreement vote is written before the core counts or publishes it, so a
        restarted validator never votes twice in one slot and keeps its lock."""
        try:
            self.store.record_vote(vote.epoch, vote.round, vote.kind, vote.header_hash,
                                   vote.encode())
        except VoteRefused as exc:
            log.error("vote_refused", epoch=vote.epoch, detail=str(exc))
            return self.core.on_vote_refused(vote)
        return self.core.on_vote_stored(vote, self.now())

    async def _act(self, actions: list[c.Action]) -> None:
        for action in self._store_signatures(actions):
            if isinstance(action, c.Publish):
                await self._publish(action.topic, action.data)
            elif isinstance(action, c.SaveRegistration):
                reg = action.registration
                self._queue_registration_write(("put", (reg.provider, reg.issued_at,
                                                        reg.encode())))
            elif isinstance(action, c.DropRegistrations):
                for digest in action.hashes:
                    self._queue_registration_write(("drop", digest))
            elif isinstance(action, c.SaveBundle):
                if action.bundle.validator != self.core.me:
                    self._counters.bundles_received += 1
                self.store.put_bundle(action.bundle.epoch, action.bundle.validator,
                                      action.bundle.hash(), action.bundle.encode())
            elif isinstance(action, c.SaveFinal):
                self._save_final(action.final, action.new)
            elif isinstance(action, c.SaveEvidence):
                log.warning("evidence", kind=action.kind, epoch=action.epoch,
                            offender=base58.b58encode(action.offender).decode())
                self.store.put_evidence(action.kind, action.epoch, action.offender,
                                        action.first, action.second)
            elif isinstance(action, c.Fetch):
                try:
                    self._fetch_send.send_nowait(action.request)
                except trio.WouldBlock:
                    self.core.dropped["fetch_queue_full"] += 1

    def _queue_registration_write(self, item: tuple[str, object]) -> None:
        try:
            self._registration_send.send_nowait(item)
        except trio.WouldBlock:
            # The core holds the registration; only its copy on disk is lost (it is gossiped
            # again, and fetched by hash when a set names it).
            self.core.dropped["registration_write_queue_full"] += 1

    async def _registration_writes(self) -> None:
        """Write registrations in batches, in a worker thread on a connection of their own:
        whatever queued up while the last batch was written goes in one transaction, so a
        flood of registrations costs the event loop no SQLite work at all."""
        writer = RegistrationWriter(self.config.db_path)
        try:
            async for first in self._registration_recv:
                batch = [first]
                while len(batch) < REGISTRATION_WRITE_BATCH:
                    try:
                        batch.append(self._registration_recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await trio.to_thread.run_sync(writer.write, batch)
        finally:
            writer.close()

    async def _publish(self, topic: str, data: bytes) -> None:
        assert self.transport is not None
        try:
            await self.transport.publish(self.spec.topic(topic), data)
        except PeerError as exc:
            self.core.dropped[f"publish_failed:{topic}"] += 1
            log.warning("publish_failed", topic=topic, detail=str(exc))

    def _save_final(self, final: StoredFinal, new: bool) -> None:
        if new:
            if self.store.put_final(final):
                log.info("report_final", epoch=final.epoch, signatures=len(final.signatures),
                         records=len(final.records), header=final.header_hash.hex()[:16])
            try:
                self._post_send.send_nowait(final.epoch)
                self._queued_posts.add(final.epoch)
            except trio.WouldBlock:
                self.core.dropped["post_queue_full"] += 1  # re-queued by the post loop's scan
        else:
            # Signatures past threshold trickle in one by one; each write rewrites the row
            # with its records, so they are written once per tick (losing some in a crash
            # costs nothing: the stored report already has threshold signatures).
            self._more_signatures[final.epoch] = final.signatures

    def _flush_signatures(self) -> None:
        pending, self._more_signatures = self._more_signatures, {}
        for epoch, signatures in pending.items():
            self.store.add_final_signatures(epoch, signatures)

    # -- gossip ---------------------------------------------------------------------------
    def _validator_for(self, topic: str) -> Any:
        def validate(from_peer: str, data: bytes) -> bool:
            msg = self.core.check(topic, data)
            if msg is None:
                return False
            key = c.sha256(data)
            self._checked[key] = msg
            while len(self._checked) > 4096:
                self._checked.popitem(last=False)
            return True
        return validate

    async def _gossip_loop(self, topic: str,
                           channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async for message in channel:
            msg = self._checked.pop(c.sha256(message.data), None)
            if msg is None:
                msg = self.core.check(topic, message.data)
                if msg is None:
                    continue
            await self._act(self.core.on_message(msg, self.now()))

    # -- timers ---------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            now = self.now()
            await self._act(self.core.on_tick(now))
            self._flush_signatures()
            self._refresh_status(now)
            await trio.sleep(TICK_SECONDS)

    def _phase(self, now: float) -> str:
        epoch = self.spec.epoch_at(now)
        if epoch < 0:
            return "waiting_for_genesis"
        into = now - self.spec.epoch_start(epoch)
        if epoch - 1 >= 0 and epoch - 1 not in self.core.finals:
            return "collecting" if into < self.spec.collect_seconds else "agreeing"
        return "probing"

    def _refresh_status(self, now: float | None = None) -> None:
        now = self.now() if now is None else now
        last_final = max(self.core.finals, default=None)
        transport = self.transport
        dropped = dict(self.core.dropped)
        if transport is not None:
            dropped.update({f"p2p:{k}": v for k, v in transport.statistics().items() if v})
        dropped.update({f"http:{k}": v for k, v in self._http_statistics().items() if v})
        self._status = {
            "network_id": self.spec.network_id,
            "config_digest": self.spec.config_digest.hex(),
            "identity": self.identity,
            "signing_key": base58.b58encode(self.core.me).decode(),
            "listen_addrs": transport.listen_addrs() if transport else [],
            "announce_addrs": self._announce_addrs(),
            "epoch": self.spec.epoch_at(now),
            "phase": self._phase(now),
            "peers": len(transport.connected_peers()) if transport else 0,
            "providers": len(self.core.registrations),
            "last_final_epoch": last_final,
            "chain": {"rpc_url": public_url(self.rpc_url),
                      "pool": self.spec.pool_address or None,
                      "last_posted_epoch": self._ledger.last_posted_epoch(),
                      "last_error": redact(self._ledger.last_error(), self.rpc_url)},
            "dropped": dropped,
            # validators this node left out of an epoch's records as inconsistent
            "excluded": {str(epoch): sorted(base58.b58encode(k).decode() for k in keys)
                         for epoch, keys in sorted(self.core.excluded.items())[-4:] if keys},
        }
        self._telemetry = self._counters.snapshot(
            transport.connected_peers() if transport else (), self.core.registrations,
            self._poster.statistics() if self._poster else None, self._payer_lamports)

    # -- probes ---------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        epoch = max(0, self.spec.epoch_at(self.now()))
        while True:
            start, end = self.spec.epoch_start(epoch), self.spec.epoch_end(epoch)
            await self.sleep_until(start)
            providers = self.core.assignment(epoch)
            log.info("epoch_probing", epoch=epoch, providers=len(providers))
            observations, dropped = await self.env.measure(
                self, epoch, providers, self.core.epoch_seed(epoch), start, end)
            await self.sleep_until(end)
            for reason, count in dropped.items():
                self.core.dropped[f"probe:{reason}"] += count
            self._counters.count_observations(observations)
            self.store.put_observations(epoch, [(o.provider, pack(o.to_list()))
                                                for o in observations])
            await self._act(self.core.bundle_ready(epoch, observations, self.now()))
            epoch += 1

    async def sleep_until(self, wall_time: float) -> None:
        """Sleep on trio's clock until ``self.now()`` reaches ``wall_time``."""
        delay = wall_time - self.now()
        if delay > 0:
            await trio.sleep(delay)

    # -- fetch protocol ---------------------------------------------------------------------
    async def _serve_fetch(self, stream: Stream) -> None:
        if stream.remote_peer not in self._members_by_identity:
            self.core.dropped["fetch_from_non_member"] += 1
            return
        data = await stream.read_frame(256)
        try:
            request = decode_message(data, 256)
        except DecodeError as exc:
            self.core.dropped[f"fetch:{exc.reason}"] += 1
            return
        if not isinstance(request, FetchRequest):
            self.core.dropped["fetch:wrong_type"] += 1
            return
        answer = self.core.answer_fetch(request)
        await stream.write_frame(answer or b"")

    async def _fetch_loop(self) -> None:
        """One of FETCH_WORKERS tasks sharing the fetch queue. Asks the validators the request
        prefers (a bundle's signer), then up to three connected members at random."""
        assert self.transport is not None
        recent = self._recent_fetches
        async for request in self._fetch_recv:
            now = self.now()
            if now - recent.get(request, -1e18) < 2.0:
                continue  # the same fetch asked again within 2 s is already under way
            recent[request] = now
            if len(recent) > 4096:
                for stale in [r for r, t in recent.items() if now - t >= 10]:
                    del recent[stale]
            preferred = [self._identity_by_key[k] for k in request.prefer
                         if k in self._identity_by_key and k != self.core.me]
            peers = [p for p in self.transport.connected_peers()
                     if p in self._members_by_identity and p not in preferred]
            random.shuffle(peers)
            for peer in preferred + peers[:3]:
                data = await self._fetch_from(peer, request)
                if data:
                    await self._act(self.core.on_fetched(request, data, self.now()))
                    break

    async def _fetch_from(self, peer: str, request: FetchRequest) -> bytes:
        assert self.transport is not None
        stream: Stream | None = None
        try:
            with trio.fail_after(5):
                stream = await self.transport.open_stream(peer, FETCH_PROTOCOL)
                await stream.write_frame(request.encode())
                return await stream.read_frame(c.MAX_FETCH_ANSWER_BYTES)
        except (PeerError, trio.TooSlowError) as exc:
            self.core.dropped["fetch_failed"] += 1
            log.debug("fetch_failed", peer=peer, detail=str(exc))
            return b""
        finally:
            if stream is not None:
                await stream.aclose()

    async def _catch_up(self) -> None:
        """After a start, ask peers for the final reports finalized while we were away."""
        assert self.transport is not None
        while True:
            current = self.spec.epoch_at(self.now())
            # registrations the agreed provider sets name but we never received
            await self._act(self.core.missing_registrations(current)
                            + self.core.missing_registrations(current + 1))
            last = max(self.core.finals, default=-1)
            for epoch in range(max(last + 1, current - 16), current):
                try:
                    self._fetch_send.send_nowait(FetchRequest("final", epoch, b""))
                except trio.WouldBlock:
                    break
            await trio.sleep(max(self.spec.epoch_seconds / 2, 2))

    # -- the asyncio side: chain poster and HTTP API ------------------------------------------
    async def _asyncio_services(self, *, task_status: trio.TaskStatus[None]
                                = trio.TASK_STATUS_IGNORED) -> None:
        async with open_asyncio_bridge() as bridge, trio.open_nursery() as nursery:
            nursery.start_soon(self._post_loop, bridge)
            self.http_port = await self._start_api(bridge)
            task_status.started()

    async def _post_loop(self, bridge: Any) -> None:
        if not self.spec.pool_address:
            log.warning("chain_posting_off", reason="the network spec names no pool_address")
            async for _epoch in self._post_recv:
                pass
            return
        poster = ChainPoster(self.rpc_url, Keypair.from_seed(self.keys.payer), self._ledger,
                             program_id=Pubkey.from_string(self.spec.pool_program_id),
                             pool=Pubkey.from_string(self.spec.pool_address),
                             members=[v.signing_key for v in self.spec.validators],
                             threshold=self.spec.threshold)
        if self.config.airdrop:
            if not await bridge.run(poster.ensure_funded, MIN_PAYER_LAMPORTS):
                log.warning("payer_airdrop_failed", error=poster.last_error)
        self._poster = poster
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rescan_posts)
            nursery.start_soon(self._balance_loop, bridge, poster)
            nursery.start_soon(self._close_loop, bridge, poster)
            async for epoch in self._post_recv:
                self._queued_posts.discard(epoch)
                final = self.store.final(epoch)
                entry = self._ledger.get(epoch)
                if final is None or (entry is not None and entry.status == "confirmed"):
                    continue
                successor = self._skipped_by(final)
                if successor is not None:
                    # Posting it could win the pool's chain head, and then no report after
                    # the one that skipped it could ever be accepted.
                    log.warning("report_orphaned", epoch=epoch, skipped_by=successor)
                    continue
                # First try of a fresh final: let the epoch's first leader go first. A backlog
                # (the RPC was away) is posted in order at once: staggering each old epoch by
                # rank adds up to (n - 1) x proposal_timeout per epoch.
                if entry is None and epoch >= self.spec.epoch_at(self.now()) - 2:
                    await self._stagger(epoch)
                post = ReportPost(epoch=epoch, header=final.header,
                                  signatures=final.signatures,
                                  config_digest=self.spec.config_digest)
                outcome = await bridge.run(poster.post, post)
                event = log.info if outcome.status == "confirmed" else log.warning
                event("report_posted", epoch=epoch, status=outcome.status, tx=outcome.tx,
                      on_chain=outcome.on_chain, needed=outcome.needed, error=outcome.error)
                if outcome.status == "confirmed":
                    # The next epoch of a backlog now, not in an epoch. Only on success: a
                    # predecessor that keeps failing must not turn this into a busy loop.
                    self._rescan_now.set()

    def _skipped_by(self, final: StoredFinal) -> int | None:
        """The epoch of a later final report whose header links past `final` (its
        prev_header_hash names a report older than `final`), or None. Such a late final is an
        orphan: the network's chain of reports goes around it, so it is never posted."""
        finals = self.store.finals()  # once: each carries its records
        epoch_of = {f.header_hash: f.epoch for f in finals}
        for later in finals:
            prev = epoch_of.get(later.header[124:156])
            if later.epoch > final.epoch and prev is not None and prev < final.epoch:
                return later.epoch
        return None

    async def _rescan_posts(self) -> None:
        """Queue every final report the chain has not accepted yet, oldest first, at start and
        then once per epoch: a report that waited for its predecessor, or whose post failed
        while the RPC was away, is posted again without a restart (the poster is idempotent)."""
        while True:
            for final in sorted(self.store.finals(), key=lambda f: f.epoch):
                entry = self._ledger.get(final.epoch)
                if (entry is None or entry.status != "confirmed") \
                        and final.epoch not in self._queued_posts:
                    try:
                        self._post_send.send_nowait(final.epoch)
                        self._queued_posts.add(final.epoch)
                    except trio.WouldBlock:
                        break
            with trio.move_on_after(self.spec.epoch_seconds):
                await self._rescan_now.wait()
            self._rescan_now = trio.Event()

    async def _balance_loop(self, bridge: Any, poster: ChainPoster) -> None:
        """The payer's balance for /metrics, at start and then once per epoch."""
        while True:
            lamports = await bridge.run(poster.payer_balance)
            if lamports is not None:
                self._payer_lamports = lamports
            await trio.sleep(self.spec.epoch_seconds)

    async def _close_loop(self, bridge: Any, poster: ChainPoster) -> None:
        """Once per epoch, the epoch's first leader closes what may close on chain (claim
        windows passed, tallies that lost): unclaimed budget goes back to the pool."""
        while True:
            await trio.sleep(self.spec.epoch_seconds)
            epoch = self.spec.epoch_at(self.now())
            if epoch < 0:  # before genesis: no leader order (struct.error in epoch_seed)
                continue
            order = list(assignment.leader_order(self.spec, self.core.epoch_seed(epoch)))
            if order and order[0] == self.core.me:
                closed = await bridge.run(poster.close_finished)
                if closed:
                    log.info("epochs_closed", epochs=closed)
                elif poster.last_error and poster.last_error.startswith("close_epoch"):
                    log.warning("close_failed", error=poster.last_error)

    async def _stagger(self, epoch: int) -> None:
        """The epoch's first leader posts at once; the others wait their turn, so that usually
        one transaction lands and the rest find it on chain (the poster checks first)."""
        order = list(assignment.leader_order(self.spec, self.core.epoch_seed(epoch)))
        rank = order.index(self.core.me)
        await trio.sleep(rank * self.spec.proposal_timeout_seconds)

    # -- HTTP ----------------------------------------------------------------------------------
    async def _start_api(self, bridge: Any) -> int:
        from validator.api import HTTP_STATISTICS, make_app, start_api
        from validator.health import HealthPolicy

        app = make_app(self.config.db_path, self.spec, lambda: self._status, rpc_url=self.rpc_url,
                       telemetry=lambda: self._telemetry, health_policy=HealthPolicy(
                           self.config.health_chain_error_minutes * 60))
        self._http_statistics = app[HTTP_STATISTICS].statistics
        _, port = await bridge.run(start_api, app, self.config.http_host, self.config.http_port)
        return int(port)
