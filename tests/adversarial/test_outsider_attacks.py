"""Attacks from outside the validator set on the probe plane (issue 11, items 1 and 2).

Each test replays one attack of the audit against a real provider agent (``run_provider``:
libp2p on 127.0.0.1 for the control plane, its TCP data port) and the real prober, and shows
that the honest validator still measures the provider while the attacker's traffic is refused
and counted by reason (``ProbeService.statistics()`` on the agent, ``EpochProber.dropped`` on
the validator, which the node adds to ``/status`` as ``probe:<reason>``):

- idle sockets held on the data port (the audit: 8 sockets held 5 s zeroed every throughput
  probe), and a flood of them well past the agent's connection cap;
- ``UpRequest``s from 32 throwaway peer ids (the audit: they filled the session table);
- a non-member pulling keystream (the audit: 1.3 GB in 4 s);
- heartbeats for another validator's key, for another epoch, and from a non-member;
- registrations whose data host is not where the provider is (a reflector), or is a private
  address outside a loopback devnet: nothing reaches the named host;
- the first bytes a validator sends on a data connection are its own token.

The world: a spec of two validators whose identities are libp2p hosts of this test, with
their real loopback listen addresses (so the spec is a loopback devnet) and genesis placed so
that ``EPOCH`` is the current epoch on the wall clock.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from p2p.abc import Transport
from p2p.host import open_libp2p_host
from proofs import probe as wire
from proofs.challenges import SEED_SIZE
from proofs.messages import Registration
from proofs.report import Flag
from tests.adversarial.devnet_attacker import call, reflecting, throwaway, victim
from tests.factories import make_spec, seed_for, with_prober
from validator.data_policy import DataPolicy
from validator.prober import (EpochProber, ProbeResult, ProbeTarget, check_heartbeat,
                              discover_target, probe_provider)
from validator.provider import (MAX_DATA_CONNECTIONS, ProbeService, ProviderOptions,
                                run_provider)
from validator.spec import NetworkSpec, ProbeParams

LOCAL = "/ip4/127.0.0.1/tcp/0"
EPOCH = 7
EPOCH_SEED = b"outsider-epoch-seed".ljust(32, b"\x00")
PARAMS = ProbeParams(heartbeat_timeout_seconds=5.0, echo_count=2, throughput_seconds=0.5,
                     warmup_fraction=0.25)
IDENTITIES = [seed_for("outsider-test/v0-id"), seed_for("outsider-test/v1-id")]
SIGNING = [seed_for("outsider-test/v0-sign"), seed_for("outsider-test/v1-sign")]


@dataclass
class World:
    spec: NetworkSpec
    validators: list[Transport]  # hosts with the spec's identities
    addr: str  # the agent's multiaddr
    target: ProbeTarget
    registration: Registration
    service: ProbeService
    provider_seed: bytes

    async def honest_probe(self, index: int = 0,
                           target: ProbeTarget | Registration | None = None) -> ProbeResult:
        """Validator ``index`` probes the agent once, with a validator's data policy."""
        return await probe_provider(self.validators[index], target or self.target,
                                    network_id=self.spec.network_id, epoch=EPOCH,
                                    validator_seed=SIGNING[index], params=PARAMS,
                                    policy=DataPolicy.for_spec(self.spec))


@asynccontextmanager
async def world(tmp_path: Path, *, devnet: bool = True,
                factory: Callable[..., ProbeService] = ProbeService) -> AsyncIterator[World]:
    async with open_libp2p_host(IDENTITIES[0], LOCAL) as v0, \
            open_libp2p_host(IDENTITIES[1], LOCAL) as v1:
        spec = make_spec(2, probes=PARAMS)[0]
        now = time.time()
        for i, host in enumerate((v0, v1)):
            spec = with_prober(spec, host.peer_id, SIGNING[i], i,
                               addrs=tuple(host.listen_addrs()) if devnet else None,
                               genesis_for=(EPOCH, now))
        services: list[ProbeService] = []

        def capture(*args: Any, **kwargs: Any) -> ProbeService:
            services.append(factory(*args, **kwargs))
            return services[-1]

        options = ProviderOptions(tmp_path / "provider.key")
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(partial(run_provider, options, spec,
                                               service_factory=capture))
            target, registration = await discover_target(v0, addr)
            seed = bytes.fromhex((tmp_path / "provider.key").read_text().strip())
            yield World(spec, [v0, v1], addr, target, registration, services[0], seed)
            nursery.cancel_scope.cancel()


