"""Attack cost: what the resource-limit floods of issue 11 cost a victim validator.

    python benchmarks/attack_cost.py [--seconds 36] [--epoch-seconds 12] [--nofile 1024]
                                     [--floods http_idle,http_half_sent,libp2p_half_open]
                                     [--repo PATH] [--data-dir D] [--keep]

Starts ``validator devnet`` (4 validators, 2 providers, local chain) on 127.0.0.1, lowers the
victim's (v0's) open-file limit to ``--nofile`` (a default Linux soft limit; the audit's
victim had it), waits for the first final report, measures a quiet window, then runs each
flood for ``--seconds`` against v0 only, with a quiet epoch between floods:

- ``http_idle``: up to 1,100 TCP connections to v0's HTTP API that never send a byte;
- ``http_half_sent``: up to 1,100 connections that send a request line and then one header
  byte per second, never the blank line (slowloris);
- ``libp2p_half_open``: up to 320 raw TCP connections to v0's libp2p port that never start
  the handshake.

The attacker reopens a connection as soon as the victim closes one, at most ``RATE`` new
connections per second; everything goes to 127.0.0.1, and each flood stops by itself.

Printed per window: the attacker's connections per second and bytes per second (payload
sent plus ``TCP_OVERHEAD_BYTES`` per connection for the handshake and teardown packets, an
estimate), the victim's CPU seconds per second (``/proc/<pid>/stat`` utime + stime of the
validator process, all threads), the victim's largest open-file count, and the ratio: victim
CPU microseconds per attacker kilobyte above the quiet window. Then whether honest work went
on: v0's own observations of the epochs inside the window (providers with an answered
heartbeat and a non-zero down and up rate, of those v0 measured), the newest final epoch in
v0's store before and after, honest ``GET /status`` polls (one a second) answered, and new
libp2p connections to v0 (a fresh host dials it every 2 s, 5 s allowed) made, with their
median time.
``/status`` ``dropped`` at the end shows the refusals by reason.

``--repo PATH`` runs the devnet from another checkout (say ``git worktree add /tmp/before
HEAD~1``) to get the figures before a change. The data directory is deleted unless
``--keep``; exit code 0 unless the devnet did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parents[1]
N_VALIDATORS, N_PROVIDERS = 4, 2
RATE = 1_000  # new attacker connections per second, at most
TCP_OVERHEAD_BYTES = 4 * 66  # SYN, ACK, FIN, ACK on the wire (IPv4, TCP options): estimate
FLOODS = {
    "http_idle": ("http", 1_100),
    "http_half_sent": ("http", 1_100),
    "libp2p_half_open": ("libp2p", 320),
}


@dataclass
class AttackStats:
    connections: int = 0
    connect_errors: int = 0
    closed: int = 0  # connections the victim closed (or reset) before the flood ended
    bytes_sent: int = 0
    live: int = 0
    peak_live: int = 0


@dataclass
class Window:
    name: str
    seconds: float
    cpu: float
    max_fds: int
    attack: AttackStats | None
    epochs: list[int] = field(default_factory=list)
    finals_before: int | None = None
    finals_after: int | None = None
    probes_ok: int = 0
    probes: int = 0
    status_ok: int = 0
    status_polls: int = 0
    dial_ms: list[float] = field(default_factory=list)
    dials: int = 0


# -- the victim ---------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def store(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def newest_final(db: Path) -> int | None:
    with store(db) as conn:
        return conn.execute("SELECT max(epoch) FROM final_reports").fetchone()[0]


def own_probes(db: Path, epochs: list[int]) -> tuple[int, int]:
    """(providers measured well, providers measured) in v0's own observations of `epochs`."""
    good = total = 0
    with store(db) as conn:
        for epoch in epochs:
            for (data,) in conn.execute("SELECT data FROM observations WHERE epoch = ?",
                                        (epoch,)):
                _, _sent, ok, _rtt, _rtt_min, down, up, _flags = msgpack.unpackb(data)
                total += 1
                good += ok > 0 and down > 0 and up > 0
    return good, total


def get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


