"""The network spec: one file, the same for every validator (DESIGN §4).

Parsing is strict: an unknown key, a wrong type or an impossible value raises ``SpecError``
with the path of the offending key, so a typo in an operator's file is a one-line error.
``config_digest`` covers everything that must agree across validators; it names the gossip
topics and goes into every signed header.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import base58
import msgpack

from proofs.signing import sha256
from validator.addresses import spec_addrs_problem


class SpecError(Exception):
    """The spec or config file is wrong: the message says where and how to fix it."""


@dataclass(frozen=True)
class ValidatorInfo:
    name: str
    signing_key: bytes  # ed25519 public key the pool contract knows
    identity: str  # libp2p peer id (base58)
    region: str
    lat: float
    lon: float
    addrs: tuple[str, ...]  # bootstrap multiaddrs, each ending in /p2p/<identity>


@dataclass(frozen=True)
class RewardParams:
    throughput_cap_kbps: int = 100_000  # capacity above this earns nothing more
    uptime_exponent: int = 20  # consistency beats raw speed: 0.95**20 = 0.36, 0.99**20 = 0.82
    latency_bound_us: int = 150_000  # past this, weight scales with bound / rtt
    region_demand_milli: tuple[tuple[str, int], ...] = ()  # region -> factor x1000 (default 1000)

    def demand(self, region: str) -> int:
        return dict(self.region_demand_milli).get(region, 1000)


@dataclass(frozen=True)
class ProbeParams:
    heartbeat_timeout_seconds: float = 5.0
    echo_count: int = 5
    throughput_seconds: float = 2.0
    warmup_fraction: float = 0.25


REGISTRATION_MODES = ("open", "allowlist")  # room for an on-chain onboarding rule later
DEFAULT_REGISTRATION_INTERVAL_SECONDS = 10
DEFAULT_MAX_NEW_PROVIDERS_PER_EPOCH = 1_000


@dataclass(frozen=True)
class RegistrationRule:
    """Who may register as a provider, and how fast (the ``[registration]`` table).

    - ``mode = "open"``: any key; ``"allowlist"``: only the keys in ``allow`` (base58). A
      later mode (an on-chain onboarding rule) would add a name here.
    - ``per_key_interval_seconds``: a provider's new version must be issued at least this long
      after its live one, or it is dropped (``registrations:rate_limited``); None (the field
      left out) means ``min(10, epoch_seconds)``, so a provider agent's one registration per
      epoch always passes.
    - ``max_new_per_epoch``: providers a validator admits from gossip per epoch, and providers
      a report's provider set may add to the set it follows (``provider_set_too_many_new``).

    The defaults keep a spec without the table as it was (and its config digest too).
    """

    mode: str = "open"
    allow: tuple[bytes, ...] = ()  # provider public keys, sorted
    per_key_interval_seconds: int | None = None
    max_new_per_epoch: int = DEFAULT_MAX_NEW_PROVIDERS_PER_EPOCH

    def admits(self, provider: bytes) -> bool:
        if self.mode == "allowlist":
            return provider in self._allowed()
        return True

    def _allowed(self) -> frozenset[bytes]:
        cached = self.__dict__.get("_allow_set")
        if cached is None:
            cached = frozenset(self.allow)
            object.__setattr__(self, "_allow_set", cached)
        return cached

    def is_default(self) -> bool:
        return self == RegistrationRule()


@dataclass(frozen=True)
class NetworkSpec:
    network_id: str
    genesis_time: int
    epoch_seconds: int
    round_seconds: int
    collect_seconds: int
    proposal_timeout_seconds: int
    committee_size: int
    min_regions: int
    validators: tuple[ValidatorInfo, ...]
    rewards: RewardParams = field(default_factory=RewardParams)
    probes: ProbeParams = field(default_factory=ProbeParams)
    rpc_url: str = ""
    pool_address: str = ""  # base58 Pool account; empty: reports are not posted
    pool_program_id: str = ""  # base58 id of the pool program that owns pool_address
    sybil_damping: bool = False
    registration: RegistrationRule = field(default_factory=RegistrationRule)
    # Data-plane targets on loopback, private or link-local addresses: True allows them,
    # False refuses them, None (left out) allows loopback only on a loopback devnet
    # (validator.data_policy). Multicast and unspecified addresses are always refused.
    allow_private_data_hosts: bool | None = None

    # -- derived -----------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def threshold(self) -> int:
        return (self.n + self.f) // 2 + 1

    @property
    def effective_committee_size(self) -> int:
        return min(self.committee_size, self.n)

    @property
    def committee_quorum(self) -> int:
        return self.effective_committee_size // 2 + 1

    @property
    def registration_interval(self) -> int:
        """Seconds between two versions of one provider's registration (see RegistrationRule)."""
        interval = self.registration.per_key_interval_seconds
        if interval is None:
            return min(DEFAULT_REGISTRATION_INTERVAL_SECONDS, self.epoch_seconds)
        return interval

    @property
    def reachable_regions(self) -> int:
        """min_regions, or fewer if the validator set spans fewer regions."""
        cached = self.__dict__.get("_regions")
        if cached is None:
            cached = min(self.min_regions, len({v.region for v in self.validators}))
            object.__setattr__(self, "_regions", cached)
        return cached

    def member(self, signing_key: bytes) -> ValidatorInfo | None:
        return self._by_key().get(signing_key)

    def _by_key(self) -> dict[bytes, ValidatorInfo]:
        cache = self.__dict__.get("_key_cache")
        if cache is None:
            cache = {v.signing_key: v for v in self.validators}
            object.__setattr__(self, "_key_cache", cache)
        return cache

    @property
    def config_digest(self) -> bytes:
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = sha256(b"bwpool/config/1" + msgpack.packb(self._digest_fields(),
                                                                use_bin_type=True))
            object.__setattr__(self, "_digest", cached)
        return cached

    def _digest_fields(self) -> list[Any]:
        keys = sorted(v.signing_key for v in self.validators)
        r, p = self.rewards, self.probes
        fields = [self.network_id, keys, sorted((v.signing_key, v.region) for v in self.validators),
                  self.n, self.f, self.threshold, self.genesis_time, self.epoch_seconds,
                  self.round_seconds, self.collect_seconds, self.proposal_timeout_seconds,
                  self.committee_size, self.min_regions, r.throughput_cap_kbps,
                  r.uptime_exponent, r.latency_bound_us, sorted(r.region_demand_milli),
                  p.heartbeat_timeout_seconds.hex(), p.echo_count, p.throughput_seconds.hex(),
                  p.warmup_fraction.hex(), self.pool_address, self.sybil_damping]
        if self.pool_program_id:  # appended only when set: a spec without one keeps its digest
            fields.append(self.pool_program_id)
        if not self.registration.is_default():  # likewise: the admission rule, when set
            rule = self.registration
            fields.append(["registration", rule.mode, sorted(rule.allow),
                           rule.per_key_interval_seconds, rule.max_new_per_epoch])
        if self.allow_private_data_hosts is not None:  # likewise, when set
            fields.append(["allow_private_data_hosts", self.allow_private_data_hosts])
        return fields

    def topic(self, name: str) -> str:
        return f"/bwpool/{self.config_digest[:4].hex()}/{name}/1"

    # -- time --------------------------------------------------------------------------
    def epoch_at(self, now: float) -> int:
        """Epoch number at ``now``; -1 before genesis."""
        if now < self.genesis_time:
            return -1
        return int((now - self.genesis_time) // self.epoch_seconds)

    def epoch_start(self, epoch: int) -> float:
        return float(self.genesis_time + epoch * self.epoch_seconds)

    def epoch_end(self, epoch: int) -> float:
        return self.epoch_start(epoch + 1)

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "network_id": self.network_id,
            "genesis_time": self.genesis_time,
            "epoch_seconds": self.epoch_seconds,
            "round_seconds": self.round_seconds,
            "collect_seconds": self.collect_seconds,
            "proposal_timeout_seconds": self.proposal_timeout_seconds,
            "committee_size": self.committee_size,
            "min_regions": self.min_regions,
            "rpc_url": self.rpc_url,
            "pool_address": self.pool_address,
            "pool_program_id": self.pool_program_id,
            "sybil_damping": self.sybil_damping,
            **({} if self.allow_private_data_hosts is None else {
                "allow_private_data_hosts": self.allow_private_data_hosts}),
            "rewards": {
                "throughput_cap_kbps": self.rewards.throughput_cap_kbps,
                "uptime_exponent": self.rewards.uptime_exponent,
                "latency_bound_us": self.rewards.latency_bound_us,
                "region_demand_milli": dict(self.rewards.region_demand_milli),
            },
            "probes": {
                "heartbeat_timeout_seconds": self.probes.heartbeat_timeout_seconds,
                "echo_count": self.probes.echo_count,
                "throughput_seconds": self.probes.throughput_seconds,
                "warmup_fraction": self.probes.warmup_fraction,
            },
            **({} if self.registration.is_default() else {"registration": {
                "mode": self.registration.mode,
                "allow": [base58.b58encode(k).decode() for k in self.registration.allow],
                "max_new_per_epoch": self.registration.max_new_per_epoch,
                **({} if self.registration.per_key_interval_seconds is None else {
                    "per_key_interval_seconds": self.registration.per_key_interval_seconds}),
            }}),
            "validators": [
                {"name": v.name, "signing_key": base58.b58encode(v.signing_key).decode(),
                 "identity": v.identity, "region": v.region, "lat": v.lat, "lon": v.lon,
                 "addrs": list(v.addrs)}
                for v in self.validators
            ],
        }


