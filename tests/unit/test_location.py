"""The location bound (proofs.location): great-circle distances and the light-speed bound."""

from __future__ import annotations

import math

import pytest

from proofs.location import (EARTH_RADIUS_KM, KM_PER_MS_RTT, SLACK_FRACTION, SLACK_KM,
                             allowed_distance_km, distance_km, distance_microdeg_km,
                             max_distance_km, outside_bound)

CITIES = {
    "paris": (48.8566, 2.3522),
    "frankfurt": (50.1109, 8.6821),
    "madrid": (40.4168, -3.7038),
    "london": (51.5074, -0.1278),
    "new_york": (40.7128, -74.0060),
    "los_angeles": (34.0522, -118.2437),
    "tokyo": (35.6762, 139.6503),
    "sydney": (-33.8688, 151.2093),
    "sao_paulo": (-23.5505, -46.6333),
    "singapore": (1.3521, 103.8198),
}

# WGS84 geodesic distances (Vincenty's inverse formula) between the coordinates above, in km.
GEODESIC_KM = [
    ("paris", "frankfurt", 479.2),
    ("paris", "madrid", 1053.0),
    ("frankfurt", "madrid", 1447.3),
    ("paris", "london", 343.9),
    ("london", "new_york", 5585.2),
    ("los_angeles", "new_york", 3944.4),
    ("tokyo", "sydney", 7792.2),
    ("sao_paulo", "singapore", 15999.7),
]


def micro(city: str) -> tuple[int, int]:
    lat, lon = CITIES[city]
    return round(lat * 1_000_000), round(lon * 1_000_000)


@pytest.mark.parametrize("a,b,km", GEODESIC_KM, ids=[f"{a}-{b}" for a, b, _ in GEODESIC_KM])
def test_city_pairs_within_one_percent(a: str, b: str, km: float) -> None:
    assert distance_km(*CITIES[a], *CITIES[b]) == pytest.approx(km, rel=0.01)
    assert distance_km(*CITIES[b], *CITIES[a]) == pytest.approx(km, rel=0.01)
    assert distance_microdeg_km(*micro(a), *micro(b)) == pytest.approx(km, rel=0.01)


def test_same_point_is_zero() -> None:
    assert distance_km(*CITIES["paris"], *CITIES["paris"]) == 0.0
    assert distance_km(90.0, 0.0, 90.0, 123.0) == pytest.approx(0.0, abs=1e-9)  # the pole


def test_antipodes_are_half_the_circumference() -> None:
    half = math.pi * EARTH_RADIUS_KM
    assert distance_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(half)
    assert distance_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(half)
    lat, lon = CITIES["madrid"]
    assert distance_km(lat, lon, -lat, lon + 180.0) == pytest.approx(half)
    assert distance_km(lat, lon, -lat, lon - 180.0) == pytest.approx(half)


def test_longitude_wraps_at_the_date_line() -> None:
    assert distance_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(
        distance_km(0.0, -0.1, 0.0, 0.1))


def test_max_distance_is_100_km_per_ms_of_rtt() -> None:
    assert KM_PER_MS_RTT == 100
    assert max_distance_km(0) == 0.0
    assert max_distance_km(1_000) == pytest.approx(100.0)
    assert max_distance_km(4_800) == pytest.approx(480.0)
    assert max_distance_km(150_000) == pytest.approx(15_000.0)
    with pytest.raises(ValueError):
        max_distance_km(-1)


def test_allowed_distance_adds_the_slack() -> None:
    assert allowed_distance_km(0) == pytest.approx(SLACK_KM)
    assert allowed_distance_km(1_000) == pytest.approx(100 * (1 + SLACK_FRACTION) + SLACK_KM)
    assert allowed_distance_km(1_000) < distance_km(*CITIES["frankfurt"], *CITIES["paris"])


def test_bound_from_frankfurt_excludes_paris_at_1_ms() -> None:
    lat, lon = CITIES["frankfurt"]
    assert outside_bound(lat, lon, *micro("paris"), rtt_min_us=1_000)
    # 480 km needs at least ~4 ms; with the slack, somewhat less.
    assert outside_bound(lat, lon, *micro("paris"), rtt_min_us=3_500)
    assert not outside_bound(lat, lon, *micro("paris"), rtt_min_us=4_000)
    assert not outside_bound(lat, lon, *micro("paris"), rtt_min_us=5_000)
    assert not outside_bound(lat, lon, *micro("frankfurt"), rtt_min_us=1_000)


def test_rtt_zero_leaves_only_the_slack() -> None:
    lat, lon = CITIES["paris"]
    assert not outside_bound(lat, lon, *micro("paris"), rtt_min_us=0)
    # 40 km away (about 0.36 degrees of latitude): inside the slack, even at 0 us.
    near = (round((lat + 0.36) * 1_000_000), round(lon * 1_000_000))
    assert not outside_bound(lat, lon, *near, rtt_min_us=0)
    assert outside_bound(lat, lon, *micro("london"), rtt_min_us=0)


def test_honest_provider_in_the_same_city_is_never_flagged() -> None:
    """Coordinates rounded to 0.1 degree (~11 km) and a fast local RTT: inside the slack."""
    lat, lon = CITIES["frankfurt"]
    rounded = (round(round(lat, 1) * 1_000_000), round(round(lon, 1) * 1_000_000))
    for rtt in (1, 100, 1_000):
        assert not outside_bound(lat, lon, *rounded, rtt_min_us=rtt)


def test_antipodes_need_a_long_rtt() -> None:
    half = math.pi * EARTH_RADIUS_KM  # ~20015 km: ~200 ms of round trip at best
    far = (0, 180_000_000)
    assert outside_bound(0.0, 0.0, *far, rtt_min_us=150_000)
    assert not outside_bound(0.0, 0.0, *far, rtt_min_us=round(half / KM_PER_MS_RTT * 1000))
