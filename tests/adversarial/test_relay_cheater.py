"""A provider that relays its traffic (added delay) while claiming a location it is not at.

The geometry (DESIGN §6 "Location", ``proofs.location``): a round trip of ``t`` ms proves the
provider is at most ``t * 100`` km from the validator that measured it, never more than that
and never *at least* anything. Delay can always be added (a relay, a queue, a sleep), never
removed. So:

- a validator can never flag a claim that sits next to itself: its bound always contains its
  own location, whatever the RTT;
- a relay with added delay only widens bounds, so it hides the provider from the validators
  whose traffic it slows;
- the cheat is caught by the validators that are close to where the provider really is and
  that it reaches quickly: their short RTT draws a small circle around them that excludes the
  faraway claimed location.

A record carries LOCATION_MISMATCH only when more than half of the committee flags it
(``proofs.aggregate.majority_flags``), so a committee convicts when a majority of its members
is close to the provider's real location. A cheater that delays every validator near its real
location enough looks, by RTT, like an honest provider at the claimed place with a slow line;
light-speed bounds cannot see past that (its latency is then what the record pays for).

The network model (``Geography``): the RTT between a validator and a provider is a fixed
last-mile cost plus 12 us per km of path (fibre at 200 km/ms each way, routes 1.2x the great
circle); a relayed path goes validator -> relay host -> provider and adds the relay's own
delay. Every modelled RTT is therefore above the light-speed floor, so an honest provider is
never outside any bound. On the memory network, opening a connection or stream costs one RTT
(the route hook) and every reply frame of the provider is delayed by one RTT, so an echo
measures exactly the modelled RTT.

Virtual time (autojump clock), a real ``EpochProber`` per validator and the real
``ProbeService`` for providers (throughput declined: the memory network has no data plane).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

import pytest
import trio
import trio.testing

from p2p.abc import Stream
from p2p.memory import MemoryNetwork, RouteKind
from proofs import probe as wire
from proofs.aggregate import WeightParams, build_records, quorate_record
from proofs.location import distance_km
from proofs.messages import Observation, Registration
from proofs.report import Flag
from proofs.signing import public_key
from tests.factories import make_spec, seed_for
from validator.prober import EpochProber
from validator.provider import ProbeService
from validator.spec import NetworkSpec, ProbeParams

EPOCH = 7
EPOCH_SEED = b"relay-epoch-seed".ljust(32, b"\x00")
PARAMS = WeightParams(throughput_cap_kbps=100_000, uptime_exponent=20,
                      latency_bound_us=150_000)

Point = tuple[float, float]
CITIES: dict[str, Point] = {
    "paris": (48.8566, 2.3522),
    "frankfurt": (50.1109, 8.6821),
    "offenbach": (50.0956, 8.7761),  # 7 km from Frankfurt: "near Frankfurt"
    "prague": (50.0755, 14.4378),
    "madrid": (40.4168, -3.7038),
}

LAST_MILE_US = 900
PATH_US_PER_KM = 12  # 10 us/km is the light-in-fibre floor (100 km per ms of RTT); routes 1.2x


@dataclass(frozen=True)
class Placement:
    """Where a provider really is, what it claims, and which validators' traffic it relays."""

    name: str
    site: Point
    claimed: Point
    relay: Point | None = None  # the host relayed traffic passes through
    relay_delay_us: int = 0  # what the relay adds on top of the path
    relayed: frozenset[str] = frozenset()  # validator names whose traffic goes via the relay


class Geography:
    """Modelled RTTs between validators (by name) and providers (by peer id)."""

    def __init__(self, validators: Mapping[str, Point], placements: Sequence[Placement]) -> None:
        self.validators = dict(validators)
        self.placements = {peer_id_of(p.name): p for p in placements}

    def rtt_us(self, validator: str, provider_peer: str) -> int:
        here = self.validators[validator]
        p = self.placements[provider_peer]
        if validator in p.relayed:
            assert p.relay is not None
            path = distance_km(*here, *p.relay) + distance_km(*p.relay, *p.site)
            return round(LAST_MILE_US + path * PATH_US_PER_KM + p.relay_delay_us)
        return round(LAST_MILE_US + distance_km(*here, *p.site) * PATH_US_PER_KM)

    def route(self, src: str, dst: str, kind: RouteKind) -> list[float]:
        """Dials and stream opens cost one RTT between a validator and a provider."""
        if kind == "gossip":
            return [0.0]
        if src in self.validators and dst in self.placements:
            return [self.rtt_us(src, dst) / 1e6]
        if dst in self.validators and src in self.placements:
            return [self.rtt_us(dst, src) / 1e6]
        return [0.0]


