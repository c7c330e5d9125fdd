"""``/healthz``: is this validator doing its job right now (pure; the API supplies the inputs).

Healthy means all of (the check names are the keys of ``Health.checks``):

- **sync**: before genesis, or the last final epoch is at most ``SYNC_EPOCHS`` behind the
  current one; no final yet counts as epoch -1, so a new network has two epochs to finalize
  its first. Fails when quorum is lost or this node cannot catch up.
- **peers**: at least ``threshold - 1`` of the spec's other validators are connected (with
  this node, a quorum). Fails when partitioned or too many validators are down.
- **chain**: no chain error has gone unanswered for longer than
  ``HealthPolicy.chain_error_seconds`` (config.toml ``health_chain_error_minutes``): the
  poster's first error since its last confirmed post is younger; posting off passes. Fails
  when the RPC is unreachable, the payer is out of SOL, posts are refused.
- **store**: the SQLite file opens and has the API's schema (checked by the API, not here).

A failing check adds one line to ``reasons``, saying what was seen and what was expected; the
API answers 200 with ``{"ok": true, ...}`` or 503 with the same body and ``"ok": false``, in
the manner of the beacon node API's health endpoint. Inputs are the node's immutable status
snapshot and telemetry, so an answer costs no I/O beyond the store check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from validator.config import DEFAULT_HEALTH_CHAIN_ERROR_MINUTES
from validator.telemetry import NodeTelemetry

SYNC_EPOCHS = 2
CHECKS = ("sync", "peers", "chain", "store")


@dataclass(frozen=True)
class HealthPolicy:
    chain_error_seconds: float = DEFAULT_HEALTH_CHAIN_ERROR_MINUTES * 60


@dataclass(frozen=True)
class Health:
    checks: Mapping[str, bool]  # CHECKS -> passed
    reasons: tuple[str, ...]  # one per failed check, in CHECKS order
    epoch: int | None
    last_final_epoch: int | None
    validator_peers: int | None  # None: not known yet (the node has not counted them)
    validator_peers_needed: int
    chain_failing_since: float | None  # unix time of the oldest unanswered chain error

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": dict(self.checks), "reasons": list(self.reasons),
                "epoch": self.epoch, "last_final_epoch": self.last_final_epoch,
                "validator_peers": self.validator_peers,
                "validator_peers_needed": self.validator_peers_needed,
                "chain_failing_since": self.chain_failing_since}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sync(epoch: int | None, last_final: int | None) -> str | None:
    if epoch is None:
        return "sync: the node has not reported its epoch yet (starting)"
    if epoch < 0:
        return None  # before genesis there is nothing to be behind
    behind = epoch - (-1 if last_final is None else last_final)
    if behind <= SYNC_EPOCHS:
        return None
    seen = "no final epoch yet" if last_final is None else f"last final epoch {last_final}"
    return (f"sync: {seen} at epoch {epoch}, {behind} behind (at most {SYNC_EPOCHS}): "
            f"no quorum of validators, or this node cannot catch up")


def _chain(failing_since: float | None, status: Mapping[str, Any], policy: HealthPolicy,
           now: float) -> str | None:
    if failing_since is None or now - failing_since <= policy.chain_error_seconds:
        return None
    chain = status.get("chain")
    last = chain.get("last_error") if isinstance(chain, Mapping) else None
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failing_since))
    return (f"chain: errors unanswered since {since} ({(now - failing_since) / 60:.1f} min, "
            f"at most {policy.chain_error_seconds / 60:g} min)"
            + (f"; last: {last}" if last else ""))


def assess(*, threshold: int, status: Mapping[str, Any], telemetry: NodeTelemetry | None,
           policy: HealthPolicy, now: float, store_error: str | None = None) -> Health:
    """The node's health from its snapshots at wall time ``now``. ``store_error``: why the
    API could not read the store (None: it could, or it was not asked)."""
    epoch, last_final = _int(status.get("epoch")), _int(status.get("last_final_epoch"))
    needed = max(0, threshold - 1)
    peers = None if telemetry is None else telemetry.peers.get("validators", 0)
    failing_since = None if telemetry is None or telemetry.chain is None \
        else telemetry.chain.failing_since
    failures = {
        "sync": _sync(epoch, last_final),
        "peers": None if (peers or 0) >= needed else (
            f"peers: {'not counted yet (starting)' if peers is None else peers} validator "
            f"peers connected, {needed} needed (threshold {threshold} with this node)"),
        "chain": _chain(failing_since, status, policy, now),
        "store": None if store_error is None else f"store: {store_error}",
    }
    return Health({name: failures[name] is None for name in CHECKS},
                  tuple(r for r in failures.values() if r is not None), epoch, last_final,
                  peers, needed, failing_since)
