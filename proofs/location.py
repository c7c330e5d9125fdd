"""The location bound (DESIGN §6 "Location"): how far a provider can be from a validator,
given the fastest round trip that validator measured to it. Pure: no I/O, no clock.

Light in fibre covers about 200 km per ms one way, so a round trip of ``t`` ms puts the
provider at most ``t * KM_PER_MS_RTT`` km away (``KM_PER_MS_RTT = 100``). RTT only ever gives
an *upper* bound on distance: queuing, routing detours and a relay all add time, which widens
the bound and never narrows it. So a claimed location is judged only by "could the provider be
there at all?": a provider claiming to be far from a validator that reaches it in 1 ms is
caught; one claiming to be near a validator it is really far from is caught by the *other*
validators, those close to where it really is (see tests/adversarial/test_relay_cheater.py).

Slack: an honest provider must never be flagged because coordinates are rounded, a city
spans tens of km, the validator's published coordinates are its city's rather than its rack's,
or the great-circle model is a sphere. The allowed distance is therefore
``max_distance_km(rtt) * (1 + SLACK_FRACTION) + SLACK_KM``.

Coordinates: validators' come from the spec in degrees (floats); providers' from their
registration in microdegrees (ints). Distances use the haversine formula on a sphere of the
Earth's mean radius; against WGS84 geodesics it errs by under 0.5%, far below the slack.
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
KM_PER_MS_RTT = 100.0  # ~200 km/ms one way in fibre, halved for the round trip
SLACK_KM = 50.0  # coordinate rounding, a city's extent, the validator's own placement
SLACK_FRACTION = 0.10  # model error of the sphere and of "c in fibre"
MICRODEGREES = 1_000_000


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in km between two points given in degrees.

    Same point: 0.0. Antipodes: half the circumference (~20015 km); rounding that would push
    the haversine term past 1 is clamped, so it never raises. Longitudes may wrap
    (179.9 and -179.9 are 0.2 degrees apart).
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = (math.sin(d_phi / 2) ** 2
         + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def distance_microdeg_km(lat1_micro: int, lon1_micro: int, lat2_micro: int,
                         lon2_micro: int) -> float:
    """``distance_km`` for coordinates in microdegrees (as in ``Registration``)."""
    return distance_km(lat1_micro / MICRODEGREES, lon1_micro / MICRODEGREES,
                       lat2_micro / MICRODEGREES, lon2_micro / MICRODEGREES)


def max_distance_km(rtt_min_us: int) -> float:
    """The farthest a provider can be, in km, if a round trip to it took ``rtt_min_us``.

    ``rtt_min_us = 0`` gives 0 km (only the slack of ``allowed_distance_km`` remains).
    A negative RTT is our bug and raises ValueError.
    """
    if rtt_min_us < 0:
        raise ValueError(f"negative RTT: {rtt_min_us} us")
    return rtt_min_us / 1000 * KM_PER_MS_RTT


def allowed_distance_km(rtt_min_us: int) -> float:
    """``max_distance_km`` plus the slack: beyond this, a claimed location is flagged."""
    return max_distance_km(rtt_min_us) * (1 + SLACK_FRACTION) + SLACK_KM


def outside_bound(validator_lat: float, validator_lon: float, claimed_lat_micro: int,
                  claimed_lon_micro: int, rtt_min_us: int) -> bool:
    """True if the claimed location is farther from the validator than its fastest round trip
    allows (``allowed_distance_km``).

    ``validator_lat``/``validator_lon`` in degrees (the spec's ``ValidatorInfo``); the claim in
    microdegrees (the provider's ``Registration``); ``rtt_min_us`` the minimum RTT this
    validator measured. The caller must not call this without a measured RTT: "no answer" is
    not "0 us away" (with 0 the bound is the slack alone, 50 km).
    """
    claimed = distance_km(validator_lat, validator_lon, claimed_lat_micro / MICRODEGREES,
                          claimed_lon_micro / MICRODEGREES)
    return claimed > allowed_distance_km(rtt_min_us)
