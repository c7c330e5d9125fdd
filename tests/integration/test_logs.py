"""Everything a process writes is JSON lines, and SIGTERM ends every process cleanly.

A real devnet (`validator devnet --log-format json`: a local chain, 3 validators, 2 provider
agents) runs until a report is final and on chain; then each child gets SIGTERM, then the
supervisor. Every line of every stdout and stderr is checked: one JSON object with level,
logger and event, no traceback, no exception, keys in base58. The same for SIGTERM during
start-up, and for what nobody catches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import base58

from tests.factories import make_spec
from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import alive, free_port_block, wait_for

ROOT = Path(__file__).resolve().parents[2]
EPOCH_SECONDS = 10
N_VALIDATORS, N_PROVIDERS = 3, 2
CLI = [sys.executable, "-m", "validator.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
KEY_FIELDS = ("provider", "offender", "signing_key", "payout")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path` as a JSON object with level, logger and event; fails on any
    other line, on a traceback and on a logged exception."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path}:{number}: {line[:300]}"
        assert "Traceback" not in line, where
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {where}") from None
        assert isinstance(entry, dict), where
        for field in ("level", "logger", "event"):
            assert isinstance(entry.get(field), str) and entry[field], f"no {field}: {where}"
        assert "exception" not in entry, f"an exception was logged: {where}"
        for field in KEY_FIELDS:
            if isinstance(entry.get(field), str):
                assert len(base58.b58decode(entry[field])) == 32, f"{field} not base58: {where}"
        out.append(entry)
    return out


def _events(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == event]


def _final_everywhere(urls: list[str]) -> int | None:
    epochs = []
    for url in urls:
        status, body = get_json(url + "/epochs/latest")
        if status != 200 or body["chain"]["status"] != "confirmed":
            return None
        epochs.append(body["epoch"])
    return min(epochs)


def test_devnet_writes_only_json_lines_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    base = free_port_block(1 + 2 * N_VALIDATORS + 2 * N_PROVIDERS)
    data = tmp_path / "net"
    out, err = tmp_path / "devnet.stdout", tmp_path / "devnet.stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        devnet = subprocess.Popen(
            [*CLI, "devnet", "--validators", str(N_VALIDATORS), "--providers",
             str(N_PROVIDERS), "--epoch-seconds", str(EPOCH_SECONDS), "--base-port", str(base),
             "--data-dir", str(data), "--log-format", "json"],
            stdout=stdout, stderr=stderr, env=ENV, cwd=tmp_path)
    try:
        def validators_ready() -> list[str] | None:
            assert devnet.poll() is None, f"devnet exited early:\n{err.read_text()[-3000:]}"
            urls = [e["url"] for e in _events(json_lines(out), "devnet_validator_ready")]
            return urls if len(urls) == N_VALIDATORS else None

        urls = wait_for("the devnet's validators", validators_ready, timeout=90)
        wait_for("a report final and on chain at every validator",
                 lambda: _final_everywhere(urls) is not None, timeout=6 * EPOCH_SECONDS)

        # SIGTERM to each child, as an operator (or systemd) would: providers, validators,
        # the chain last. The supervisor sees each exit and logs its code.
        children = [f"p{j}" for j in range(N_PROVIDERS)] + \
            [f"v{i}" for i in range(N_VALIDATORS)] + ["chain"]
        for name in children:
            pid = int((data / name / "pid").read_text())
            os.kill(pid, signal.SIGTERM)
            wait_for(f"{name} to exit after SIGTERM", lambda pid=pid: not alive(pid), timeout=20)
        exits = wait_for("the supervisor to report every exit", lambda: {
            e["name"]: e["code"] for e in _events(json_lines(out), "devnet_child_exited")
        } if len(_events(json_lines(out), "devnet_child_exited")) == len(children) else None,
            timeout=10)
        assert exits == {name: 0 for name in children}

        devnet.send_signal(signal.SIGTERM)
        assert devnet.wait(timeout=30) == 0
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()

    files = [out, err, *sorted(data.glob("*/log.txt")), *sorted(data.glob("*/stdout.txt"))]
    assert len(files) == 2 + 2 * len(children)
    checked = {path: json_lines(path) for path in files}
    for name in children:
        log = checked[data / name / "log.txt"]
        stopped = _events(log, "stopped")
        assert len(stopped) == 1, (name, log[-3:])
        if name != "chain":  # trio's receiver names the signal; asyncio's handler does not
            assert stopped[0]["signal"] == "SIGTERM", stopped
    assert _events(checked[out], "devnet_stopped")[0]["signal"] == "SIGTERM"

    # The provider's ready line: multiaddr, base58 key (the peer id's key) and status URL,
    # and that key bound to every line it logged.
    for j in range(N_PROVIDERS):
        (ready_line,) = checked[data / f"p{j}" / "stdout.txt"]
        assert ready_line["event"] == "provider_ready"
        key = ready_line["provider"]
        assert ready_line["multiaddr"].startswith("/ip4/127.0.0.1/tcp/")
        assert ready_line["status_url"].endswith(f"/providers/{key}")
        assert all(e.get("provider") == key for e in checked[data / f"p{j}" / "log.txt"])

    lines = sum(len(entries) for entries in checked.values())
    loggers = sorted({e["logger"] for entries in checked.values() for e in entries})
    print(f"\nchecked {lines} lines in {len(files)} files from {1 + len(children)} processes; "
          f"loggers: {', '.join(loggers)}")
    assert lines > 50


def _spec_file(tmp_path: Path) -> Path:
    import tomli_w

    spec, _ = make_spec(1, genesis_time=int(time.time()))
    body = spec.to_dict()
    body["rpc_url"] = ""
    path = tmp_path / "network.toml"
    path.write_text(tomli_w.dumps(body))
    return path


def test_sigterm_during_start_up_exits_0_with_json_lines(tmp_path: Path) -> None:
    """A stop signal at any moment of start-up (imports, key loading, host start) or after:
    exit 0, nothing but JSON lines, and a `stopped` line once our code runs at all."""
    network = _spec_file(tmp_path)
    commands = {
        "provide": [*CLI, "provide", "--network", str(network), "--key",
                    str(tmp_path / "provider.key"), "--log-format", "json"],
        "localchain": [*CLI, "localchain", "--port", "0", "--log-format", "json"],
    }
    runs = 0
    for name, argv in commands.items():
        for delay, signum in ((0.4, signal.SIGTERM), (1.0, signal.SIGINT),
                              (2.0, signal.SIGTERM), (4.0, signal.SIGTERM)):
            out, err = tmp_path / f"{name}-{delay}.out", tmp_path / f"{name}-{delay}.err"
            with open(out, "wb") as stdout, open(err, "wb") as stderr:
                process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=ENV,
                                           cwd=tmp_path)
            time.sleep(delay)
            process.send_signal(signum)
            assert process.wait(timeout=30) == 0, (name, delay, err.read_text()[-2000:])
            entries = json_lines(out) + json_lines(err)
            assert len(_events(entries, "stopped")) == 1, (name, delay, entries)
            runs += 1
    assert runs == 8


def test_what_nobody_catches_is_one_json_line(tmp_path: Path) -> None:
    """Library logging (py-libp2p's loggers do not propagate), warnings, a thread's exception
    and an uncaught one at top level: one JSON line each, exit 1."""
    script = tmp_path / "crash.py"
    script.write_text(
        "import logging, threading, warnings\n"
        "import libp2p\n"
        "from validator.logs import configure_logging\n"
        "configure_logging('json', 'info')\n"
        "logging.getLogger('libp2p.transport.tcp').warning('Failed to open TCP stream')\n"
        "logging.getLogger('aiohttp.access').error('bad %d', 'format')\n"
        "import traceback\n"
        "try:\n    raise LookupError('gone')\nexcept LookupError as e:\n"
        "    text = ''.join(traceback.format_exception(e))\n"
        "logging.getLogger('libp2p.network.swarm').warning('add_conn failed: %s', text)\n"
        "warnings.warn('deprecated thing')\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        "raise RuntimeError('a bug')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=ENV, cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["logger"], e["level"], e["event"]) for e in entries] == [
        ("libp2p.transport.tcp", "warning", "Failed to open TCP stream"),
        ("aiohttp.access", "error", "log_record_unformattable"),
        ("libp2p.network.swarm", "warning", "add_conn failed:"),
        ("py.warnings", "warning", entries[3]["event"]),
        ("validator", "error", "uncaught_exception_in_thread"),
        ("validator", "critical", "uncaught_exception"),
    ]
    assert entries[2]["exception"][0]["exc_type"] == "LookupError"  # parsed from the text
    assert entries[2]["exception"][0]["frames"][0]["name"] == "<module>"
    assert "deprecated thing" in entries[3]["event"]
    assert entries[4]["thread"] == "worker"
    assert entries[5]["exception"][0]["exc_type"] == "RuntimeError"
    assert not any("Traceback" in line for line in lines)
