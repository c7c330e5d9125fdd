"""Issue 11's attacks aimed at a running devnet, and the referee that judges each one.

``DevnetView`` is what an attacker and a referee can see of a devnet that ``validator
devnet`` started: every validator's HTTP API (``/status`` drops by reason, ``/epochs``,
``/providers/{key}``, ``/evidence``), the provider agents' ``status.json`` (what each agent
refused, by reason), the spec, and - for a byzantine member - one validator's signing key
from its data directory. ``Window`` takes the counters before an attack and, once it is
over, waits for the finals of the epochs it overlapped and judges them (``Row``):

- the attack's traffic refused and counted: each ``Count`` (a sum of named counters on each
  of its targets) rose by at least what the attacker sent;
- validators kept finalizing: every epoch the attack overlapped is final on every validator,
  with one header;
- honest providers kept their records and weights: in each of those finals every devnet
  agent has the record of the baseline (same weight and flags, traffic measured both ways),
  and every committee member's observation in the newest final measured it.

The probe-plane floods themselves are ``benchmarks/attack_cost_provider.py``'s, the resource
floods ``benchmarks/attack_cost.py``'s and the gossip builders ``tests/sim/attacks.py``'s.
Here: the outsider's probe requests (``throwaway``, ``call``, ``foreign_heartbeats``, used by
``test_outsider_attacks`` too), a ``victim`` listener and a ``Reflector`` (a provider whose
signed registration names a data host it is not at), and ``open_gossip_peer``: a libp2p
peer outside the set (an outsider; with a member's signing seed, a byzantine member, which
signs ``member_proposals`` and ``random_signatures``).
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import base58
import trio

from p2p.abc import Transport
from p2p.host import open_libp2p_host
from proofs import probe as wire
from proofs.messages import BundleNotice, Proposal, Registration, ReportSignature, decode_message
from proofs.report import ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from tests.integration.e2e_checks import get_json
from validator import assignment
from validator.keys import load_or_create_key
from validator.prober import Control, ProbeTarget
from validator.provider import ProbeService, ProviderOptions, build_registration
from validator.provider import publish_registrations
from validator.spec import NetworkSpec, load_spec

LOCAL = "/ip4/127.0.0.1/tcp/0"
GOSSIP_MAX = 1 << 20  # what the attacker's own subscriptions accept (and so may publish)


# -- the outsider's probe requests ---------------------------------------------------------------
@asynccontextmanager
async def throwaway(count: int) -> AsyncIterator[list[Transport]]:
    """``count`` libp2p hosts with fresh random identities (peer ids nobody knows)."""
    async with trio.open_nursery() as nursery:
        hosts: list[Transport] = []
        done = trio.Event()

        async def one(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_libp2p_host(secrets.token_bytes(32), LOCAL) as host:
                hosts.append(host)
                task_status.started()
                await done.wait()

        for _ in range(count):
            await nursery.start(one)
        yield hosts
        done.set()


async def call(host: Transport, target: ProbeTarget, request: wire.Request) -> wire.Response:
    """One request on a fresh control stream, the reply as it came (ErrorReply included)."""
    with trio.fail_after(10):
        control = await Control.open(host, target)
        try:
            await control.stream.write_frame(request.encode())
            return wire.decode_response(await control.stream.read_frame(wire.MAX_RESPONSE_BYTES))
        finally:
            await control.aclose()


def heartbeat_requests(spec: NetworkSpec, now: float) -> list[wire.HeartbeatRequest]:
    """What an outsider asks a provider to sign: a heartbeat for every validator's key, for
    the current epoch, one far ahead and one absurd (the audit: signed for any key and
    epoch)."""
    epoch = spec.epoch_at(now)
    return [wire.HeartbeatRequest(e, secrets.token_bytes(32), v.signing_key)
            for v in spec.validators for e in (epoch, epoch + 5, 2**40)]


async def foreign_heartbeats(spec: NetworkSpec, target: ProbeTarget,
                             replies: dict[str, int]) -> None:
    """Until cancelled, one outsider asks ``target`` for ``heartbeat_requests``, one stream
    each; ``replies`` counts what came back (an ErrorReply by its reason, else "signed")."""
    async with throwaway(1) as (outsider,):
        while True:
            for request in heartbeat_requests(spec, time.time()):
                reply = await call(outsider, target, request)
                reason = reply.reason if isinstance(reply, wire.ErrorReply) else "signed"
                replies[reason] = replies.get(reason, 0) + 1


# -- the data plane is where the provider is -----------------------------------------------------
@asynccontextmanager
async def victim(host: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP listener on ``host`` that records every connection's bytes: (port, records)."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    records: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        with trio.move_on_after(2):
            try:
                while chunk := await stream.receive_some(65536):
                    data += chunk
            except trio.BrokenResourceError:
                pass
        records.append(data)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        yield port, records
        nursery.cancel_scope.cancel()


def reflecting(registration: Registration, seed: bytes, host: str, port: int) -> Registration:
    """``registration`` re-signed by its provider's ``seed`` with another data host and port."""
    return replace(registration, data_host=host, data_port=port,
                   signature=b"").signed_by(seed)


