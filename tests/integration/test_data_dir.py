"""A data directory under real `validator` processes (issue 12, item 1): its state belongs to
one network, one process uses it at a time, and a slashing history exported from one
directory and imported into another keeps its signing key from signing what it signed.

Each validator here is alone in its network (n = 1, threshold 1), so it finalizes its own
report every epoch with no peers and no chain (the spec's RPC URL answers nothing; posting
fails quietly, which these tests do not look at).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import free_port_block, wait_for
from validator.setup import init_validator_dir
from validator.spec import load_spec
from validator.store import SlashingRefused, Store

EPOCH_SECONDS = 10
KEY_FILES = ("identity.key", "signing.key", "payer.key")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "validator.cli", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a run that exited 2 (a user mistake: no traceback)."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


class Node:
    """One validator folder: keys, config.toml and ports of its own."""

    def __init__(self, folder: Path, network: Path) -> None:
        self.folder = folder
        self.network = network
        base = free_port_block(3)
        self.entry = init_validator_dir(folder, network=network, listen_host="127.0.0.1",
                                        p2p_port=base, http_host="127.0.0.1",
                                        http_port=base + 1)
        self.url = f"http://127.0.0.1:{base + 1}"
        self.rpc_url = f"http://127.0.0.1:{base + 2}"  # nothing listens there
        self.config = folder / "config.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_network(self, network_id: str, *, genesis_time: int) -> bytes:
        """A one-validator spec for this node at ``self.network``; its config digest."""
        self.network.write_text(tomli_w.dumps({
            "network_id": network_id, "genesis_time": genesis_time,
            "epoch_seconds": EPOCH_SECONDS, "round_seconds": 2, "collect_seconds": 2,
            "proposal_timeout_seconds": 3, "committee_size": 1, "min_regions": 1,
            "rpc_url": self.rpc_url,
            "validators": [{"name": "v0", **self.entry, "region": "eu-west", "lat": 48.85,
                            "lon": 2.35}]}))
        return load_spec(self.network).config_digest

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / "log.txt", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "validator.cli", "join",
                                      "--config", str(self.config), *extra],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=log)
        log.close()
        return self.proc

    def status(self) -> dict[str, Any]:
        """/status once it answers (the process must stay up meanwhile)."""
        def answered() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            code, body = get_json(self.url + "/status")
            return body if code == 200 else None
        return wait_for(f"{self.url}/status", answered, 60, poll=0.2)

    def wait_final(self, epoch: int) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            code, body = get_json(self.url + "/status")
            final = body.get("last_final_epoch") if code == 200 else None
            return body if final is not None and final >= epoch else None
        return wait_for(f"a final report of epoch {epoch}", reached, 4 * EPOCH_SECONDS + 30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        path = self.folder / "log.txt"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def signed(self) -> dict[int, bytes]:
        store = Store(self.folder / "validator.sqlite")
        try:
            return store.signed_headers()
        finally:
            store.close()


@pytest.fixture
def nodes() -> Any:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop(signal.SIGKILL)


def test_state_of_another_network_is_refused_then_moved_aside(tmp_path: Path, nodes) -> None:
    node = Node(tmp_path / "v0", tmp_path / "network.toml")
    nodes.append(node)
    first = node.write_network("scope-a", genesis_time=int(time.time()))
    node.start()
    assert node.status()["config_digest"] == first.hex()
    node.stop()

    # The same folder under a changed spec (a new network): refused, one line, exit 2.
    second = node.write_network("scope-b", genesis_time=int(time.time()))
    line = one_line_error(cli("join", "--config", str(node.config)))
    assert first.hex() in line and second.hex() in line, line
    assert "--reset-state" in line and "new directory" in line, line
    assert (node.folder / "validator.sqlite").exists()  # nothing moved or deleted

    # --reset-state moves the old state aside (never deletes it) and starts afresh.
    node.start("--reset-state")
    assert node.status()["config_digest"] == second.hex()
    [aside] = [p for p in node.folder.iterdir() if p.name.startswith("state-")]
    assert aside.name.startswith(f"state-{first.hex()[:16]}-")
    old = sqlite3.connect(aside / "validator.sqlite")
    assert old.execute("SELECT value FROM meta WHERE key = 'config_digest'").fetchone() == (first,)
    old.close()
    node.stop()
    assert node.proc is not None and node.proc.returncode == 0, node.log()


def test_a_second_join_on_one_directory_exits_2_naming_the_first(tmp_path: Path, nodes) -> None:
    node = Node(tmp_path / "v0", tmp_path / "network.toml")
    nodes.append(node)
    node.write_network("lock", genesis_time=int(time.time()))
    first = node.start()
    node.status()
    line = one_line_error(cli("join", "--config", str(node.config)))
    assert f"in use by process {first.pid}" in line, line
    # nor can a slashing export read it under the running validator
    line = one_line_error(cli("slashing", "export", "--config", str(node.config), "--out",
                              str(tmp_path / "history.json")))
    assert f"process {first.pid}" in line and not (tmp_path / "history.json").exists()
    assert first.poll() is None and get_json(node.url + "/status")[0] == 200

    # The kernel drops the lock with its process, however it ends: no stale lock after kill -9.
    node.stop(signal.SIGKILL)
    assert (node.folder / "validator.lock").exists()
    node.start()
    node.status()


def test_an_imported_history_keeps_the_key_from_signing_at_or_below_it(
        tmp_path: Path, nodes) -> None:
    network = tmp_path / "network.toml"
    old = Node(tmp_path / "old", network)
    nodes.append(old)
    # Genesis 3 epochs and most of one ago: the node's first epoch is 3, so epochs 0..2 hold
    # nothing it signed (gaps the imported floor must still close).
    start_epoch = 3
    old.write_network("history", genesis_time=int(time.time()) - start_epoch * EPOCH_SECONDS - 5)
    old.start()
    old.wait_final(start_epoch + 1)
    old.stop()
    signed = old.signed()
    assert signed and min(signed) >= start_epoch
    highest = max(signed)

    history = tmp_path / "history.json"
    run = cli("slashing", "export", "--config", str(old.config), "--out", str(history))
    assert run.returncode == 0, run.stderr
    document = json.loads(history.read_text())
    assert document["metadata"]["config_digest"] == load_spec(network).config_digest.hex()
    [entry] = document["data"]
    assert entry["pubkey"] == old.entry["signing_key"]
    assert {int(r["epoch"]): bytes.fromhex(r["header_hash"])
            for r in entry["signed_headers"]} == signed
    assert one_line_error(cli("slashing", "export", "--config", str(old.config), "--out",
                              str(history))).endswith("refusing to overwrite it")

    # A fresh directory with the same keys (a new machine), and the history imported.
    new_folder = tmp_path / "new"
    new_folder.mkdir()
    for name in KEY_FILES:
        shutil.copy2(old.folder / name, new_folder / name)
    new = Node(new_folder, network)
    nodes.append(new)
    run = cli("slashing", "import", str(history), "--config", str(new.config))
    assert run.returncode == 0, run.stderr
    assert f"imported {len(signed)} signed headers" in run.stdout
    assert new.signed() == signed

    # The store refuses any other header at or below the highest imported epoch, gaps
    # included, and still takes the same header again and anything above.
    store = Store(new_folder / "validator.sqlite")
    try:
        for epoch in (0, start_epoch - 1, highest):
            with pytest.raises(SlashingRefused):
                store.record_signed_header(epoch, b"\x5a" * 32)
        store.record_signed_header(highest, signed[highest])
    finally:
        store.close()

    # The validator on the new directory signs on above the history, never below it.
    new.start()
    status = new.wait_final(highest + 1)
    new.stop()
    assert new.proc is not None and new.proc.returncode == 0, new.log()
    after = new.signed()
    assert {e: h for e, h in after.items() if e <= highest} == signed
    assert min(e for e in after if e not in signed) > highest
    assert status["dropped"].get("slashing_refused", 0) == 0  # nothing it tried was refused
