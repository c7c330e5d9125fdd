"""The whole network with real processes: `validator devnet`, then stop and restart one
validator, feed it bad gossip and bad HTTP, and stop everything with Ctrl-C (SIGINT).

Every served report is checked independently of the code that produced it (e2e_checks).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.integration.e2e_checks import (
    check_posted,
    check_report,
    expected_payouts,
    get_json,
    token_balance,
)

EPOCH_SECONDS = 12
N_VALIDATORS = 4


def free_port_block(size: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000 - size)
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


def wait_for(what: str, condition: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def latest(url: str) -> dict | None:
    status, body = get_json(url + "/epochs/latest")
    return body if status == 200 else None


def posted_latest(urls: list[str], min_epoch: int = 0) -> dict | None:
    """The latest report, if every URL serves the same one, confirmed on chain."""
    reports = [latest(u) for u in urls]
    if any(r is None or r["epoch"] < min_epoch for r in reports):
        return None
    if len({r["header_sha256"] for r in reports}) != 1:  # type: ignore[index]
        return None
    if any(r["chain"]["status"] != "confirmed" for r in reports):  # type: ignore[index]
        return None
    return reports[0]


@contextmanager
def devnet_process(data: Path, *, validators: int = N_VALIDATORS, providers: int = 6,
                   epoch_seconds: int = EPOCH_SECONDS, extra: Sequence[str] = ()
                   ) -> Iterator[tuple[subprocess.Popen, list[str], str]]:
    """``validator devnet`` in ``data`` on a free block of ports, once it printed every
    validator's URL: (the supervisor process, the URLs, the local chain's RPC URL). Stopped
    with SIGINT (Ctrl-C) at the end, if still running. ``extra``: more devnet arguments."""
    base = free_port_block(1 + 2 * validators + 2 * providers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "validator.cli", "devnet", "--validators", str(validators),
         "--providers", str(providers), "--epoch-seconds", str(epoch_seconds),
         "--base-port", str(base), "--data-dir", str(data), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls: list[str] = []
    lines: list[str] = []
    deadline = time.time() + 120
    assert proc.stdout is not None
    while len(urls) < validators and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("validator "):
            urls.append(line.split()[-1])
    assert len(urls) == validators, "".join(lines)
    try:
        yield proc, urls, f"http://127.0.0.1:{base}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def devnet(tmp_path: Path):  # noqa: ANN201
    data = tmp_path / "net"
    with devnet_process(data) as (proc, urls, rpc_url):
        yield proc, urls, data, rpc_url


def test_devnet_reports_survive_a_validator_restart(devnet) -> None:  # noqa: ANN001
    proc, urls, data, rpc_url = devnet
    _, status = get_json(urls[0] + "/status")
    _, network = get_json(urls[0] + "/network")
    digest = status["config_digest"]
    assert network["threshold"] == 3 and network["n"] == 4

    # 1. Every validator serves the same final report, confirmed on the local chain.
    first = wait_for("a report final and posted on every validator",
                     lambda: posted_latest(urls, min_epoch=1), timeout=8 * EPOCH_SECONDS)
    for url in urls:
        report = latest(url)
        assert report is not None
        check_report(report, network, digest)
        check_posted(rpc_url, report, network)
    assert first["records"], "epoch 1 measured the registered providers"
    assert all(r["uptime_bps"] > 0 and r["down_kbps"] > 0 for r in first["records"])

    # 1b. Providers claim by themselves (--auto-claim): each payout's token balance is exactly
    # what the served records and the chain's reserves say it was owed for what it claimed.
    payout_accounts = json.loads((data / "pool" / "pool.json").read_text())["payout_accounts"]
    assert len(payout_accounts) == 6

    def balances_match() -> dict[str, int] | None:
        owed = expected_payouts(rpc_url, urls[0], network)
        held = {payout: token_balance(rpc_url, account)
                for payout, account in payout_accounts.items()}
        if owed != expected_payouts(rpc_url, urls[0], network):
            return None  # a claim landed while we read: read again
        if set(owed) != set(payout_accounts) or any(v == 0 for v in owed.values()):
            return None  # some provider has not claimed a paying epoch yet
        return held if held == owed else None

    paid = wait_for("every provider paid exactly what it was owed for its claims",
                    balances_match, timeout=6 * EPOCH_SECONDS)
    assert all(amount > 0 for amount in paid.values())

    # 2. Stop one validator: the other three keep finalizing.
    v3_pid = int((data / "v3" / "pid").read_text())
    os.kill(v3_pid, signal.SIGTERM)
    wait_for("v3 to exit", lambda: not alive(v3_pid), timeout=20)
    stopped_at = first["epoch"]
    during = wait_for("a report while v3 is down",
                      lambda: posted_latest(urls[:3], min_epoch=stopped_at + 2),
                      timeout=5 * EPOCH_SECONDS)
    check_report(during, network, digest)

    # 3. Restart it by hand, as an operator would: it rejoins and serves new reports.
    restarted = subprocess.Popen(
        [sys.executable, "-m", "validator.cli", "join", "--config",
         str(data / "v3" / "config.toml")],
        stdout=subprocess.DEVNULL, stderr=open(data / "v3" / "log-restart.txt", "wb"))
    try:
        back = wait_for("v3 to serve a report finalized after its return",
                        lambda: posted_latest(urls, min_epoch=during["epoch"] + 2),
                        timeout=6 * EPOCH_SECONDS)
        check_report(back, network, digest)
        _, epochs = get_json(urls[3] + "/epochs")
        assert during["epoch"] in {e["epoch"] for e in epochs}, "v3 fetched what it missed"

        # 4. Malformed HTTP gets a JSON 4xx, never a 500.
        for path in ("/epochs/abc", "/epochs/-1", "/epochs/99999999999999999999999",
                     "/epochs/1/proof/notbase58!", "/providers/xyz", "/nope",
                     "/epochs/latest/proof/" + "1" * 500):
            code, body = get_json(urls[0] + path)
            assert 400 <= code < 500 and isinstance(body, dict) and "error" in body, (path, code)
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.wait(timeout=20)

    # 5. Ctrl-C stops every process devnet started.
    pids = [int(p.read_text()) for p in data.glob("*/pid")]
    assert len(pids) == 1 + N_VALIDATORS + 6
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=40) == 0
    wait_for("every devnet child to exit", lambda: not any(alive(p) for p in pids), timeout=10)
