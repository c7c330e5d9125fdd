"""What a validator counts for monitoring beyond its status snapshot (``Validator._status``).

The node owns one ``NodeCounters`` on its trio side and, with each status refresh, replaces an
immutable ``NodeTelemetry`` that the HTTP side reads (``validator.metrics`` for ``/metrics``,
``validator.health`` for ``/healthz``), as it reads the status snapshot: never a live object.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass

from proofs.errors import DecodeError
from proofs.messages import Observation
from proofs.probe import public_key_from_peer_id
from proofs.report import Flag
from validator.chain_stats import PosterStatistics

PEER_KINDS = ("validators", "providers", "other")
# Heartbeats count one by one; echo and throughput once per provider and epoch.
PROBE_OUTCOMES = (("heartbeat", "ok"), ("heartbeat", "failed"), ("echo", "ok"),
                  ("echo", "failed"), ("throughput", "ok"), ("throughput", "failed"),
                  ("throughput", "flagged"))
# A throughput result with one of these is "flagged": the provider answered, wrongly.
_THROUGHPUT_FLAGS = (Flag.THROUGHPUT_FRAUD | Flag.UPLOAD_MISMATCH | Flag.TRUNCATED_STREAM)
_PEER_CACHE = 8192  # peer ids whose key was decoded; cleared when full


@dataclass(frozen=True)
class NodeTelemetry:
    """One refresh's counts. ``chain`` is None while nothing posts (no pool in the spec, or
    the poster not started yet); ``payer_lamports`` None until the balance was read."""

    peers: Mapping[str, int]  # connected peers by PEER_KINDS
    bundles_received: int  # other validators' bundles accepted (gossip notice + fetch)
    probes: Mapping[tuple[str, str], int]  # (kind, outcome) of PROBE_OUTCOMES
    chain: PosterStatistics | None
    payer_lamports: int | None


class NodeCounters:
    """The node's monitoring counters (trio side only); ``snapshot`` freezes them."""

    def __init__(self, members: Collection[str]) -> None:
        self._members = frozenset(members)  # the spec's validators' peer ids
        self.bundles_received = 0
        self._probes = dict.fromkeys(PROBE_OUTCOMES, 0)
        self._peer_keys: dict[str, bytes | None] = {}

    def count_observations(self, observations: Iterable[Observation]) -> None:
        """Probe outcomes of one epoch's observations (what the bundle carries)."""
        probes = self._probes
        for obs in observations:
            probes["heartbeat", "ok"] += obs.heartbeats_ok
            probes["heartbeat", "failed"] += obs.heartbeats_sent - obs.heartbeats_ok
            probes["echo", "ok" if obs.rtt_median_us > 0 else "failed"] += 1
            if obs.flags & _THROUGHPUT_FLAGS:
                probes["throughput", "flagged"] += 1
            else:
                done = obs.down_kbps > 0 and obs.up_kbps > 0
                probes["throughput", "ok" if done else "failed"] += 1

    def peers_by_kind(self, connected: Iterable[str], providers: Container[bytes]
                      ) -> dict[str, int]:
        """``connected`` peer ids as validators (in the spec), providers (the key inside the
        peer id is a registered provider's) and other (anyone else, e.g. a one-shot probe)."""
        counts = dict.fromkeys(PEER_KINDS, 0)
        for peer in connected:
            if peer in self._members:
                counts["validators"] += 1
                continue
            key = self._key(peer)
            counts["providers" if key is not None and key in providers else "other"] += 1
        return counts

    def _key(self, peer: str) -> bytes | None:
        if peer not in self._peer_keys:
            if len(self._peer_keys) >= _PEER_CACHE:
                self._peer_keys.clear()
            try:
                self._peer_keys[peer] = public_key_from_peer_id(peer)
            except DecodeError:
                self._peer_keys[peer] = None
        return self._peer_keys[peer]

    def snapshot(self, connected: Iterable[str], providers: Container[bytes],
                 chain: PosterStatistics | None, payer_lamports: int | None) -> NodeTelemetry:
        return NodeTelemetry(self.peers_by_kind(connected, providers), self.bundles_received,
                             dict(self._probes), chain, payer_lamports)
