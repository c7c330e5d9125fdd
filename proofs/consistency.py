"""Excluding validators that grossly disagree with their committees (integer arithmetic only).

A committee's median bounds a lying minority, but a committee where liars are half or more
reports their values. This module bounds that from the other side: a validator that lies
consistently (every metric x10, or everything 0) sits in many committees, and in most of them
liars are a minority, so its observations land far from the committee median in most of the
committees it sits in. An honest validator lands far from the median only in the few
committees that liars captured. So, per epoch, a validator whose observations are discordant
with their committees' medians in more than half of its checked observations is excluded, and
records are aggregated without it.

What this does not bound: a coalition that lies only in the committees where it holds a
majority, and tells the truth everywhere else. Its lies are the median where it lies, and
everywhere else it agrees with the median, so it is never discordant and never excluded. Only
committees with honest majorities (a committee size k large enough that capture is unlikely)
defend against that.

The other direction: providers that answer every validator but one make that validator look
discordant for them. Excluding it needs more than half of its checked observations, so more
than half of the providers in its committees, and costs it nothing but that epoch's say in the
medians (no penalty follows from exclusion).

Every validator runs this on the same bundles and must exclude the same set, so the result is
a function of the multiset of observations only: medians and counts do not depend on the
order of the mapping or of its lists, and nothing here uses floats.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from proofs.aggregate import median, uptime_bps
from proofs.messages import Observation

# Every vantage point sees the same heartbeat schedule answered or not, so honest uptimes agree
# within a few points (a lost probe packet here and there); 25 points apart is a lie or a
# broken validator. The tolerance is wide on purpose: a small uptime lie barely moves a median,
# while excluding an honest validator costs the network its observations.
UPTIME_TOLERANCE_BPS = 2_500
# Throughput legitimately differs by vantage point: a validator's own link and the path to the
# provider can halve or double what it measures. A factor of 4 either way leaves room for
# that, while the lies that matter (x10, or 0) do not fit.
RATIO = 4
# On tiny lines the ratio alone would call 200 vs 900 kbps discordant although both are noise;
# differences below 1 Mbit/s are ignored.
SLACK_KBPS = 1_000
# Below this many checked observations a validator is never excluded: with few committees, the
# handful that liars happened to capture could make an honest validator look discordant.
MIN_CHECKED = 10
# A committee of 2 has no majority to disagree with; with 3 the median is a member's value.
MIN_COMMITTEE = 3


def kbps_discordant(value: int, committee_median: int) -> bool:
    """True when ``value`` is more than RATIO times the median, or less than median / RATIO,
    after ignoring differences below SLACK_KBPS.

    ``value == RATIO * median + SLACK_KBPS`` and ``RATIO * value + SLACK_KBPS == median`` are
    the largest agreeing values on either side.
    """
    return (value > RATIO * committee_median + SLACK_KBPS
            or RATIO * value + SLACK_KBPS < committee_median)


def uptime_discordant(value_bps: int, committee_median_bps: int) -> bool:
    """True when the uptimes are more than UPTIME_TOLERANCE_BPS apart (the tolerance agrees)."""
    return abs(value_bps - committee_median_bps) > UPTIME_TOLERANCE_BPS


def inconsistent_validators(
    observations: Mapping[bytes, Sequence[tuple[bytes, Observation]]],
    *, min_checked: int = MIN_CHECKED,
) -> frozenset[bytes]:
    """Validators to leave out of this epoch's aggregation.

    ``observations``: provider key -> (validator key, usable observation) for each member of
    that provider's committee that reported it; the caller has already left out observations
    with no heartbeat sent. A validator is expected at most once per provider (a repeat counts
    twice).

    Only providers with at least MIN_COMMITTEE observations are checked. Each of their
    observations is compared with the committee's medians of uptime, down and up throughput,
    the median taken over all the committee's observations including the one judged. A
    validator is excluded when at least ``min_checked`` of its observations were checked and
    more than half of them were discordant. An empty mapping excludes nobody.

    RTT is deliberately not compared: it depends on the distance between the validator and the
    provider, and vantage points on different continents legitimately measure RTTs a hundred
    times apart, so no tolerance would both pass honest validators and catch liars.
    """
    checked: dict[bytes, int] = {}
    discordant: dict[bytes, int] = {}
    for committee in observations.values():
        if len(committee) < MIN_COMMITTEE:
            continue
        uptimes = [uptime_bps(o) for _, o in committee]
        median_uptime = median(uptimes)
        median_down = median([o.down_kbps for _, o in committee])
        median_up = median([o.up_kbps for _, o in committee])
        for (validator, o), uptime in zip(committee, uptimes):
            checked[validator] = checked.get(validator, 0) + 1
            if (uptime_discordant(uptime, median_uptime)
                    or kbps_discordant(o.down_kbps, median_down)
                    or kbps_discordant(o.up_kbps, median_up)):
                discordant[validator] = discordant.get(validator, 0) + 1
    return frozenset(v for v, bad in discordant.items()
                     if checked[v] >= min_checked and 2 * bad > checked[v])


def drop_validators(
    observations: Mapping[bytes, Sequence[tuple[bytes, Observation]]],
    excluded: Collection[bytes],
) -> dict[bytes, list[Observation]]:
    """Per provider, the observations of validators not in ``excluded``, ready for
    ``aggregate.build_records``. Providers left with no observation are omitted (build_records
    then carries their previous record, as for any committee without quorum)."""
    kept: dict[bytes, list[Observation]] = {}
    for provider, committee in observations.items():
        remaining = [o for validator, o in committee if validator not in excluded]
        if remaining:
            kept[provider] = remaining
    return kept
