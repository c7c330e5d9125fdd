"""Factories for tests and simulations: specs, keys, registrations, observations."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from proofs.messages import Observation, Registration
from proofs.signing import public_key
from validator.spec import NetworkSpec, ValidatorInfo

REGIONS = ("eu-west", "us-east", "ap-south", "sa-east", "af-south", "eu-north", "us-west")


def seed_for(name: str) -> bytes:
    return hashlib.sha256(b"test-seed/" + name.encode()).digest()


def make_spec(n: int = 4, *, committee_size: int = 3, genesis_time: int = 1_000_000,
              epoch_seconds: int = 20, **overrides: object) -> tuple[NetworkSpec, list[bytes]]:
    seeds = [seed_for(f"v{i}") for i in range(n)]
    validators = tuple(
        ValidatorInfo(f"v{i}", public_key(s), f"peer-v{i}", REGIONS[i % len(REGIONS)],
                      10.0 * i, 5.0 * i, ())
        for i, s in enumerate(seeds))
    spec = NetworkSpec(network_id="testnet", genesis_time=genesis_time,
                       epoch_seconds=epoch_seconds, round_seconds=3, collect_seconds=3,
                       proposal_timeout_seconds=4, committee_size=committee_size,
                       min_regions=3, validators=validators)
    return replace(spec, **overrides), seeds  # type: ignore[arg-type]


def make_registration(spec: NetworkSpec, name: str, issued_at: int = 0,
                      region: str = "eu-west") -> tuple[Registration, bytes]:
    seed = seed_for("provider/" + name)
    # A documentation address (TEST-NET-1): validators refuse loopback announces outside a
    # loopback devnet, and make_spec's validators have no addresses (validator.addresses).
    reg = Registration(spec.network_id, public_key(seed), hashlib.sha256(name.encode()).digest(),
                       region, 48_850_000, 2_350_000, f"/ip4/192.0.2.1/tcp/1/p2p/{name}",
                       "192.0.2.1", 9, issued_at).signed_by(seed)
    return reg, seed


def make_observation(provider: bytes, *, sent: int = 10, ok: int = 10, rtt: int = 2_000,
                     down: int = 50_000, up: int = 20_000, flags: int = 0) -> Observation:
    return Observation(provider, sent, ok, rtt, rtt // 2, down, up, flags)


def with_prober(spec: NetworkSpec, identity: str, signing_seed: bytes, index: int = 0, *,
                addrs: tuple[str, ...] | None = None,
                genesis_for: tuple[int, float] | None = None) -> NetworkSpec:
    """``spec`` with validator ``index`` replaced by a prober a provider agent answers: its
    libp2p ``identity`` (peer id) and the signing key of ``signing_seed``
    (``validator.probe_access``: heartbeats are signed only for a validator's own signing key).

    ``addrs`` replaces that validator's bootstrap addresses (every validator's, when
    ``spec`` has one validator: a loopback devnet needs all of them on loopback).
    ``genesis_for=(epoch, now)`` moves genesis so that ``epoch`` is current at wall time
    ``now`` (agents sign heartbeats for the current epoch only).
    """
    member = replace(spec.validators[index], identity=identity,
                     signing_key=public_key(signing_seed))
    if addrs is not None:
        member = replace(member, addrs=addrs)
    validators = list(spec.validators)
    validators[index] = member
    spec = replace(spec, validators=tuple(validators))
    if genesis_for is not None:
        epoch, now = genesis_for
        spec = replace(spec, genesis_time=int(now) - epoch * spec.epoch_seconds)
    return spec
