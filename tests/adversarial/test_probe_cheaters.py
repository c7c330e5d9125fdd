"""Cheating providers score 0 (or not-ok) on the metric they fake, and carry the named flag.

Each cheater is the real agent with one piece swapped (tests/adversarial/cheaters.py); the
prober is the product ``probe_provider`` over libp2p and the TCP data port on 127.0.0.1.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2p.host import open_libp2p_host
from proofs.report import Flag
from tests.adversarial.cheaters import (PROBER, ConstantStreamer, InflatedCountReceiver,
                                        OtherKeySigner, ReplayingSigner, StaleSeedStreamer,
                                        TruncatingStreamer, WrongDigestReceiver, ZeroStreamer,
                                        running_provider)
from validator.prober import ProbeResult, discover_target, probe_provider
from validator.provider import ProbeService
from validator.spec import ProbeParams

PARAMS = ProbeParams(heartbeat_timeout_seconds=5.0, echo_count=2, throughput_seconds=0.4,
                     warmup_fraction=0.25)


async def probe_times(tmp_path: Path, factory: type[ProbeService], times: int,
                      data_port: int | None = None) -> list[ProbeResult]:
    with trio.fail_after(30):
        async with running_provider(tmp_path, factory) as addr, \
                open_libp2p_host(PROBER, "/ip4/127.0.0.1/tcp/0") as transport:
            target, _ = await discover_target(transport, addr)
            if data_port is not None:
                target = replace(target, data_port=data_port)
            return [await probe_provider(transport, target, network_id="testnet", epoch=1,
                                         validator_seed=PROBER, params=PARAMS)
                    for _ in range(times)]


@pytest.mark.parametrize("cheater, flag", [
    (ZeroStreamer, Flag.THROUGHPUT_FRAUD),
    (ConstantStreamer, Flag.THROUGHPUT_FRAUD),
    (TruncatingStreamer, Flag.TRUNCATED_STREAM),
], ids=lambda v: getattr(v, "__name__", str(v)))
async def test_faked_download_scores_zero_and_is_flagged(
        tmp_path: Path, cheater: type[ProbeService], flag: int) -> None:
    (result,) = await probe_times(tmp_path, cheater, 1)
    assert result.down_kbps == 0
    assert result.flags == flag
    # Only the faked metric suffers.
    assert result.heartbeat_ok and result.up_kbps > 0 and result.rtt_min_us > 0


async def test_keystream_of_an_earlier_session_is_fraud(tmp_path: Path) -> None:
    first, second = await probe_times(tmp_path, StaleSeedStreamer, 2)
    assert first.flags == 0 and first.down_kbps > 0  # the first session's seed was the real one
    assert second.down_kbps == 0
    assert second.flags == Flag.THROUGHPUT_FRAUD


@pytest.mark.parametrize("cheater", [WrongDigestReceiver, InflatedCountReceiver],
                         ids=lambda v: v.__name__)
async def test_faked_upload_report_scores_zero_and_is_flagged(
        tmp_path: Path, cheater: type[ProbeService]) -> None:
    (result,) = await probe_times(tmp_path, cheater, 1)
    assert result.up_kbps == 0
    assert result.flags == Flag.UPLOAD_MISMATCH
    assert result.heartbeat_ok and result.down_kbps > 0


async def test_heartbeat_signed_with_another_key(tmp_path: Path) -> None:
    (result,) = await probe_times(tmp_path, OtherKeySigner, 1)
    assert not result.heartbeat_ok
    assert result.flags == Flag.HEARTBEAT_BAD_SIG
    assert result.down_kbps > 0 and result.up_kbps > 0


async def test_replayed_heartbeat_signature(tmp_path: Path) -> None:
    first, second = await probe_times(tmp_path, ReplayingSigner, 2)
    assert first.heartbeat_ok and first.flags == 0
    assert not second.heartbeat_ok
    assert second.flags == Flag.HEARTBEAT_BAD_SIG


async def test_unreachable_data_port(tmp_path: Path) -> None:
    # Bound but never listening: connections are refused, and no other process can take
    # the port meanwhile (closing it first let a concurrent test's listener land there).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        (result,) = await probe_times(tmp_path, ProbeService, 1, data_port=port)
    assert result.heartbeat_ok and result.rtt_min_us > 0
    assert result.down_kbps == result.up_kbps == 0
    assert result.flags == Flag.DATA_PORT_UNREACHABLE