class Reflector:
    """A provider agent of the attacker's: it answers validators like any provider (the
    product's ``ProbeService`` on its own libp2p host) and publishes a registration, signed
    by its key, whose data host is a ``victim`` on ``victim_host`` (a third party). Runs in a
    thread of its own (its own trio loop) from ``start`` to ``stop``; ``received`` is what
    reached the victim, one entry per connection."""

    def __init__(self, spec: NetworkSpec, key_path: Path, bootstrap: Sequence[str],
                 victim_host: str = "127.0.0.2") -> None:
        self.spec = spec
        self.seed = load_or_create_key(key_path)
        self.key = public_key(self.seed)
        self.options = ProviderOptions(key_path, data_host=victim_host, region="eu-west",
                                       lat=48.85, lon=2.35)
        self.bootstrap = list(bootstrap)
        self.received: list[bytes] = []
        self.victim_port = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._run,), daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the reflector did not start"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    async def _run(self) -> None:
        async with victim(self.options.data_host) as (port, records), \
                open_libp2p_host(self.seed, LOCAL, bootstrap=self.bootstrap) as transport, \
                trio.open_nursery() as nursery:
            self.victim_port, self.received = port, records
            service = ProbeService(self.seed, self.spec)
            multiaddr = transport.listen_addrs()[0]

            def make_registration() -> Registration:
                return build_registration(self.seed, self.spec.network_id, self.options,
                                          multiaddr, port, int(time.time()))

            def adopt(registration: Registration) -> None:
                service.registration = registration

            adopt(make_registration())
            transport.set_stream_handler(wire.PROTOCOL, service.handle_stream)
            nursery.start_soon(publish_registrations, transport, self.spec, make_registration,
                               adopt, time.time)
            self._ready.set()
            while not self._stop.is_set():
                await trio.sleep(0.2)
            nursery.cancel_scope.cancel()


# -- gossip from outside the set, or from a byzantine member --------------------------------------
@dataclass
class GossipPeer:
    """A libp2p peer meshed with every validator on ``topics``; ``seen`` holds what the
    validators gossiped to it, decoded, by topic name."""

    host: Transport
    spec: NetworkSpec
    seen: dict[str, list[Any]] = field(default_factory=dict)
    published: int = 0

    async def publish_all(self, topic: str, messages: Iterable[bytes],
                          per_second: float = 400.0) -> int:
        """Publish each message, at most ``per_second`` (gossipsub drops what a peer sends
        past 1,000 a second on one topic, before any validator sees it); how many."""
        sent = 0
        started = trio.current_time()
        for data in messages:
            await self.host.publish(self.spec.topic(topic), data)
            sent += 1
            await trio.sleep_until(started + sent / per_second)
        self.published += sent
        return sent

    def notices(self, epoch: int) -> list[BundleNotice]:
        return [m for m in self.seen.get("bundles", [])
                if isinstance(m, BundleNotice) and m.epoch == epoch]


@asynccontextmanager
async def open_gossip_peer(spec: NetworkSpec, validators: Sequence[str],
                           topics: Sequence[str]) -> AsyncIterator[GossipPeer]:
    """A fresh identity (no key of the set) dialling every validator (full multiaddrs);
    yielded once what it publishes on each of ``topics`` goes straight to each of them."""
    async with open_libp2p_host(secrets.token_bytes(32), LOCAL, bootstrap=validators) as host, \
            trio.open_nursery() as nursery:
        peer = GossipPeer(host, spec)
        for topic in topics:
            channel = await host.subscribe(spec.topic(topic), lambda _p, _d: True, GOSSIP_MAX)
            nursery.start_soon(_record, peer, topic, channel)
        with trio.fail_after(30):
            for addr in validators:
                for topic in topics:
                    await host.wait_for_mesh(addr.rsplit("/p2p/", 1)[1], spec.topic(topic))
        yield peer
        nursery.cancel_scope.cancel()


