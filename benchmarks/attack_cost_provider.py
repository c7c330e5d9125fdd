"""What floods from outside the validator set cost a provider agent (issue 11, items 1-2).

Usage::

    .venv/bin/python benchmarks/attack_cost_provider.py [--seconds 5]

A real provider agent runs as its own process (this script in ``--agent`` mode: the product
``run_provider`` whose ``ProbeService.statistics()`` it prints as JSON when stopped), on
127.0.0.1, for a loopback devnet spec whose validators are libp2p hosts of this process
(60 s epochs). For each flood, this process attacks for ``--seconds`` through a counting TCP
proxy (so the attacker's payload bytes are counted exactly; TCP/IP headers are not, about
200 bytes per connection opened and closed on loopback), while an honest validator (another
one per flood, so that no honest one reaches its own per-epoch session cap) probes the agent
directly once per flood (down and up, 0.5 s windows). Floods:

- ``held sockets``: twice the agent's data-connection cap in idle TCP connections to the data
  port, each re-opened as soon as the agent closes it (the audit: 8 held 5 s zeroed probes);
- ``session exhaustion``: a fresh libp2p identity per ``UpRequest`` (the audit: 32 filled the
  session table), 8 attackers at once;
- ``keystream pulls (outsider)``: one identity that is no validator asks for down sessions
  and presents tokens on the data port (the audit: 1.3 GB in 4 s), 8 attackers at once;
- ``keystream pulls (member)``: the most a *validator* can pull: a spec validator that asks
  for down sessions (2 s, the longest allowed) back to back and reads them out directly (no
  proxy), two at a time (what it may hold), for four times ``--seconds``: each session ends
  at its window plus the agent's 5 s slack, and the per-epoch cap (6) ends the flood.

Printed per flood: the attacker's payload bytes per second sent and received, connections
and requests per second, the agent's CPU seconds per second (``/proc/<pid>/stat``, user +
system) and that over the attacker's sent MB/s, the honest probe's result during the flood,
and what the agent refused, by reason. The figures are "after" only: the checks are not
switchable, so there is no "before" run (the audit's numbers are in issue 11).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio  # noqa: E402

from p2p.abc import Transport  # noqa: E402
from p2p.host import open_libp2p_host  # noqa: E402
from proofs import probe as wire  # noqa: E402
from proofs.challenges import SEED_SIZE  # noqa: E402
from tests.adversarial.devnet_attacker import call  # noqa: E402
from tests.factories import make_spec, seed_for, with_prober  # noqa: E402
from validator.data_policy import DataPolicy  # noqa: E402
from validator.prober import (ProbeTarget, discover_target,  # noqa: E402
                              probe_provider)
from validator.provider import MAX_DATA_CONNECTIONS  # noqa: E402
from validator.spec import NetworkSpec, ProbeParams, load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "/ip4/127.0.0.1/tcp/0"
PARAMS = ProbeParams(heartbeat_timeout_seconds=5.0, echo_count=2, throughput_seconds=0.5,
                     warmup_fraction=0.25)
EPOCH_SECONDS = 60
WORKERS = 8
TICKS = os.sysconf("SC_CLK_TCK")


# -- the agent process ---------------------------------------------------------------------------
def agent_main(network: Path, key: Path) -> int:
    """``--agent``: run the provider agent; print its multiaddr, data port, then (on SIGTERM)
    its ``statistics()`` as one JSON line."""
    from validator.logs import configure_logging
    from validator.provider import ProbeService, ProviderOptions, run_provider

    configure_logging()
    spec = load_spec(network)
    services: list[ProbeService] = []

    def capture(*args: Any, **kwargs: Any) -> ProbeService:
        services.append(ProbeService(*args, **kwargs))
        return services[-1]

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                addr = await nursery.start(partial(run_provider, ProviderOptions(key), spec,
                                                   service_factory=capture))
                print(addr, flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve)
    print(json.dumps(services[0].statistics() if services else {}), flush=True)
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


# -- a counting proxy ----------------------------------------------------------------------------
@dataclass
class Counter:
    sent: int = 0  # attacker -> agent payload bytes
    received: int = 0  # agent -> attacker
    keystream: int = 0  # of which keystream read on the data port
    connections: int = 0
    requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)


async def proxy(target: tuple[str, int], counter: Counter, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Forward 127.0.0.1:<port> to ``target``, counting payload both ways."""

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, outbound: bool) -> None:
        try:
            while data := await src.receive_some(65536):
                if outbound:
                    counter.sent += len(data)
                else:
                    counter.received += len(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(dst)
            await trio.aclose_forcefully(src)

    async def handle(client: trio.SocketStream) -> None:
        counter.connections += 1
        try:
            upstream = await trio.open_tcp_stream(*target)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream, True)
            nursery.start_soon(pump, upstream, client, False)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