def assert_measured(result: ProbeResult) -> None:
    assert result.heartbeat_ok, result
    assert result.flags == 0 and result.problems == (), result
    assert result.down_kbps > 0 and result.up_kbps > 0, result


def stats(w: World) -> dict[str, int]:
    return w.service.statistics()


# -- held data sockets ---------------------------------------------------------------------------
async def test_idle_sockets_held_on_the_data_port_do_not_fail_the_probe(tmp_path: Path) -> None:
    """The audit's attack: 8 TCP connections to the data port that never send a byte, held
    5 s. Each is closed by the agent after its token deadline (about 1 s); the validator's
    probe during the hold measures both directions."""
    with trio.fail_after(40):
        async with world(tmp_path) as w:
            closed_after: list[float] = []

            async def hold(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
                stream = await trio.open_tcp_stream(w.target.data_host, w.target.data_port)
                task_status.started()
                opened = trio.current_time()
                with trio.move_on_after(5):
                    while await stream.receive_some(1024):
                        pass
                    closed_after.append(trio.current_time() - opened)
                await trio.aclose_forcefully(stream)

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    await nursery.start(hold)
                result = await w.honest_probe()
            assert_measured(result)
            assert len(closed_after) == 8 and max(closed_after) < 3.0, closed_after
            assert stats(w)["data_token_timeout"] >= 8


async def test_socket_flood_past_the_connection_cap_evicts_only_unauthenticated(
        tmp_path: Path) -> None:
    """Twice the agent's connection cap in idle sockets, each re-opened as soon as the agent
    closes it, for 5 s: new connections evict the oldest that never showed a token, so the
    validator's data connections (token first) get in and both directions are measured."""
    with trio.fail_after(60):
        async with world(tmp_path) as w:
            opened = 0

            async def keep_one_open() -> None:
                nonlocal opened
                while True:
                    try:
                        stream = await trio.open_tcp_stream(w.target.data_host,
                                                            w.target.data_port)
                    except OSError:
                        await trio.sleep(0.01)
                        continue
                    opened += 1
                    try:
                        while await stream.receive_some(1024):
                            pass
                    except (trio.BrokenResourceError, OSError):
                        pass
                    await trio.aclose_forcefully(stream)

            async with trio.open_nursery() as nursery:
                for _ in range(2 * MAX_DATA_CONNECTIONS):
                    nursery.start_soon(keep_one_open)
                with trio.fail_after(5):  # the flood is up to strength first
                    while opened < 2 * MAX_DATA_CONNECTIONS:
                        await trio.sleep(0.05)
                results = [await w.honest_probe() for _ in range(2)]
                await trio.sleep(max(0.0, 5 - 2 * PARAMS.throughput_seconds))
                nursery.cancel_scope.cancel()
            for result in results:
                assert_measured(result)
            counted = stats(w)
            assert counted["data_evicted_unauthenticated"] >= MAX_DATA_CONNECTIONS
            assert counted.get("data_connections_full", 0) == 0
            print(f"\nsocket flood: {opened} connections opened, agent counted {counted}")


# -- session exhaustion --------------------------------------------------------------------------
async def test_up_requests_from_throwaway_peer_ids_are_refused(tmp_path: Path) -> None:
    """32 ``UpRequest``s from 32 fresh peer ids: each refused (``session_not_member``), no
    session held; the honest validator's probe right after gets its sessions."""
    with trio.fail_after(60):
        async with world(tmp_path) as w, throwaway(32) as hosts:
            replies = []
            for host in hosts:
                replies.append(await call(host, w.target, wire.UpRequest(
                    30_000, secrets.token_bytes(wire.TOKEN_SIZE))))
            assert replies == [wire.ErrorReply("session_not_member")] * 32
            assert stats(w)["session_not_member"] == 32
            assert stats(w)["sessions"] == 0
            assert_measured(await w.honest_probe())


async def test_a_member_holds_at_most_two_sessions(tmp_path: Path) -> None:
    """A validator asking for sessions it never uses gets two; the third is refused
    (``session_outstanding``), a window longer than the spec's too; the other validator is
    not affected."""
    with trio.fail_after(40):
        async with world(tmp_path) as w:
            greedy = w.validators[1]
            replies = [await call(greedy, w.target, wire.UpRequest(
                500, secrets.token_bytes(wire.TOKEN_SIZE))) for _ in range(3)]
            assert replies[:2] == [wire.SessionReply(0)] * 2
            assert replies[2] == wire.ErrorReply("session_outstanding")
            too_long = await call(greedy, w.target, wire.DownRequest(
                bytes(SEED_SIZE), 30_000, secrets.token_bytes(wire.TOKEN_SIZE)))
            assert too_long == wire.ErrorReply("session_window_too_long")
            assert_measured(await w.honest_probe(0))
            counted = stats(w)
            assert counted["session_outstanding"] == 1
            assert counted["session_window_too_long"] == 1


# -- keystream pulls -----------------------------------------------------------------------------
async def test_a_non_member_cannot_pull_keystream(tmp_path: Path) -> None:
    """A non-member asks for a down session (refused), then connects to the data port with
    the token it chose anyway, and with random ones: not one keystream byte arrives, and the
    agent closes each connection at once."""
    with trio.fail_after(40):
        async with world(tmp_path) as w, throwaway(1) as (outsider,):
            token = secrets.token_bytes(wire.TOKEN_SIZE)
            reply = await call(outsider, w.target, wire.DownRequest(
                secrets.token_bytes(SEED_SIZE), 2000, token))
            assert reply == wire.ErrorReply("session_not_member")
            received = 0
            for attempt in [token] + [secrets.token_bytes(wire.TOKEN_SIZE) for _ in range(4)]:
                stream = await trio.open_tcp_stream(w.target.data_host, w.target.data_port)
                await stream.send_all(attempt)
                with trio.fail_after(3):  # closed by the agent, not by our patience
                    try:
                        while chunk := await stream.receive_some(65536):
                            received += len(chunk)
                    except trio.BrokenResourceError:
                        pass
                await stream.aclose()
            assert received == 0
            counted = stats(w)
            assert counted["session_not_member"] == 1 and counted["bad_token"] == 5
            assert_measured(await w.honest_probe())


# -- foreign heartbeats --------------------------------------------------------------------------
async def test_foreign_heartbeats_are_refused(tmp_path: Path) -> None:
    """Signed only for the calling validator's own signing key and the current epoch."""
    with trio.fail_after(40):
        async with world(tmp_path) as w, throwaway(1) as (outsider,):
            v0, v1 = w.validators
            keys = [w.spec.validators[i].signing_key for i in range(2)]
            nonce = secrets.token_bytes(32)
            cases = [
                (v1, wire.HeartbeatRequest(EPOCH, nonce, keys[0]), "heartbeat_foreign_key"),
                (v0, wire.HeartbeatRequest(EPOCH + 5, nonce, keys[0]), "heartbeat_wrong_epoch"),
                (v0, wire.HeartbeatRequest(2**40, nonce, keys[0]), "heartbeat_wrong_epoch"),
                (outsider, wire.HeartbeatRequest(EPOCH, nonce, keys[0]), "heartbeat_not_member"),
                (outsider, wire.HeartbeatRequest(EPOCH, nonce, bytes(32)),
                 "heartbeat_not_member"),
            ]
            for host, request, reason in cases:
                assert await call(host, w.target, request) == wire.ErrorReply(reason)
            counted = stats(w)
            assert counted["heartbeat_foreign_key"] == 1
            assert counted["heartbeat_wrong_epoch"] == 2
            assert counted["heartbeat_not_member"] == 2
            # Echo is for members too; the signed registration is public.
            assert await call(outsider, w.target, wire.EchoRequest(b"x")) == \
                wire.ErrorReply("echo_not_member")
            assert isinstance(await call(outsider, w.target, wire.InfoRequest()), wire.InfoReply)
            for i in range(2):  # each validator's own heartbeat still works
                assert await check_heartbeat(w.validators[i], w.target,
                                             network_id=w.spec.network_id, epoch=EPOCH,
                                             validator_seed=SIGNING[i], timeout=5)


# -- the data plane is where the provider is -----------------------------------------------------
async def one_epoch(w: World, registration: Registration) -> tuple[Any, dict[str, int]]:
    """Validator 0 probes ``registration`` for three seconds of epoch EPOCH (its throughput
    probe starts at once); its observation and drops."""
    start = time.time()
    prober = EpochProber(w.validators[0], w.spec, epoch=EPOCH, validator_seed=SIGNING[0],
                         providers=[registration], seed=EPOCH_SEED, now=time.time)
    await prober.run(start, start + 3)
    (observation,) = prober.observations()
    return observation, prober.dropped


async def test_a_data_host_that_is_not_the_provider_gets_nothing(tmp_path: Path) -> None:
    """A registration (validly signed by the provider) names a data host that is not the
    address its control connection comes from: another host (127.0.0.2) listening for what
    the validators would send. The prober refuses before any connection; nothing arrives;
    the refusal is counted (``throughput_data_host_not_observed``). Heartbeats and echoes
    of the provider are unaffected."""
    with trio.fail_after(40):
        async with world(tmp_path) as w, victim("127.0.0.2") as (port, records):
            observation, dropped = await one_epoch(
                w, reflecting(w.registration, w.provider_seed, "127.0.0.2", port))
            assert dropped == {"throughput_data_host_not_observed": 1}
            assert observation.flags == Flag.DATA_PORT_UNREACHABLE
            assert observation.down_kbps == observation.up_kbps == 0
            assert observation.heartbeats_ok == observation.heartbeats_sent >= 1
            assert observation.rtt_min_us > 0
            await trio.sleep(0.5)
            assert records == []
            assert stats(w).get("sessions", 0) <= 1  # at most the unused down session


async def test_a_private_data_host_outside_a_devnet_gets_nothing(tmp_path: Path) -> None:
    """Outside a loopback devnet, a data host on loopback is refused even where the
    provider's control connection is (``throughput_data_host_loopback``): nothing arrives."""
    with trio.fail_after(40):
        async with world(tmp_path, devnet=False) as w, victim("127.0.0.1") as (port, records):
            assert DataPolicy.for_spec(w.spec).allowed == frozenset()
            observation, dropped = await one_epoch(
                w, reflecting(w.registration, w.provider_seed, "127.0.0.1", port))
            assert dropped == {"throughput_data_host_loopback": 1}
            assert observation.flags == Flag.DATA_PORT_UNREACHABLE
            assert observation.heartbeats_ok == observation.heartbeats_sent >= 1
            await trio.sleep(0.5)
            assert records == []


async def test_a_data_host_name_that_resolves_to_the_provider_is_probed(tmp_path: Path) -> None:
    """``localhost`` resolves to the observed 127.0.0.1: measured, nothing dropped."""
    with trio.fail_after(40):
        async with world(tmp_path) as w:
            named = replace(w.target, data_host="localhost")
            assert_measured(await w.honest_probe(0, named))


class TokenRecorder(ProbeService):
    """Honest; records the token of each session request and the first bytes of each data
    connection (what ``_claim`` is handed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requested: list[bytes] = []
        self.presented: list[bytes] = []

    async def answer(self, request: wire.Request, peer: str) -> wire.Response:
        if isinstance(request, (wire.DownRequest, wire.UpRequest)):
            self.requested.append(request.token)
        return await super().answer(request, peer)

    def _claim(self, token: bytes) -> Any:
        self.presented.append(token)
        return super()._claim(token)


async def test_the_first_bytes_on_a_data_connection_are_the_validators_own(
        tmp_path: Path) -> None:
    """Each data connection opens with the token the validator put in its request: fresh
    random bytes of its own; the session reply carries no bytes for it to send."""
    with trio.fail_after(40):
        async with world(tmp_path, factory=TokenRecorder) as w:
            assert_measured(await w.honest_probe())
            service = w.service
            assert isinstance(service, TokenRecorder)
            assert len(service.requested) == 2 and len(set(service.requested)) == 2
            assert service.presented == service.requested
