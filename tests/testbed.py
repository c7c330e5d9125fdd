"""A two-namespace network testbed for probe tests and benchmarks (issue 3, DESIGN §6).

What it owns:

- ``Testbed``: two network namespaces made for this run, a "validator side" and a "provider
  side", joined by one veth pair (``10.231.X.1/30`` and ``10.231.X.2/30``, ``X`` chosen per
  instance), with ``lo`` up in both and nothing else: no default route, no link to the host's
  namespace, so traffic can only go to loopback or across the pair. Optional ``tc ... tbf``
  shaping at one rate in both directions. Helpers run commands and long-lived processes inside
  either namespace (``ip netns exec``): the provider agent (``validator provide``), one-shot
  probes (``validator probe --json``), iperf3 server and client (the reference), and the
  userspace delay relay.
- ``DelayRelay``: a threaded TCP proxy that holds every chunk for ``delay/2`` each way (netem
  is not available). ``Testbed.start_relay`` runs one as a process in the validator namespace
  (``python -m tests.testbed relay``); the class also works in-process on loopback.
- ``python -m tests.testbed echo-server|echo-client``: a plain TCP echo used to measure the
  base RTT of a path, without libp2p in the way.

Shaping: the provider side's egress carries "down" (provider -> validator: ``validator
probe``'s down probe and ``iperf3 -R``); the validator side's egress carries "up". Both get
``tbf rate R burst B latency L``, with ``B = max(16 KiB, R * 1 ms)``. The bucket must hold
well over one 1514-byte frame (tbf segments or drops bigger packets, and veth hands it 64 KiB
GSO packets); at high rates one millisecond of traffic lets a late dequeue (timer slack,
softirq latency) catch up instead of idling the link; and it stays small next to a probe
(16 KiB is 1% of one second at 10 Mbit/s; the warm-up slice skips the initial burst anyway).
``L`` (default 25 ms) bounds the queue at ``R * L + B``, plenty for TCP to keep the link busy
at sub-millisecond RTTs. tbf counts Ethernet frames, so TCP goodput is about 1448/1514 = 95.6%
of ``R``; iperf3 measures 95.2-95.6% at 10, 50 and 200 Mbit/s with these settings.

Cleanup: ``close()`` (also from ``__exit__``, on exceptions and Ctrl-C) stops every process the
testbed started and deletes both namespaces, which deletes the veth pair and its qdiscs with
them. Namespace names carry the creating pid (``bwtb-<pid>-<n>-val``/``-prov``); a new
testbed first removes namespaces left by pids that no longer exist (a ``kill -9`` run).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bwtb"
DEVICE = "veth0"  # the same name on both sides: each end lives in its own namespace
PROVIDER_CONTROL_PORT = 4001  # fixed ports are safe: the provider namespace is ours alone
PROVIDER_DATA_PORT = 4002
ECHO_PORT = 4003
IPERF_PORT = 5201
MIN_BURST_BYTES = 16 * 1024
DEFAULT_TBF_LATENCY_MS = 25.0
STARTUP_SECONDS = 20.0
RELAY_CHUNK = 256 * 1024
RELAY_BUFFER_BYTES = 32 * 1024 * 1024
BACKLOG_SECONDS = 0.005  # a chunk this late means the far side pushes back

_instances = 0
_lock = threading.Lock()


class TestbedError(Exception):
    """A testbed command failed; the message carries the command and its stderr."""

    __test__ = False  # not a pytest test class, despite the name


# -- preconditions -----------------------------------------------------------------------------
def require_root_tools() -> str | None:
    """Why the testbed cannot run here, or None if it can.

    Needs root (namespaces and qdiscs), ``ip``, ``tc``, ``ss`` (iproute2) and ``iperf3``.
    Use as ``if (reason := require_root_tools()): pytest.skip(reason)``.
    """
    if sys.platform != "linux":
        return "testbed needs Linux network namespaces"
    if os.geteuid() != 0:
        return "testbed needs root (network namespaces and tc); run the suite as root, as CI does"
    missing = [tool for tool in ("ip", "tc", "ss", "iperf3") if shutil.which(tool) is None]
    if missing:
        return (f"testbed needs {', '.join(missing)}: apt-get install iproute2 iperf3 "
                "(make install does this as root)")
    return None


def tbf_burst_bytes(rate_mbit: float) -> int:
    """The tbf bucket for ``rate_mbit``: ``max(16 KiB, one millisecond of traffic)``."""
    return max(MIN_BURST_BYTES, int(rate_mbit * 1e6 / 8 / 1000))


@dataclass(frozen=True)
class Shaping:
    """One tbf setting, applied to both directions of the link."""

    rate_mbit: float
    burst_bytes: int
    latency_ms: float = DEFAULT_TBF_LATENCY_MS

    @classmethod
    def at(cls, rate_mbit: float, latency_ms: float = DEFAULT_TBF_LATENCY_MS) -> "Shaping":
        return cls(rate_mbit, tbf_burst_bytes(rate_mbit), latency_ms)

    def tc_args(self) -> list[str]:
        return ["tbf", "rate", f"{self.rate_mbit:g}mbit", "burst", str(self.burst_bytes),
                "latency", f"{self.latency_ms:g}ms"]


def _run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    if check and done.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} exited {done.returncode}: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete testbed namespaces whose creating process is gone; returns their names."""
    listing = _run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+-(val|prov)", name)
        if match and not _pid_alive(int(match.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def python_env() -> dict[str, str]:
    """The environment for this project's Python processes inside a namespace."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- processes ---------------------------------------------------------------------------------
class Process:
    """A long-lived process in a namespace. The first stdout line is kept for ``first_line``;
    later stdout and all of stderr go to ``log_path``, so no pipe ever fills up."""

    def __init__(self, popen: subprocess.Popen[str], log_path: Path, name: str) -> None:
        self.popen = popen
        self.log_path = log_path
        self.name = name
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True,
                                        name=f"stdout-{name}")
        self._reader.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        first = True
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.popen.stdout:
                if first:
                    self._lines.put(line.rstrip("\n"))
                    first = False
                else:
                    log.write(line)
        self._lines.put(None)

    def first_line(self, timeout: float = STARTUP_SECONDS) -> str:
        """The first stdout line; TestbedError (with the log tail) if it exits or times out."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TestbedError(f"{self.name}: no output within {timeout} s\n{self.log_tail()}")
        if line is None:
            raise TestbedError(f"{self.name} exited {self.popen.wait()} before printing\n"
                               f"{self.log_tail()}")
        return line

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=2)
        return self.popen.returncode


@dataclass(frozen=True)
class ProviderHandle:
    """A provider agent running in the provider namespace."""

    process: Process
    multiaddr: str  # /ip4/<provider address>/tcp/<port>/p2p/<peer id>
    data_host: str
    data_port: int
    control_port: int

    @property
    def peer_id(self) -> str:
        return self.multiaddr.rsplit("/p2p/", 1)[1]

    def multiaddr_via(self, host: str, port: int) -> str:
        """The same peer at another TCP address (a relay in front of it)."""
        return f"/ip4/{host}/tcp/{port}/p2p/{self.peer_id}"

    def stop(self) -> int | None:
        """Stop the agent (SIGTERM); ``Testbed.close`` does it anyway."""
        return self.process.stop()


@dataclass(frozen=True)
class ProbeReport:
    """What ``validator probe --json`` printed, plus the wall time the probe took."""

    heartbeat_ok: bool
    rtt_median_us: int
    rtt_min_us: int
    down_kbps: int
    up_kbps: int
    flags: tuple[str, ...]
    seconds: float

    @classmethod
    def parse(cls, text: str, seconds: float) -> "ProbeReport":
        data = json.loads(text)
        return cls(bool(data["heartbeat_ok"]), int(data["rtt_median_us"]),
                   int(data["rtt_min_us"]), int(data["down_kbps"]), int(data["up_kbps"]),
                   tuple(data["flags"]), seconds)


@dataclass(frozen=True)
class RelayHandle:
    """A ``DelayRelay`` process in the validator namespace: local port per target."""

    process: Process
    host: str
    ports: dict[tuple[str, int], int]  # (target host, target port) -> local listening port
    delay_seconds: float

    def port_for(self, host: str, port: int) -> int:
        return self.ports[(host, port)]

    def stop(self) -> int | None:
        """Stop the relay (its connections are reset); ``Testbed.close`` does it anyway."""
        return self.process.stop()


# -- the testbed -------------------------------------------------------------------------------
class Namespace:
    """One side of the testbed: its namespace name, veth address and command prefix."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.device = DEVICE

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here to completion; TestbedError on a non-zero exit if ``check``."""
        return _run(self.command(argv), timeout=timeout, check=check, env=env)

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, {self.address!r})"