class DelayedReplies(Stream):
    """The provider's end of a stream: every frame it writes arrives ``delay`` later."""

    def __init__(self, inner: Stream, delay: float) -> None:
        self.inner = inner
        self.remote_peer = inner.remote_peer
        self.delay = delay

    async def read_frame(self, max_size: int) -> bytes:
        return await self.inner.read_frame(max_size)

    async def write_frame(self, data: bytes) -> None:
        await trio.sleep(self.delay)
        await self.inner.write_frame(data)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ControlOnlyService(ProbeService):
    """Honest on the control plane; declines throughput (no data plane on the memory network),
    which the prober counts as a problem without a flag."""

    async def answer(self, request: wire.Request, peer: str) -> wire.Response:
        if isinstance(request, (wire.DownRequest, wire.UpRequest)):
            return wire.ErrorReply("busy")
        return await super().answer(request, peer)


def provider_seed(name: str) -> bytes:
    return seed_for("relay-test/" + name)


def peer_id_of(name: str) -> str:
    return wire.peer_id_from_public_key(public_key(provider_seed(name)))


def micro(point: Point) -> tuple[int, int]:
    return round(point[0] * 1_000_000), round(point[1] * 1_000_000)


def registration(spec: NetworkSpec, placement: Placement) -> Registration:
    seed = provider_seed(placement.name)
    peer_id = peer_id_of(placement.name)
    lat, lon = micro(placement.claimed)
    return Registration(spec.network_id, public_key(seed), public_key(seed), "eu-west", lat, lon,
                        f"/memory/{peer_id}/p2p/{peer_id}", "127.0.0.1", 9, 0).signed_by(seed)


def committee_spec(cities: Sequence[str]) -> tuple[NetworkSpec, list[bytes]]:
    """A spec whose validators sit in ``cities`` (one committee of all of them); each one's
    peer id on the memory network is its city's name."""
    spec, seeds = make_spec(n=len(cities), committee_size=len(cities), epoch_seconds=30)
    validators = tuple(replace(v, name=city, identity=city, lat=CITIES[city][0],
                               lon=CITIES[city][1])
                       for v, city in zip(spec.validators, cities))
    return replace(spec, validators=validators, probes=ProbeParams(echo_count=5)), seeds


@asynccontextmanager
async def serving(network: MemoryNetwork, spec: NetworkSpec, geography: Geography,
                  placements: Sequence[Placement],
                  now: Callable[[], float]) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for placement in placements:
            peer_id = peer_id_of(placement.name)
            transport = await stack.enter_async_context(network.transport(peer_id))
            service = ControlOnlyService(provider_seed(placement.name), spec, now=now)

            async def handler(stream: Stream, service: ProbeService = service,
                              peer_id: str = peer_id) -> None:
                delay = geography.rtt_us(stream.remote_peer, peer_id) / 1e6
                await service.handle_stream(DelayedReplies(stream, delay))

            transport.set_stream_handler(wire.PROTOCOL, handler)
        yield


async def run_committee(cities: Sequence[str],
                        placements: Sequence[Placement]) -> dict[str, dict[str, Observation]]:
    """One epoch: every validator probes every provider. Observations by validator, then by
    provider name. Also checks the harness: each echo measured the modelled RTT."""
    spec, seeds = committee_spec(cities)
    geography = Geography({c: CITIES[c] for c in cities}, placements)
    network = MemoryNetwork(route=geography.route)
    epoch_start, epoch_end = spec.epoch_start(EPOCH), spec.epoch_end(EPOCH)
    offset = epoch_start - trio.current_time()
    registrations = [registration(spec, p) for p in placements]
    probers: dict[str, EpochProber] = {}
    with trio.fail_after(300):
        async with serving(network, spec, geography, placements,
                           lambda: trio.current_time() + offset), AsyncExitStack() as stack:
            for city, seed in zip(cities, seeds):
                transport = await stack.enter_async_context(network.transport(city))
                probers[city] = EpochProber(
                    transport, spec, epoch=EPOCH, validator_seed=seed, providers=registrations,
                    seed=EPOCH_SEED, now=lambda: trio.current_time() + offset)
            async with trio.open_nursery() as nursery:
                for prober in probers.values():
                    nursery.start_soon(prober.run, epoch_start, epoch_end)
    names = {public_key(provider_seed(p.name)): p.name for p in placements}
    seen: dict[str, dict[str, Observation]] = {}
    for city, prober in probers.items():
        seen[city] = {names[o.provider]: o for o in prober.observations()}
        for placement in placements:
            obs = seen[city][placement.name]
            expected = geography.rtt_us(city, peer_id_of(placement.name))
            assert obs.rtt_min_us == pytest.approx(expected, abs=2)
            assert obs.heartbeats_ok == obs.heartbeats_sent == 10
    return seen


def record_flags(cities: Sequence[str], seen: Mapping[str, Mapping[str, Observation]],
                 name: str) -> int:
    """The flags of ``name``'s record, built as every validator builds it."""
    observations = [seen[city][name] for city in cities]
    provider = observations[0].provider
    quorum = len(cities) // 2 + 1
    (record,) = build_records({provider: observations}, {provider: provider}, {}, {}, quorum,
                              PARAMS)
    assert record == quorate_record(provider, provider, observations, PARAMS, 1000)
    return record.flags


