"""/healthz on a devnet of real processes (``validator.devnet``'s supervisor pieces: the local
chain with the pool, 4 validators, 2 providers, 10 s epochs): 200 everywhere once a report is
final; stop two validators and the two left lose quorum, so their /healthz turns 503 with the
peers reason at once and the sync reason once the last final epoch falls more than 2 behind;
start the two again and every /healthz is 200 again. /metrics' ``bwpool_health_check`` says
the same at each step.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.e2e_checks import get_json, rpc
from tests.integration.test_devnet_e2e import free_port_block, wait_for
from validator import devnet
from validator.devnet import (Child, DevnetOptions, plan_children, set_up_pool, stop_all,
                              write_network)

EPOCH_SECONDS = 10


@dataclass
class Devnet:
    data: Path
    children: dict[str, Child]
    urls: list[str]  # validators' status endpoints, v0 first
    rpc_url: str


@contextmanager
def running_devnet(tmp: Path, validators: int = 4, providers: int = 2,
                   epoch_seconds: int = EPOCH_SECONDS) -> Iterator[Devnet]:
    """What `validator devnet` starts, as its supervisor does, with each child at hand."""
    base = free_port_block(1 + 2 * validators + 2 * providers)
    options = DevnetOptions(validators=validators, providers=providers,
                            epoch_seconds=epoch_seconds, base_port=base, data_dir=tmp / "net",
                            reset=False, genesis_delay=12)
    network = write_network(options)
    children = plan_children(options, network)
    urls = [f"http://127.0.0.1:{base + 1 + validators + i}" for i in range(validators)]
    try:
        devnet._start(children[0])
        wait_for("the local chain", lambda: chain_up(f"http://127.0.0.1:{base}"), timeout=30)
        set_up_pool(options, network)
        for child in children[1:]:
            devnet._start(child)
        yield Devnet(options.data_dir, {c.name: c for c in children}, urls,
                     f"http://127.0.0.1:{base}")
    finally:
        stop_all(children)


def chain_up(url: str) -> bool:
    try:
        return rpc(url, "getHealth", []) == "ok"
    except OSError:
        return False


def healthz(url: str) -> tuple[int, Any]:
    return get_json(url + "/healthz")


def metric_checks(url: str) -> dict[str, float] | None:
    code, _ = get_json(url + "/status")
    if code != 200:
        return None
    with urllib.request.urlopen(url + "/metrics", timeout=3) as response:
        text = response.read().decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "bwpool_health_check"]
    return {s.labels["check"]: s.value for s in family.samples}


def test_healthz_turns_503_when_quorum_is_lost_and_200_when_it_returns(tmp_path: Path) -> None:
    began = time.time()
    with running_devnet(tmp_path) as net:
        live = lambda: [c for c in net.children.values() if c.process]  # noqa: E731

        def all_healthy(urls: list[str]) -> list[Any] | None:
            for child in live():
                assert child.process is not None and child.process.poll() is None, child.name
            answers = [healthz(u) for u in urls]
            return [b for _, b in answers] if all(code == 200 for code, _ in answers) else None

        # 1. Everyone healthy once the network has a final report.
        first = wait_for("every validator healthy with a final report", lambda: (
            (a := all_healthy(net.urls)) and all(b["last_final_epoch"] is not None for b in a)
            and a), timeout=90)
        for body in first:
            assert body["ok"] is True and body["reasons"] == [] and body["validator_peers"] == 3
            assert body["validator_peers_needed"] == 2
        assert all(metric_checks(u) == {"sync": 1, "peers": 1, "chain": 1} for u in net.urls)
        print(f"\n{time.time() - began:5.1f} s  all healthy, last final epoch "
              f"{first[0]['last_final_epoch']}")

        # 2. Two of four validators stop (threshold 3): the two left lose quorum.
        stopped = [net.children["v2"], net.children["v3"]]
        for child in stopped:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in stopped:
            assert child.process is not None and child.process.wait(timeout=30) == 0
        stopped_at = time.time()
        left = net.urls[:2]

        def unhealthy_with(reasons: set[str]) -> list[Any] | None:
            answers = [healthz(u) for u in left]
            if not all(code == 503 for code, _ in answers):
                return None
            bodies = [b for _, b in answers]
            got = [{r.split(":")[0] for r in b["reasons"]} for b in bodies]
            return bodies if all(reasons <= g for g in got) else None

        peers_lost = wait_for("503 for too few validator peers", lambda: unhealthy_with({"peers"}),
                              timeout=30)
        for body in peers_lost:
            assert body["ok"] is False and body["checks"]["peers"] is False
            assert body["validator_peers"] == 1 and body["validator_peers_needed"] == 2
        print(f"{time.time() - began:5.1f} s  503 (peers) after {time.time() - stopped_at:.1f} s")
        behind = wait_for("503 for falling behind too", lambda: unhealthy_with({"peers", "sync"}),
                          timeout=6 * EPOCH_SECONDS)
        for body in behind:
            assert body["epoch"] - body["last_final_epoch"] > 2
            assert body["checks"] == {"sync": False, "peers": False, "chain": True, "store": True}
        assert all(metric_checks(u) == {"sync": 0, "peers": 0, "chain": 1} for u in left)
        print(f"{time.time() - began:5.1f} s  503 (peers, sync): epoch {behind[0]['epoch']}, "
              f"last final {behind[0]['last_final_epoch']}")

        # 3. They come back: quorum, new finals, and 200 everywhere again.
        for child in stopped:
            devnet._start(child)
        restarted_at = time.time()
        back = wait_for("every validator healthy again", lambda: all_healthy(net.urls),
                        timeout=8 * EPOCH_SECONDS)
        for body in back:
            assert body["ok"] is True and body["last_final_epoch"] > behind[0]["last_final_epoch"]
        assert all(metric_checks(u) == {"sync": 1, "peers": 1, "chain": 1} for u in net.urls)
        print(f"{time.time() - began:5.1f} s  200 everywhere {time.time() - restarted_at:.1f} s "
              f"after the restart, last final epoch {back[0]['last_final_epoch']}")
