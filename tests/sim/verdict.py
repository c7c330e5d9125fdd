"""The per-epoch verdict of a simulation (``SimNetwork.verify_epoch``): finals, one header,
metrics within the truthful range, evidence against equivocators. It reads what each
validator wrote to its SQLite file; it needs the harness only for who is honest, who was up,
and what the truthful validators observed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proofs.aggregate import carried_record, uptime_bps
from proofs.messages import Observation
from proofs.report import Flag, Record, ReportHeader
from validator.store import StoredFinal

if TYPE_CHECKING:
    from tests.sim.harness import SimNetwork, SimValidator


@dataclass(frozen=True)
class EpochCheck:
    """What ``check_epoch`` found for one epoch (everything it asserted held)."""

    epoch: int
    header_hash: bytes
    records: int
    carried: int  # records carried from the previous epoch (committee lacked quorum)
    bundles: int  # bundles the final report's header was computed from
    bundle_signers: frozenset[int]  # validator indices of those bundles
    signatures: int
    # providers whose metric left the truthful range because lying observations were at least
    # half of those used (a captured committee: possible when k < 2f+1, or when truthful
    # bundles are left out of the report); empty unless check_epoch(strict=False)
    captured: tuple[bytes, ...] = ()


METRICS = ("uptime_bps", "rtt_us", "down_kbps", "up_kbps")


def _metrics(obs: Observation) -> tuple[int, int, int, int]:
    return (uptime_bps(obs), obs.rtt_median_us, obs.down_kbps, obs.up_kbps)


def _record_metrics(rec: Record) -> tuple[int, int, int, int]:
    return (rec.uptime_bps, rec.rtt_us, rec.down_kbps, rec.up_kbps)


def verify_epoch(sim: SimNetwork, epoch: int, *, strict: bool = True) -> EpochCheck:
    """Assert the outcome of ``epoch`` (AssertionError says what is wrong or missing):

    1. every running honest validator has a final report for ``epoch`` in SQLite;
    2. no two validators (any, running or not, honest or not) hold different headers,
       and the header names the latest earlier final header as its previous one;
    3. every record's metric lies within [min, max] of the committee members'
       truthful observations of that provider: the honest members', and those of
       byzantine members whose fault is not in their measurements (a censor, a
       withholder); a record carried for lack of quorum must equal the previous epoch's
       record, flagged. With ``strict=False``, a record out of range whose used
       observations were at least half lies (a captured committee) is reported in
       ``EpochCheck.captured`` instead of failing;
    4. every equivocation committed in ``epoch`` is evidence in the SQLite file of every
       honest validator that was up since before the epoch's bundles were published.
    """
    problems: list[str] = []
    finals: dict[int, StoredFinal] = {}
    for slot in sim.slots:
        final = sim.stored_final(slot.index, epoch)
        if final is not None:
            finals[slot.index] = final
    missing = [i for i in sim.running_honest() if i not in finals]
    if missing:
        problems.append(f"no final report at running honest validators {missing}")
    headers = {f.header_hash for f in finals.values()}
    if len(headers) > 1:
        by_hash = defaultdict(list)
        for i, f in finals.items():
            by_hash[f.header_hash.hex()[:16]].append(i)
        problems.append(f"different final headers: {dict(by_hash)}")
    if not finals or missing or len(headers) > 1:
        raise AssertionError(f"epoch {epoch}: " + "; ".join(problems or ["no final"]))

    reference = sim.reference()
    previous = reference.core.latest_final(before=epoch)
    header = ReportHeader.from_bytes(next(iter(finals.values())).header)
    expected_prev = previous.header_hash if previous is not None else bytes(32)
    if header.prev_header_hash != expected_prev:
        problems.append(f"header names previous {header.prev_header_hash.hex()[:16]}, "
                        f"the latest earlier final is {expected_prev.hex()[:16]}")
    final = next((f for i, f in finals.items() if f.bundle_hashes and i in sim.honest()),
                 next(iter(finals.values())))
    captured, violations, carried = _check_records(sim, epoch, final, reference)
    if violations:
        problems.append("metrics outside the truthful range with a truthful majority of "
                        "observations: " + "; ".join(violations[:5]))
    if strict and captured:
        problems.append(f"{len(captured)} of {len(final.records)} records outside the "
                        "truthful range, where lies were at least half of the observations "
                        "used (captured committees), first: "
                        + "; ".join(text for _, text in captured[:3]))
    wanted = sim.equivocators(epoch)
    for i in sim._evidence_witnesses(epoch):
        stored = sim.stored_evidence(i, epoch)
        for j, kinds in wanted.items():
            lacking = {k for k in kinds if (k, sim.keys[j]) not in stored}
            if lacking:
                problems.append(f"validator {i} has no {sorted(lacking)} evidence "
                                f"against equivocator {j}")
    if problems:
        raise AssertionError(f"epoch {epoch}: " + "; ".join(problems))
    signers = _bundle_signers(sim, final)
    return EpochCheck(epoch, final.header_hash, len(final.records), carried,
                      len(final.bundle_hashes), frozenset(signers), len(final.signatures),
                      tuple(p for p, _ in captured))


def _bundle_signers(sim: SimNetwork, final: StoredFinal) -> list[int]:
    for i in sim.running_honest():
        bundles = sim.stored_bundles(i, final.epoch)
        if all(h in bundles for h in final.bundle_hashes):
            return [sim.index_by_key[bundles[h].validator] for h in final.bundle_hashes]
    return []


def _check_records(sim: SimNetwork, epoch: int, final: StoredFinal,
                   reference: SimValidator) -> tuple[list[tuple[bytes, str]], list[str], int]:
    core = reference.core
    used: dict[bytes, list[tuple[int, Observation]]] | None = None
    captured: list[tuple[bytes, str]] = []
    violations: list[str] = []
    carried = 0
    previous: dict[bytes, Record] = {}
    prev_final = core.finals.get(epoch - 1)
    if prev_final is not None:
        previous = {r.provider: r for r in map(Record.from_bytes, prev_final.records)}
    truthful = {s.index for s in sim.slots if s.behaviour.truthful}
    for raw in final.records:
        rec = Record.from_bytes(raw)
        name = rec.provider.hex()[:8]
        if rec.flags & Flag.INSUFFICIENT:
            carried += 1
            prev = previous.get(rec.provider)
            if prev is None or carried_record(prev) != rec:
                violations.append(f"provider {name}: flagged insufficient but not the "
                                  "previous epoch's record carried")
            continue
        committee = set(core.committee(epoch, rec.provider))
        observed = [o for j, o in sim.truthful_observations.get((epoch, rec.provider),
                                                                 {}).items()
                    if sim.keys[j] in committee]
        bad = []
        for metric, value, values in zip(
                METRICS, _record_metrics(rec),
                zip(*(_metrics(o) for o in observed)) if observed else [()] * 4):
            if not values or not min(values) <= value <= max(values):
                bad.append(f"{metric}={value} truthful {sorted(values)}")
        if not bad:
            continue
        if used is None:
            used = _used_observations(sim, final)
        uses = [(j, o) for j, o in used.get(rec.provider, []) if sim.keys[j] in committee]
        h = sum(1 for j, _ in uses if j in truthful)
        text = (f"provider {name}: {', '.join(bad)}; used {h} truthful and "
                f"{len(uses) - h} lying observations")
        if uses and h * 2 <= len(uses):
            captured.append((rec.provider, text))
        else:
            violations.append(text)
    return captured, violations, carried


def _used_observations(sim: SimNetwork, final: StoredFinal
                       ) -> dict[bytes, list[tuple[int, Observation]]]:
    """Per provider, (validator index, observation) from the bundles the final names."""
    out: dict[bytes, list[tuple[int, Observation]]] = defaultdict(list)
    for i in sim.running_honest():
        bundles = sim.stored_bundles(i, final.epoch)
        if all(h in bundles for h in final.bundle_hashes):
            for h in final.bundle_hashes:
                b = bundles[h]
                for obs in b.observations:
                    if obs.heartbeats_sent:
                        out[obs.provider].append((sim.index_by_key[b.validator], obs))
            return out
    return out
