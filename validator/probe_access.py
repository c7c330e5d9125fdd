"""Who may use a provider's probe service, and how much of it (DESIGN §6 "Provider-side bounds").

What it owns: the roles of callers, the per-caller session limits and their accounting per
epoch. Pure and synchronous: no trio, no sockets, no clock. Entry points that depend on time
take ``now`` (unix seconds); the provider agent (``validator.provider.ProbeService``) asks
``ProbeGate`` before it answers and hands back what each session moved. A refusal is a short
stable reason (the drop name the agent counts and logs); nothing here raises for peer input.

Callers are named by the libp2p peer id their Noise handshake authenticated:

==========  ===============================  ===========================  ====================
role        who                              heartbeat signed for         throughput sessions
==========  ===============================  ===========================  ====================
validator   ``spec.validators[i].identity``  its signing key, epoch       ``MEMBER`` limits,
                                             current +-1                  per caller
probe key   ``--allow-probe PEER_ID``        its own key (the peer id's)  ``MEMBER`` limits,
                                                                          per caller
public      anyone else, only with           its own key                  one pool shared by
            ``--public-probe-bytes N > 0``                                all: ``public_limits``
outsider    anyone else                      nothing                      none
==========  ===============================  ===========================  ====================

Echo is answered for every role but outsiders; ``info`` (the signed registration, public on
the gossip topic anyway) for everyone.

A heartbeat for a validator's signing key is signed only for that validator and only for the
current epoch (+-1 for clock skew, on the agent's clock): nobody can collect signatures for
another validator or for epochs to come. A heartbeat for any other key is signed only for the
key inside the caller's own peer id, so it stands for nobody but the caller.

Session limits, per caller (validators and probe keys) per epoch of the agent's clock:

- ``outstanding``: sessions held at once (handed out and not yet finished or expired). A
  validator runs one probe at a time, down then up, so it holds one, two at the edge.
- ``sessions_per_epoch``: a committee member makes one down and one up probe per provider per
  epoch; three times that leaves room for clock skew at epoch edges and a restart.
- ``window_ms``: the longest window asked for, the spec's ``throughput_seconds`` (2 s at
  least), so a session streams for at most that plus the agent's slack.
- ``bytes_per_epoch``: new sessions are refused once the caller's sessions this epoch moved
  that much. A running session is never cut (that would read as a truncated stream and score
  an honest provider 0): its time is bounded instead, so a caller moves at most the budget
  plus ``outstanding`` sessions' worth. The budget is ``BUDGET_WINDOWS`` windows at
  ``BUDGET_RATE_FACTOR`` times ``rewards.throughput_cap_kbps``: the network pays for nothing
  above the cap, so seeing a hundred times the cap is all a validator can need
  (10 GB per epoch with the default parameters).

The public pool is shared by every public caller: one session at a time, ``PUBLIC_SESSIONS``
per epoch and ``public_probe_bytes`` per epoch in all. Each public session carries a byte
limit, a ``PUBLIC_SHARES``-th of the pool or what is left of it if less (so one probe, down
and up, takes half), announced in the session reply and enforced on the data plane: the pool
is a hard cap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proofs import probe as wire
from proofs.errors import DecodeError
from validator.spec import NetworkSpec

MEMBER_OUTSTANDING = 2
MEMBER_SESSIONS_PER_EPOCH = 6
BUDGET_WINDOWS = 4
BUDGET_RATE_FACTOR = 100
MIN_WINDOW_MS = 2_000  # a probe key's own probe (``validator probe``) uses the 2 s default
PUBLIC_OUTSTANDING = 1
PUBLIC_SESSIONS = 16
PUBLIC_SHARES = 4
EPOCH_SKEW = 1  # heartbeats are signed for the current epoch, or one either side
PUBLIC_POOL = "*public*"  # the accounting key of the shared public pool (never a peer id)


class Role(enum.Enum):
    VALIDATOR = "validator"
    PROBE_KEY = "probe_key"
    PUBLIC = "public"
    OUTSIDER = "outsider"


@dataclass(frozen=True)
class AccessOptions:
    """The operator's choices (``validator provide --allow-probe/--public-probe-bytes``)."""

    allow_probe: frozenset[str] = frozenset()  # peer ids that may probe like a validator
    public_probe_bytes: int = 0  # bytes per epoch for everyone else together; 0: none

    def __post_init__(self) -> None:
        if self.public_probe_bytes < 0:
            raise ValueError("public_probe_bytes must be >= 0")


@dataclass(frozen=True)
class Limits:
    outstanding: int
    sessions_per_epoch: int
    window_ms: int
    bytes_per_epoch: int
    hard_byte_limit: bool  # sessions carry a byte limit (a share of the budget, at most the rest)