class Testbed:
    """Two namespaces joined by a veth pair; optionally shaped with tbf in both directions.

    ``rate_mbit=None`` leaves the link unshaped (no qdisc change). Use as a context manager;
    ``close()`` is idempotent. ``workdir`` holds key files, spec files and process logs
    (a fresh temporary directory, removed on close, unless one is given).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, rate_mbit: float | None = None, *,
                 tbf_latency_ms: float = DEFAULT_TBF_LATENCY_MS,
                 workdir: Path | None = None) -> None:
        global _instances
        with _lock:
            _instances += 1
            index = _instances
        pid = os.getpid()
        octet = (pid * 31 + index) % 256
        self.validator = Namespace(f"{PREFIX}-{pid}-{index}-val", f"10.231.{octet}.1")
        self.provider = Namespace(f"{PREFIX}-{pid}-{index}-prov", f"10.231.{octet}.2")
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{pid}-{index}-"))
        self.shaping: Shaping | None = None
        self._processes: list[Process] = []
        self._created: list[str] = []
        self._closed = False
        self._initial_rate = rate_mbit
        self._tbf_latency_ms = tbf_latency_ms
        self._process_count = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Testbed":
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(keep_logs=kind is not None and issubclass(kind, Exception)
                   and self._own_workdir)

    def open(self) -> None:
        """Create the namespaces and the link; on any failure, undo what was made and raise."""
        reason = require_root_tools()
        if reason:
            raise TestbedError(reason)
        remove_stale_namespaces()
        atexit.register(self.close)
        try:
            for side in (self.validator, self.provider):
                _run(["ip", "netns", "add", side.name])
                self._created.append(side.name)
                side.run(["ip", "link", "set", "lo", "up"])
            # Both ends are created directly inside their namespaces: nothing appears in the
            # host's namespace, so names never clash with other runs.
            _run(["ip", "link", "add", "name", DEVICE, "netns", self.validator.name, "type",
                  "veth", "peer", "name", DEVICE, "netns", self.provider.name])
            for side in (self.validator, self.provider):
                side.run(["ip", "addr", "add", f"{side.address}/30", "dev", DEVICE])
                side.run(["ip", "link", "set", DEVICE, "up"])
            if self._initial_rate is not None:
                self.shape(self._initial_rate)
        except BaseException:
            self.close()
            raise

    def close(self, keep_logs: bool = False) -> None:
        """Stop every process started here, delete both namespaces (and with them the link).

        The work directory (process logs) goes too, unless ``keep_logs``: ``__exit__`` keeps
        it when leaving on an error (not on Ctrl-C) and says where on stderr.
        """
        if self._closed:
            return
        self._closed = True
        for process in reversed(self._processes):
            try:
                process.stop()
            except Exception:  # keep cleaning up: a failed stop must not leak namespaces
                pass
        for name in self._created:
            _run(["ip", "netns", "del", name], check=False)
        self._created.clear()
        if keep_logs:
            print(f"testbed: process logs kept in {self.workdir}", file=sys.stderr)
        elif self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.close)

    def namespaces_exist(self) -> bool:
        """Whether either namespace of this testbed is still listed by ``ip netns``."""
        listing = _run(["ip", "netns", "list"], check=False).stdout
        names = {line.split()[0] for line in listing.splitlines() if line.split()}
        return bool(names & {self.validator.name, self.provider.name})

    # -- shaping -----------------------------------------------------------------------------
    def shape(self, rate_mbit: float | None) -> Shaping | None:
        """Shape both directions to ``rate_mbit`` (tbf), or remove shaping with None."""
        for side in (self.validator, self.provider):
            if rate_mbit is None:
                side.run(["tc", "qdisc", "del", "dev", DEVICE, "root"], check=False)
            else:
                shaping = Shaping.at(rate_mbit, self._tbf_latency_ms)
                side.run(["tc", "qdisc", "replace", "dev", DEVICE, "root", *shaping.tc_args()])
        self.shaping = None if rate_mbit is None else Shaping.at(rate_mbit, self._tbf_latency_ms)
        return self.shaping

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, side: Namespace, argv: Sequence[str], name: str) -> Process:
        """Start ``argv`` in ``side``; it is stopped by ``close()``."""
        self._process_count += 1
        log_path = self.workdir / f"{self._process_count:02d}-{name}.log"
        log = open(log_path, "a", encoding="utf-8")  # O_APPEND: shared with the stdout pump
        try:
            popen = subprocess.Popen(side.command(argv), stdout=subprocess.PIPE, stderr=log,
                                     text=True, env=python_env(), cwd=ROOT)
        finally:
            log.close()
        process = Process(popen, log_path, name)
        self._processes.append(process)
        return process

    def write_network_spec(self, *, echo_count: int = 5, throughput_seconds: float = 2.0,
                           warmup_fraction: float = 0.25,
                           heartbeat_timeout_seconds: float = 5.0,
                           name: str = "network.toml") -> Path:
        """A one-validator test network spec (no bootstrap addresses, no RPC) with these
        probe parameters; ``validator provide`` and ``validator probe`` both read it."""
        import tomli_w

        from tests.factories import make_spec
        from validator.spec import ProbeParams

        params = ProbeParams(heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                             echo_count=echo_count, throughput_seconds=throughput_seconds,
                             warmup_fraction=warmup_fraction)
        spec, _ = make_spec(1, probes=params)
        data = spec.to_dict()
        data["rpc_url"] = ""
        path = self.workdir / name
        path.write_text(tomli_w.dumps(data))
        return path

    def start_provider(self, network: Path, *, module: str = "validator.cli",
                       extra_args: Sequence[str] = (), key_name: str = "provider.key",
                       control_port: int = PROVIDER_CONTROL_PORT,
                       data_port: int = PROVIDER_DATA_PORT) -> ProviderHandle:
        """Run a provider agent in the provider namespace, on its veth address.

        ``module`` is run as ``python -m <module> provide ...``: ``validator.cli`` is the
        product; a test may pass a runner with the same command line (a cheating agent).
        Returns once it printed its multiaddr (so both ports are accepting). It answers the
        testbed's probe key (``--allow-probe``, the key ``probe`` uses).
        """
        host = self.provider.address
        argv = [sys.executable, "-m", module, "provide", "--network", str(network),
                "--key", str(self.workdir / key_name),
                "--listen", f"/ip4/{host}/tcp/{control_port}",
                "--data-host", host, "--data-port", str(data_port),
                "--allow-probe", self.probe_peer_id(), *extra_args]
        process = self.spawn(self.provider, argv, f"provider-{module.rsplit('.', 1)[-1]}")
        multiaddr = process.first_line()
        if "/p2p/" not in multiaddr:
            raise TestbedError(f"provider printed {multiaddr!r}, not a multiaddr")
        return ProviderHandle(process, multiaddr, host, data_port, control_port)

    @property
    def probe_key(self) -> Path:
        """The key file ``probe`` probes with (created on first use)."""
        return self.workdir / "probe.key"

    def probe_peer_id(self) -> str:
        """The peer id of ``probe_key``: what the testbed's providers allow."""
        from p2p.host import peer_id_from_seed
        from validator.keys import load_or_create_key

        return peer_id_from_seed(load_or_create_key(self.probe_key))

    def probe(self, multiaddr: str, *, data: tuple[str, int], network: Path,
              timeout: float = 60.0) -> ProbeReport:
        """One ``validator probe MULTIADDR --data H:P --network F --json --key K`` in the
        validator namespace. TestbedError if it exits non-zero."""
        self.probe_peer_id()  # create the key before a process reads it
        argv = [sys.executable, "-m", "validator.cli", "probe", multiaddr,
                "--data", f"{data[0]}:{data[1]}", "--network", str(network), "--json",
                "--key", str(self.probe_key)]
        started = time.monotonic()
        done = self.validator.run(argv, timeout=timeout, env=python_env())
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise TestbedError(f"validator probe printed nothing: {done.stderr.strip()}")
        return ProbeReport.parse(lines[-1], time.monotonic() - started)

    def probe_provider(self, provider: ProviderHandle, network: Path,
                       relay: RelayHandle | None = None, timeout: float = 60.0) -> ProbeReport:
        """Probe ``provider`` directly across the link, or through ``relay``."""
        if relay is None:
            return self.probe(provider.multiaddr, data=(provider.data_host, provider.data_port),
                              network=network, timeout=timeout)
        control = relay.port_for(provider.data_host, provider.control_port)
        data = relay.port_for(provider.data_host, provider.data_port)
        return self.probe(provider.multiaddr_via(relay.host, control),
                          data=(relay.host, data), network=network, timeout=timeout)

    # -- iperf3 ------------------------------------------------------------------------------
    def iperf3(self, direction: str, seconds: int = 3, omit: int = 1,
               port: int = IPERF_PORT) -> float:
        """iperf3's receiver goodput in bit/s for ``direction`` ("down": provider ->
        validator, ``-R``; "up": validator -> provider), after ``omit`` seconds of warm-up.

        Runs ``iperf3 -s -1`` in the provider namespace and the client in the validator one.
        """
        if direction not in ("down", "up"):
            raise ValueError("direction is 'down' or 'up'")
        server = self.spawn(self.provider, ["iperf3", "-s", "-1", "-B", self.provider.address,
                                            "-p", str(port)], "iperf3-server")
        try:
            self.wait_listening(self.provider, port)
            argv = ["iperf3", "-c", self.provider.address, "-p", str(port), "-t", str(seconds),
                    "-O", str(omit), "-J"]
            if direction == "down":
                argv.append("-R")
            done = self.validator.run(argv, timeout=seconds + omit + 30)
            report = json.loads(done.stdout)
            return float(report["end"]["sum_received"]["bits_per_second"])
        finally:
            server.stop()

    def wait_listening(self, side: Namespace, port: int, timeout: float = 10.0) -> None:
        """Wait until a TCP socket listens on ``port`` in ``side`` (checked with ``ss``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = side.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.02)
        raise TestbedError(f"nothing listens on port {port} in {side.name} after {timeout} s")

    # -- relay and echo ----------------------------------------------------------------------
    def start_relay(self, delay_seconds: float, targets: Iterable[tuple[str, int]],
                    host: str = "127.0.0.1") -> RelayHandle:
        """A ``DelayRelay`` in the validator namespace, listening on ``host`` (its loopback
        by default) with one port per target; it adds ``delay_seconds`` to every round trip."""
        targets = list(targets)
        argv = [sys.executable, "-m", "tests.testbed", "relay", "--delay-ms",
                f"{delay_seconds * 1000:g}", "--host", host,
                *[f"{h}:{p}" for h, p in targets]]
        process = self.spawn(self.validator, argv, f"relay-{delay_seconds * 1000:g}ms")
        ports = json.loads(process.first_line())
        return RelayHandle(process, host, {t: int(p) for t, p in zip(targets, ports)},
                           delay_seconds)

    def start_echo_server(self, port: int = ECHO_PORT) -> Process:
        """A plain TCP echo server on the provider's veth address."""
        process = self.spawn(self.provider, [sys.executable, "-m", "tests.testbed",
                                             "echo-server", f"{self.provider.address}:{port}"],
                             "echo-server")
        process.first_line()
        return process

    def echo_rtts(self, host: str, port: int, count: int = 20) -> list[int]:
        """``count`` plain TCP echo round trips from the validator namespace, in µs."""
        argv = [sys.executable, "-m", "tests.testbed", "echo-client", f"{host}:{port}",
                "--count", str(count)]
        done = self.validator.run(argv, timeout=30 + count, env=python_env())
        return [int(v) for v in json.loads(done.stdout.strip().splitlines()[-1])]


