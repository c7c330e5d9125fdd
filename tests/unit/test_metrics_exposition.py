"""validator.metrics: a node's snapshots rendered by prometheus-client and read back by its
parsers (text 0.0.4 and OpenMetrics), value by value."""

from __future__ import annotations

from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_spec
from validator.chain_stats import ERROR_KINDS, POST_SECONDS_BUCKETS, PosterCounters
from validator.health import HealthPolicy
from validator.metrics import PHASES, make_registry, render
from validator.telemetry import NodeCounters, NodeTelemetry

SPEC, _ = make_spec(4)
ME = "7tXc1jU2BYWfE3ErB4iby4iYhkEzSFZoXSijGKacdTTY"
STATUS: dict[str, Any] = {
    "network_id": "testnet", "identity": "12D3KooWtest", "signing_key": ME, "epoch": 12,
    "phase": "agreeing", "peers": 4, "providers": 6, "last_final_epoch": 11,
    "chain": {"rpc_url": "http://127.0.0.1:1", "last_posted_epoch": 10, "last_error": None},
    "dropped": {"duplicate": 5, "p2p:bad_frame": 2, "http:idle_timeout": 1},
    "excluded": {"9": ["x"], "11": [ME, "y"]},
}


def telemetry() -> NodeTelemetry:
    chain = PosterCounters()
    chain.posted("confirmed", 0.7)
    chain.posted("confirmed", 3.0)
    chain.posted("confirmed", None)  # found on chain: no latency
    chain.posted("failed", 500.0)
    chain.note("rpc unreachable: refused", 100.0)
    chain.note("close_epoch: refused", 101.0)
    counters = NodeCounters(v.identity for v in SPEC.validators)
    counters.bundles_received = 9
    return counters.snapshot([SPEC.validators[1].identity, SPEC.validators[2].identity,
                              "stranger"], {}, chain.statistics(), 123_456_789)


def scrape(status: dict[str, Any], tel: NodeTelemetry | None) -> dict[str, Any]:
    registry = make_registry(SPEC, lambda: status, lambda: tel, HealthPolicy(600))
    body, content_type = render(registry, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def values(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_node_state_and_links() -> None:
    got = scrape(STATUS, telemetry())
    one = lambda name: values(got[name])[(name, ())]  # noqa: E731
    assert one("bwpool_epoch") == 12 and one("bwpool_last_final_epoch") == 11
    assert one("bwpool_last_posted_epoch") == 10 and one("bwpool_providers_registered") == 6
    assert one("bwpool_validators") == 4 and one("bwpool_quorum_threshold") == 3
    assert {s.labels["phase"]: s.value for s in got["bwpool_phase"].samples} == {
        p: float(p == "agreeing") for p in PHASES}
    assert {s.labels["kind"]: s.value for s in got["bwpool_peers"].samples} == {
        "validators": 2, "providers": 0, "other": 1}
    assert values(got["bwpool_bundles_received"]) == {("bwpool_bundles_received_total", ()): 9}
    assert {s.labels["reason"]: s.value for s in got["bwpool_dropped"].samples} == {
        "duplicate": 5, "p2p:bad_frame": 2, "http:idle_timeout": 1}
    (info,) = got["bwpool_node_info"].samples  # an info metric is a gauge in text 0.0.4
    assert info.name == "bwpool_node_info" and info.labels["signing_key"] == ME
    # the last final epoch (11) excluded this node and one other; epoch 9's is history
    assert one("bwpool_consistency_excluded_validators") == 2
    assert one("bwpool_consistency_self_excluded") == 1
    # chain errors unanswered since unix time 100: far more than the policy's 10 minutes
    assert {s.labels["check"]: s.value for s in got["bwpool_health_check"].samples} == {
        "sync": 1, "peers": 1, "chain": 0}
    assert one("bwpool_payer_balance_lamports") == 123_456_789


def test_chain_posts_latency_histogram_and_errors() -> None:
    got = scrape(STATUS, telemetry())
    buckets = {s.labels["le"]: s.value for s in got["bwpool_chain_post_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets["0.5"] == 0 and buckets["1.0"] == 1 and buckets["5.0"] == 2
    assert buckets["120.0"] == 2 and buckets["+Inf"] == 3  # 500 s: beyond the last bound
    assert len(buckets) == len(POST_SECONDS_BUCKETS) + 1
    rest = values(got["bwpool_chain_post_seconds"])
    assert rest[("bwpool_chain_post_seconds_count", ())] == 3
    assert rest[("bwpool_chain_post_seconds_sum", ())] == 503.7
    assert {s.labels["result"]: s.value for s in got["bwpool_chain_posts"].samples} == {
        "confirmed": 3, "failed": 1}
    errors = {s.labels["kind"]: s.value for s in got["bwpool_chain_errors"].samples}
    assert set(errors) == set(ERROR_KINDS) and errors["unreachable"] == errors["close"] == 1
    assert sum(errors.values()) == 2
    since = got["bwpool_chain_failing_since_timestamp_seconds"].samples
    assert [s.value for s in since] == [100.0]


def test_every_family_is_announced_before_anything_is_known() -> None:
    full, empty = scrape(STATUS, telemetry()), scrape({}, None)
    assert set(empty) == set(full)
    assert not empty["bwpool_epoch"].samples and not empty["bwpool_chain_post_seconds"].samples
    assert {s.labels["check"]: s.value for s in empty["bwpool_health_check"].samples} == {
        "sync": 0, "peers": 0, "chain": 1}


def test_openmetrics_when_asked() -> None:
    registry = make_registry(SPEC, lambda: STATUS, telemetry, HealthPolicy(600))
    body, content_type = render(registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics(body.decode())}
    assert families["bwpool_chain_posts"].type == "counter"
    assert families["bwpool_node"].type == "info"