def member_limits(spec: NetworkSpec) -> Limits:
    """The per-caller limits of validators and probe keys, from the spec (module docstring)."""
    window_ms = max(MIN_WINDOW_MS, min(wire.MAX_WINDOW_MS,
                                       round(spec.probes.throughput_seconds * 1000)))
    rate = spec.rewards.throughput_cap_kbps * 1000 // 8 * BUDGET_RATE_FACTOR  # bytes per second
    return Limits(MEMBER_OUTSTANDING, MEMBER_SESSIONS_PER_EPOCH, window_ms,
                  BUDGET_WINDOWS * rate * window_ms // 1000, hard_byte_limit=False)


@dataclass(frozen=True)
class Admission:
    """A session the gate allowed: whose budget it draws on, in which epoch, with what limit."""

    pool: str  # the caller's peer id, or PUBLIC_POOL
    epoch: int
    byte_limit: int  # 0: none (members); else the most the session may carry


@dataclass
class _Usage:
    sessions: int = 0
    bytes: int = 0


@dataclass
class ProbeGate:
    """The access rules of one provider agent: ``role``, ``heartbeat``, ``echo``, ``admit`` and
    ``release``. Bounded state: counters for a closed set of pools (validators, probe keys and
    one public pool), for the current and previous epoch only."""

    spec: NetworkSpec
    options: AccessOptions = field(default_factory=AccessOptions)

    def __post_init__(self) -> None:
        self._signing = {v.identity: v.signing_key for v in self.spec.validators}
        self._validator_keys = frozenset(self._signing.values())
        self._member = member_limits(self.spec)
        self._public = Limits(PUBLIC_OUTSTANDING, PUBLIC_SESSIONS, self._member.window_ms,
                              self.options.public_probe_bytes, hard_byte_limit=True)
        self._outstanding: dict[str, int] = {}
        self._usage: dict[tuple[str, int], _Usage] = {}

    @property
    def member(self) -> Limits:
        return self._member

    @property
    def public(self) -> Limits:
        return self._public

    def role(self, peer: str) -> Role:
        if peer in self._signing:
            return Role.VALIDATOR
        if peer in self.options.allow_probe:
            return Role.PROBE_KEY
        if self.options.public_probe_bytes > 0:
            return Role.PUBLIC
        return Role.OUTSIDER

    def epoch(self, now: float) -> int:
        return self.spec.epoch_at(now)

    # -- control plane -------------------------------------------------------------------------
    def heartbeat(self, peer: str, epoch: int, validator_key: bytes, now: float) -> str | None:
        """None if ``peer`` may have this heartbeat signed; else the refusal reason."""
        role = self.role(peer)
        if role is Role.OUTSIDER:
            return "heartbeat_not_member"
        if role is Role.VALIDATOR:
            if validator_key != self._signing[peer]:
                return "heartbeat_foreign_key"
            if abs(epoch - self.epoch(now)) > EPOCH_SKEW:
                return "heartbeat_wrong_epoch"
            return None
        if validator_key in self._validator_keys or validator_key != _own_key(peer):
            return "heartbeat_foreign_key"
        return None

    def echo(self, peer: str) -> str | None:
        return "echo_not_member" if self.role(peer) is Role.OUTSIDER else None

    # -- sessions ------------------------------------------------------------------------------
    def admit(self, peer: str, duration_ms: int, now: float) -> Admission | str:
        """Open a session for ``peer`` (an ``Admission``) or say why not (a reason).

        Every admission must be ``release``d exactly once, when its session ends.
        """
        role = self.role(peer)
        if role is Role.OUTSIDER:
            return "session_not_member"
        pool, limits = ((PUBLIC_POOL, self._public) if role is Role.PUBLIC
                        else (peer, self._member))
        if duration_ms > limits.window_ms:
            return "session_window_too_long"
        if self._outstanding.get(pool, 0) >= limits.outstanding:
            return "session_outstanding"
        epoch = self.epoch(now)
        self._forget_before(epoch - 1)
        usage = self._usage.setdefault((pool, epoch), _Usage())
        if usage.sessions >= limits.sessions_per_epoch:
            return "session_epoch_cap"
        if usage.bytes >= limits.bytes_per_epoch:
            return "session_epoch_bytes"
        usage.sessions += 1
        self._outstanding[pool] = self._outstanding.get(pool, 0) + 1
        byte_limit = 0
        if limits.hard_byte_limit:
            share = -(-limits.bytes_per_epoch // PUBLIC_SHARES)
            byte_limit = min(share, limits.bytes_per_epoch - usage.bytes)
        return Admission(pool, epoch, byte_limit)

    def release(self, admission: Admission, moved: int) -> None:
        """The session of ``admission`` ended after moving ``moved`` bytes (either way)."""
        left = self._outstanding.get(admission.pool, 0) - 1
        if left > 0:
            self._outstanding[admission.pool] = left
        else:
            self._outstanding.pop(admission.pool, None)
        usage = self._usage.get((admission.pool, admission.epoch))
        if usage is not None:
            usage.bytes += max(0, moved)

    def outstanding(self, pool: str) -> int:
        return self._outstanding.get(pool, 0)

    def usage(self, pool: str, now: float) -> tuple[int, int]:
        """(sessions, bytes) of ``pool`` in the epoch at ``now``."""
        usage = self._usage.get((pool, self.epoch(now)), _Usage())
        return usage.sessions, usage.bytes

    def _forget_before(self, epoch: int) -> None:
        for key in [k for k in self._usage if k[1] < epoch]:
            del self._usage[key]


def _own_key(peer: str) -> bytes | None:
    """The ed25519 key inside ``peer`` (None if it is not an inlined ed25519 peer id)."""
    try:
        return wire.public_key_from_peer_id(peer)
    except DecodeError:
        return None