# -- the delay relay ---------------------------------------------------------------------------
class _Direction:
    """One direction of a relayed connection: read, stamp, queue; release after the delay."""

    def __init__(self, conn: "_Connection", src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.cond = threading.Condition()
        self.items: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.done = False

    def _must_wait(self, buffer_bytes: int) -> bool:
        """Stop reading when the buffer is full, or when the oldest chunk is overdue: the
        far side is slower than we read, and what we hold beyond the delay line would only be
        extra queueing (bufferbloat) that no real path of this delay has."""
        if self.queued >= buffer_bytes:
            return True
        return bool(self.items) and self.items[0][0] + BACKLOG_SECONDS < time.monotonic()

    def read_loop(self) -> None:
        relay = self.conn.relay
        try:
            while not self.conn.aborted:
                data = self.src.recv(RELAY_CHUNK)
                release = time.monotonic() + relay.delay_seconds / 2
                with self.cond:
                    while self._must_wait(relay.buffer_bytes) and not self.conn.aborted:
                        self.cond.wait(BACKLOG_SECONDS)
                    self.items.append((release, data))
                    self.queued += len(data)
                    self.cond.notify_all()
                if not data:
                    return  # EOF queued: the writer half-closes after the delay
        except OSError:
            self.conn.abort()

    def write_loop(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.items and not self.conn.aborted:
                        self.cond.wait()
                    if self.conn.aborted:
                        return
                    release, data = self.items[0]
                    while (wait := release - time.monotonic()) > 0 and not self.conn.aborted:
                        self.cond.wait(wait)
                    if self.conn.aborted:
                        return
                    self.items.popleft()
                    self.queued -= len(data)
                    self.cond.notify_all()
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
        except OSError:
            self.conn.abort()
        finally:
            self.done = True
            self.conn.direction_done()


class _Connection:
    def __init__(self, relay: "DelayRelay", client: socket.socket,
                 upstream: socket.socket) -> None:
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.aborted = False
        self.directions = (_Direction(self, client, upstream), _Direction(self, upstream, client))

    def start(self) -> None:
        for d in self.directions:
            for target in (d.read_loop, d.write_loop):
                threading.Thread(target=target, daemon=True).start()

    def abort(self) -> None:
        """Tear down both sockets (a reset or error on either side ends the connection)."""
        if self.aborted:
            return
        self.aborted = True
        for d in self.directions:
            with d.cond:
                d.cond.notify_all()
        self._close()

    def direction_done(self) -> None:
        if all(d.done for d in self.directions):
            self._close()

    def _close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.relay.forget(self)


class DelayRelay:
    """A TCP proxy that adds ``delay_seconds`` to every round trip: each chunk read on either
    side is forwarded ``delay_seconds / 2`` after it was read.

    One listener per target (``start`` binds them on ``host``, port 0, and returns the ports).
    Each connection gets four threads (a reader and a writer per direction). Up to
    ``buffer_bytes`` wait per direction: that bounds memory and must exceed the path's
    bandwidth-delay product (the default 32 MiB covers ~1.7 Gbit/s at 150 ms), otherwise the
    relay itself limits throughput. A direction also stops reading while its oldest chunk is
    overdue (the far side pushes back), so a slow far side sees the delay line and normal
    socket buffers, not 32 MiB of extra queue. Half-close (EOF) is forwarded after the same
    delay, so upload probes that end with EOF work; a reset or error on either side closes
    both.
    Edge cases: ``delay_seconds == 0`` still passes through the queues (a few tens of µs).
    """

    def __init__(self, delay_seconds: float, targets: Sequence[tuple[str, int]], *,
                 host: str = "127.0.0.1", buffer_bytes: int = RELAY_BUFFER_BYTES) -> None:
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        self.delay_seconds = delay_seconds
        self.targets = list(targets)
        self.host = host
        self.buffer_bytes = buffer_bytes
        self._listeners: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._conn_lock = threading.Lock()
        self._closed = False
        self.ports: list[int] = []

    def start(self) -> list[int]:
        """Bind and start accepting; the local port for each target, in order."""
        ports = self.ports
        for target in self.targets:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, 0))
            listener.listen(64)
            self._listeners.append(listener)
            ports.append(listener.getsockname()[1])
            threading.Thread(target=self._accept_loop, args=(listener, target),
                             daemon=True).start()
        return ports

    def _accept_loop(self, listener: socket.socket, target: tuple[str, int]) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(target, timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client, upstream)
            with self._conn_lock:
                self._connections.add(conn)
            conn.start()

    def forget(self, conn: _Connection) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def close(self) -> None:
        """Stop accepting and reset every open connection."""
        self._closed = True
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            conn.abort()

    def __enter__(self) -> "DelayRelay":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- plain echo (base RTT) ---------------------------------------------------------------------
