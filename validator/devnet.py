"""`validator devnet`: a whole network on loopback, each part its own process.

Layout of the data directory (an operator can stop any validator and start it again by hand
with ``validator join --config D/<name>/config.toml``):

    D/network.toml           the network spec every process reads
    D/chain/                 the local chain's log
    D/pool/                  the pool: authority.key (mint authority, pays set-up), pool.key
                             (the Pool account's keypair), program.key (the program id's),
                             pool.json (program id, pool, mint, vault, token accounts)
    D/v0 .. D/v{n-1}/        validators: keys (0600), config.toml, validator.sqlite, log.txt,
                             pid (so `kill $(cat D/v1/pid)` stops one)
    D/p0 .. D/p{m-1}/        provider agents: key, log.txt, stdout.txt (its ready line:
                             multiaddr, provider key, status URL), pid,
                             status.json (what the agent refused, by reason: --status-file)

Every process runs with ``--log-format json``: each line of every log.txt and stdout.txt
is one JSON object (level, logger, event), and a stopped process logs ``stopped``.

The local chain starts with the pool program (`programs/pool/pool.so`) loaded; once it
answers, the supervisor creates a mint, initializes the pool with the validator set,
funds its vault and gives every provider's payout address a token account. Providers run
with `--auto-claim`, so their balances grow as epochs are accepted.

Ports, from --base-port P: the local chain's JSON-RPC at P; validator i libp2p at P+1+i and
HTTP at P+1+n+i; provider j libp2p at P+1+2n+j and data port at P+1+2n+m+j.

Children run in their own session (Ctrl-C reaches only this supervisor, which stops them in
order) and with a parent-death signal, so none outlives the supervisor even on SIGKILL.
SIGINT or SIGTERM to the supervisor at any time, set-up included, stops everything (SIGTERM
to each child, SIGKILL after STOP_GRACE_SECONDS, logged) and exits 0. Its own lines
(URLs, a child's exit) are plain text, or JSON lines with ``--log-format json``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import structlog
import tomli_w
from solders.keypair import Keypair

import programs
from validator.keys import load_or_create_key
from validator.lifecycle import pending_signal
from validator.logs import emit
from validator.setup import init_validator_dir
from validator.spec import load_spec

log = structlog.get_logger("validator.devnet")

POOL_PROGRAM = Path(programs.__file__).resolve().parent / "pool" / "pool.so"
DECIMALS_UNIT = 10**6  # the devnet mint has 6 decimals
EPOCH_BUDGET = 1_000 * DECIMALS_UNIT  # tokens reserved per accepted epoch
SUPPLY = 1_000_000 * DECIMALS_UNIT  # all of it goes into the vault
CLAIM_WINDOW_EPOCHS = 4

# Distinct region labels (committees take one validator per region), but coordinates a few
# km apart around one city: on loopback every process is in the same place, and the
# light-speed location bound (about 100 km per ms of RTT) would rightly flag claims of
# other continents.
REGIONS = tuple((name, 48.85 + 0.02 * i, 2.35 + 0.02 * i) for i, name in enumerate(
    ("eu-west", "us-east", "ap-south", "sa-east", "af-south", "eu-north", "us-west")))
STOP_GRACE_SECONDS = 10.0


class DevnetError(Exception):
    """A devnet set-up problem the operator can fix (message says how)."""


@dataclass(frozen=True)
class DevnetOptions:
    validators: int
    providers: int
    epoch_seconds: int
    base_port: int
    data_dir: Path
    reset: bool
    genesis_delay: int = 12
    log_format: str = "auto"  # this supervisor's lines; children always log JSON
    log_level: str = "info"  # the supervisor's and every child's
    max_new_providers: int | None = None  # the spec's [registration] max_new_per_epoch


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stdout: IO[bytes] | None = field(default=None, repr=False)
    reported_exit: bool = False


def _set_parent_death_signal() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _validator_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "validator.cli", *args]


def _log_args(options: DevnetOptions) -> list[str]:
    """A child's log options: JSON lines always (its files are read by tools, not people)."""
    return ["--log-format", "json", "--log-level", options.log_level]