# -- the floods ----------------------------------------------------------------------------------
async def flood(kind: str, port: int, concurrency: int, seconds: float,
                stats: AttackStats, rate: float = RATE) -> None:
    """Hold up to `concurrency` connections of `kind` to 127.0.0.1:`port` for `seconds`,
    opening at most `rate` a second."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    interval = 1 / rate

    async def one() -> None:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=5)
            stats.connections += 1
            if kind == "http_half_sent":
                head = b"GET /status HTTP/1.1\r\nHost: v0\r\n"
                writer.write(head)
                stats.bytes_sent += len(head)
                while loop.time() < end:  # one more header byte a second, never the end
                    try:
                        if not await asyncio.wait_for(reader.read(4096), timeout=1):
                            stats.closed += 1
                            break
                    except asyncio.TimeoutError:
                        writer.write(b"X")
                        stats.bytes_sent += 1
            else:
                remaining = max(0.0, end - loop.time())
                try:  # wait for the victim to close it (or the flood to end)
                    await asyncio.wait_for(reader.read(), timeout=remaining)
                    stats.closed += 1
                except asyncio.TimeoutError:
                    pass
        except ConnectionResetError:  # once connected, a reset is the victim closing it
            if writer is None:
                stats.connect_errors += 1
            else:
                stats.closed += 1
        except (OSError, asyncio.TimeoutError):
            stats.connect_errors += 1
        finally:
            stats.live -= 1
            if writer is not None:
                writer.transport.abort()

    tasks: set[asyncio.Task[None]] = set()
    next_at = loop.time()
    while loop.time() < end:
        if stats.live < concurrency and loop.time() >= next_at:
            stats.live += 1  # counted here: the task may not run before the next spawn
            stats.peak_live = max(stats.peak_live, stats.live)
            task = loop.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            if next_at < loop.time() - 1:
                next_at = loop.time()
            continue
        await asyncio.sleep(min(interval, 0.01))
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def poll_status(url: str, stop: threading.Event, window: Window) -> None:
    while not stop.wait(1.0):
        window.status_polls += 1
        try:
            get_json(url + "/status", timeout=2)
            window.status_ok += 1
        except (OSError, ValueError, urllib.error.URLError):
            pass


def dial_new(addr: str, stop: threading.Event, window: Window) -> None:
    """Every 2 s, a fresh libp2p host (new identity, new connection) dials v0."""
    import trio

    from p2p.abc import P2PError
    from p2p.host import open_libp2p_host

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # (after libp2p set itself up)

    async def attempt() -> None:
        with trio.move_on_after(5):
            async with open_libp2p_host(os.urandom(32), "/ip4/127.0.0.1/tcp/0") as host:
                started = time.monotonic()
                try:
                    await host.connect(addr)
                except P2PError:
                    return
                window.dial_ms.append((time.monotonic() - started) * 1000)

    while not stop.wait(2.0):
        window.dials += 1
        trio.run(attempt)


def measure(name: str, pid: int, db: Path, url: str, epoch_at: Any, seconds: float,
            attack: tuple[str, int, int] | None, libp2p_addr: str) -> Window:
    window = Window(name, seconds, 0.0, 0, AttackStats() if attack else None)
    stop = threading.Event()
    poller = threading.Thread(target=poll_status, args=(url, stop, window), daemon=True)
    dialer = threading.Thread(target=dial_new, args=(libp2p_addr, stop, window), daemon=True)
    dialer.start()
    window.finals_before = newest_final(db)
    started, cpu0 = time.time(), cpu_seconds(pid)
    first_epoch = epoch_at(started) + 1  # the first epoch that starts inside the window
    poller.start()
    sampler_stop = threading.Event()

    def sample_fds() -> None:
        while not sampler_stop.wait(0.25):
            window.max_fds = max(window.max_fds, fd_count(pid))

    sampler = threading.Thread(target=sample_fds, daemon=True)
    sampler.start()
    if attack is not None:
        kind, port, concurrency = attack
        assert window.attack is not None
        asyncio.run(flood(kind, port, concurrency, seconds, window.attack))
    else:
        time.sleep(seconds)
    elapsed = time.time() - started
    window.cpu = (cpu_seconds(pid) - cpu0) / elapsed
    window.seconds = elapsed
    stop.set()
    sampler_stop.set()
    poller.join(3)
    sampler.join(3)
    dialer.join(10)
    window.epochs = list(range(first_epoch, epoch_at(started + elapsed)))  # fully inside
    # let those epochs' bundles be written, then read v0's own observations of them
    time.sleep(2)
    window.probes_ok, window.probes = own_probes(db, window.epochs)
    window.finals_after = newest_final(db)
    return window


def report(windows: list[Window], quiet: Window) -> None:
    print()
    print(f"{'window':<18}{'att conn/s':>11}{'att B/s':>10}{'peak':>6}{'cpu s/s':>9}"
          f"{'max fds':>8}{'us/KB':>8}  honest: probes ok, finals, /status ok, new dials ok")
    for w in windows:
        a = w.attack
        rate = (a.connections / w.seconds) if a else 0.0
        bps = ((a.bytes_sent + TCP_OVERHEAD_BYTES * a.connections) / w.seconds) if a else 0.0
        extra = w.cpu - quiet.cpu
        ratio = f"{extra * 1e6 / (bps / 1000):8.1f}" if a and bps else f"{'-':>8}"
        print(f"{w.name:<18}{rate:>11.1f}{bps:>10.0f}{(a.peak_live if a else 0):>6}"
              f"{w.cpu:>9.3f}{w.max_fds:>8}{ratio}  "
              f"{w.probes_ok}/{w.probes} in epochs {w.epochs[:1] + w.epochs[-1:]}, "
              f"final {w.finals_before}->{w.finals_after}, {w.status_ok}/{w.status_polls}, "
              f"{len(w.dial_ms)}/{w.dials}"
              + (f" ({statistics.median(w.dial_ms):.0f} ms)" if w.dial_ms else ""))


def start_devnet(args: argparse.Namespace, data: Path) -> tuple[subprocess.Popen[str], list[str]]:
    base = random.Random().randrange(20_000, 50_000)
    env = dict(os.environ, PYTHONPATH=str(args.repo))
    proc = subprocess.Popen(
        [sys.executable, "-m", "validator.cli", "devnet", "--validators", str(N_VALIDATORS),
         "--providers", str(N_PROVIDERS), "--epoch-seconds", str(args.epoch_seconds),
         "--base-port", str(base), "--data-dir", str(data)],
        cwd=args.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls: list[str] = []
    assert proc.stdout is not None
    deadline = time.time() + 180
    while len(urls) < N_VALIDATORS and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        print("devnet: " + line.rstrip(), flush=True)
        if line.startswith("validator "):
            urls.append(line.split()[-1])
    stdout = proc.stdout

    def drain() -> None:  # the devnet keeps printing; never let its pipe fill
        for _ in stdout:
            pass

    threading.Thread(target=drain, daemon=True).start()
    return proc, urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=36.0, help="per window")
    parser.add_argument("--epoch-seconds", type=int, default=12)
    parser.add_argument("--nofile", type=int, default=1024, help="victim's RLIMIT_NOFILE")
    parser.add_argument("--floods", default=",".join(FLOODS))
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run the devnet from")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    floods = [f for f in args.floods.split(",") if f]
    unknown = set(floods) - set(FLOODS)
    if unknown:
        parser.error(f"unknown flood(s): {sorted(unknown)}; choose from {sorted(FLOODS)}")
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="attack-"))
    data = root / "net"
    proc, urls = start_devnet(args, data)
    try:
        if len(urls) < N_VALIDATORS:
            print("the devnet did not start; see " + str(data), file=sys.stderr)
            return 2
        sys.path.insert(0, str(args.repo))
        from validator.logs import configure_logging
        from validator.spec import load_spec

        configure_logging("console")  # our own dialer's libp2p host: quiet below warnings

        spec = load_spec(data / "network.toml")
        pid = int((data / "v0" / "pid").read_text())
        db = data / "v0" / "validator.sqlite"
        status = get_json(urls[0] + "/status")
        libp2p_port = int(status["listen_addrs"][0].split("/")[4])
        http_port = int(urls[0].rsplit(":", 1)[1])
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
        print(f"victim v0: pid {pid}, http {http_port}, libp2p {libp2p_port}, "
              f"RLIMIT_NOFILE {args.nofile}; repo {args.repo}", flush=True)
        deadline = time.time() + 10 * args.epoch_seconds + 60
        while newest_final(db) is None and time.time() < deadline:
            time.sleep(1)
        print(f"first final report: epoch {newest_final(db)}", flush=True)
        addr = status["listen_addrs"][0]
        windows = [measure("quiet", pid, db, urls[0], spec.epoch_at, args.seconds, None, addr)]
        for name in floods:
            target, concurrency = FLOODS[name]
            port = http_port if target == "http" else libp2p_port
            print(f"flood {name}: {concurrency} connections to :{port} for {args.seconds:g} s",
                  flush=True)
            windows.append(measure(name, pid, db, urls[0], spec.epoch_at, args.seconds,
                                   (name, port, concurrency), addr))
            time.sleep(args.epoch_seconds)  # a quiet epoch between floods
        report(windows, windows[0])
        try:
            dropped = get_json(urls[0] + "/status")["dropped"]
            print("\nv0 /status dropped: " + json.dumps(
                {k: v for k, v in sorted(dropped.items())
                 if k.startswith(("http:", "p2p:", "probe:"))}))
        except (OSError, ValueError) as exc:
            print(f"\nv0 /status unreadable after the floods: {exc}")
        return 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"data kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
