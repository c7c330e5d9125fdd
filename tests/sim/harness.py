"""Simulation harness: N real validator shells and M synthetic providers in one trio process.

Every validator is the production ``validator.node.Validator`` (its core, its shell, its own
SQLite file) with an ``Environment`` that swaps the world for a simulated one:

- ``open_transport``: a peer of one ``p2p.memory.MemoryNetwork`` named by the validator's spec
  identity (``peer-v<i>``), which dials its bootstrap peers and, like ``p2p.host``, redials the
  missing ones every ``REDIAL_SECONDS``;
- ``clock``: trio's clock plus an offset, so that genesis is ``GENESIS_LEAD_SECONDS`` after
  the simulation starts (run it under an autojump ``MockClock``: epochs cost CPU, not time);
- ``measure``: synthetic observations (below) instead of probes; it sleeps until the epoch's
  end like the prober, so bundles leave at the real time;
- no asyncio services (HTTP API, chain poster).

Providers are not processes: each is a ``ProviderTruth`` (``tests.sim.providers``: its signed
registration and its true uptime, RTT and throughput). An honest validator's observation of a
provider is the truth with a small noise drawn from ``sha256(seed, validator, epoch,
provider)``, so it does not depend on task order. Registrations reach the validators in one of
two ways, chosen by ``open_sim(registrations=...)``:

- ``"gossip"`` (default): a ``provider-gateway`` peer joins the registrations topic and
  publishes every registration before genesis, in batches, waiting until every validator's
  core holds each batch (the topic validator and the core's registration path run for real);
- ``"preload"``: the registrations are written into every validator's SQLite file before it
  starts, and reach its core through ``Validator.__init__``'s restore (for large benchmarks,
  where gossiping 10,000 registrations to 100 validators would dominate the run).

Faults: one seeded ``LossyRoute`` (drop, duplicate, delay; ``partition``/``heal``) on the
network, ``crash(i)`` / ``restart(i)`` (cancel a validator's scope; start it again on the same
SQLite file), and byzantine validators given as ``Behaviour`` objects (``tests.sim.byzantine``).

Use::

    async with open_sim(tmp, n=7, providers=20, seed=3, behaviours={2: Liar()}) as sim:
        for epoch in range(3):
            await sim.check_epoch(epoch)

``check_epoch(epoch)`` waits for the epoch's outcome (bounded in virtual time), then asserts it
(``tests.sim.verdict``, DESIGN §8, issue 4): a final report at every running honest validator,
one final header across all validators, every final metric within the range of the committee
members' truthful observations, evidence against every equivocator.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import trio

from p2p.abc import DialError, Transport
from p2p.memory import LossyRoute, MemoryNetwork, MemoryTransport, RouteKind
from proofs.messages import (MAX_REGISTRATION_BYTES, MeasurementBundle, Observation,
                             Registration, decode_message)
from tests.factories import make_spec, seed_for
from tests.sim import verdict
from tests.sim.providers import (ProviderTruth, honest_observation, make_providers,
                                 preload_registrations)
from tests.sim.verdict import EpochCheck
from validator import assignment
from validator import core as c
from validator.config import NodeConfig
from validator.node import Environment, Keys, Validator
from validator.spec import NetworkSpec
from validator.store import FINAL_COLUMNS, StoredFinal, open_readonly, unpack_final_row

GENESIS_LEAD_SECONDS = 5.0  # virtual seconds between the start of a simulation and genesis
REDIAL_SECONDS = 2.0  # as p2p.host's default redial period
REGISTRATION_BATCH = 200  # under the transports' gossip queue of 1024
GATEWAY = "provider-gateway"


# -- behaviours -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Behaviour:
    """How one simulated validator behaves. The base class is an honest validator; the
    byzantine ones (``tests.sim.byzantine``) override the class used for the shell (and with
    it, possibly, the core) or the observations it reports."""

    name: str = "honest"
    byzantine: bool = False

    @property
    def truthful(self) -> bool:
        """Whether it reports what it measured (its fault, if any, lies elsewhere)."""
        return True

    @property
    def validator_class(self) -> type["SimValidator"]:
        return SimValidator

    def observe(self, honest: Observation, epoch: int,
                committee: tuple[bytes, ...] = ()) -> Observation:
        """What this validator reports, given what an honest one would (x10, 0, ...) and the
        provider's committee (signing keys)."""
        return honest