class _Fields:
    """Typed access to one TOML table that remembers its path for error messages."""

    def __init__(self, table: Any, path: str) -> None:
        if not isinstance(table, dict):
            raise SpecError(f"{path or 'file'}: expected a table")
        self.table = dict(table)
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise SpecError(f"{self._where(key)}: missing")
            return default
        value = self.table.pop(key)
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise SpecError(f"{self._where(key)}: expected a number, got {value!r}")
        if not isinstance(value, kind):
            raise SpecError(f"{self._where(key)}: wrong type {type(value).__name__}")
        return value

    def positive(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, (int, float) if isinstance(default, float) else int, default)
        if value <= 0:
            raise SpecError(f"{self._where(key)}: must be > 0, got {value}")
        return value

    def done(self) -> None:
        if self.table:
            raise SpecError(f"{self.path or 'file'}: unknown key(s) {sorted(self.table)}")


def _key(text: Any, where: str) -> bytes:
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SpecError(f"{where}: not a base58 32-byte public key")
    return raw


def spec_from_dict(data: Any) -> NetworkSpec:
    top = _Fields(data, "")
    validators = []
    raw_validators = top.get("validators", list)
    for i, raw in enumerate(raw_validators):
        v = _Fields(raw, f"validators[{i}]")
        info = ValidatorInfo(
            name=v.get("name", str),
            signing_key=_key(v.get("signing_key", str), f"validators[{i}].signing_key"),
            identity=v.get("identity", str),
            region=v.get("region", str),
            lat=float(v.get("lat", (int, float))),
            lon=float(v.get("lon", (int, float))),
            addrs=tuple(v.get("addrs", list, [])),
        )
        v.done()
        if not all(isinstance(a, str) for a in info.addrs):
            raise SpecError(f"validators[{i}].addrs: expected strings")
        if not (-90 <= info.lat <= 90 and -180 <= info.lon <= 180):
            raise SpecError(f"validators[{i}]: latitude/longitude out of range")
        validators.append(info)
    if not validators:
        raise SpecError("validators: at least one validator is needed")
    if len({v.signing_key for v in validators}) != len(validators):
        raise SpecError("validators: a signing key appears twice")
    if len({v.identity for v in validators}) != len(validators):
        raise SpecError("validators: an identity appears twice")
    problem = spec_addrs_problem(validators)  # an unspecified or stray loopback announce
    if problem is not None:
        raise SpecError(problem)
    rw = _Fields(top.get("rewards", dict, {}), "rewards")
    demand = rw.get("region_demand_milli", dict, {})
    if not all(isinstance(k, str) and isinstance(x, int) and x >= 0 for k, x in demand.items()):
        raise SpecError("rewards.region_demand_milli: expected region = integer >= 0")
    rewards = RewardParams(rw.positive("throughput_cap_kbps", 100_000),
                           rw.positive("uptime_exponent", 20),
                           rw.positive("latency_bound_us", 150_000),
                           tuple(sorted(demand.items())))
    rw.done()
    pr = _Fields(top.get("probes", dict, {}), "probes")
    probes = ProbeParams(float(pr.positive("heartbeat_timeout_seconds", 5.0)),
                         pr.positive("echo_count", 5),
                         float(pr.positive("throughput_seconds", 2.0)),
                         float(pr.positive("warmup_fraction", 0.25)))
    pr.done()
    if probes.warmup_fraction >= 1:
        raise SpecError("probes.warmup_fraction: must be < 1")
    registration = _registration_rule(top.get("registration", dict, {}))
    spec = NetworkSpec(
        network_id=top.get("network_id", str),
        genesis_time=top.get("genesis_time", int),
        epoch_seconds=top.positive("epoch_seconds"),
        round_seconds=top.positive("round_seconds"),
        collect_seconds=top.positive("collect_seconds"),
        proposal_timeout_seconds=top.positive("proposal_timeout_seconds"),
        committee_size=top.positive("committee_size"),
        min_regions=top.positive("min_regions"),
        validators=tuple(validators),
        rewards=rewards,
        probes=probes,
        rpc_url=top.get("rpc_url", str, ""),
        pool_address=top.get("pool_address", str, ""),
        pool_program_id=top.get("pool_program_id", str, ""),
        allow_private_data_hosts=top.get("allow_private_data_hosts", bool, None),
        sybil_damping=top.get("sybil_damping", bool, False),
        registration=registration,
    )
    top.done()
    for name in ("pool_address", "pool_program_id"):
        value = getattr(spec, name)
        if value and not _is_address(value):
            raise SpecError(f"{name}: {value!r} is not a base58 Solana address (32 bytes)")
    if bool(spec.pool_address) != bool(spec.pool_program_id):
        raise SpecError("pool_address and pool_program_id go together: set both or neither")
    if spec.round_seconds > spec.epoch_seconds:
        raise SpecError("round_seconds: must not exceed epoch_seconds")
    if spec.collect_seconds + spec.proposal_timeout_seconds > spec.epoch_seconds:
        raise SpecError("collect_seconds + proposal_timeout_seconds must fit in one epoch")
    if not spec.network_id or len(spec.network_id) > 64:
        raise SpecError("network_id: 1 to 64 characters")
    return spec


