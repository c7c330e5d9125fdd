"""Latency accuracy: ``validator probe``'s median RTT against a known added delay (issue 3).

Usage (root, iproute2 installed)::

    .venv/bin/python benchmarks/latency_accuracy.py [--reps 3] [--delays 0,10,50,150]

The testbed (tests/testbed.py) joins two fresh network namespaces by an unshaped veth pair; a
real ``validator provide`` and a plain TCP echo server run in the provider namespace. For each
added delay D a ``DelayRelay`` in the validator namespace holds every chunk D/2 each way and
forwards the provider's control port, data port and the echo port; ``validator probe --json``
runs in the validator namespace through the relay. The relays run side by side and the probes
go round them in turn (``--reps`` rounds), so a burst of load hits every delay alike.

True RTT (the definition judged here): ``D + base``, where ``base`` is the median round trip
of a plain TCP echo (16 bytes, TCP_NODELAY, Python threads, no libp2p) through the relay at
D = 0, i.e. the RTT of the network path itself (veth pair plus relay hops). Everything our
probe adds on top (libp2p yamux and Noise framing, msgpack, trio scheduling at both ends)
counts as error. The plain echo through the relay at each D is printed as a cross-check of the
relay's real added delay. Criterion: |ours - true| <= 1 ms + 5% of true, ours being the
median over ``--reps`` probes of each probe's median RTT. Exit 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import ECHO_PORT, Testbed, median_int, require_root_tools  # noqa: E402

ECHO_COUNT = 15  # echoes per probe; the probe keeps their median and minimum
PLAIN_ECHOES = 30
THROUGHPUT_SECONDS = 0.5  # the probe also measures throughput; keep it short here
ABSOLUTE_US = 1000
RELATIVE = 0.05


@dataclass(frozen=True)
class Row:
    delay_ms: float
    true_us: int
    plain_us: int
    ours_us: int
    ours_min_us: int
    samples: tuple[int, ...]

    @property
    def error_us(self) -> int:
        return self.ours_us - self.true_us

    @property
    def tolerance_us(self) -> int:
        return int(ABSOLUTE_US + RELATIVE * self.true_us)

    @property
    def ok(self) -> bool:
        return abs(self.error_us) <= self.tolerance_us


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through Testbed.__exit__: namespaces are deleted


def measure(delays_ms: list[float], reps: int) -> list[Row]:
    """One relay per delay, all running; the plain echo through each, then ``reps`` rounds
    that probe through every relay in turn, so a burst of load on the machine hits one round
    of every delay rather than all probes of one delay."""
    delays = sorted(set(delays_ms))
    if not delays or delays[0] != 0:
        raise SystemExit("latency_accuracy: the delays must include 0 (it defines the base RTT)")
    with Testbed() as bed:
        network = bed.write_network_spec(echo_count=ECHO_COUNT,
                                         throughput_seconds=THROUGHPUT_SECONDS)
        provider = bed.start_provider(network)
        bed.start_echo_server()
        host = provider.data_host
        targets = [(host, provider.control_port), (host, provider.data_port), (host, ECHO_PORT)]
        relays = {delay: bed.start_relay(delay / 1000, targets) for delay in delays}
        plain = {delay: median_int(bed.echo_rtts(relay.host, relay.port_for(host, ECHO_PORT),
                                                 PLAIN_ECHOES))
                 for delay, relay in relays.items()}
        medians: dict[float, list[int]] = {delay: [] for delay in delays}
        minima: dict[float, list[int]] = {delay: [] for delay in delays}
        for rep in range(reps):
            for delay, relay in relays.items():
                report = bed.probe_provider(provider, network, relay)
                if not report.heartbeat_ok or not report.rtt_median_us:
                    print(f"  {delay:g} ms rep {rep}: probe failed {report}", file=sys.stderr)
                    continue
                medians[delay].append(report.rtt_median_us)
                minima[delay].append(report.rtt_min_us)
                print(f"  {delay:g} ms rep {rep}: median {report.rtt_median_us} us, min "
                      f"{report.rtt_min_us} us (plain echo {plain[delay]} us)", file=sys.stderr,
                      flush=True)
    base_us = plain[0]
    return [Row(delay, int(delay * 1000) + base_us, plain[delay], median_int(medians[delay]),
                min(minima[delay], default=0), tuple(medians[delay])) for delay in delays]


def render(rows: list[Row]) -> tuple[str, bool]:
    header = (f"{'added':>7} {'true RTT':>10} {'plain echo':>11} {'ours median':>12} "
              f"{'ours min':>10} {'error':>9} {'tolerance':>10}  verdict")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.delay_ms:5g}ms {row.true_us / 1000:8.3f}ms "
                     f"{row.plain_us / 1000:9.3f}ms {row.ours_us / 1000:10.3f}ms "
                     f"{row.ours_min_us / 1000:8.3f}ms "
                     f"{row.error_us / 1000:+7.3f}ms {row.tolerance_us / 1000:8.3f}ms  "
                     f"{'PASS' if row.ok else 'FAIL'}")
    ok = all(row.ok for row in rows)
    lines.append(f"overall: {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="probes per delay (median)")
    parser.add_argument("--delays", default="0,10,50,150",
                        help="comma-separated added round-trip delays in ms (must include 0)")
    args = parser.parse_args(argv)
    reason = require_root_tools()
    if reason:
        print(f"latency_accuracy: cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        rows = measure([float(d) for d in args.delays.split(",")], args.reps)
    except KeyboardInterrupt:
        print("interrupted; the testbed was removed", file=sys.stderr)
        return 130
    table, ok = render(rows)
    print(table)
    print(f"(true RTT = added delay + plain TCP echo RTT through the relay at 0 ms; "
          f"{args.reps} probes of {ECHO_COUNT} echoes per delay, median; "
          f"{time.monotonic() - started:.0f} s; load average "
          f"{Path('/proc/loadavg').read_text().split()[0]})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
