"""A provider behind a 10 Mbit/s link that tries to look faster is never credited for it.

Each cheater is a real agent process (``tests/adversarial/shaped_cheater_agent.py``) in the
provider namespace of a testbed shaped with tbf to 10 Mbit/s both ways; the prober is the
product ``validator probe`` in the validator namespace. Cheating on a direction scores 0 there
with the named flag; the honest agent is credited at most the link's rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import ProbeReport, Testbed, require_root_tools

RATE_MBIT = 10.0
CEILING_KBPS = 10_500  # the set rate plus 5%: TCP goodput is ~4.4% below it

_UNAVAILABLE = require_root_tools()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


@pytest.fixture(scope="module")
def shaped() -> Iterator[tuple[Testbed, Path]]:
    with Testbed(RATE_MBIT) as bed:
        yield bed, bed.write_network_spec(echo_count=2, throughput_seconds=1.0)
    assert not bed.namespaces_exist()


_ports = iter(range(4100, 4200, 2))


def probe_cheater(shaped: tuple[Testbed, Path], cheater: str) -> ProbeReport:
    bed, network = shaped
    control = next(_ports)
    provider = bed.start_provider(network, module="tests.adversarial.shaped_cheater_agent",
                                  extra_args=["--cheater", cheater], key_name=f"{cheater}.key",
                                  control_port=control, data_port=control + 1)
    try:
        return bed.probe_provider(provider, network, timeout=40)
    finally:
        provider.stop()


@pytest.mark.parametrize("cheater", ["inflated-upload-claim", "early-upload-report"])
def test_claiming_upload_bytes_it_did_not_get_scores_zero(
        shaped: tuple[Testbed, Path], cheater: str) -> None:
    report = probe_cheater(shaped, cheater)
    assert report.up_kbps == 0
    assert report.flags == ("upload_mismatch",)
    assert report.heartbeat_ok and 0 < report.down_kbps <= CEILING_KBPS


@pytest.mark.parametrize("cheater", ["zeros", "cached-block"])
def test_download_from_zeros_or_a_cache_is_fraud(shaped: tuple[Testbed, Path],
                                                 cheater: str) -> None:
    report = probe_cheater(shaped, cheater)
    assert report.down_kbps == 0
    assert report.flags == ("throughput_fraud",)
    assert report.heartbeat_ok and 0 < report.up_kbps <= CEILING_KBPS


def test_honest_provider_is_never_credited_above_its_link(
        shaped: tuple[Testbed, Path]) -> None:
    report = probe_cheater(shaped, "honest")
    assert report.flags == ()
    assert 0 < report.down_kbps <= CEILING_KBPS
    assert 0 < report.up_kbps <= CEILING_KBPS
