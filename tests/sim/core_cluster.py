"""A cluster of ValidatorCores wired together by direct message passing, on a fake clock.

The pure core has no I/O, so the whole agreement protocol runs here deterministically: the
shell's one ordering duty (persist a signed header, then tell the core, which publishes it)
is mirrored by ``signed_log``, which a test checks for double signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from proofs.messages import Observation, Registration
from validator.core import Fetch, Publish, SaveEvidence, SignHeader, ValidatorCore
from validator.spec import NetworkSpec

ObservationFn = Callable[[int, int, Registration], Observation]


@dataclass
class CoreCluster:
    spec: NetworkSpec
    seeds: list[bytes]
    cores: list[ValidatorCore] = field(init=False)
    down: set[int] = field(default_factory=set)
    signed_log: list[tuple[int, int, bytes]] = field(default_factory=list)
    evidence: list[SaveEvidence] = field(default_factory=list)
    # validator index -> (f"fetch_{kind}", epoch) of the fetches a peer answered
    fetched: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    # (validator index, epoch) -> the header hash its store already holds for that epoch
    # (another process on the same file signed it): its SignHeader is refused
    store_holds: dict[tuple[int, int], bytes] = field(default_factory=dict)

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
            if isinstance(action, SignHeader):
                held = self.store_holds.get((src, action.epoch))
                if held is not None and held != action.header_hash:
                    queue += [(src, a) for a in self.cores[src].on_signed_refused(
                        action.epoch, action.header_hash, held)]
                    continue
                self.signed_log.append((src, action.epoch, action.header_hash))
                queue += [(src, a) for a in self.cores[src].on_signed_stored(
                    action.epoch, action.header_hash, now)]
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
                    if j == src or j in self.down:
                        continue
                    msg = core.check(action.topic, action.data)
                    if msg is not None:
                        queue += [(j, a) for a in core.on_message(msg, now)]

    def run_epoch(self, epoch: int, observe: ObservationFn, agree_seconds: float = 30) -> None:
        end = self.spec.epoch_end(epoch)
        for i, core in enumerate(self.cores):
            if i in self.down:
                continue
            obs = [observe(i, epoch, reg) for reg in core.assignment(epoch)]
            self.deliver(i, core.bundle_ready(epoch, obs, end), end)
        t = end
        while t < end + agree_seconds:
            for i, core in enumerate(self.cores):
                if i not in self.down:
                    self.deliver(i, core.on_tick(t), t)
            t += 0.5

    def double_signatures(self) -> list[tuple[int, int]]:
        seen: dict[tuple[int, int], bytes] = {}
        doubles = []
        for validator, epoch, header_hash in self.signed_log:
            if seen.setdefault((validator, epoch), header_hash) != header_hash:
                doubles.append((validator, epoch))
        return doubles
