"""Consistency exclusion: consistent liars are excluded, honest validators are not, whatever
the order of the inputs; the discordance boundaries are where the constants say."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs.consistency import (
    MIN_CHECKED,
    RATIO,
    SLACK_KBPS,
    UPTIME_TOLERANCE_BPS,
    drop_validators,
    inconsistent_validators,
    kbps_discordant,
    uptime_discordant,
)
from proofs.messages import Observation

Committees = dict[bytes, list[tuple[bytes, Observation]]]

HEARTBEATS = 60


def key(prefix: str, i: int) -> bytes:
    return f"{prefix}{i:06d}".encode().ljust(32, b"\0")


def observation(provider: bytes, *, ok: int = HEARTBEATS, down: int = 50_000,
                up: int = 20_000, sent: int = HEARTBEATS) -> Observation:
    return Observation(provider, sent, ok, 20_000, 10_000, down, up, 0)


def x10_lie(honest: Observation) -> Observation:
    """The simulation's x10 liar: every heartbeat answered, every metric x10."""
    return replace(honest, heartbeats_ok=honest.heartbeats_sent,
                   rtt_median_us=honest.rtt_median_us * 10,
                   rtt_min_us=honest.rtt_min_us * 10,
                   down_kbps=honest.down_kbps * 10, up_kbps=honest.up_kbps * 10)


def zero_lie(honest: Observation) -> Observation:
    return replace(honest, heartbeats_ok=0, rtt_median_us=0, rtt_min_us=0, down_kbps=0,
                   up_kbps=0)


def noisy(rng: random.Random, value: int) -> int:
    """``value`` +-10%."""
    return value * rng.randint(900, 1100) // 1000


def network(seed: int, *, n_validators: int = 30, n_providers: int = 1000, k: int = 5,
            x10_liars: int = 5, zero_liars: int = 4) -> tuple[Committees, set[bytes]]:
    """Committees of ``k`` distinct validators per provider; honest members report the
    provider's truth with noise, liars lie every time. Returns (committees, liars)."""
    rng = random.Random(seed)
    validators = [key("v", i) for i in range(n_validators)]
    x10 = set(validators[:x10_liars])
    zero = set(validators[x10_liars:x10_liars + zero_liars])
    committees: Committees = {}
    for p in range(n_providers):
        provider = key("p", p)
        down, up = rng.randint(5_000, 500_000), rng.randint(5_000, 500_000)
        ok = rng.randint(9_000, 10_000) * HEARTBEATS // 10_000
        members = []
        for validator in rng.sample(validators, k):
            honest = observation(provider, ok=max(0, min(HEARTBEATS, ok + rng.randint(-1, 1))),
                                 down=noisy(rng, down), up=noisy(rng, up))
            if validator in x10:
                honest = x10_lie(honest)
            elif validator in zero:
                honest = zero_lie(honest)
            members.append((validator, honest))
        committees[provider] = members
    return committees, x10 | zero


def shuffled(committees: Committees, rng: random.Random) -> Committees:
    providers = list(committees)
    rng.shuffle(providers)
    return {p: rng.sample(committees[p], len(committees[p])) for p in providers}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_consistent_liars_are_excluded_and_honest_validators_are_not(seed: int) -> None:
    committees, liars = network(seed)
    assert inconsistent_validators(committees) == liars


@pytest.mark.parametrize("seed", [7, 8])
def test_liars_of_a_single_mode_are_excluded(seed: int) -> None:
    for x10, zero in [(9, 0), (0, 9)]:
        committees, liars = network(seed, x10_liars=x10, zero_liars=zero)
        assert inconsistent_validators(committees) == liars


def test_a_captured_committee_does_not_exclude_its_honest_members() -> None:
    # 12 providers measured by the same 5 validators, the honest 2 each have checked >= 10;
    # one committee is captured by 3 liars, the rest have honest majorities.
    honest_a, honest_b = key("h", 0), key("h", 1)
    liars = [key("l", i) for i in range(3)]
    others = [key("o", i) for i in range(3)]
    committees: Committees = {}
    captured = key("p", 0)
    committees[captured] = ([(v, observation(captured)) for v in (honest_a, honest_b)]
                            + [(v, x10_lie(observation(captured))) for v in liars])
    for p in range(1, 12):
        provider = key("p", p)
        committees[provider] = [(v, observation(provider))
                                for v in (honest_a, honest_b, *others)]
    # The captured committee's median is the lie, so both honest members are discordant there,
    # but in 1 of their 12 checked observations only.
    assert inconsistent_validators(committees) == frozenset()
    assert not {honest_a, honest_b} & inconsistent_validators(committees, min_checked=1)
    # Alone, the captured committee is 1 checked observation: under min_checked.
    assert inconsistent_validators({captured: committees[captured]}) == frozenset()


def test_below_min_checked_nobody_is_excluded() -> None:
    # Liars discordant in all of their 9 checked observations, one short of MIN_CHECKED.
    committees, liars = network(11, n_validators=6, n_providers=MIN_CHECKED - 1, k=6,
                                x10_liars=1, zero_liars=1)
    assert liars and inconsistent_validators(committees) == frozenset()
    more, _ = network(11, n_validators=6, n_providers=MIN_CHECKED, k=6, x10_liars=1,
                      zero_liars=1)
    assert inconsistent_validators(more) == liars
    assert inconsistent_validators(more, min_checked=MIN_CHECKED + 1) == frozenset()


