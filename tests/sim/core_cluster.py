"""A cluster of ValidatorCores wired together by direct message passing, on a fake clock.

The pure core has no I/O, so the whole agreement protocol runs here deterministically: the
shell's one ordering duty (persist a signed header, then tell the core, which publishes it)
is mirrored by ``signed_log``, which a test checks for double signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from proofs.messages import Observation, Registration, Vote
from validator.core import CastVote, Fetch, Publish, SaveEvidence, SignHeader, ValidatorCore
from validator.spec import NetworkSpec

ObservationFn = Callable[[int, int, Registration], Observation]


@dataclass
class CoreCluster:
    spec: NetworkSpec
    seeds: list[bytes]
    cores: list[ValidatorCore] = field(init=False)
    down: set[int] = field(default_factory=set)
    signed_log: list[tuple[int, int, bytes]] = field(default_factory=list)
    vote_log: list[tuple[int, Vote]] = field(default_factory=list)  # (validator, its vote)
    evidence: list[SaveEvidence] = field(default_factory=list)
    # validator index -> (f"fetch_{kind}", epoch) of the fetches a peer answered
    fetched: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    # (validator index, epoch) -> the header hash its store already holds for that epoch
    # (another process on the same file signed it): its SignHeader is refused
    store_holds: dict[tuple[int, int], bytes] = field(default_factory=dict)
    # validators whose store is slow: their SignHeader actions wait in ``held_signatures``
    slow_store: set[int] = field(default_factory=set)
    held_signatures: list[tuple[int, SignHeader]] = field(default_factory=list)
    # a hop hook: route(source, destination, publish) -> deliver it? (default: always)
    route: Callable[[int, int, Publish], bool] | None = None

    def __post_init__(self) -> None:
        self.cores = [ValidatorCore(self.spec, s) for s in self.seeds]

    def broadcast_registration(self, reg: Registration) -> None:
        for core in self.cores:
            msg = core.check("registrations", reg.encode())
            assert msg is not None
            core.on_message(msg, 0)

    def deliver(self, source: int, actions: list, now: float) -> None:
        queue = [(source, a) for a in actions]
        while queue:
            src, action = queue.pop(0)
            if isinstance(action, SignHeader) and src in self.slow_store:
                self.held_signatures.append((src, action))
            elif isinstance(action, SignHeader):
                held = self.store_holds.get((src, action.epoch))
                if held is not None and held != action.header_hash:
                    queue += [(src, a) for a in self.cores[src].on_signed_refused(
                        action.epoch, action.header_hash, held)]
                else:
                    self.signed_log.append((src, action.epoch, action.header_hash))
                    queue += [(src, a) for a in self.cores[src].on_signed_stored(
                        action.epoch, action.header_hash, now)]
            elif isinstance(action, CastVote):
                self.vote_log.append((src, action.vote))
                queue += [(src, a) for a in self.cores[src].on_vote_stored(action.vote, now)]
            elif isinstance(action, SaveEvidence):
                self.evidence.append(action)
            elif isinstance(action, Fetch):
                for j, peer in enumerate(self.cores):
                    if j != src and j not in self.down:
                        data = peer.answer_fetch(action.request)
                        if data:
                            self.fetched.setdefault(src, set()).add(
                                (f"fetch_{action.request.kind}", action.request.epoch))
                            queue += [(src, a) for a in
                                      self.cores[src].on_fetched(action.request, data, now)]
                            break
            elif isinstance(action, Publish):
                for j, core in enumerate(self.cores):
                    if j == src or j in self.down or (
                            self.route is not None and not self.route(src, j, action)):
                        continue
                    msg = core.check(action.topic, action.data)
                    if msg is not None:
                        queue += [(j, a) for a in core.on_message(msg, now)]

    def inject(self, destination: int, topic: str, data: bytes, now: float) -> None:
        """Hand one gossip message to one validator only (as a byzantine peer would)."""
        msg = self.cores[destination].check(topic, data)
        if msg is not None:
            self.deliver(destination, self.cores[destination].on_message(msg, now), now)

    def tick_until(self, start: float, stop: float, step: float = 0.5) -> None:
        t = start
        while t < stop:
            for i, core in enumerate(self.cores):
                if i not in self.down:
                    self.deliver(i, core.on_tick(t), t)
            t += step

    def run_epoch(self, epoch: int, observe: ObservationFn, agree_seconds: float = 30) -> None:
        end = self.spec.epoch_end(epoch)
        for i, core in enumerate(self.cores):
            if i in self.down:
                continue
            obs = [observe(i, epoch, reg) for reg in core.assignment(epoch)]
            self.deliver(i, core.bundle_ready(epoch, obs, end), end)
        self.tick_until(end, end + agree_seconds)

    def double_signatures(self) -> list[tuple[int, int]]:
        seen: dict[tuple[int, int], bytes] = {}
        doubles = []
        for validator, epoch, header_hash in self.signed_log:
            if seen.setdefault((validator, epoch), header_hash) != header_hash:
                doubles.append((validator, epoch))
        return doubles
