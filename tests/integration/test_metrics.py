"""/metrics of a devnet of real processes, scraped by a real Prometheus (Debian's
/usr/bin/prometheus, started by the test on 127.0.0.1) and parsed with prometheus_client's
text parser:

- every validator is an "up" target, and the series an operator watches exist with sane
  values: epoch, phase, peers by kind, bundles received, probes, posts and their latency,
  payer balance, health checks;
- each /metrics parses, names this node as /status does, and announces every family the
  Grafana dashboard (deploy/grafana/) reads; every dashboard query is valid PromQL that
  Prometheus evaluates, and the ones that need only one epoch of data return series.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import free_port_block, wait_for
from tests.integration.test_healthz import EPOCH_SECONDS, running_devnet

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "bwpool-validators.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# Series of the dashboard that exist after one posted epoch (others need errors or days).
EXPECTED_NONEMPTY = ("bwpool_health_check", "bwpool_epoch", "bwpool_phase",
                     "bwpool_peers", "bwpool_bundles_received_total", "bwpool_probes_total",
                     "bwpool_payer_balance_lamports", "bwpool_chain_posts_total")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's variables filled in as Grafana would."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"].replace("$instance", ".*").replace("$__rate_interval", "30s")
            out.append((panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:bwpool|process)_[a-z_]+)\b", expr))


def exposed_names(families: list[Any]) -> set[str]:
    """Every sample name a scrape can carry, from the families it announced."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count")}
    names = set()
    for family in families:
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


class Prometheus:
    def __init__(self, folder: Path, targets: list[str]) -> None:
        self.port = free_port_block(1)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: bwpool-validators\n    metrics_path: /metrics\n"
            "    static_configs:\n      - targets: [" + ", ".join(f"'{t}'" for t in targets)
            + "]\n")
        self.log = open(folder / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited; see prometheus.log"
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:  # not listening yet, or 503 while it starts
            return False

    def api(self, path: str, **params: str) -> Any:
        assert self.process.poll() is None, "prometheus exited; see prometheus.log"
        code, body = get_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert isinstance(body, dict), (code, body)
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.api("query", query=expr)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                    reason="prometheus (Debian package prometheus) is not installed")
def test_prometheus_scrapes_every_validator(tmp_path: Path) -> None:
    began = time.time()
    with running_devnet(tmp_path) as net:
        targets = [u.removeprefix("http://") for u in net.urls]
        prom = Prometheus(tmp_path / "prometheus", targets)
        try:
            wait_for("prometheus ready", prom.ready, 30)

            def all_up() -> list[dict[str, Any]] | None:
                active = prom.api("targets")["data"]["activeTargets"]
                up = [t for t in active if t["health"] == "up"]
                return up if len(up) == len(targets) else None

            up = wait_for("every validator an 'up' target", all_up, timeout=60)
            assert sorted(t["labels"]["instance"] for t in up) == sorted(targets)
            print(f"\n{time.time() - began:5.1f} s  {len(up)} targets up")

            # A report final and posted: the first leader's post has a latency.
            wait_for("a post with a measured latency", lambda: prom.query(
                "sum(bwpool_chain_post_seconds_count) > 0"), timeout=9 * EPOCH_SECONDS)
            wait_for("every validator's probes and bundles counted", lambda: len(prom.query(
                "bwpool_bundles_received_total > 0 and on (instance) "
                "bwpool_probes_total{kind=\"heartbeat\",outcome=\"ok\"} > 0")) == len(targets),
                timeout=3 * EPOCH_SECONDS)
            one = lambda expr: {r["metric"]["instance"]: float(r["value"][1])  # noqa: E731
                                for r in prom.query(expr)}
            epochs = one("bwpool_epoch")
            assert len(epochs) == 4 and max(epochs.values()) - min(epochs.values()) <= 1
            assert all(v == 3 for v in one('bwpool_peers{kind="validators"}').values())
            assert all(v >= 1 for v in one('bwpool_peers{kind="providers"}').values())
            assert all(v == 1 for v in one("sum by (instance) (bwpool_phase)").values())
            assert all(v > 0 for v in one("bwpool_payer_balance_lamports").values())
            assert len(one("bwpool_last_posted_epoch")) >= 1
            assert all(v == 1 for v in one("min by (instance) (bwpool_health_check)").values())
            mean = prom.query("sum(bwpool_chain_post_seconds_sum) / "
                              "sum(bwpool_chain_post_seconds_count)")
            posts = prom.query("sum(bwpool_chain_post_seconds_count)")
            print(f"{time.time() - began:5.1f} s  epochs {sorted(epochs.values())}, "
                  f"{posts[0]['value'][1]} timed posts, mean {float(mean[0]['value'][1]):.2f} s")

            # Each /metrics parses and speaks of the node /status names.
            dashboard = dashboard_queries()
            wanted = set().union(*(metric_names(expr) for _, expr in dashboard))
            for url in net.urls:
                with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
                    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    families = list(text_string_to_metric_families(response.read().decode()))
                _, status = get_json(url + "/status")
                (info,) = [f for f in families if f.name == "bwpool_node_info"][0].samples
                assert info.labels["signing_key"] == status["signing_key"]
                assert info.labels["identity"] == status["identity"]
                missing = wanted - exposed_names(families)
                assert not missing, f"the dashboard reads metrics {url} does not have: {missing}"

            # Every dashboard query is valid PromQL; those with data after an epoch have it.
            for title, expr in dashboard:
                result = prom.query(expr)  # asserts status "success": it parsed and ran
                if metric_names(expr) & set(EXPECTED_NONEMPTY) and "rate(" not in expr:
                    assert result, f"{title}: {expr} returned no series"
            print(f"{time.time() - began:5.1f} s  {len(dashboard)} dashboard queries evaluated")
        finally:
            prom.stop()