def test_small_committees_are_not_checked() -> None:
    # Two observations have no majority: a liar in pairs only is never checked.
    liar, honest = key("l", 0), key("h", 0)
    committees = {key("p", p): [(liar, zero_lie(observation(key("p", p)))),
                                (honest, observation(key("p", p)))] for p in range(50)}
    assert inconsistent_validators(committees) == frozenset()
    assert inconsistent_validators({}) == frozenset()


def test_exactly_half_discordant_is_not_excluded() -> None:
    # A validator discordant in exactly half of its checked observations stays.
    judged = key("j", 0)
    peers = [key("o", i) for i in range(2)]
    committees: Committees = {}
    for p in range(20):
        provider = key("p", p)
        mine = zero_lie(observation(provider)) if p % 2 else observation(provider)
        committees[provider] = [(judged, mine)] + [(v, observation(provider)) for v in peers]
    assert inconsistent_validators(committees) == frozenset()
    committees[key("p", 20)] = [(judged, zero_lie(observation(key("p", 20))))] + [
        (v, observation(key("p", 20))) for v in peers]
    assert inconsistent_validators(committees) == {judged}


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_seeded_shuffles_give_the_same_exclusions(seed: int) -> None:
    committees, liars = network(seed, n_providers=300)
    rng = random.Random(seed)
    for _ in range(5):
        assert inconsistent_validators(shuffled(committees, rng)) == liars


@given(st.integers(0, 2**32), st.integers(0, 2**32), st.integers(0, 6))
@settings(max_examples=60, deadline=None)
def test_order_never_matters(network_seed: int, shuffle_seed: int, liars: int) -> None:
    # Few providers and many liars: borderline validators, where an order effect would show.
    committees, _ = network(network_seed, n_validators=10, n_providers=40, k=5,
                            x10_liars=liars // 2, zero_liars=liars - liars // 2)
    expected = inconsistent_validators(committees, min_checked=5)
    again = shuffled(committees, random.Random(shuffle_seed))
    assert inconsistent_validators(again, min_checked=5) == expected


@pytest.mark.parametrize("median_kbps", [0, 1, 999, 5_000, 123_457])
def test_kbps_discordance_boundaries(median_kbps: int) -> None:
    highest_agreeing = RATIO * median_kbps + SLACK_KBPS
    assert not kbps_discordant(highest_agreeing, median_kbps)
    assert kbps_discordant(highest_agreeing + 1, median_kbps)
    # The low side, seen from a median just above a value: RATIO * v + SLACK == m agrees.
    value = median_kbps
    assert not kbps_discordant(value, RATIO * value + SLACK_KBPS)
    assert kbps_discordant(value, RATIO * value + SLACK_KBPS + 1)
    assert not kbps_discordant(median_kbps, median_kbps)


def test_slack_ignores_tiny_lines() -> None:
    assert not kbps_discordant(0, SLACK_KBPS)
    assert kbps_discordant(0, SLACK_KBPS + 1)
    assert not kbps_discordant(SLACK_KBPS, 0)
    assert kbps_discordant(SLACK_KBPS + 1, 0)


def test_uptime_tolerance_boundary() -> None:
    assert not uptime_discordant(9_000 - UPTIME_TOLERANCE_BPS, 9_000)
    assert not uptime_discordant(9_000 + UPTIME_TOLERANCE_BPS, 9_000)
    assert uptime_discordant(9_000 - UPTIME_TOLERANCE_BPS - 1, 9_000)
    assert uptime_discordant(9_000 + UPTIME_TOLERANCE_BPS + 1, 9_000)


def test_boundaries_hold_end_to_end() -> None:
    # One judged validator with peers at down = 10_000: at the limit it stays, one kbps over
    # in every committee it goes; likewise for uptime (100 heartbeats: 1 heartbeat = 100 bps).
    judged = key("j", 0)
    peers = [key("o", i) for i in range(2)]

    def committees(mine: Observation) -> Committees:
        return {key("p", p): [(judged, replace(mine, provider=key("p", p)))]
                + [(v, observation(key("p", p), sent=100, ok=100, down=10_000))
                   for v in peers] for p in range(MIN_CHECKED)}

    at_limit = observation(b"", sent=100, ok=100, down=RATIO * 10_000 + SLACK_KBPS)
    assert inconsistent_validators(committees(at_limit)) == frozenset()
    over = replace(at_limit, down_kbps=at_limit.down_kbps + 1)
    assert inconsistent_validators(committees(over)) == {judged}
    # The judged value moves the median of 3 only if it lies between the peers: here it
    # does not, so the median stays the peers' 10_000 kbps and 10_000 bps.
    low_ok = (10_000 - UPTIME_TOLERANCE_BPS) // 100
    assert inconsistent_validators(committees(observation(b"", sent=100, ok=low_ok,
                                                           down=10_000))) == frozenset()
    assert inconsistent_validators(committees(observation(b"", sent=100, ok=low_ok - 1,
                                                           down=10_000))) == {judged}


def test_drop_validators_removes_exactly_the_excluded() -> None:
    committees, liars = network(31, n_providers=200)
    # A provider measured only by liars disappears from the result.
    only_liars = key("q", 0)
    committees[only_liars] = [(v, zero_lie(observation(only_liars))) for v in sorted(liars)]
    kept = drop_validators(committees, liars)
    assert only_liars not in kept
    for provider, committee in committees.items():
        expected = [o for v, o in committee if v not in liars]
        assert kept.get(provider, []) == expected
    assert set(kept) == {p for p, c in committees.items() if any(v not in liars for v, _ in c)}
    assert drop_validators(committees, frozenset()) == {
        p: [o for _, o in c] for p, c in committees.items()}