HONEST = Behaviour()


class SimValidator(Validator):
    """The production shell with two test hooks: it tells the harness when something it
    waits for happened (a final, a registration, evidence), and it can run a subclass of
    ``ValidatorCore`` (``core_class``) for byzantine behaviour.

    ``Validator.__init__`` builds and restores a plain ``ValidatorCore``; a subclass that only
    overrides methods is swapped in by class assignment, so the restore path stays the
    product's own. (A way to pass the core's class to the shell, e.g. an ``Environment``
    field, would make the swap unnecessary.)
    """

    core_class: ClassVar[type[c.ValidatorCore]] = c.ValidatorCore

    def __init__(self, config: NodeConfig, spec: NetworkSpec, keys: Keys, env: Environment,
                 *, on_change: Callable[[], None], index: int, behaviour: Behaviour) -> None:
        super().__init__(config, spec, keys, env)
        if self.core_class is not c.ValidatorCore:
            self.core.__class__ = self.core_class
        self.index = index
        self.behaviour = behaviour
        self.evidence_seen: set[tuple[str, int, bytes]] = set()
        # epochs whose final report is in the SQLite file: the core holds a final before the
        # shell has written it (the shell may be parked in a publish in between)
        self.finals_saved: set[int] = set(self.core.finals)
        self._on_change = on_change

    async def _act(self, actions: list[c.Action]) -> None:
        # the store's answers to SignHeader first, so that what they bring (our signature,
        # a final) is seen below like the rest
        actions = self._store_signatures(actions)
        await super()._act(actions)
        changed = False
        for action in actions:
            if isinstance(action, c.SaveEvidence):
                self.evidence_seen.add((action.kind, action.epoch, action.offender))
                changed = True
            elif isinstance(action, c.SaveFinal):
                if action.new:  # only the new=True action writes the row
                    self.finals_saved.add(action.final.epoch)
                changed = True
            elif isinstance(action, c.SaveRegistration):
                changed = True
        if changed:
            self._on_change()

    def equivocations(self) -> set[tuple[str, int]]:
        """(kind, epoch) of every equivocation this validator committed (none if honest)."""
        return set()


# -- the network ------------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    keys: Keys
    peer_id: str
    config: NodeConfig
    behaviour: Behaviour
    validator: SimValidator | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    up_since: float = math.inf  # virtual time of the last start; inf while down
    starts: int = 0


@dataclass(frozen=True)
class RouteParams:
    """Gossip faults of the seeded route (``p2p.memory.LossyRoute``)."""

    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.0