# -- floods --------------------------------------------------------------------------------------
@dataclass
class Ports:
    control: int  # proxied libp2p port
    data: int  # proxied data port
    peer_id: str  # the agent's


def proxied(target: ProbeTarget, ports: Ports) -> ProbeTarget:
    return replace(target, multiaddr=f"/ip4/127.0.0.1/tcp/{ports.control}/p2p/{ports.peer_id}",
                   data_host="127.0.0.1", data_port=ports.data)


def refused(counter: Counter, reply: wire.Response) -> None:
    counter.requests += 1
    if isinstance(reply, wire.ErrorReply):
        counter.refused[reply.reason] = counter.refused.get(reply.reason, 0) + 1


async def held_sockets(ports: Ports, target: ProbeTarget, counter: Counter,
                       member: Transport) -> None:
    async def keep_one_open() -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", ports.data)
            except OSError:
                await trio.sleep(0.01)
                continue
            try:
                while await stream.receive_some(1024):
                    pass
            except (trio.BrokenResourceError, OSError):
                pass
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for _ in range(2 * MAX_DATA_CONNECTIONS):
            nursery.start_soon(keep_one_open)


async def session_exhaustion(ports: Ports, target: ProbeTarget, counter: Counter,
                             member: Transport) -> None:
    async def worker() -> None:
        while True:
            async with open_libp2p_host(secrets.token_bytes(32), LOCAL) as host:
                reply = await call(host, proxied(target, ports), wire.UpRequest(
                    30_000, secrets.token_bytes(wire.TOKEN_SIZE)))
                refused(counter, reply)

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker)


async def _pull(address: tuple[str, int], token: bytes, counter: Counter,
                direct: bool = False) -> None:
    """Present ``token`` on the data port at ``address`` and read until the agent closes
    (``direct``: not through the proxy, so count here)."""
    stream = await trio.open_tcp_stream(*address)
    if direct:
        counter.connections += 1
        counter.sent += len(token)
    try:
        await stream.send_all(token)
        while data := await stream.receive_some(1 << 20):
            counter.keystream += len(data)
            if direct:
                counter.received += len(data)
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def outsider_pulls(ports: Ports, target: ProbeTarget, counter: Counter,
                         member: Transport) -> None:
    async with open_libp2p_host(secrets.token_bytes(32), LOCAL) as host:
        via = proxied(target, ports)

        async def worker() -> None:
            while True:
                token = secrets.token_bytes(wire.TOKEN_SIZE)
                reply = await call(host, via, wire.DownRequest(
                    secrets.token_bytes(SEED_SIZE), 2000, token))
                refused(counter, reply)
                await _pull(("127.0.0.1", ports.data), token, counter)

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)


async def member_pulls(ports: Ports, target: ProbeTarget, counter: Counter,
                       member: Transport) -> None:
    """The last validator of the spec, greedy: two pullers (the sessions it may hold at once),
    each asking for down sessions back to back and reading each until the agent ends it."""

    async def worker() -> None:
        while True:
            token = secrets.token_bytes(wire.TOKEN_SIZE)
            reply = await call(member, target, wire.DownRequest(
                secrets.token_bytes(SEED_SIZE), 2000, token))
            refused(counter, reply)
            if isinstance(reply, wire.SessionReply):
                await _pull((target.data_host, target.data_port), token, counter, direct=True)
            else:
                await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(worker)


Flood = Callable[[Ports, ProbeTarget, Counter, Transport], Awaitable[None]]
# (name, flood, duration in units of --seconds): the member's runs long enough to meet its cap
FLOODS: list[tuple[str, Flood | None, float]] = [
    ("none (baseline)", None, 1.0),
    ("held sockets", held_sockets, 1.0),
    ("session exhaustion", session_exhaustion, 1.0),
    ("keystream pulls (outsider)", outsider_pulls, 1.0),
    ("keystream pulls (member)", member_pulls, 4.0),
]


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    counter: Counter
    cpu: float
    probe: str
    refused: dict[str, int]

    def cells(self) -> list[str]:
        c, s = self.counter, self.seconds
        sent_mb = c.sent / s / 1e6
        per_mb = f"{self.cpu / s / sent_mb:.3f}" if sent_mb > 0.001 else "-"
        refused = ", ".join(f"{k}={v}" for k, v in sorted(self.refused.items())) or "-"
        return [f"{self.name} ({s:.0f} s)", f"{c.sent / s / 1e3:.1f}",
                f"{c.received / s / 1e3:.1f}", f"{c.keystream / 1e6:.0f}",
                f"{c.connections / s:.1f}", f"{c.requests / s:.1f}", f"{self.cpu / s:.3f}",
                per_mb, self.probe, refused]


