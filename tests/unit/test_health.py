"""validator.health's checks, and the counts validator.telemetry feeds them (pure, no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proofs.probe import peer_id_from_public_key
from proofs.report import Flag
from tests.factories import make_observation, make_registration, make_spec
from validator.chain_stats import PosterCounters
from validator.health import SYNC_EPOCHS, HealthPolicy, assess
from validator.telemetry import NodeCounters, NodeTelemetry

SPEC, _ = make_spec(4)  # threshold 3: two validator peers needed
POLICY = HealthPolicy(chain_error_seconds=600)
NOW = 1_000_000.0


def telemetry(validators: int = 3, failing_since: float | None = None) -> NodeTelemetry:
    counters = PosterCounters()
    if failing_since is not None:
        counters.note("rpc unreachable: ConnectError: refused (attempt 1/5)", failing_since)
    return NodeTelemetry({"validators": validators, "providers": 0, "other": 0}, 0, {},
                         counters.statistics(), None)


def status(epoch: int | None = 10, last_final: int | None = 9, **chain: object) -> dict:
    return {"epoch": epoch, "last_final_epoch": last_final,
            "chain": {"last_posted_epoch": None, "last_error": None, **chain}}


def health(st: dict, tel: NodeTelemetry | None, now: float = NOW, store_error: str | None = None):
    return assess(threshold=SPEC.threshold, status=st, telemetry=tel, policy=POLICY, now=now,
                  store_error=store_error)


def test_a_synced_connected_node_is_healthy() -> None:
    h = health(status(), telemetry())
    assert h.ok and h.reasons == ()
    assert h.to_json() == {
        "ok": True, "checks": {"sync": True, "peers": True, "chain": True, "store": True},
        "reasons": [], "epoch": 10, "last_final_epoch": 9, "validator_peers": 3,
        "validator_peers_needed": 2, "chain_failing_since": None}


@pytest.mark.parametrize(("epoch", "last_final", "synced"), [
    (10, 10 - SYNC_EPOCHS, True), (10, 10 - SYNC_EPOCHS - 1, False), (10, 10, True),
    (-3, None, True),  # before genesis
    (0, None, True), (1, None, True), (2, None, False),  # a new network's first two epochs
    (None, None, False),  # no snapshot yet
])
def test_sync_allows_two_epochs_behind(epoch: int | None, last_final: int | None,
                                       synced: bool) -> None:
    h = health(status(epoch, last_final), telemetry())
    assert h.checks["sync"] is synced
    assert any(r.startswith("sync: ") for r in h.reasons) is not synced


def test_peers_need_threshold_minus_one_validators() -> None:
    assert health(status(), telemetry(validators=2)).checks["peers"]
    h = health(status(), telemetry(validators=1))
    assert not h.ok and h.checks == {"sync": True, "peers": False, "chain": True, "store": True}
    assert h.reasons == ("peers: 1 validator peers connected, 2 needed (threshold 3 with this "
                         "node)",)
    assert not health(status(), None).checks["peers"]  # not counted yet
    alone, _ = make_spec(1)  # threshold 1: nobody else needed
    assert assess(threshold=alone.threshold, status=status(), telemetry=None, policy=POLICY,
                  now=NOW).ok


def test_chain_errors_fail_only_once_unanswered_for_longer_than_the_policy() -> None:
    since = NOW - 600
    assert health(status(), telemetry(failing_since=since)).checks["chain"]
    h = health(status(last_error="rpc unreachable: refused"), telemetry(failing_since=since),
               now=NOW + 1)
    assert h.checks["chain"] is False and h.chain_failing_since == since
    (reason,) = h.reasons
    assert reason.startswith("chain: errors unanswered since ") and "10.0 min" in reason
    assert reason.endswith("at most 10 min); last: rpc unreachable: refused")
    # posting off (no pool): no poster statistics, nothing to fail
    assert health(status(), replace(telemetry(), chain=None), now=NOW + 10**6).ok


def test_a_confirmed_post_ends_the_failing_period() -> None:
    counters = PosterCounters()
    counters.note("waiting for the previous report: ...", 5.0)
    counters.note("rpc unreachable: ...", 7.0)  # the period began at the first
    stats = counters.statistics()
    assert stats.failing_since == 5.0
    assert stats.errors["waiting"] == stats.errors["unreachable"] == 1
    counters.note(None, 9.0)
    assert counters.statistics().failing_since is None


def test_store_error_is_a_reason_of_its_own() -> None:
    h = health(status(), telemetry(), store_error="database unavailable (disk I/O error)")
    assert h.checks["store"] is False and h.reasons == (
        "store: database unavailable (disk I/O error)",)


def test_every_failed_check_gives_one_reason_in_order() -> None:
    h = health(status(epoch=20, last_final=3), telemetry(validators=0, failing_since=0.0),
               store_error="gone")
    assert [r.split(":")[0] for r in h.reasons] == ["sync", "peers", "chain", "store"]


def test_peers_by_kind_and_probe_outcomes() -> None:
    counters = NodeCounters(v.identity for v in SPEC.validators)
    reg, _ = make_registration(SPEC, "p0")
    stranger, _ = make_registration(SPEC, "unregistered")
    peers = [SPEC.validators[1].identity, SPEC.validators[2].identity,
             peer_id_from_public_key(reg.provider), peer_id_from_public_key(stranger.provider),
             "not-a-peer-id"]
    assert counters.peers_by_kind(peers, {reg.provider: reg}) == {
        "validators": 2, "providers": 1, "other": 2}
    counters.count_observations([
        make_observation(b"a" * 32, sent=10, ok=7),
        make_observation(b"b" * 32, sent=10, ok=10, rtt=0, down=0),  # echo and throughput lost
        make_observation(b"c" * 32, sent=4, ok=4, flags=Flag.THROUGHPUT_FRAUD)])
    counters.bundles_received += 2
    snap = counters.snapshot(peers[:1], {}, None, 5)
    assert snap.probes == {
        ("heartbeat", "ok"): 21, ("heartbeat", "failed"): 3, ("echo", "ok"): 2,
        ("echo", "failed"): 1, ("throughput", "ok"): 1, ("throughput", "failed"): 1,
        ("throughput", "flagged"): 1}
    assert (snap.peers["validators"], snap.bundles_received, snap.payer_lamports) == (1, 2, 5)
