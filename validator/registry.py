"""Provider registrations a validator holds: admission, versions, pruning, the next set.

Owns: every registration version the core knows (by hash), one live version per provider,
the spec's admission rule (``NetworkSpec.registration``) as applied to gossip, and the
provider set a leader proposes. Pure and synchronous like the core that uses it: no clock
(epochs and times are arguments), no I/O.

Anyone can sign a registration, so everything here is bounded:

- gossip admission (``precheck`` before the signature is checked, ``admit`` after): the
  allow-list; what it announces (``validator.addresses``: no unspecified control or data
  host, no loopback one outside a loopback devnet); a per-key interval between versions, both in what they claim (``issued_at`` at
  least ``registration_interval`` after the live one; older and same-time versions are
  dropped) and in when they arrive (one admitted per interval of our clock, so back-dated
  versions cannot come in a burst); no ``issued_at`` in the future; at most
  ``max_new_per_epoch`` new providers per epoch;
- versions that no provider set may still name are dropped (``prune``): the live one stays,
  and for every epoch that may still be proposed, the latest one issued by its end;
- the proposed set (``next_set``) never exceeds the decode limit ``MAX_PROVIDERS`` and adds
  at most ``max_new_per_epoch`` providers to the set it follows; what is left out is chosen
  deterministically: the newest registrations (by ``issued_at``, then hash) wait.

Versions fetched because a provider set names them (``add``) skip the interval and the
per-epoch cap (the set decided that), not the allow-list.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from proofs.messages import MAX_PROVIDERS, Registration
from proofs.signing import sha256
from validator.addresses import is_loopback_devnet, registration_refusal
from validator.spec import NetworkSpec

MAX_FUTURE_SECONDS = 30  # clock skew allowed to a registration's issued_at


def registration_hash(reg: Registration) -> bytes:
    return sha256(reg.encode())


class Registry:
    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.live: dict[bytes, Registration] = {}  # provider -> latest version held
        self.by_hash: dict[bytes, Registration] = {}  # every version held
        self._versions: dict[bytes, list[tuple[int, bytes]]] = {}  # provider -> sorted
        self.changes = 0  # bumps whenever a version is added or dropped
        self._new_epoch = -2
        self._new_count = 0
        self._admitted_at: dict[bytes, float] = {}  # provider -> when gossip last added one
        self._devnet = is_loopback_devnet(spec)  # loopback announces are fine only there

    def __len__(self) -> int:
        return len(self.by_hash)

    # -- admission ------------------------------------------------------------------------
    def precheck(self, reg: Registration, now: float | None = None) -> str | None:
        """A reason to refuse a gossiped registration that costs no signature check, or None.
        A version we hold already passes (the caller ignores it). ``now`` (if known) adds
        the checks on time: issued in the future, or arriving within the interval."""
        rule = self.spec.registration
        if not rule.admits(reg.provider):
            return "not_allowed"
        announced = registration_refusal(reg.multiaddr, reg.data_host, self._devnet)
        if announced is not None:
            return announced  # announce_unspecified / announce_loopback: nobody could dial it
        if now is not None:
            if reg.issued_at > now + MAX_FUTURE_SECONDS:
                return "from_future"
            last = self._admitted_at.get(reg.provider)
            if last is not None and now - last < self.spec.registration_interval:
                return "rate_limited"
        live = self.live.get(reg.provider)
        if live is None or live == reg:
            return None
        if reg.issued_at < live.issued_at:
            return "superseded"
        if reg.issued_at == live.issued_at:
            return "conflict"  # two versions issued at the same second: the first stays
        if reg.issued_at < live.issued_at + self.spec.registration_interval:
            return "rate_limited"
        return None

    def admit(self, reg: Registration, digest: bytes, now: float) -> str | None:
        """Add a gossiped registration whose signature was checked; or a drop reason.
        ``duplicate`` is a version already held (providers re-publish: not a fault)."""
        if digest in self.by_hash:
            return "duplicate"
        reason = self.precheck(reg, now)
        if reason is not None:
            return reason
        if reg.provider not in self.live:
            epoch = self.spec.epoch_at(now)
            if epoch != self._new_epoch:
                self._new_epoch, self._new_count = epoch, 0
            if self._new_count >= self.spec.registration.max_new_per_epoch:
                return "new_provider_cap"
            self._new_count += 1
        self._admitted_at[reg.provider] = now
        self.add(reg, digest)
        return None

    def add(self, reg: Registration, digest: bytes | None = None) -> bool:
        """Hold a version without the gossip limits (restored from the store, or fetched
        because a provider set names it). False if held already."""
        digest = registration_hash(reg) if digest is None else digest
        if digest in self.by_hash:
            return False
        self.by_hash[digest] = reg
        versions = self._versions.setdefault(reg.provider, [])
        bisect.insort(versions, (reg.issued_at, digest))
        self.live[reg.provider] = self.by_hash[versions[-1][1]]  # latest; ties: larger hash
        self.changes += 1
        return True

    # -- provider sets --------------------------------------------------------------------
    def latest_by(self, provider: bytes, end: float) -> bytes | None:
        """Hash of the provider's latest version issued by ``end`` (ties: the larger hash)."""
        versions = self._versions.get(provider, ())
        for issued_at, digest in reversed(versions):
            if issued_at <= end:
                return digest
        return None

    def providers_of(self, hashes: Iterable[bytes]) -> frozenset[bytes]:
        """Provider keys of the versions named by ``hashes`` that we hold."""
        return frozenset(self.by_hash[h].provider for h in hashes if h in self.by_hash)

    def next_set(self, end: float, base: frozenset[bytes] | None) -> tuple[bytes, ...]:
        """What a leader proposes: each admitted provider's latest version issued by ``end``,
        sorted by hash. ``base`` is the providers of the set this one follows (None before
        the first report): at most ``max_new_per_epoch`` others are added, and the set never
        exceeds ``MAX_PROVIDERS``; the oldest registrations go first."""
        rule = self.spec.registration
        incumbents: list[tuple[int, bytes]] = []
        newcomers: list[tuple[int, bytes]] = []
        for provider in self._versions:
            digest = self.latest_by(provider, end)
            if digest is None or not rule.admits(provider):
                continue
            entry = (self.by_hash[digest].issued_at, digest)
            (incumbents if base is None or provider in base else newcomers).append(entry)
        incumbents.sort()
        chosen = incumbents[:MAX_PROVIDERS]
        if base is not None:
            room = min(rule.max_new_per_epoch, MAX_PROVIDERS - len(chosen))
            chosen += sorted(newcomers)[:max(0, room)]
        return tuple(sorted(digest for _, digest in chosen))

    def check_set(self, hashes: tuple[bytes, ...], base: frozenset[bytes] | None,
                  issued_by: float) -> str | None:
        """None if a proposed set (every version held) is one an honest leader could
        propose; else the reason."""
        regs = [self.by_hash[h] for h in hashes]
        providers = {r.provider for r in regs}
        if len(providers) != len(regs):
            return "provider_set_duplicate_provider"
        if any(r.issued_at > issued_by for r in regs):
            return "provider_set_future_registration"
        if not all(self.spec.registration.admits(p) for p in providers):
            return "provider_set_not_admitted"
        if base is not None and len(providers - base) > self.spec.registration.max_new_per_epoch:
            return "provider_set_too_many_new"
        return None

    # -- pruning --------------------------------------------------------------------------
    def prune(self, keep: set[bytes], ends: Iterable[float]) -> list[bytes]:
        """Drop every version that is not live, not in ``keep`` (named by a set still in
        use) and not the latest issued by one of ``ends`` (epochs that may still be
        proposed). Returns the dropped hashes."""
        ends = sorted(set(ends))
        dropped: list[bytes] = []
        for provider, versions in self._versions.items():
            if len(versions) == 1:
                continue
            needed = {versions[-1][1]}  # the live one
            for end in ends:
                digest = self.latest_by(provider, end)
                if digest is not None:
                    needed.add(digest)
            stale = [v for v in versions if v[1] not in needed and v[1] not in keep]
            if stale:
                for entry in stale:
                    versions.remove(entry)
                    del self.by_hash[entry[1]]
                    dropped.append(entry[1])
        if dropped:
            self.changes += 1
        return dropped

    def versions_of(self, provider: bytes) -> int:
        return len(self._versions.get(provider, ()))