class SimNetwork:
    """N validators and M providers on one memory network. Build it with ``open_sim``."""

    def __init__(self, root: Path, spec: NetworkSpec, seeds: Sequence[bytes],
                 providers: Sequence[ProviderTruth], seed: int,
                 behaviours: Mapping[int, Behaviour], route: RouteParams,
                 degree: int | None) -> None:
        self.root = root
        self.spec = spec
        self.seed = seed
        self.providers = list(providers)
        self.truth = {p.key: p for p in providers}
        self.network = MemoryNetwork(seed=seed)
        self.route: LossyRoute = LossyRoute(self.network.random, drop=0.0, duplicate=0.0,
                                            max_delay=0.0)
        self.route_counts: Counter[str] = Counter()  # gossip hops dropped / duplicated
        self.network.route = self._counted_route
        self._route_params = route
        self.heartbeats = math.ceil(spec.epoch_seconds / spec.round_seconds)
        self.offset = 0.0
        self.slots: list[_Slot] = []
        self._peer_by_identity_seed: dict[bytes, str] = {}
        for i, signing in enumerate(seeds):
            info = spec.validators[i]
            keys = Keys(seed_for(f"identity/v{i}"), signing, seed_for(f"payer/v{i}"))
            self._peer_by_identity_seed[keys.identity] = info.identity
            data = root / f"v{i}"
            config = NodeConfig(path=data / "config.toml", network=root / "network.toml",
                                data_dir=data, identity_key=data / "identity.key",
                                signing_key=data / "signing.key", payer_key=data / "payer.key",
                                listen="/memory", http_host="127.0.0.1", http_port=0,
                                rpc_url="", airdrop=False, log_format="console")
            self.slots.append(_Slot(i, keys, info.identity, config,
                                    behaviours.get(i, HONEST)))
        self.keys = [spec.validators[i].signing_key for i in range(len(self.slots))]
        self.index_by_key = {key: i for i, key in enumerate(self.keys)}  # public signing key
        self.index_by_peer = {s.peer_id: s.index for s in self.slots}
        self._targets = self._topology(degree)
        # (epoch, provider) -> {validator index: observation} of truthful validators: the
        # reference range of check_epoch
        self.truthful_observations: dict[tuple[int, bytes], dict[int, Observation]] = \
            defaultdict(dict)
        self.gossip_published: Counter[str] = Counter()  # bytes a peer published (origin)
        self.gossip_sent: Counter[str] = Counter()  # bytes a peer sent on gossip hops
        self.gossip_sent_by_topic: Counter[str] = Counter()  # the same, by topic name
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- views --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.slots)

    def now(self) -> float:
        """The validators' wall clock (virtual)."""
        return self.offset + trio.current_time()

    def validator(self, i: int) -> SimValidator:
        v = self.slots[i].validator
        if v is None:
            raise LookupError(f"validator {i} is not running")
        return v

    def running(self) -> list[int]:
        return [s.index for s in self.slots if s.validator is not None]

    def honest(self) -> list[int]:
        return [s.index for s in self.slots if not s.behaviour.byzantine]

    def byzantine(self) -> list[int]:
        return [s.index for s in self.slots if s.behaviour.byzantine]

    def running_honest(self) -> list[int]:
        return [i for i in self.honest() if self.slots[i].validator is not None]

    def reference(self) -> SimValidator:
        """A running honest validator that knows the most final reports."""
        candidates = [self.validator(i) for i in self.running_honest()]
        if not candidates:
            raise LookupError("no honest validator is running")
        return max(candidates, key=lambda v: (len(v.core.finals), -v.index))

    def leaders(self, epoch: int, attempts: int) -> list[int]:
        """Indices of the validators that lead attempts 0..attempts-1 of ``epoch``."""
        core = self.reference().core
        return [self.index_by_key[core.leader(epoch, a)] for a in range(attempts)]

    def store_path(self, i: int) -> Path:
        return self.slots[i].config.db_path

    # -- waiting ------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked whenever a validator stores a final,
        a registration or evidence, or a validator starts or stops."""
        while True:
            event = self._changed
            if predicate():
                return
            await event.wait()

    async def wait_final(self, epoch: int, among: Iterable[int] | None = None) -> None:
        """Wait until every validator in ``among`` (default: the running honest ones) holds
        a final report for ``epoch``. Validators that are down are skipped."""
        wanted = list(among) if among is not None else None

        def done() -> bool:
            group = wanted if wanted is not None else self.running_honest()
            return all(epoch in v.finals_saved for i in group
                       if (v := self.slots[i].validator) is not None)
        await self.wait_until(done)

    async def sleep_until(self, wall_time: float) -> None:
        delay = wall_time - self.now()
        if delay > 0:
            await trio.sleep(delay)

    # -- faults -------------------------------------------------------------------------
    def crash(self, i: int) -> None:
        """Stop validator ``i`` now (its scope is cancelled; its SQLite file stays)."""
        slot = self.slots[i]
        if slot.scope is None:
            raise LookupError(f"validator {i} is not running")
        slot.scope.cancel()

    async def restart(self, i: int) -> None:
        """Start validator ``i`` again on its SQLite file, once its previous run has ended."""
        slot = self.slots[i]
        await slot.stopped.wait()
        assert self._nursery is not None
        await self._nursery.start(self._run_slot, slot)

    def partition(self, side_a: Iterable[int], side_b: Iterable[int] | None = None) -> None:
        """Cut all traffic between validators ``side_a`` and ``side_b`` (default: the rest)."""
        a = set(side_a)
        b = set(side_b) if side_b is not None else set(range(self.n)) - a
        self.route.partition([self.slots[i].peer_id for i in a],
                             [self.slots[i].peer_id for i in b])

    def heal(self) -> None:
        self.route.heal()

    # -- running validators -------------------------------------------------------------
    def _counted_route(self, src: str, dst: str, kind: RouteKind) -> list[float]:
        delays = self.route(src, dst, kind)
        if kind == "gossip":
            self.route_counts["hops"] += 1
            if not delays:
                self.route_counts["dropped"] += 1
            elif len(delays) > 1:
                self.route_counts["duplicated"] += 1
        return delays

    def _topology(self, degree: int | None) -> dict[int, list[str]]:
        """Whom each validator dials: everyone (``degree`` None), or ``degree // 2`` seeded
        random peers, so that links (which are symmetric) average about ``degree``."""
        addrs = [f"/memory/{s.peer_id}/p2p/{s.peer_id}" for s in self.slots]
        if degree is None or degree >= self.n - 1:
            return {i: [a for j, a in enumerate(addrs) if j != i] for i in range(self.n)}
        rng = random.Random(f"topology/{self.seed}")
        out: dict[int, list[str]] = {}
        for i in range(self.n):
            others = [j for j in range(self.n) if j != i]
            # a ring link keeps the graph connected whatever the draw
            picks = {(i + 1) % self.n} | set(rng.sample(others, max(1, degree // 2 - 1)))
            out[i] = [addrs[j] for j in sorted(picks)]
        return out

    def _count_bytes(self, transport: MemoryTransport) -> None:
        """Count gossip bytes: a peer's own publications, and every hop it sends (counted on
        arrival, so hops the route drops are not counted)."""
        receive = transport._receive_gossip
        me = transport.peer_id

        def counting(topic: str, forwarder: str, data: bytes) -> None:
            if forwarder == me:
                self.gossip_published[me] += len(data)
            else:
                self.gossip_sent[forwarder] += len(data)
                self.gossip_sent_by_topic[topic.rsplit("/", 2)[-2]] += len(data)
            receive(topic, forwarder, data)
        transport._receive_gossip = counting  # type: ignore[method-assign]

    @asynccontextmanager
    async def _open_transport(self, identity_seed: bytes, listen: str,
                              bootstrap: Sequence[str]) -> AsyncIterator[Transport]:
        """``Environment.open_transport`` for the memory network. ``bootstrap`` (the spec's
        addresses) is replaced by the harness topology."""
        peer = self._peer_by_identity_seed[identity_seed]
        targets = self._targets[self.index_by_peer[peer]]
        async with self.network.transport(peer) as transport, trio.open_nursery() as nursery:
            self._count_bytes(transport)
            for addr in targets:
                with suppress(DialError):
                    await transport.connect(addr)
            nursery.start_soon(self._redial_loop, transport, targets)
            try:
                yield transport
            finally:
                nursery.cancel_scope.cancel()

    async def _redial_loop(self, transport: MemoryTransport, targets: list[str]) -> None:
        while True:
            await trio.sleep(REDIAL_SECONDS)
            connected = set(transport.connected_peers())
            for addr in targets:
                if addr.rpartition("/p2p/")[2] not in connected:
                    with suppress(DialError):
                        await transport.connect(addr)

    async def _measure(self, node: Validator, epoch: int, providers: Sequence[Registration],
                       seed: bytes, start: float, end: float
                       ) -> tuple[tuple[Observation, ...], dict[str, int]]:
        """``Environment.measure``: sleep through the epoch, then report observations."""
        await node.sleep_until(end)
        slot = self.slots[self.index_by_key[node.core.me]]
        out = []
        for reg in providers:
            truth = self.truth.get(reg.provider)
            if truth is None:
                continue
            obs = honest_observation(self.seed, slot.index, epoch, truth, self.heartbeats)
            if slot.behaviour.truthful:
                self.truthful_observations[(epoch, reg.provider)][slot.index] = obs
            out.append(slot.behaviour.observe(obs, epoch,
                                              node.core.committee(epoch, reg.provider)))
        return tuple(out), {}

    def _environment(self) -> Environment:
        return Environment(open_transport=self._open_transport, clock=self.now,
                           measure=self._measure, asyncio_services=False,
                           identity=self._peer_by_identity_seed.__getitem__)

    async def _run_slot(self, slot: _Slot, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cls = slot.behaviour.validator_class
        validator = cls(slot.config, self.spec, slot.keys, self._environment(),
                        on_change=self._notify, index=slot.index, behaviour=slot.behaviour)
        slot.stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                slot.scope = scope
                slot.validator = validator
                slot.up_since = self.now()
                slot.starts += 1
                await validator.run(task_status=task_status)
        finally:
            slot.validator = None
            slot.scope = None
            slot.up_since = math.inf
            validator.store.close()
            validator._ledger.close()
            slot.stopped.set()
            self._notify()

    async def _start(self, registrations: str) -> None:
        assert self._nursery is not None
        if registrations == "preload":
            for slot in self.slots:
                preload_registrations(slot.config.db_path,
                                      [p.registration for p in self.providers])
        for slot in self.slots:
            await self._nursery.start(self._run_slot, slot)
        if registrations == "gossip":
            await self._gossip_registrations()
        for i in self.running():
            have = len(self.validator(i).core.registrations)
            if have != len(self.providers):
                raise AssertionError(f"validator {i} knows {have} of {len(self.providers)} "
                                     "registrations at genesis")
        if self.now() >= self.spec.genesis_time:
            raise AssertionError("setup ran past genesis: raise GENESIS_LEAD_SECONDS")
        p = self._route_params
        self.route.drop, self.route.duplicate, self.route.max_delay = \
            p.drop, p.duplicate, p.max_delay

    async def _gossip_registrations(self) -> None:
        topic = self.spec.topic("registrations")
        async with self.network.transport(GATEWAY) as gateway, trio.open_nursery() as nursery:
            targets = (self._targets[0] if len(self._targets[0]) < self.n - 1 else
                       [f"/memory/{s.peer_id}/p2p/{s.peer_id}" for s in self.slots])
            for addr in targets:
                await gateway.connect(addr)
            channel = await gateway.subscribe(topic, lambda peer, data: True,
                                              MAX_REGISTRATION_BYTES)

            async def drain() -> None:
                async for _ in channel:
                    pass
            nursery.start_soon(drain)
            regs = [p.registration for p in self.providers]
            for start in range(0, len(regs), REGISTRATION_BATCH):
                for reg in regs[start:start + REGISTRATION_BATCH]:
                    await gateway.publish(topic, reg.encode())
                count = min(len(regs), start + REGISTRATION_BATCH)
                await self.wait_until(lambda: all(
                    len(self.validator(i).core.registrations) >= count for i in self.running()))
            nursery.cancel_scope.cancel()

    def stop_all(self) -> None:
        for slot in self.slots:
            if slot.scope is not None:
                slot.scope.cancel()

    # -- stores -------------------------------------------------------------------------
    def stored_final(self, i: int, epoch: int) -> StoredFinal | None:
        """Validator ``i``'s final report for ``epoch`` as its SQLite file holds it."""
        path = self.store_path(i)
        if not path.exists():
            return None
        conn = open_readonly(path)
        try:
            row = conn.execute(f"SELECT {FINAL_COLUMNS} FROM final_reports WHERE epoch = ?",
                               (epoch,)).fetchone()
        finally:
            conn.close()
        return unpack_final_row(row) if row else None

    def stored_evidence(self, i: int, epoch: int) -> set[tuple[str, bytes]]:
        conn = open_readonly(self.store_path(i))
        try:
            return {(kind, offender) for kind, offender in conn.execute(
                "SELECT kind, offender FROM evidence WHERE epoch = ?", (epoch,))}
        finally:
            conn.close()

    def stored_bundles(self, i: int, epoch: int) -> dict[bytes, MeasurementBundle]:
        conn = open_readonly(self.store_path(i))
        try:
            out = {}
            for bundle_hash, data in conn.execute(
                    "SELECT hash, data FROM bundles WHERE epoch = ?", (epoch,)):
                msg = decode_message(data)
                assert isinstance(msg, MeasurementBundle)
                out[bundle_hash] = msg
            return out
        finally:
            conn.close()

    def equivocators(self, epoch: int) -> dict[int, set[str]]:
        """Validator index -> kinds of equivocation it committed in ``epoch`` (so far)."""
        out: dict[int, set[str]] = {}
        for slot in self.slots:
            v = slot.validator
            if v is not None:
                kinds = {k for k, e in v.equivocations() if e == epoch}
                if kinds:
                    out[slot.index] = kinds
        return out

    # -- the per-epoch verdict ----------------------------------------------------------
    def _evidence_witnesses(self, epoch: int) -> list[int]:
        """Honest validators running without a break since before ``epoch``'s bundles left."""
        since = self.spec.epoch_end(epoch)
        return [i for i in self.running_honest() if self.slots[i].up_since < since]

    def _evidence_complete(self, epoch: int) -> bool:
        wanted = {(kind, self.keys[j]) for j, kinds in self.equivocators(epoch).items()
                  for kind in kinds}
        return all({(k, o) for k, e, o in self.validator(i).evidence_seen if e == epoch}
                   >= wanted for i in self._evidence_witnesses(epoch))

    async def check_epoch(self, epoch: int, *, strict: bool = True,
                          grace: float | None = None) -> EpochCheck:
        """``wait_outcome(epoch, grace)``, then ``verify_epoch(epoch, strict)``."""
        await self.wait_outcome(epoch, grace)
        return self.verify_epoch(epoch, strict=strict)

    async def wait_outcome(self, epoch: int, grace: float | None = None) -> None:
        """Wait until every running honest validator holds ``epoch``'s final report and the
        evidence of every equivocation committed in it, or until ``grace`` virtual seconds
        (default two epochs) after the epoch's end (or now, if later): no error either way."""
        grace = 2 * self.spec.epoch_seconds if grace is None else grace
        deadline = max(self.now(), self.spec.epoch_end(epoch)) + grace
        with trio.move_on_after(deadline - self.now()):
            await self.wait_final(epoch)
            await self.wait_until(lambda: self._evidence_complete(epoch))

    def verify_epoch(self, epoch: int, *, strict: bool = True) -> EpochCheck:
        """Assert the outcome of ``epoch``: see ``verdict.verify_epoch`` for what is checked."""
        return verdict.verify_epoch(self, epoch, strict=strict)