ECHO_PAYLOAD = 16


def serve_echo(listener: socket.socket) -> None:
    """Echo every connection's bytes back (a thread per connection) until the listener closes."""
    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def echo_round_trips(host: str, port: int, count: int) -> list[int]:
    """``count`` round trips of a 16-byte payload on one TCP connection, in µs (after one
    unmeasured round trip that warms up the connection)."""
    rtts = []
    with socket.create_connection((host, port), timeout=10.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count + 1):
            payload = os.urandom(ECHO_PAYLOAD)
            started = time.perf_counter()
            sock.sendall(payload)
            got = b""
            while len(got) < ECHO_PAYLOAD:
                chunk = sock.recv(ECHO_PAYLOAD - len(got))
                if not chunk:
                    raise ConnectionError("echo server closed the connection")
                got += chunk
            elapsed = time.perf_counter() - started
            if got != payload:
                raise ConnectionError("echo mismatch")
            if i:
                rtts.append(max(1, int(elapsed * 1e6)))
    return rtts


def median_int(values: Sequence[float]) -> int:
    return int(statistics.median(values)) if values else 0


# -- command line (what the testbed runs inside namespaces) ------------------------------------
def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _fine_timer_slack() -> None:
    """Ask Linux to wake this process's timed waits on time (threads inherit it): the default
    50 µs timer slack would add up to 0.1 ms to every relayed round trip."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _print_first_line(text: str, out: IO[str] = sys.stdout) -> None:
    out.write(text + "\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="delay relay; prints its ports as a JSON list")
    relay.add_argument("targets", nargs="+", help="HOST:PORT to forward to, one listener each")
    relay.add_argument("--delay-ms", type=float, required=True, help="added round-trip delay")
    relay.add_argument("--host", default="127.0.0.1", help="where the relay listens")
    server = commands.add_parser("echo-server", help="TCP echo; prints 'listening'")
    server.add_argument("listen", help="HOST:PORT")
    client = commands.add_parser("echo-client", help="prints RTTs in µs as a JSON list")
    client.add_argument("target", help="HOST:PORT")
    client.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "relay":
        _fine_timer_slack()
        with DelayRelay(args.delay_ms / 1000, [_hostport(t) for t in args.targets],
                        host=args.host) as proxy:
            _print_first_line(json.dumps(proxy.ports))
            _wait_for_signal()
        return 0
    if args.command == "echo-server":
        listener = socket.create_server(_hostport(args.listen), reuse_port=False)
        threading.Thread(target=serve_echo, args=(listener,), daemon=True).start()
        _print_first_line("listening")
        _wait_for_signal()
        listener.close()
        return 0
    host, port = _hostport(args.target)
    _print_first_line(json.dumps(echo_round_trips(host, port, args.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
