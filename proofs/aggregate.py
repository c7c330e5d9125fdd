"""From committee observations to report records (DESIGN §8). Integer arithmetic only.

Every validator must compute byte-identical records from the same bundles, so nothing here
uses floats: medians of integers are floored means of the two middle values, weights are exact
rational arithmetic on Python ints, floored once at the end.

A metric's median over a committee with an honest majority lies between two honest values,
which is what bounds a lying minority.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from proofs.messages import Observation
from proofs.report import Flag, Record


@dataclass(frozen=True)
class WeightParams:
    throughput_cap_kbps: int
    uptime_exponent: int
    latency_bound_us: int


def median(values: Sequence[int]) -> int:
    """Median of integers; for an even count, the floored mean of the two middle values.

    Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("median of nothing")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) // 2


def uptime_bps(observation: Observation) -> int:
    return observation.heartbeats_ok * 10_000 // observation.heartbeats_sent


def weight(params: WeightParams, uptime: int, rtt_us: int, down_kbps: int, up_kbps: int,
           demand_milli: int, flags: int) -> int:
    """Reward weight: capped throughput x uptime^p x latency discount x regional demand.

    The uptime power is what makes consistency beat raw speed: with p = 20, a line up 99% keeps
    82% of its capped throughput and one up 95% keeps 36%. Fraud flags zero the weight.
    """
    if flags & Flag.FRAUD:
        return 0
    cap = params.throughput_cap_kbps
    throughput = (min(down_kbps, cap) + min(up_kbps, cap)) // 2
    p = params.uptime_exponent
    numerator = throughput * uptime ** p * demand_milli
    denominator = 10_000 ** p * 1000
    if rtt_us > params.latency_bound_us:
        numerator *= params.latency_bound_us
        denominator *= rtt_us
    return numerator // denominator


def majority_flags(observations: Sequence[Observation]) -> int:
    """A flag bit is set when more than half of the observations set it, so a lying minority
    can neither frame an honest provider nor hide a cheater."""
    flags = 0
    for bit in Flag.NAMES:
        if sum(1 for o in observations if o.flags & bit) * 2 > len(observations):
            flags |= bit
    return flags


def quorate_record(provider: bytes, payout: bytes, observations: Sequence[Observation],
                   params: WeightParams, demand_milli: int) -> Record:
    """The record of a provider from at least a quorum of its committee's observations."""
    uptime = median([uptime_bps(o) for o in observations])
    rtt = median([o.rtt_median_us for o in observations])
    down = median([o.down_kbps for o in observations])
    up = median([o.up_kbps for o in observations])
    flags = majority_flags(observations)
    return Record(provider, payout, uptime, rtt, down, up,
                  weight(params, uptime, rtt, down, up, demand_milli, flags), flags)


def carried_record(previous: Record) -> Record:
    """A provider whose committee lacked quorum keeps its last quorate record one epoch,
    flagged. A record that was itself carried is not carried again."""
    return Record(previous.provider, previous.payout, previous.uptime_bps, previous.rtt_us,
                  previous.down_kbps, previous.up_kbps, previous.weight,
                  previous.flags | Flag.INSUFFICIENT)


def build_records(
    committee_observations: Mapping[bytes, Sequence[Observation]],
    payouts: Mapping[bytes, bytes],
    demand: Mapping[bytes, int],
    previous: Mapping[bytes, Record],
    quorum: int,
    params: WeightParams,
) -> list[Record]:
    """Records sorted by provider key.

    ``committee_observations``: per provider, the usable observations of its committee members
    (observations with no heartbeat sent are not usable and must be left out by the caller).
    ``payouts``: payout address of every provider that may get a record.
    ``previous``: last epoch's records, for carrying non-quorate providers one epoch.
    """
    records = []
    for provider in sorted(set(committee_observations) | set(previous)):
        if provider not in payouts:
            continue
        observations = committee_observations.get(provider, ())
        if len(observations) >= quorum:
            records.append(quorate_record(provider, payouts[provider], observations, params,
                                          demand.get(provider, 1000)))
        elif provider in previous and not previous[provider].flags & Flag.INSUFFICIENT:
            records.append(carried_record(previous[provider]))
    return records