def flagged_by(cities: Sequence[str], seen: Mapping[str, Mapping[str, Observation]],
               name: str) -> set[str]:
    return {c for c in cities if seen[c][name].flags & Flag.LOCATION_MISMATCH}


def honest(name: str, city: str) -> Placement:
    """At ``city`` (within a few km), claiming ``city`` rounded to 0.01 degree."""
    lat, lon = CITIES[city]
    return Placement(name, (lat + 0.03, lon - 0.02), (round(lat, 2), round(lon, 2)))


async def test_provider_near_frankfurt_claiming_paris_is_flagged_by_a_majority(
        autojump_clock: trio.testing.MockClock) -> None:
    """Committee Paris, Frankfurt, Prague. The cheater sits in Offenbach (7 km from Frankfurt,
    ~1 ms RTT to Frankfurt's validator) and claims Paris; its traffic to Paris and Prague goes
    through a relay host in Frankfurt that adds 0.5 ms.

    - Frankfurt measures ~1 ms: it is within ~160 km of Frankfurt; Paris is 478 km away: flag.
    - Prague measures 0.9 + 418 km x 12 us + 0.5 = ~6.4 ms: within ~756 km of Prague; Paris is
      883 km away: flag. Prague is 404 km from where the provider really is.
    - Paris never can flag a claim of Paris (its bound always contains itself).

    Two of three flag: the record carries LOCATION_MISMATCH. Honest providers in Paris, Prague
    and Frankfurt, each claiming its real city, are flagged by nobody.
    """
    cities = ["paris", "frankfurt", "prague"]
    cheater = Placement("cheater", CITIES["offenbach"], CITIES["paris"],
                        relay=CITIES["frankfurt"], relay_delay_us=500,
                        relayed=frozenset({"paris", "prague"}))
    placements = [cheater, honest("honest-paris", "paris"), honest("honest-prague", "prague"),
                  honest("honest-frankfurt", "frankfurt")]
    seen = await run_committee(cities, placements)

    assert seen["frankfurt"]["cheater"].rtt_min_us == pytest.approx(1_000, rel=0.05)
    assert flagged_by(cities, seen, "cheater") == {"frankfurt", "prague"}
    assert record_flags(cities, seen, "cheater") == Flag.LOCATION_MISMATCH
    for name in ("honest-paris", "honest-prague", "honest-frankfurt"):
        assert all(seen[c][name].flags == 0 for c in cities)
        assert record_flags(cities, seen, name) == 0


async def test_provider_relayed_with_delay_claiming_to_sit_next_to_madrid(
        autojump_clock: trio.testing.MockClock) -> None:
    """Committee Paris, Frankfurt, Madrid. The cheater sits in Offenbach and claims to be next
    to the Madrid validator; everything it answers goes through a relay host in Frankfurt that
    adds 1 ms, for every validator.

    - Madrid measures ~19 ms: its bound (~2100 km) contains Madrid, as it always will.
    - Frankfurt measures ~2 ms even with the relay: within ~270 km; Madrid is 1446 km: flag.
    - Paris measures 0.9 + 485 km x 12 us + 1 = ~7.7 ms: within ~900 km of Paris; Madrid is
      1053 km from Paris: flag.

    The added delay cannot hide the provider from the validators it is really close to. Two of
    three flag: the record carries LOCATION_MISMATCH; honest providers in Madrid and Paris do
    not.
    """
    cities = ["paris", "frankfurt", "madrid"]
    cheater = Placement("cheater", CITIES["offenbach"], CITIES["madrid"],
                        relay=CITIES["frankfurt"], relay_delay_us=1_000,
                        relayed=frozenset(cities))
    placements = [cheater, honest("honest-madrid", "madrid"), honest("honest-paris", "paris")]
    seen = await run_committee(cities, placements)

    assert flagged_by(cities, seen, "cheater") == {"paris", "frankfurt"}
    assert record_flags(cities, seen, "cheater") == Flag.LOCATION_MISMATCH
    for name in ("honest-madrid", "honest-paris"):
        assert all(seen[c][name].flags == 0 for c in cities)
        assert record_flags(cities, seen, name) == 0


async def test_one_close_validator_alone_does_not_convict(
        autojump_clock: trio.testing.MockClock) -> None:
    """The Paris-claiming cheater of the first test, seen by Paris, Frankfurt and Madrid.

    Frankfurt flags it, but Madrid (1450 km from the provider: ~19 ms, a ~2200 km circle that
    contains Paris) and Paris cannot. One flag of three is not a majority, so the record does
    not carry it: the same rule that keeps one lying validator from framing an honest
    provider. Catching this cheater needs a committee whose majority is close to where it
    really is.
    """
    cities = ["paris", "frankfurt", "madrid"]
    cheater = Placement("cheater", CITIES["offenbach"], CITIES["paris"],
                        relay=CITIES["frankfurt"], relay_delay_us=500,
                        relayed=frozenset({"paris", "madrid"}))
    seen = await run_committee(cities, [cheater])

    assert flagged_by(cities, seen, "cheater") == {"frankfurt"}
    assert record_flags(cities, seen, "cheater") == 0