def _registration_rule(table: Any) -> RegistrationRule:
    rg = _Fields(table, "registration")
    mode = rg.get("mode", str, "open")
    if mode not in REGISTRATION_MODES:
        raise SpecError(f"registration.mode: {mode!r} is not one of {list(REGISTRATION_MODES)}")
    raw_allow = rg.get("allow", list, [])
    keys = []
    for i, text in enumerate(raw_allow):
        if not isinstance(text, str):
            raise SpecError(f"registration.allow[{i}]: not a base58 32-byte public key")
        keys.append(_key(text, f"registration.allow[{i}]"))
    allow = tuple(sorted(set(keys)))
    if len(allow) != len(raw_allow):
        raise SpecError("registration.allow: a key appears twice")
    interval = rg.get("per_key_interval_seconds", int, None)
    if interval is not None and interval < 0:
        raise SpecError(f"registration.per_key_interval_seconds: must be >= 0, got {interval}")
    rule = RegistrationRule(mode, allow, interval,
                            rg.positive("max_new_per_epoch", DEFAULT_MAX_NEW_PROVIDERS_PER_EPOCH))
    rg.done()
    if mode == "allowlist" and not allow:
        raise SpecError("registration.allow: mode \"allowlist\" needs at least one provider key")
    if mode == "open" and allow:
        raise SpecError("registration.allow: only used with mode = \"allowlist\"")
    return rule


def _is_address(text: str) -> bool:
    try:
        return len(base58.b58decode(text)) == 32
    except ValueError:
        return False


def load_spec(path: Path) -> NetworkSpec:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    try:
        return spec_from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
