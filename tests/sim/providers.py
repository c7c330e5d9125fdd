"""Synthetic providers for the simulation harness: true metrics, honest observations with
seeded noise, and registrations preloaded into a validator's SQLite file."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proofs.messages import Observation, Registration
from tests.factories import REGIONS, make_registration
from validator.spec import NetworkSpec
from validator.store import Store

NOISE = 0.04  # honest observations: truth x (1 +- NOISE)


@dataclass(frozen=True)
class ProviderTruth:
    """What a provider really is; honest validators observe it with a little noise."""

    registration: Registration
    uptime: float  # probability that a heartbeat is answered
    rtt_us: int
    down_kbps: int
    up_kbps: int

    @property
    def key(self) -> bytes:
        return self.registration.provider


def make_providers(spec: NetworkSpec, count: int, seed: int) -> list[ProviderTruth]:
    """``count`` providers with seeded metrics and regions, registered before genesis."""
    rng = random.Random(f"providers/{seed}")
    out = []
    for j in range(count):
        reg, _ = make_registration(spec, f"s{seed}-p{j}", region=rng.choice(REGIONS))
        down = rng.randint(5_000, 400_000)
        out.append(ProviderTruth(reg, uptime=rng.uniform(0.85, 1.0),
                                 rtt_us=rng.randint(5_000, 200_000), down_kbps=down,
                                 up_kbps=max(1_000, int(down * rng.uniform(0.1, 1.0)))))
    return out


def honest_observation(sim_seed: int, validator: int, epoch: int, truth: ProviderTruth,
                       heartbeats: int) -> Observation:
    """An honest validator's observation: a function of its arguments only (no task order)."""
    d = hashlib.sha256(struct.pack("<QQQ", sim_seed, validator, epoch) + truth.key).digest()

    def unit(i: int) -> float:  # uniform in [0, 1) from two digest bytes
        return int.from_bytes(d[2 * i:2 * i + 2], "little") / 65536.0

    def jitter(value: int, i: int) -> int:
        return max(0, int(value * (1.0 + NOISE * (2.0 * unit(i) - 1.0))))

    ok = sum(1 for i in range(heartbeats) if unit(4 + i % 12) < truth.uptime)
    rtt = jitter(truth.rtt_us, 0)
    return Observation(truth.key, heartbeats, ok, rtt, rtt * 4 // 5, jitter(truth.down_kbps, 1),
                       jitter(truth.up_kbps, 2), 0)


def preload_registrations(db_path: Path, registrations: Sequence[Registration]) -> None:
    """Write ``registrations`` into a validator's SQLite file through ``Store`` (so the
    schema stays the store's own), without fsync: nothing runs yet that could crash."""
    store = Store(db_path)
    try:
        store._conn.execute("PRAGMA synchronous=OFF")
        for r in registrations:
            store.put_registration(r.provider, r.issued_at, r.encode())
    finally:
        store.close()
