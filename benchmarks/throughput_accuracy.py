"""Throughput accuracy: ``validator probe`` against iperf3 and the tbf rate (issue 3).

Usage (root, iproute2 and iperf3 installed)::

    .venv/bin/python benchmarks/throughput_accuracy.py [--reps 3] [--rates 10,50,200,none]

For each rate the testbed (tests/testbed.py) shapes both directions of a veth pair between two
fresh network namespaces with tbf; a real ``validator provide`` runs in the provider namespace
and ``validator probe --json`` in the validator namespace, with the default probe parameters
(2 s window per direction, 25% warm-up). iperf3 measures the same link in the same direction
(``-R`` for down), ``-t 3 -O 1``: three seconds after one second of warm-up, receiver goodput.
Each figure is the median of ``--reps`` runs.

Criteria (issue 3): at every shaped rate and in both directions, ours within 5% of iperf3's
figure and within 8% of the set rate, with a probe window of at most 2 s; unshaped, ours at
least 2 Gbit/s (the ratio to iperf3 is printed, not judged). Prints PASS/FAIL per criterion
and exits 1 if any fails (2 if the testbed cannot run here).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import Testbed, require_root_tools  # noqa: E402

WINDOW_SECONDS = 2.0  # the product default (ProbeParams.throughput_seconds)
WARMUP_FRACTION = 0.25
MAX_WINDOW_SECONDS = 2.0
IPERF_SECONDS = 3
IPERF_OMIT = 1
VS_IPERF = 0.05
VS_SET = 0.08
UNSHAPED_FLOOR_MBIT = 2000.0


@dataclass(frozen=True)
class Row:
    rate_mbit: float | None
    direction: str
    ours_mbit: float
    iperf_mbit: float
    window_seconds: float
    samples: tuple[float, ...]

    @property
    def vs_iperf(self) -> float:
        return (self.ours_mbit - self.iperf_mbit) / self.iperf_mbit if self.iperf_mbit else 0.0

    @property
    def vs_set(self) -> float | None:
        if self.rate_mbit is None:
            return None
        return (self.ours_mbit - self.rate_mbit) / self.rate_mbit

    def checks(self) -> list[tuple[str, bool]]:
        if self.rate_mbit is None:
            return [(f">= {UNSHAPED_FLOOR_MBIT / 1000:g} Gbit/s",
                     self.ours_mbit >= UNSHAPED_FLOOR_MBIT)]
        vs_set = self.vs_set
        assert vs_set is not None
        return [(f"vs iperf3 <= {VS_IPERF:.0%}", abs(self.vs_iperf) <= VS_IPERF),
                (f"vs set <= {VS_SET:.0%}", abs(vs_set) <= VS_SET),
                (f"window <= {MAX_WINDOW_SECONDS:g} s",
                 self.window_seconds <= MAX_WINDOW_SECONDS)]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through Testbed.__exit__: namespaces are deleted


def measure(rates: list[float | None], reps: int) -> list[Row]:
    rows: list[Row] = []
    with Testbed() as bed:
        network = bed.write_network_spec(echo_count=3, throughput_seconds=WINDOW_SECONDS,
                                         warmup_fraction=WARMUP_FRACTION)
        provider = bed.start_provider(network)
        for rate in rates:
            bed.shape(rate)
            label = "unshaped" if rate is None else f"{rate:g} Mbit/s"
            ours: dict[str, list[float]] = {"down": [], "up": []}
            theirs: dict[str, list[float]] = {"down": [], "up": []}
            for rep in range(reps):
                report = bed.probe_provider(provider, network)
                if report.flags:
                    print(f"  {label} rep {rep}: probe flags {report.flags}", file=sys.stderr)
                ours["down"].append(report.down_kbps / 1000)
                ours["up"].append(report.up_kbps / 1000)
                for direction in ("down", "up"):
                    theirs[direction].append(
                        bed.iperf3(direction, IPERF_SECONDS, IPERF_OMIT) / 1e6)
                print(f"  {label} rep {rep}: ours down {ours['down'][-1]:.1f} up "
                      f"{ours['up'][-1]:.1f}, iperf3 down {theirs['down'][-1]:.1f} up "
                      f"{theirs['up'][-1]:.1f} Mbit/s (probe took {report.seconds:.1f} s)",
                      file=sys.stderr, flush=True)
            for direction in ("down", "up"):
                rows.append(Row(rate, direction, statistics.median(ours[direction]),
                                statistics.median(theirs[direction]), WINDOW_SECONDS,
                                tuple(ours[direction])))
    return rows


def render(rows: list[Row]) -> tuple[str, bool]:
    header = (f"{'set rate':>10} {'dir':>4} {'ours Mbit/s':>12} {'iperf3 Mbit/s':>14} "
              f"{'vs iperf3':>10} {'vs set':>8} {'window':>7}  verdict")
    lines = [header, "-" * len(header)]
    ok = True
    for row in rows:
        rate = "unshaped" if row.rate_mbit is None else f"{row.rate_mbit:g} Mbit"
        vs_set = "-" if row.vs_set is None else f"{row.vs_set:+.1%}"
        checks = row.checks()
        ok &= all(passed for _, passed in checks)
        verdict = ", ".join(f"{'PASS' if passed else 'FAIL'} {name}" for name, passed in checks)
        if row.rate_mbit is None:
            verdict += f" (ratio to iperf3 {row.ours_mbit / row.iperf_mbit:.2f})"
        lines.append(f"{rate:>10} {row.direction:>4} {row.ours_mbit:12.1f} "
                     f"{row.iperf_mbit:14.1f} {row.vs_iperf:+10.1%} {vs_set:>8} "
                     f"{row.window_seconds:6.1f}s  {verdict}")
    lines.append(f"overall: {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines), ok


def _rate(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "unshaped") else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per rate (median reported)")
    parser.add_argument("--rates", default="10,50,200,none",
                        help="comma-separated Mbit/s; 'none' for an unshaped link")
    args = parser.parse_args(argv)
    reason = require_root_tools()
    if reason:
        print(f"throughput_accuracy: cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        rows = measure([_rate(r) for r in args.rates.split(",")], args.reps)
    except KeyboardInterrupt:
        print("interrupted; the testbed was removed", file=sys.stderr)
        return 130
    table, ok = render(rows)
    print(table)
    print(f"({args.reps} reps per rate, median; probe window {WINDOW_SECONDS:g} s per direction "
          f"after a {WARMUP_FRACTION:.0%} warm-up; iperf3 -t {IPERF_SECONDS:g} -O "
          f"{IPERF_OMIT:g}; {time.monotonic() - started:.0f} s; load average "
          f"{Path('/proc/loadavg').read_text().split()[0]})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