async def _record(peer: GossipPeer, topic: str, channel: trio.MemoryReceiveChannel) -> None:
    async for message in channel:
        try:
            peer.seen.setdefault(topic, []).append(decode_message(message.data))
        except Exception:  # noqa: BLE001 - an undecodable message is not what we collect
            continue


def random_header(spec: NetworkSpec, epoch: int, rng: random.Random) -> ReportHeader:
    """A header of ``epoch`` under our digest with random roots: nothing anyone computed."""
    return ReportHeader(spec.config_digest, epoch, rng.randbytes(32), 1, 1, rng.randbytes(32),
                        rng.randbytes(32), rng.randbytes(32))


def random_signatures(spec: NetworkSpec, seed: bytes, epoch: int, count: int,
                      rng: random.Random) -> list[bytes]:
    """``count`` signatures by the member of ``seed`` over random headers of ``epoch``."""
    out = []
    for _ in range(count):
        header = random_header(spec, epoch, rng).to_bytes()
        out.append(ReportSignature(header, public_key(seed), sign_raw(seed, sha256(header)))
                   .encode())
    return out


def member_proposals(spec: NetworkSpec, seed: bytes, epoch: int, attempt: int,
                     bundles: Sequence[bytes], count: int, rng: random.Random) -> list[bytes]:
    """``count`` distinct proposals for one (leader, attempt), validly signed by the member of
    ``seed``, each with the epoch's real bundle hashes and a header of its own (the audit:
    each cost every validator a header computation)."""
    hashes = tuple(sorted(bundles))
    return [Proposal(spec.config_digest, epoch, attempt, public_key(seed), hashes,
                     random_header(spec, epoch, rng).to_bytes()).signed_by(seed).encode()
            for _ in range(count)]


def proposal_naming(spec: NetworkSpec, seed: bytes, epoch: int, attempt: int, bundles: int,
                    rng: random.Random) -> bytes:
    """One proposal naming ``bundles`` bundle hashes nobody has (the audit: one proposal
    triggered 20,000 fetches)."""
    hashes = tuple(sorted({rng.randbytes(32) for _ in range(bundles)}))
    return Proposal(spec.config_digest, epoch, attempt, public_key(seed), hashes,
                    random_header(spec, epoch, rng).to_bytes()).signed_by(seed).encode()


# -- the devnet as the referee sees it ------------------------------------------------------------
@dataclass(frozen=True)
class Agent:
    """One of the devnet's provider agents (an honest provider)."""

    name: str
    key: bytes
    status_file: Path

    @property
    def b58(self) -> str:
        return base58.b58encode(self.key).decode()