def sim_spec(n: int, *, committee_size: int | None = None, **overrides: object
             ) -> tuple[NetworkSpec, list[bytes]]:
    """``make_spec(n)`` with memory-network addresses. ``committee_size`` defaults to
    2f+1 (at least 3): the smallest committee in which f byzantine members are a minority."""
    f = (n - 1) // 3
    k = committee_size if committee_size is not None else max(3, 2 * f + 1)
    spec, seeds = make_spec(n, committee_size=k, **overrides)  # type: ignore[arg-type]
    validators = tuple(replace(v, addrs=(f"/memory/{v.identity}/p2p/{v.identity}",))
                       for v in spec.validators)
    return replace(spec, validators=validators), seeds


def first_leaders(spec: NetworkSpec, count: int) -> list[int]:
    """Indices of the validators that lead attempts 0..count-1 of epoch 0 (its seed comes
    from the genesis seed, so it is known before the network starts)."""
    seed = assignment.epoch_seed(assignment.genesis_seed(spec), 0)
    keys = [v.signing_key for v in spec.validators]
    return [keys.index(k) for k in assignment.leader_order(spec, seed)[:count]]


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio wraps a test
    body's failure raised inside the simulation's nursery)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_sim(root: Path, *, n: int, providers: int, seed: int,
                   behaviours: Mapping[int, Behaviour] | None = None,
                   committee_size: int | None = None, route: RouteParams = RouteParams(),
                   degree: int | None = None, registrations: str = "gossip",
                   spec_overrides: Mapping[str, object] | None = None,
                   ) -> AsyncIterator[SimNetwork]:
    """Start ``n`` validators (behaviours by index; honest by default) and ``providers``
    providers under ``root``; yield once every validator runs and knows every registration,
    a few virtual seconds before genesis. Leaving the block stops every validator.

    ``degree``: None links every pair of validators; an integer gives a sparse seeded mesh
    of about that degree (as gossipsub's D), for large networks.
    """
    spec, seeds = sim_spec(n, committee_size=committee_size, **(spec_overrides or {}))
    sim = SimNetwork(root, spec, seeds, make_providers(spec, providers, seed), seed,
                     behaviours or {}, route, degree)
    sim.offset = spec.genesis_time - GENESIS_LEAD_SECONDS - trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            sim._nursery = nursery
            await sim._start(registrations)
            try:
                yield sim
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = _leaf(group)
        if leaf is group:
            raise
        raise leaf from None