HEADER = ["flood", "attacker kB/s out", "kB/s back", "keystream MB", "conn/s", "req/s",
          "agent CPU s/s", "CPU s per MB out", "honest probe during flood",
          "refused (attacker's replies)"]


def signing_seed(i: int) -> bytes:
    return seed_for(f"attack-cost/v{i}-sign")


def write_spec(path: Path, validators: list[Transport]) -> NetworkSpec:
    import tomli_w

    spec = make_spec(len(validators), probes=PARAMS, epoch_seconds=EPOCH_SECONDS)[0]
    for i, host in enumerate(validators):
        spec = with_prober(spec, host.peer_id, signing_seed(i), i,
                           addrs=tuple(host.listen_addrs()), genesis_for=(1, time.time()))
    data = spec.to_dict()
    data["rpc_url"] = ""
    path.write_text(tomli_w.dumps(data))
    return load_spec(path)


async def run(seconds: float, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    async with AsyncExitStack() as stack:
        hosts: list[Transport] = [await stack.enter_async_context(open_libp2p_host(
            seed_for(f"attack-cost/v{i}-id"), LOCAL)) for i in range(len(FLOODS) + 1)]
        greedy = hosts[-1]
        spec = write_spec(workdir / "network.toml", hosts)
        agent = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--agent",
             str(workdir / "network.toml"), str(workdir / "provider.key")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert agent.stdout is not None
            addr = await trio.to_thread.run_sync(agent.stdout.readline)
            addr = addr.strip()
            target, _ = await discover_target(hosts[0], addr)
            for index, (name, flood, units) in enumerate(FLOODS):
                honest = hosts[index]
                counter = Counter()
                async with trio.open_nursery() as nursery:
                    control = await nursery.start(proxy, ("127.0.0.1", int(
                        addr.split("/tcp/", 1)[1].split("/", 1)[0])), counter)
                    data = await nursery.start(proxy, (target.data_host, target.data_port),
                                               counter)
                    ports = Ports(control, data, target.peer_id)
                    before = cpu_seconds(agent.pid)
                    started = trio.current_time()
                    if flood is not None:
                        nursery.start_soon(flood, ports, target, counter, greedy)
                        await trio.sleep(min(1.0, seconds / 4))  # the flood is under way
                    result = await probe_provider(honest, target, network_id=spec.network_id,
                                                  epoch=spec.epoch_at(time.time()),
                                                  validator_seed=signing_seed(index),
                                                  params=PARAMS,
                                                  policy=DataPolicy.for_spec(spec))
                    await trio.sleep_until(started + seconds * units)
                    elapsed = trio.current_time() - started
                    cpu = cpu_seconds(agent.pid) - before
                    nursery.cancel_scope.cancel()
                ok = result.heartbeat_ok and not result.flags and not result.problems
                probe = (f"{'ok' if ok else 'FAILED'} down {result.down_kbps / 1000:.0f} / "
                         f"up {result.up_kbps / 1000:.0f} Mbit/s"
                         + (f" {list(result.problems)}" if result.problems else ""))
                rows.append(Row(name, elapsed, counter, cpu, probe, dict(counter.refused)))
                print(f"  {name}: done", file=sys.stderr)
        finally:
            agent.send_signal(signal.SIGTERM)
            out, _ = await trio.to_thread.run_sync(agent.communicate)
        totals = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        print(f"agent statistics() at the end: {totals}", file=sys.stderr)
        rows.append(Row("(agent totals, all floods)", 1.0, Counter(), 0.0, "-",
                        {k: v for k, v in totals.items()
                         if k not in ("sessions", "data_connections")}))
    return rows


def print_table(rows: list[Row]) -> None:
    table = [HEADER] + [r.cells() for r in rows[:-1]]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print()
    print("refused by the agent, by reason (statistics(), all floods and probes): "
          + ", ".join(f"{k}={v}" for k, v in sorted(rows[-1].refused.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/attack_cost_provider.py")
    parser.add_argument("--seconds", type=float, default=5.0, help="per flood")
    parser.add_argument("--agent", nargs=2, metavar=("NETWORK", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent:
        return agent_main(Path(args.agent[0]), Path(args.agent[1]))
    import tempfile

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # throwaway hosts' hang-ups
    with tempfile.TemporaryDirectory(prefix="attack-cost-") as tmp:
        rows = trio.run(run, args.seconds, Path(tmp))
    print(f"provider agent under floods from outside the validator set, {args.seconds:g} s "
          f"each (payload bytes via a counting proxy; CPU of the agent process)")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
