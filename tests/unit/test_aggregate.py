"""Aggregation rules: medians bound liars, consistency beats raw speed, demand pays."""

from proofs.aggregate import WeightParams, build_records, median, weight
from proofs.report import Flag
from tests.factories import make_observation

PARAMS = WeightParams(throughput_cap_kbps=100_000, uptime_exponent=20, latency_bound_us=150_000)


def test_median_of_even_count_is_floored_mean() -> None:
    assert median([1, 9]) == 5 and median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2


def test_consistency_beats_raw_speed() -> None:
    # 50 Mbit/s up 99% of the epoch vs 1 Gbit/s down five minutes every hour (91.7%)
    steady = weight(PARAMS, 9_900, 20_000, 50_000, 50_000, 1000, 0)
    flaky = weight(PARAMS, 9_167, 20_000, 1_000_000, 1_000_000, 1000, 0)
    assert steady > flaky > 0


def test_high_demand_region_earns_more() -> None:
    assert weight(PARAMS, 9_900, 20_000, 50_000, 50_000, 1500, 0) > \
        weight(PARAMS, 9_900, 20_000, 50_000, 50_000, 1000, 0)


def test_fraud_zeroes_weight_and_latency_discounts() -> None:
    assert weight(PARAMS, 10_000, 20_000, 50_000, 50_000, 1000, Flag.THROUGHPUT_FRAUD) == 0
    near = weight(PARAMS, 10_000, 20_000, 50_000, 50_000, 1000, 0)
    far = weight(PARAMS, 10_000, 300_000, 50_000, 50_000, 1000, 0)
    assert far * 2 == near


def test_a_lying_minority_cannot_move_the_median_outside_honest_values() -> None:
    p = b"\x01" * 32
    honest = [make_observation(p, down=40_000), make_observation(p, down=42_000)]
    liar = make_observation(p, down=400_000, flags=Flag.THROUGHPUT_FRAUD)
    [record] = build_records({p: honest + [liar]}, {p: b"\x02" * 32}, {}, {}, 2, PARAMS)
    assert 40_000 <= record.down_kbps <= 42_000
    assert record.flags == 0  # one liar's fraud flag is not a majority


def test_insufficient_quorum_carries_the_last_record_once() -> None:
    p = b"\x01" * 32
    [first] = build_records({p: [make_observation(p)] * 2}, {p: b"\x02" * 32}, {}, {}, 2, PARAMS)
    [carried] = build_records({p: [make_observation(p)]}, {p: b"\x02" * 32}, {}, {p: first},
                              2, PARAMS)
    assert carried.flags & Flag.INSUFFICIENT and carried.weight == first.weight
    assert build_records({}, {p: b"\x02" * 32}, {}, {p: carried}, 2, PARAMS) == []
