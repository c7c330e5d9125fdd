"""One epoch's agreement on a header, before the signature that counts (pure; no I/O).

The signature the pool program counts (``ReportSignature``, over sha256 of the header) is
given at most once per validator and epoch, and only to a header this state machine has
*decided*. Before it, validators vote in attempts (the core's leader attempts, one leader
each, ``proposal_timeout_seconds`` apart) in the manner of Tendermint:

- **prevote** ``h`` in attempt ``r`` for the leader's proposal of ``r`` if we verified it and
  our lock allows: no lock, a lock on ``h``, or the proposal re-proposes ``h`` with a polka
  (``threshold`` prevotes for ``h``) from an attempt at or after our lock's;
- **precommit** ``h`` in attempt ``r`` on a polka for ``h`` in ``r``, and *lock* on
  ``(h, r)``;
- **decide** ``h`` on ``threshold`` precommits for ``h`` in one attempt.

A validator votes at most once per (attempt, kind). Two different votes of one slot are
equivocation. Why this is safe and live is in docs/design.md ("Agreement"). Nil votes are not
needed: attempts advance on the clock, not on votes.

``EpochAgreement`` keeps the votes of one epoch, bounded by the caller (attempts it admits,
one vote per voter and slot), and answers the questions the core asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from proofs.messages import PRECOMMIT, PREVOTE, Vote


@dataclass(frozen=True)
class Lock:
    """A header and the attempt in which it had a polka."""

    header_hash: bytes
    round: int


@dataclass(frozen=True)
class Equivocation:
    first: Vote
    second: Vote


@dataclass
class EpochAgreement:
    me: bytes
    threshold: int
    # (kind, round) -> voter -> vote: the first vote of each voter and slot (later ones are
    # evidence, never counted)
    votes: dict[tuple[int, int], dict[bytes, Vote]] = field(default_factory=dict)
    tally: dict[tuple[int, int, bytes], int] = field(default_factory=dict)
    # (kind, round, header hash) that reached ``threshold``, in the order they did
    quorums: list[tuple[int, int, bytes]] = field(default_factory=list)
    equivocators: set[bytes] = field(default_factory=set)
    lock: Lock | None = None  # our latest precommit
    valid: Lock | None = None  # the latest polka we saw for a header we verified
    decided: bytes | None = None

    # -- input -------------------------------------------------------------------------
    def add(self, vote: Vote) -> Equivocation | bool:
        """Record a verified vote. True if new, False if a repeat (or another vote of a
        voter already caught), or the evidence of a second, different vote for one slot."""
        slot = self.votes.setdefault((vote.kind, vote.round), {})
        held = slot.get(vote.voter)
        if held is not None:
            if held.header_hash == vote.header_hash or vote.voter in self.equivocators:
                return False
            self.equivocators.add(vote.voter)
            return Equivocation(held, vote)
        slot[vote.voter] = vote
        key = (vote.kind, vote.round, vote.header_hash)
        self.tally[key] = self.tally.get(key, 0) + 1
        if self.tally[key] == self.threshold:
            self.quorums.append(key)
        if vote.voter == self.me and vote.kind == PRECOMMIT and (
                self.lock is None or vote.round > self.lock.round):
            self.lock = Lock(vote.header_hash, vote.round)
        return True

    def restore(self, own: Iterable[Vote]) -> None:
        """Our own votes, from the store after a restart: the lock comes back with them."""
        for vote in own:
            self.add(vote)

    # -- questions ---------------------------------------------------------------------
    def my_vote(self, kind: int, round_: int) -> Vote | None:
        return self.votes.get((kind, round_), {}).get(self.me)

    def polka(self, round_: int, header_hash: bytes) -> tuple[Vote, ...] | None:
        """``threshold`` prevotes for ``header_hash`` in ``round_``, sorted by voter."""
        if self.tally.get((PREVOTE, round_, header_hash), 0) < self.threshold:
            return None
        votes = [v for v in self.votes[(PREVOTE, round_)].values()
                 if v.header_hash == header_hash]
        return tuple(sorted(votes, key=lambda v: v.voter))[:self.threshold]

    def polkas(self) -> list[tuple[bytes, int]]:
        """(header hash, attempt) of every polka, oldest first."""
        return [(h, r) for kind, r, h in self.quorums if kind == PREVOTE]

    def commits(self) -> list[tuple[bytes, int]]:
        """(header hash, attempt) with ``threshold`` precommits in that attempt."""
        return [(h, r) for kind, r, h in self.quorums if kind == PRECOMMIT]

    def may_prevote(self, header_hash: bytes, pol_round: int) -> bool:
        """The lock rule: free, locked on this header, or a polka at or after the lock."""
        return (self.lock is None or self.lock.header_hash == header_hash
                or (pol_round >= 0 and pol_round >= self.lock.round))

    def saw_polka(self, header_hash: bytes, round_: int) -> None:
        if self.valid is None or round_ > self.valid.round:
            self.valid = Lock(header_hash, round_)
