"""EpochProber: the schedule in virtual time (memory network, autojump clock) and one short
epoch in real time against real provider agents (libp2p + TCP data plane on 127.0.0.1)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2p.abc import Stream
from p2p.host import open_libp2p_host
from p2p.memory import MemoryNetwork, MemoryTransport
from proofs import probe as wire
from proofs.challenges import sign_heartbeat
from proofs.messages import Registration
from proofs.report import Flag
from proofs.signing import public_key
from tests.factories import make_spec, seed_for, with_prober
from validator.prober import EpochProber, discover_target
from validator.provider import ProbeService, ProviderOptions, Session, run_provider
from validator.spec import NetworkSpec, ProbeParams

EPOCH = 5
EPOCH_SEED = b"epoch-seed".ljust(32, b"\x00")
VALIDATOR_SEED = seed_for("validator")


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class RecordingService(ProbeService):
    """An honest service that records when each heartbeat arrives (trio clock)."""

    def __init__(self, seed: bytes, spec: NetworkSpec, **kwargs: Any) -> None:
        super().__init__(seed, spec, **kwargs)
        self.heartbeat_times: list[float] = []

    def heartbeat_signature(self, request: wire.HeartbeatRequest) -> bytes:
        self.heartbeat_times.append(trio.current_time())
        return super().heartbeat_signature(request)


class ForgingService(ProbeService):
    def heartbeat_signature(self, request: wire.HeartbeatRequest) -> bytes:
        return sign_heartbeat(seed_for("not-the-provider"), self.network_id, request.epoch,
                              request.nonce, request.validator_key)


async def silent_handler(stream: Stream) -> None:
    """Accepts the stream and never answers."""
    await trio.sleep_forever()


async def garbage_handler(stream: Stream) -> None:
    while True:
        await stream.read_frame(1024)
        await stream.write_frame(b"\xc1garbage")


def memory_registration(spec: NetworkSpec, seed: bytes, data_port: int) -> Registration:
    peer_id = wire.peer_id_from_public_key(public_key(seed))
    return Registration(spec.network_id, public_key(seed), public_key(seed), "eu-west", 0, 0,
                        f"/memory/{peer_id}/p2p/{peer_id}", "127.0.0.1", data_port,
                        0).signed_by(seed)


@asynccontextmanager
async def memory_providers(network: MemoryNetwork, spec: NetworkSpec, kinds: Sequence[str],
                           now: Callable[[], float]) -> AsyncIterator[
                               list[tuple[Registration, ProbeService | None]]]:
    """Providers on the memory network, answering the spec's validators on the clock ``now``.
    The memory network cannot say where a provider is, so throughput is refused on our side
    (``data_host_unverified``): nothing to measure."""
    async with AsyncExitStack() as stack:
        out: list[tuple[Registration, ProbeService | None]] = []
        for i, kind in enumerate(kinds):
            seed = seed_for(f"provider-{kind}-{i}")
            registration = memory_registration(spec, seed, closed_port())
            peer_id = wire.peer_id_from_public_key(registration.provider)
            transport: MemoryTransport = await stack.enter_async_context(
                network.transport(peer_id))
            service: ProbeService | None = None
            if kind == "honest":
                service = RecordingService(seed, spec, now=now)
            elif kind == "forger":
                service = ForgingService(seed, spec, now=now)
            if service is not None:
                transport.set_stream_handler(wire.PROTOCOL, service.handle_stream)
            elif kind == "silent":
                transport.set_stream_handler(wire.PROTOCOL, silent_handler)
            elif kind == "garbage":
                transport.set_stream_handler(wire.PROTOCOL, garbage_handler)
            # kind "absent": no handler, so every stream open fails
            out.append((registration, service))
        yield out


async def test_epoch_schedule_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    spec, _ = make_spec(epoch_seconds=20)  # rounds of 3 s: 7 rounds, the last one 2 s long
    spec = replace(with_prober(spec, "validator", VALIDATOR_SEED),
                   probes=ProbeParams(heartbeat_timeout_seconds=5.0, echo_count=3))
    network = MemoryNetwork()
    epoch_start = spec.epoch_start(EPOCH)
    epoch_end = spec.epoch_end(EPOCH)
    offset = epoch_start - 1.0 - trio.current_time()  # start one second before the epoch

    def now() -> float:
        return trio.current_time() + offset

    kinds = ["honest", "honest", "forger", "silent", "garbage", "absent"]
    with trio.fail_after(60):
        async with memory_providers(network, spec, kinds, now) as providers, \
                network.transport("validator") as transport:
            prober = EpochProber(transport, spec, epoch=EPOCH, validator_seed=VALIDATOR_SEED,
                                 providers=[r for r, _ in providers], seed=EPOCH_SEED, now=now)
            await prober.run(epoch_start, epoch_end)
            assert now() == pytest.approx(epoch_end)
    observations = {o.provider: o for o in prober.observations()}
    assert list(observations) == sorted(observations)
    by_kind = {kind: observations[r.provider] for kind, (r, _) in zip(kinds, providers)}

    # Honest providers: every round's heartbeat answered, at the jittered time.
    for registration, service in providers[:2]:
        assert isinstance(service, RecordingService)
        expected = []
        for index in range(7):
            round_start = epoch_start + 3 * index
            length = min(3.0, epoch_end - round_start)
            due = round_start + wire.heartbeat_offset(EPOCH_SEED, registration.provider,
                                                      index, length)
            expected.append(due - offset)
            assert round_start <= due < round_start + length
        assert service.heartbeat_times == pytest.approx(expected, abs=1e-6)
        obs = observations[registration.provider]
        assert (obs.heartbeats_sent, obs.heartbeats_ok) == (7, 7)
        # Virtual time: echoes take no time, but an RTT is at least 1 us.
        assert obs.rtt_min_us == obs.rtt_median_us == 1
        # No observed address on the memory network: throughput is refused on our side
        # and scores 0 with the flag, nothing else.
        assert (obs.down_kbps, obs.up_kbps) == (0, 0)
        assert obs.flags == Flag.DATA_PORT_UNREACHABLE
    # The two honest providers are checked at different moments.
    first, second = (s.heartbeat_times for _, s in providers[:2])  # type: ignore[union-attr]
    assert first != second

    assert by_kind["forger"].heartbeats_ok == 0 and by_kind["forger"].heartbeats_sent == 7
    assert by_kind["forger"].flags & Flag.HEARTBEAT_BAD_SIG
    # Silent: each heartbeat times out after 5 s; those still pending at the epoch end are
    # not counted, the others are sent-but-not-ok.
    silent = by_kind["silent"]
    assert silent.heartbeats_ok == 0 and 3 <= silent.heartbeats_sent < 7
    assert silent.flags == 0 and silent.rtt_median_us == 0
    for kind in ("garbage", "absent"):
        obs = by_kind[kind]
        assert (obs.heartbeats_sent, obs.heartbeats_ok, obs.flags) == (7, 0, 0)
        assert obs.rtt_median_us == obs.down_kbps == obs.up_kbps == 0
    assert prober.dropped["heartbeat_bad_sig"] == 7
    assert prober.dropped["heartbeat_decode_malformed"] == 7
    assert prober.dropped["heartbeat_dial_failed"] == 7
    assert prober.dropped["heartbeat_timeout"] == silent.heartbeats_sent
    assert prober.dropped["throughput_data_host_unverified"] >= 2



async def test_late_start_skips_past_check_times(autojump_clock: trio.testing.MockClock) -> None:
    spec = with_prober(make_spec(epoch_seconds=20)[0], "validator", VALIDATOR_SEED)
    network = MemoryNetwork()
    epoch_start, epoch_end = spec.epoch_start(EPOCH), spec.epoch_end(EPOCH)
    offset = epoch_start + 10.0 - trio.current_time()  # (re)started 10 s into the epoch

    def now() -> float:
        return trio.current_time() + offset

    with trio.fail_after(60):
        async with memory_providers(network, spec, ["honest"], now) as providers, \
                network.transport("validator") as transport:
            (registration, service), = providers
            prober = EpochProber(transport, spec, epoch=EPOCH, validator_seed=VALIDATOR_SEED,
                                 providers=[registration], seed=EPOCH_SEED, now=now)
            await prober.run(epoch_start, epoch_end)
    due = [epoch_start + 3 * i + wire.heartbeat_offset(
        EPOCH_SEED, registration.provider, i, min(3.0, epoch_end - epoch_start - 3 * i))
        for i in range(7)]
    still_ahead = [t for t in due if t >= epoch_start + 10.0]
    assert isinstance(service, RecordingService)
    assert service.heartbeat_times == pytest.approx([t - offset for t in still_ahead])
    (obs,) = prober.observations()
    assert obs.heartbeats_sent == obs.heartbeats_ok == len(still_ahead)

class TimedService(ProbeService):
    """An honest service that logs when each data session runs (to check serialisation)."""

    intervals: list[tuple[float, float]] = []

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        start = trio.current_time()
        try:
            await super().send_down(stream, session)
        finally:
            self.intervals.append((start, trio.current_time()))

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        start = trio.current_time()
        try:
            return await super().receive_up(stream, session)
        finally:
            self.intervals.append((start, trio.current_time()))


async def test_short_real_epoch_against_provider_agents(tmp_path: Path) -> None:
    import time

    TimedService.intervals = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, \
                open_libp2p_host(seed_for("validator-id"), "/ip4/127.0.0.1/tcp/0") as t:
            # The prober is the spec's only validator, on loopback: a loopback devnet, where
            # providers' data ports on 127.0.0.1 are probed.
            spec = with_prober(make_spec(1, epoch_seconds=4)[0], t.peer_id, VALIDATOR_SEED,
                               addrs=tuple(t.listen_addrs()), genesis_for=(EPOCH, time.time()))
            spec = replace(spec, round_seconds=1,
                           probes=ProbeParams(heartbeat_timeout_seconds=2.0, echo_count=3,
                                              throughput_seconds=0.4, warmup_fraction=0.25))
            addrs = [await nursery.start(partial(
                run_provider, ProviderOptions(tmp_path / f"p{i}.key"), spec,
                service_factory=TimedService)) for i in range(2)]
            registrations = [(await discover_target(t, a))[1] for a in addrs]
            start = time.time() + 0.2
            prober = EpochProber(t, spec, epoch=EPOCH, validator_seed=VALIDATOR_SEED,
                                 providers=registrations, seed=EPOCH_SEED, now=time.time)
            await prober.run(start, start + 4)
            nursery.cancel_scope.cancel()
    for obs in prober.observations():
        assert obs.heartbeats_ok == obs.heartbeats_sent >= 3
        assert 0 < obs.rtt_min_us <= obs.rtt_median_us
        assert obs.down_kbps > 0 and obs.up_kbps > 0
        assert obs.flags == 0
    assert prober.dropped == {}
    # Throughput probes of one validator never overlap.
    spans = sorted(TimedService.intervals)
    assert len(spans) == 4
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
