"""A provider finds its own key and status: `validator provide` prints its base58 key and
the URL to check, and `validator provider status --validator URL` shows what a running
validator measured; the weight formula `/network` serves reproduces the record's weight.

One real devnet (local chain, 1 validator, 1 provider agent), run until the provider has a
record in a final report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import free_port_block, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "validator.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
EPOCH_SECONDS = 10


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(validator URL, provider ready line, data dir, closed port) of a running devnet."""
    tmp = tmp_path_factory.mktemp("provider-status")
    base = free_port_block(1 + 2 + 2 + 1)
    data = tmp / "net"
    with open(tmp / "devnet.out", "wb") as out, open(tmp / "devnet.err", "wb") as err:
        devnet = subprocess.Popen(
            [*CLI, "devnet", "--validators", "1", "--providers", "1", "--epoch-seconds",
             str(EPOCH_SECONDS), "--base-port", str(base), "--data-dir", str(data),
             "--log-format", "json"], stdout=out, stderr=err, env=ENV, cwd=tmp)
    try:
        def ready_line() -> dict[str, Any] | None:
            assert devnet.poll() is None, (tmp / "devnet.err").read_text()[-3000:]
            path = data / "p0" / "stdout.txt"
            text = path.read_text() if path.exists() else ""
            return json.loads(text.splitlines()[0]) if text.strip() else None

        ready = wait_for("the provider's ready line", ready_line, timeout=90)
        url = f"http://127.0.0.1:{base + 1 + 1}"
        wait_for("the validator's HTTP API", lambda: get_json(url + "/status")[0] == 200,
                 timeout=60)
        yield url, ready, data, base + 5  # base+5: the block's spare port, nothing listens
    finally:
        devnet.send_signal(signal.SIGTERM)
        try:
            devnet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            devnet.kill()
            devnet.wait()


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "provider", "status", *args], capture_output=True, text=True,
                          env=ENV, timeout=30)


def test_provide_prints_its_key_and_the_url_to_check(network) -> None:  # noqa: ANN001
    url, ready, _, _ = network
    assert ready["event"] == "provider_ready"
    key = ready["provider"]
    assert ready["status_url"] == f"{url}/providers/{key}"
    assert ready["check"] == f"validator provider status --validator {url} {key}"
    assert ready["multiaddr"].startswith("/ip4/127.0.0.1/tcp/")
    # the key is the one in its peer id, as the API names it
    from proofs.probe import public_key_from_peer_id

    import base58

    peer_id = ready["multiaddr"].rsplit("/p2p/", 1)[1]
    assert base58.b58encode(public_key_from_peer_id(peer_id)).decode() == key


def test_status_shows_the_validators_record(network) -> None:  # noqa: ANN001
    url, ready, data, _ = network
    key = ready["provider"]

    def record() -> dict[str, Any] | None:
        code, body = get_json(ready["status_url"])
        return body if code == 200 and body.get("epoch") is not None else None

    body = wait_for("a record of the provider in a final report", record,
                    timeout=8 * EPOCH_SECONDS)
    done = status("--validator", url, key)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    print(f"\n$ validator provider status --validator {url} {key}\n{text}")
    assert f"provider      {key}\n" in text
    assert "epoch         " in text and "uptime        " in text and "weight        " in text
    assert "committee     1 validators measured it:" in text and "  v0 " in text
    assert "Traceback" not in done.stderr

    by_file = status("--validator", url + "/", "--key-file", str(data / "p0" / "provider.key"),
                     "--json")
    assert by_file.returncode == 0, by_file.stderr
    answer = json.loads(by_file.stdout)
    assert answer["provider"] == key and answer["epoch"] >= body["epoch"]

    # The formula /network serves gives this record's weight from its own numbers.
    code, spec = get_json(url + "/network")
    assert code == 200
    formula = spec["weight_formula"]
    demand = formula["demand_milli"]["by_region"].get(answer["region"],
                                                      formula["demand_milli"]["default"])
    fields = {k: answer[k] for k in ("uptime_bps", "rtt_us", "down_kbps", "up_kbps", "flags")}
    weight = eval(formula["expression"], {"__builtins__": {}, "min": min, "max": max},  # noqa: S307
                  {**fields, "demand_milli": demand})
    assert weight == answer["weight"] and weight > 0, (formula["expression"], fields)


def test_status_errors_say_what_to_check(network) -> None:  # noqa: ANN001
    url, ready, _, closed_port = network
    unknown = "11111111111111111111111111111112"  # a valid key nobody registered
    missing = status("--validator", url, unknown)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"validator provider status: {url} does not know "
                                     f"provider {unknown}"), missing.stderr
    down = status("--validator", f"http://127.0.0.1:{closed_port}", ready["provider"],
                  "--timeout", "2")
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:" in down.stderr
    assert "is the validator running" in down.stderr
    for argv, needle in ((["--validator", url, "not-a-key"], "not a base58 provider key"),
                         (["--validator", "ftp://x", ready["provider"]], "expected a validator"),
                         (["--validator", url], "give the provider key"),
                         (["--validator", url, "--key-file", "/nonexistent.key"],
                          "no such key file")):
        done = status(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and needle in done.stderr, (argv, done.stderr)
    for done in (missing, down):
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
