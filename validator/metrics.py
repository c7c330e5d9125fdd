"""``/metrics``: one validator's state in the Prometheus text format (prometheus-client).

Each ``make_app`` gets its own ``CollectorRegistry`` (several nodes may share a process in
tests), holding a ``NodeCollector`` that reads the node's immutable snapshots at scrape
time (the status snapshot, as ``/status`` serves it, and ``NodeTelemetry``) and the process
collector. Nothing is counted here: counters are the node's, so a scrape changes nothing.

| metric | type | labels | what |
|--------|------|--------|------|
| ``bwpool_node_info`` | gauge (1) | network_id, identity, signing_key, version | |
| ``bwpool_epoch`` | gauge | | current epoch (negative before genesis) |
| ``bwpool_phase`` | gauge (0/1) | phase | the node's phase: one of ``PHASES`` is 1 |
| ``bwpool_last_final_epoch`` | gauge | | newest final report held |
| ``bwpool_last_posted_epoch`` | gauge | | newest epoch confirmed on chain |
| ``bwpool_validators``, ``bwpool_quorum_threshold`` | gauge | | n and threshold of the spec |
| ``bwpool_peers`` | gauge | kind | connected peers: validators, providers, other |
| ``bwpool_providers_registered`` | gauge | | provider registrations held |
| ``bwpool_bundles_received_total`` | counter | | other validators' bundles accepted |
| ``bwpool_dropped_total`` | counter | reason | ``/status`` ``dropped`` (p2p:, http:, probe:) |
| ``bwpool_probes_total`` | counter | kind, outcome | ``validator.telemetry.PROBE_OUTCOMES`` |
| ``bwpool_chain_posts_total`` | counter | result | poster calls: confirmed, failed |
| ``bwpool_chain_post_seconds`` | histogram | | poster calls that sent a transaction |
| ``bwpool_chain_errors_total`` | counter | kind | ``validator.chain_stats.ERROR_KINDS`` |
| ``bwpool_chain_failing_since_timestamp_seconds`` | gauge | | oldest unanswered chain error |
| ``bwpool_payer_balance_lamports`` | gauge | | fee payer's balance, read per epoch |
| ``bwpool_consistency_excluded_validators`` | gauge | | left out of the last final epoch |
| ``bwpool_consistency_self_excluded`` | gauge (0/1) | | this validator among them |
| ``bwpool_health_check`` | gauge (0/1) | check | sync, peers, chain (``validator.health``) |

Absent values (no pool, nothing final yet, no open chain error) leave a family without
samples, but every family is still announced (HELP and TYPE), so a scraper and the dashboard
(``deploy/grafana/``) see every name from the first scrape. ``/healthz`` adds the store check
to ``bwpool_health_check``'s three.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from validator.chain_stats import ERROR_KINDS, POST_RESULTS, POST_SECONDS_BUCKETS
from validator.health import HealthPolicy, assess
from validator.spec import NetworkSpec
from validator.telemetry import PEER_KINDS, PROBE_OUTCOMES, NodeTelemetry

PHASES = ("starting", "waiting_for_genesis", "collecting", "agreeing", "probing")
HEALTH_CHECKS = ("sync", "peers", "chain")

Status = Callable[[], Mapping[str, Any]]
Telemetry = Callable[[], NodeTelemetry | None]


def _version() -> str:
    try:
        return metadata.version("bwpool-validator")
    except metadata.PackageNotFoundError:
        return "unknown"


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _gauge(name: str, doc: str, value: int | float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


class NodeCollector(Collector):
    """The metrics of the table above, from ``status()`` and ``telemetry()`` at each scrape."""

    def __init__(self, spec: NetworkSpec, status: Status, telemetry: Telemetry,
                 policy: HealthPolicy, clock: Callable[[], float] = time.time) -> None:
        self._spec = spec
        self._status = status
        self._telemetry = telemetry
        self._policy = policy
        self._clock = clock
        self._version = _version()

    def collect(self) -> Iterator[Metric]:
        status, telemetry = self._status(), self._telemetry()
        yield from self._node(status)
        yield from self._links(status, telemetry)
        yield from self._chain(status, telemetry)
        yield from self._consistency(status)
        health = assess(threshold=self._spec.threshold, status=status, telemetry=telemetry,
                        policy=self._policy, now=self._clock())
        checks = GaugeMetricFamily("bwpool_health_check", "1 if this /healthz check passes",
                                   labels=["check"])
        for name in HEALTH_CHECKS:
            checks.add_metric([name], int(health.checks[name]))
        yield checks

    def _node(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        info = InfoMetricFamily("bwpool_node", "this validator: network, identity, software")
        if isinstance(status.get("identity"), str):
            info.add_metric([], {"network_id": str(status.get("network_id", "")),
                                 "identity": status["identity"],
                                 "signing_key": str(status.get("signing_key", "")),
                                 "version": self._version})
        yield info
        yield _gauge("bwpool_epoch", "current epoch (negative before genesis)",
                     _number(status.get("epoch")))
        phase = GaugeMetricFamily("bwpool_phase", "1 for the node's current phase",
                                  labels=["phase"])
        current = status.get("phase")
        for name in PHASES + ((current,) if isinstance(current, str)
                              and current not in PHASES else ()):
            phase.add_metric([name], int(name == current))
        yield phase
        yield _gauge("bwpool_last_final_epoch", "newest epoch with a final report here",
                     _number(status.get("last_final_epoch")))
        chain = status.get("chain")
        posted = chain.get("last_posted_epoch") if isinstance(chain, Mapping) else None
        yield _gauge("bwpool_last_posted_epoch", "newest epoch confirmed on chain by this node",
                     _number(posted))
        yield _gauge("bwpool_validators", "validators in the network spec (n)", self._spec.n)
        yield _gauge("bwpool_quorum_threshold", "signatures that make a report final",
                     self._spec.threshold)

    def _links(self, status: Mapping[str, Any],
               telemetry: NodeTelemetry | None) -> Iterator[Metric]:
        peers = GaugeMetricFamily("bwpool_peers", "connected libp2p peers by kind",
                                  labels=["kind"])
        bundles = CounterMetricFamily("bwpool_bundles_received",
                                      "other validators' measurement bundles accepted")
        probes = CounterMetricFamily("bwpool_probes", "probes of providers by outcome",
                                     labels=["kind", "outcome"])
        if telemetry is not None:
            for kind in PEER_KINDS:
                peers.add_metric([kind], telemetry.peers.get(kind, 0))
            bundles.add_metric([], telemetry.bundles_received)
            for key in PROBE_OUTCOMES:
                probes.add_metric(list(key), telemetry.probes.get(key, 0))
        yield from (peers, bundles, probes)
        yield _gauge("bwpool_providers_registered", "provider registrations held",
                     _number(status.get("providers")))
        dropped = CounterMetricFamily("bwpool_dropped", "inputs dropped, by reason (/status)",
                                      labels=["reason"])
        drops = status.get("dropped")
        if isinstance(drops, Mapping):
            for reason, count in sorted(drops.items()):
                dropped.add_metric([str(reason)], count)
        yield dropped

    def _chain(self, status: Mapping[str, Any],
               telemetry: NodeTelemetry | None) -> Iterator[Metric]:
        chain = None if telemetry is None else telemetry.chain
        posts = CounterMetricFamily("bwpool_chain_posts", "report posts by result",
                                    labels=["result"])
        errors = CounterMetricFamily("bwpool_chain_errors", "chain errors by kind",
                                     labels=["kind"])
        latency = HistogramMetricFamily("bwpool_chain_post_seconds",
                                        "duration of report posts that sent a transaction")
        since = None
        if chain is not None:
            for result in POST_RESULTS:
                posts.add_metric([result], chain.posts.get(result, 0))
            for kind in ERROR_KINDS:
                errors.add_metric([kind], chain.errors.get(kind, 0))
            cumulative, buckets = 0, []
            for bound, count in zip((*POST_SECONDS_BUCKETS, float("inf")), chain.post_seconds):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([], buckets, chain.post_seconds_sum)
            since = chain.failing_since
        yield from (posts, errors, latency)
        yield _gauge("bwpool_chain_failing_since_timestamp_seconds",
                     "unix time of the oldest chain error not yet followed by a confirmed post",
                     since)
        yield _gauge("bwpool_payer_balance_lamports", "the fee payer's balance",
                     None if telemetry is None else telemetry.payer_lamports)

    def _consistency(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        last_final = _number(status.get("last_final_epoch"))
        excluded = status.get("excluded")
        keys: list[Any] = []
        if isinstance(excluded, Mapping) and last_final is not None:
            keys = list(excluded.get(str(last_final)) or ())
        known = last_final is not None
        yield _gauge("bwpool_consistency_excluded_validators",
                     "validators left out of the last final epoch's records as inconsistent",
                     len(keys) if known else None)
        yield _gauge("bwpool_consistency_self_excluded",
                     "1 if this validator was left out of the last final epoch as inconsistent",
                     int(status.get("signing_key") in keys) if known else None)


def make_registry(spec: NetworkSpec, status: Status, telemetry: Telemetry,
                  policy: HealthPolicy) -> CollectorRegistry:
    """A registry of its own for one node: its collector and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(spec, status, telemetry, policy))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition the client asked for (text 0.0.4, or OpenMetrics if it says so) and
    its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
