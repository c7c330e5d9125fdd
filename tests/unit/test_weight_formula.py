"""The weight formula `/network` serves is the one records are weighted with: its
`expression`, evaluated on a record's fields, gives `proofs.aggregate.weight` exactly, over
seeded random inputs around every boundary (cap, latency bound, fraud flags, full uptime)."""

from __future__ import annotations

import random

import pytest

from proofs.aggregate import WeightParams, weight
from proofs.report import Flag
from tests.factories import make_spec
from validator.api import network_json
from validator.api_views import weight_formula
from validator.spec import RewardParams


def _evaluate(expression: str, **fields: int) -> int:
    """The served expression on one record; only the record's names and min/max exist."""
    return int(eval(expression, {"__builtins__": {}, "min": min, "max": max}, fields))  # noqa: S307


@pytest.mark.parametrize("seed, rewards", [
    (1, RewardParams()),
    (2, RewardParams(throughput_cap_kbps=5_000, uptime_exponent=3, latency_bound_us=20_000,
                     region_demand_milli=(("eu-west", 1500), ("us-east", 0)))),
])
def test_expression_equals_the_weight_records_carry(seed: int, rewards: RewardParams) -> None:
    spec, _ = make_spec(4, rewards=rewards)
    formula = weight_formula(spec)
    params = WeightParams(rewards.throughput_cap_kbps, rewards.uptime_exponent,
                          rewards.latency_bound_us)
    rng = random.Random(seed)
    regions = ["eu-west", "us-east", "elsewhere"]
    for _ in range(2_000):
        cap, bound = rewards.throughput_cap_kbps, rewards.latency_bound_us
        fields = {
            "uptime_bps": rng.choice([0, 9_500, 9_999, 10_000, rng.randrange(10_001)]),
            "rtt_us": rng.choice([0, bound, bound + 1, rng.randrange(4 * bound)]),
            "down_kbps": rng.choice([0, cap, cap + 1, rng.randrange(3 * cap)]),
            "up_kbps": rng.choice([0, cap - 1, rng.randrange(3 * cap)]),
            "flags": rng.choice([0, Flag.INSUFFICIENT, Flag.LOCATION_MISMATCH,
                                 Flag.THROUGHPUT_FRAUD, rng.randrange(1 << 7)]),
        }
        region = rng.choice(regions)
        demand = formula["demand_milli"]["by_region"].get(region,
                                                          formula["demand_milli"]["default"])
        assert demand == rewards.demand(region)
        expected = weight(params, fields["uptime_bps"], fields["rtt_us"], fields["down_kbps"],
                          fields["up_kbps"], demand, fields["flags"])
        assert _evaluate(formula["expression"], demand_milli=demand, **fields) == expected, \
            fields


def test_the_text_names_this_networks_parameters() -> None:
    spec, _ = make_spec(4, rewards=RewardParams(throughput_cap_kbps=7_777, uptime_exponent=9,
                                                latency_bound_us=123_456))
    formula = network_json(spec)["weight_formula"]
    assert formula["parameters"] == {"C": 7_777, "p": 9, "B": 123_456}
    for number in ("7777", "^9", "123456"):
        assert number in formula["with_parameters"]
    assert set(formula["fraud_flags"]) == {"throughput_fraud", "heartbeat_bad_sig",
                                           "upload_mismatch", "truncated_stream"}