class DevnetView:
    """A devnet's data directory and validator URLs, read through public interfaces only."""

    def __init__(self, data: Path, urls: Sequence[str]) -> None:
        self.data = data
        self.urls = list(urls)
        self.spec = load_spec(data / "network.toml")
        self.agents = [Agent(d.name, public_key(load_or_create_key(d / "provider.key")),
                             d / "status.json") for d in sorted(data.glob("p[0-9]*"))]
        self.addrs = [self.get(i, "/status")["listen_addrs"][0] for i in range(len(urls))]
        self.baseline: dict[str, dict[str, Any]] = {}  # agent key (b58) -> its record

    def get(self, i: int, path: str) -> Any:
        code, body = get_json(self.urls[i] + path, timeout=10)
        assert code == 200, (self.urls[i] + path, code, body)
        return body

    def dropped(self, i: int) -> dict[str, int]:
        return dict(self.get(i, "/status")["dropped"])

    def agent(self, name: str) -> Agent:
        return next(a for a in self.agents if a.name == name)

    def target(self, agent: Agent) -> ProbeTarget:
        """Where the validators probe ``agent``: its registration as ``/providers`` serves it."""
        registration = self.get(0, f"/providers/{agent.b58}")["registration"]
        return ProbeTarget(agent.key, registration["multiaddr"], registration["data_host"],
                           registration["data_port"])

    def agent_statistics(self, agent: Agent) -> dict[str, int]:
        return dict(json.loads(agent.status_file.read_text())["statistics"])

    def final_epochs(self, i: int) -> set[int]:
        return {e["epoch"] for e in self.get(i, "/epochs?limit=1000")}

    def signing_seed(self, i: int) -> bytes:
        return load_or_create_key(self.data / f"v{i}" / "signing.key")

    def pid(self, name: str) -> int:
        return int((self.data / name / "pid").read_text())

    def leader_attempt(self, signing_key: bytes, epoch: int) -> int:
        """The attempt of ``epoch`` that ``signing_key`` leads, from public data: the leader
        order is seeded by the latest final report at or before ``epoch - 2``."""
        earlier = [e for e in self.final_epochs(0) if e <= epoch - 2]
        base = (ReportHeader.from_bytes(bytes.fromhex(
            self.get(0, f"/epochs/{max(earlier)}")["header"])).next_seed if earlier
            else assignment.genesis_seed(self.spec))
        order = assignment.leader_order(self.spec, assignment.epoch_seed(base, epoch))
        return list(order).index(signing_key)

    def honest_records(self, epoch: int) -> dict[str, dict[str, Any]]:
        records = self.get(0, f"/epochs/{epoch}")["records"]
        keys = {a.b58 for a in self.agents}
        return {r["provider"]: r for r in records if r["provider"] in keys}

    def wait_baseline(self, timeout: float) -> int:
        """Wait for a final in which every agent has a measured record (weight > 0, no
        flags), on every validator; it is the baseline the attacks are judged against."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            common = set.intersection(*(self.final_epochs(i) for i in range(len(self.urls))))
            for epoch in sorted(common):
                records = self.honest_records(epoch)
                if len(records) == len(self.agents) and all(
                        r["weight"] > 0 and r["flags"] == 0 and r["down_kbps"] > 0
                        and r["up_kbps"] > 0 for r in records.values()):
                    self.baseline = records
                    return epoch
            time.sleep(0.5)
        raise AssertionError(f"no final measured every agent within {timeout} s")


@dataclass(frozen=True)
class Count:
    """A refusal an attack must cause: the sum of ``names`` rises by at least ``needed`` on
    each of ``validators`` (indices), or on the agent ``agent``."""

    names: tuple[str, ...]
    needed: int
    validators: tuple[int, ...] = (0, 1, 2, 3)
    agent: str | None = None

    def where(self) -> str:
        return f"agent {self.agent}" if self.agent else "v" + ",".join(map(str, self.validators))


@dataclass
class Row:
    attack: str
    sent: int
    counts: list[tuple[Count, int]]  # each with the least rise seen over its targets
    finals: list[int]
    seconds: float
    problems: list[str]


class Window:
    """Opened just before an attack: the counters and evidence then; ``close`` judges."""

    def __init__(self, view: DevnetView) -> None:
        self.view = view
        self.started = time.time()
        self._validators = [view.dropped(i) for i in range(len(view.urls))]
        self._agents = {a.name: view.agent_statistics(a) for a in view.agents}
        self.evidence = view.get(0, "/evidence")

    @classmethod
    def from_epoch(cls, view: DevnetView, epoch: int) -> "Window":
        """A window open since ``epoch`` began, with every counter at zero (the devnet's
        processes started with none): for an attack that has run since the start."""
        window = cls(view)
        window.started = view.spec.epoch_start(epoch)
        window._validators = [{} for _ in view.urls]
        window._agents = {a.name: {} for a in view.agents}
        window.evidence = []
        return window

    def rises(self, count: Count) -> dict[str, int]:
        """How much the sum of ``count.names`` rose since the window opened, per target."""
        if count.agent is not None:
            now = self.view.agent_statistics(self.view.agent(count.agent))
            return {count.agent: sum(now.get(n, 0) - self._agents[count.agent].get(n, 0)
                                     for n in count.names)}
        out = {}
        for i in count.validators:
            now = self.view.dropped(i)
            out[f"v{i}"] = sum(now.get(n, 0) - self._validators[i].get(n, 0)
                               for n in count.names)
        return out

    def changes(self, target: str) -> dict[str, int]:
        """Every counter of ``target`` (``v<i>`` or an agent's name) that moved, by how much."""
        if target.startswith("v") and target[1:].isdigit():
            before, now = self._validators[int(target[1:])], self.view.dropped(int(target[1:]))
        else:
            before = self._agents[target]
            now = self.view.agent_statistics(self.view.agent(target))
        return {k: v - before.get(k, 0) for k, v in sorted(now.items()) if v != before.get(k, 0)}

    def close(self, attack: str, sent: int, counts: Sequence[Count],
              ended: float | None = None) -> Row:
        """Wait (bounded) for the finals of every epoch the attack overlapped and for each
        count, then judge; ``Row.problems`` lists what went wrong (empty: all held)."""
        view, spec = self.view, self.view.spec
        ended = time.time() if ended is None else ended
        epochs = list(range(max(0, spec.epoch_at(self.started)), spec.epoch_at(ended) + 1))
        problems: list[str] = []
        deadline = spec.epoch_end(epochs[-1]) + 3 * spec.epoch_seconds
        missing = set(epochs)
        while missing and time.time() < deadline:
            missing = set(epochs) - set.intersection(
                *(view.final_epochs(i) for i in range(len(view.urls))))
            time.sleep(0.5)
        if missing:
            problems.append(f"epochs {sorted(missing)} not final on every validator")
        seen: list[tuple[Count, int]] = []
        count_deadline = time.time() + 2 * spec.epoch_seconds
        for count in counts:
            rises = self.rises(count)
            while min(rises.values()) < count.needed and time.time() < count_deadline:
                time.sleep(0.5)
                rises = self.rises(count)
            seen.append((count, min(rises.values())))
            if min(rises.values()) < count.needed:
                short = min(rises, key=rises.__getitem__)
                problems.append(f"{'+'.join(count.names)} rose by {rises}, on some by fewer "
                                f"than the {count.needed} the attack sent; what rose on "
                                f"{short}: {self.changes(short)}")
        for epoch in sorted(set(epochs) - missing):
            problems += self._judge_final(epoch)
        problems += self._judge_committees()
        return Row(attack, sent, seen, sorted(set(epochs) - missing), ended - self.started,
                   problems)

    def _judge_final(self, epoch: int) -> list[str]:
        view = self.view
        problems = []
        reports = [view.get(i, f"/epochs/{epoch}") for i in range(len(view.urls))]
        if len({r["header_sha256"] for r in reports}) != 1:
            problems.append(f"epoch {epoch}: validators serve different headers")
        if len(reports[0]["signatures"]) < view.spec.threshold:
            problems.append(f"epoch {epoch}: below threshold")
        held = view.honest_records(epoch)
        for key, before in view.baseline.items():
            now = held.get(key)
            if now is None:
                problems.append(f"epoch {epoch}: provider {key[:8]} has no record")
            elif (now["weight"], now["flags"]) != (before["weight"], before["flags"]) or \
                    not now["down_kbps"] > 0 < now["up_kbps"]:
                problems.append(f"epoch {epoch}: provider {key[:8]} record {now} differs from "
                                f"the baseline {before}")
        return problems

    def _judge_committees(self) -> list[str]:
        """Every committee member's own observation of each agent, in the newest final."""
        problems = []
        for agent in self.view.agents:
            detail = self.view.get(0, f"/providers/{agent.b58}")
            for member in detail["committee"]:
                if not (member["heartbeats_ok"] == member["heartbeats_sent"] > 0
                        and member["down_kbps"] > 0 and member["up_kbps"] > 0
                        and member["flags"] == 0):
                    problems.append(f"epoch {detail['epoch']}: {member['name']} measured "
                                    f"{agent.name} as {member}")
        return problems

    def new_evidence(self) -> list[dict[str, Any]]:
        return [e for e in self.view.get(0, "/evidence") if e not in self.evidence]


def print_table(rows: Sequence[Row]) -> None:
    """The per-attack table: attack, messages sent, counters and their rise, finals."""
    print(f"\n{'attack':<34}{'sent':>7}  {'counter (where): rise >= needed':<78}"
          f"{'finals during':<16}{'s':>5}")
    for row in rows:
        cells = [f"{'+'.join(c.names)} ({c.where()}): {rise} >= {c.needed}"
                 for c, rise in row.counts] or ["-"]
        finals = ",".join(map(str, row.finals)) or "none"
        for k, cell in enumerate(cells):
            head = (f"{row.attack:<34}{row.sent:>7}" if k == 0 else " " * 41)
            tail = f"{finals:<16}{row.seconds:>5.1f}" if k == 0 else ""
            print(f"{head}  {cell:<78}{tail}")
        for problem in row.problems:
            print(f"{'':<41}  PROBLEM: {problem}")