def small_network_timing(epoch_seconds: int, n: int) -> dict[str, int]:
    """Spec timing and committee fields for a small test network of `n` validators."""
    return {
        "epoch_seconds": epoch_seconds,
        "round_seconds": max(2, epoch_seconds // 8),
        "collect_seconds": max(2, epoch_seconds // 8),
        "proposal_timeout_seconds": max(3, epoch_seconds // 6),
        "committee_size": min(3, n) if n < 5 else 5,
        "min_regions": min(3, n),
    }


def write_network(options: DevnetOptions) -> Path:
    d = options.data_dir
    if d.exists() and any(d.iterdir()):
        if not options.reset:
            raise DevnetError(f"{d} is not empty: pass --reset to wipe it, or choose another "
                              f"--data-dir")
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    n, m, p = options.validators, options.providers, options.base_port
    if n < 1 or m < 0:
        raise DevnetError("--validators must be >= 1 and --providers >= 0")
    if p < 1024 or p + 1 + 2 * n + 2 * m > 65535:
        raise DevnetError("--base-port leaves no room for all ports (1024..65535)")
    if options.epoch_seconds < 10:
        raise DevnetError("--epoch-seconds must be at least 10")
    network = d / "network.toml"
    rpc_url = f"http://127.0.0.1:{p}"
    pool_keys = {name: Keypair.from_seed(load_or_create_key(d / "pool" / f"{name}.key"))
                 for name in ("authority", "pool", "program")}
    for j in range(m):  # created now: devnet needs their payout addresses for token accounts
        load_or_create_key(d / f"p{j}" / "provider.key")
    entries = []
    for i in range(n):
        region, lat, lon = REGIONS[i % len(REGIONS)]
        entry = init_validator_dir(d / f"v{i}", network=network, listen_host="127.0.0.1",
                                   p2p_port=p + 1 + i, http_host="127.0.0.1",
                                   http_port=p + 1 + n + i, rpc_url=rpc_url, airdrop=True)
        entries.append({"name": f"v{i}", **entry, "region": region, "lat": lat, "lon": lon})
    epoch = options.epoch_seconds
    spec = {
        "network_id": f"devnet-{os.getpid()}-{int(time.time())}",
        "genesis_time": int(time.time()) + options.genesis_delay,
        **small_network_timing(epoch, n),
        "rpc_url": rpc_url,
        "pool_address": str(pool_keys["pool"].pubkey()),
        "pool_program_id": str(pool_keys["program"].pubkey()),
        "probes": {"heartbeat_timeout_seconds": 2.0, "echo_count": 5,
                   "throughput_seconds": 0.5, "warmup_fraction": 0.25},
        "validators": entries,
    }
    if options.max_new_providers is not None:
        spec["registration"] = {"max_new_per_epoch": options.max_new_providers}
    network.write_text(tomli_w.dumps(spec))
    load_spec(network)  # the file we wrote must be one we accept
    return network


def plan_children(options: DevnetOptions, network: Path) -> list[Child]:
    d, n, m, p = options.data_dir, options.validators, options.providers, options.base_port
    (d / "chain").mkdir(exist_ok=True)
    program_id = Keypair.from_seed(load_or_create_key(d / "pool" / "program.key")).pubkey()
    logs = _log_args(options)
    children = [Child("chain", _validator_argv("localchain", "--port", str(p), "--program",
                                               f"{program_id}={POOL_PROGRAM}", *logs),
                      d / "chain" / "log.txt")]
    for i in range(n):
        children.append(Child(f"v{i}", _validator_argv("join", "--config",
                                                      str(d / f"v{i}" / "config.toml"), *logs),
                              d / f"v{i}" / "log.txt"))
    for j in range(m):
        region, lat, lon = REGIONS[(j + 1) % len(REGIONS)]
        folder = d / f"p{j}"
        folder.mkdir(exist_ok=True)
        children.append(Child(f"p{j}", _validator_argv(
            "provide", "--network", str(network), "--key", str(folder / "provider.key"),
            "--listen", f"/ip4/127.0.0.1/tcp/{p + 1 + 2 * n + j}",
            "--data-host", "127.0.0.1", "--data-port", str(p + 1 + 2 * n + m + j),
            "--region", region, "--lat", str(lat + 0.01 * j), "--lon", str(lon),
            "--auto-claim", "--validator", f"http://127.0.0.1:{p + 1 + n + j % n}",
            "--rpc-url", f"http://127.0.0.1:{p}", "--status-file", str(folder / "status.json"),
            *logs),
            folder / "log.txt"))
    return children


def _start(child: Child) -> None:
    log = open(child.log_path, "ab")
    child.stdout = open(child.log_path.with_name("stdout.txt"), "wb")
    child.process = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, stdout=child.stdout,
                                     stderr=log, start_new_session=True,
                                     preexec_fn=_set_parent_death_signal)
    log.close()
    child.log_path.with_name("pid").write_text(f"{child.process.pid}\n")


def _wait_http(url: str, deadline: float, child: Child, stopping: Callable[[], bool]) -> bool:
    while time.time() < deadline and not stopping():
        if child.process is not None and child.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _wait_rpc(url: str, deadline: float, child: Child, stopping: Callable[[], bool]) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).encode()
    while time.time() < deadline and not stopping():
        if child.process is not None and child.process.poll() is not None:
            return False
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=1) as response:
                if json.load(response).get("result") == "ok":
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def set_up_pool(options: DevnetOptions, network: Path) -> dict[str, object]:
    """Mint, pool, funding and provider token accounts on the devnet's chain (pool.json)."""
    import asyncio

    from validator.pool_client import PoolClientError
    from validator.pool_setup import setup_pool

    d = options.data_dir
    spec = load_spec(network)
    keys = {name: Keypair.from_seed(load_or_create_key(d / "pool" / f"{name}.key"))
            for name in ("authority", "pool", "program")}
    providers = [Keypair.from_seed(load_or_create_key(d / f"p{j}" / "provider.key")).pubkey()
                 for j in range(options.providers)]
    try:
        pool = asyncio.run(setup_pool(
            spec.rpc_url, authority=keys["authority"], program_id=keys["program"].pubkey(),
            pool_keypair=keys["pool"], config_digest=spec.config_digest,
            validator_keys=[v.signing_key for v in spec.validators], payouts=providers,
            epoch_budget=EPOCH_BUDGET, claim_window=CLAIM_WINDOW_EPOCHS, supply=SUPPLY,
            fee_payers=providers))
    except PoolClientError as exc:
        raise DevnetError(f"setting up the pool failed: {exc}") from None
    info: dict[str, object] = {
        "program_id": str(pool.program_id), "pool": str(pool.pool), "mint": str(pool.mint),
        "vault": str(pool.vault), "epoch_budget": EPOCH_BUDGET, "supply": SUPPLY,
        "payout_accounts": {str(k): str(v) for k, v in pool.payout_accounts.items()},
    }
    (d / "pool" / "pool.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def stop_all(children: list[Child]) -> None:
    """SIGTERM everyone (providers first, chain last), then SIGKILL what is left."""
    for child in reversed(children):
        if child.process is not None and child.process.poll() is None:
            child.process.terminate()
    deadline = time.time() + STOP_GRACE_SECONDS
    for child in reversed(children):
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            log.warning("devnet_child_killed", name=child.name, log=str(child.log_path),
                        reason=f"still running {STOP_GRACE_SECONDS:g} s after SIGTERM")
            child.process.kill()
            child.process.wait()
        if child.stdout is not None:
            child.stdout.close()


def run_devnet(options: DevnetOptions) -> int:
    network = write_network(options)
    children = plan_children(options, network)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    early = pending_signal()  # one that came while the spec was written
    if early is not None:
        stop["signal"] = signal.Signals[early]
    stopping = lambda: bool(stop["signal"])  # noqa: E731 - read by every wait below
    n, p = options.validators, options.base_port
    try:
        chain = children[0]
        _start(chain)
        if not _wait_rpc(f"http://127.0.0.1:{p}", time.time() + 30, chain, stopping):
            if stopping():
                return 0
            raise DevnetError(f"the local chain did not start; see {chain.log_path}")
        emit("devnet_chain_ready", f"local chain   http://127.0.0.1:{p}",
             url=f"http://127.0.0.1:{p}")
        pool = set_up_pool(options, network)
        emit("devnet_pool_ready", f"pool          {pool['pool']} (program {pool['program_id']}, "
             f"mint {pool['mint']}, {SUPPLY // DECIMALS_UNIT} tokens, "
             f"{EPOCH_BUDGET // DECIMALS_UNIT} per epoch)", pool=pool["pool"],
             program_id=pool["program_id"], mint=pool["mint"], supply=SUPPLY,
             epoch_budget=EPOCH_BUDGET)
        for child in children[1:]:
            if stopping():
                return 0
            _start(child)
        for i in range(n):
            child = children[1 + i]
            url = f"http://127.0.0.1:{p + 1 + n + i}"
            # /status, not /healthz: started is not healthy (/healthz is 503 until in sync)
            if not _wait_http(url + "/status", time.time() + 60, child, stopping):
                if stopping():
                    return 0
                raise DevnetError(f"{child.name} did not start; see {child.log_path}")
            emit("devnet_validator_ready", f"validator {child.name:<4}{url}", name=child.name,
                 url=url)
        spec = load_spec(network)
        emit("devnet_ready", f"network {spec.network_id}: {n} validators (threshold "
             f"{spec.threshold}), {options.providers} providers, epochs of "
             f"{spec.epoch_seconds} s from "
             f"{time.strftime('%H:%M:%S', time.localtime(spec.genesis_time))}; "
             f"data in {options.data_dir}; Ctrl-C stops everything",
             network_id=spec.network_id, validators=n, threshold=spec.threshold,
             providers=options.providers, epoch_seconds=spec.epoch_seconds,
             genesis_time=spec.genesis_time, data_dir=str(options.data_dir))
        while not stop["signal"]:
            for child in children:
                code = child.process.poll() if child.process else None
                if code is not None and not child.reported_exit:
                    child.reported_exit = True
                    again = f"validator {' '.join(child.argv[3:])}"
                    emit("devnet_child_exited", f"{child.name} exited with code {code}; log: "
                         f"{child.log_path}; start it again with: {again}", name=child.name,
                         code=code, log=str(child.log_path), restart=again)
            time.sleep(0.5)
        return 0
    finally:
        stop_all(children)
        name = signal.Signals(stop["signal"]).name if stop["signal"] else None
        emit("devnet_stopped", "devnet stopped", signal=name)
