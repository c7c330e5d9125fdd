"""Probe protocol values and arithmetic (proofs/probe.py): codec, peer ids, schedule, rates."""

from __future__ import annotations

import random

import pytest

from proofs import probe as wire
from proofs.challenges import Keystream
from proofs.errors import DecodeError
from proofs.signing import public_key
from tests.factories import make_registration, make_spec, seed_for

REQUESTS: list[wire.Request] = [
    wire.HeartbeatRequest(7, b"n" * 32, b"v" * 32),
    wire.HeartbeatRequest(2**64 - 1, bytes(32), bytes(32)),
    wire.EchoRequest(b""),
    wire.EchoRequest(b"e" * wire.MAX_ECHO_PAYLOAD),
    wire.DownRequest(b"s" * 32, 1, b"t" * wire.TOKEN_SIZE),
    wire.DownRequest(b"s" * 32, wire.MAX_WINDOW_MS, bytes(wire.TOKEN_SIZE)),
    wire.UpRequest(2000, b"t" * wire.TOKEN_SIZE),
    wire.UpResultRequest(b"t" * wire.TOKEN_SIZE),
    wire.InfoRequest(),
]


def _responses() -> list[wire.Response]:
    spec, _ = make_spec()
    registration, _ = make_registration(spec, "p1")
    return [
        wire.HeartbeatReply(b"x" * 64),
        wire.EchoReply(b"abc"),
        wire.SessionReply(),
        wire.SessionReply(2**64 - 1),
        wire.UpReport(0, b"d" * 32),
        wire.UpReport(2**64 - 1, b"d" * 32),
        wire.InfoReply(registration),
        wire.ErrorReply("busy"),
    ]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_request_round_trip(message: wire.Request) -> None:
    assert wire.decode_request(message.encode()) == message


@pytest.mark.parametrize("message", _responses(), ids=lambda m: type(m).__name__)
def test_response_round_trip(message: wire.Response) -> None:
    assert wire.decode_response(message.encode()) == message


def test_requests_and_responses_do_not_cross() -> None:
    for request in REQUESTS:
        with pytest.raises(DecodeError) as caught:
            wire.decode_response(request.encode())
        assert caught.value.reason == "unexpected"
    for response in _responses():
        with pytest.raises(DecodeError):
            wire.decode_request(response.encode())


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\xc1", b"\x91", b"\x90", b"\x92\x20", b"\xa3abc",
    wire.DownRequest(b"s" * 32, 1, b"t" * 16).encode()[:-1],
    wire.UpRequest(1, b"t" * 16).encode()[:-1],  # a token one byte short
    b"\x92\x25\x01",  # an up request without a token (version 1's)
    b"\x93\x24" + b"\xc4\x20" + b"s" * 32 + b"\x01",  # a down request without a token
    wire.EchoRequest(b"e").encode() + b"\x00",
    b"\x94\x24\xc4\x20" + b"s" * 32 + b"\x00\xc4\x10" + b"t" * 16,  # duration 0: no window
    b"\x94\x24\xc4\x20" + b"s" * 32 + b"\xce\x00\x01\x00\x00\xc4\x10" + b"t" * 16,  # too long
    b"\x92\x22\xc4\x41" + b"e" * 65,  # echo payload over the limit
    b"\x91\x63",  # unknown tag
    b"\x91" + b"\x91" * 5000,  # deep nesting
    b"\xc4" + b"x" * 300,  # over the request size limit
])
def test_bad_request_bytes_raise_only_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.decode_request(data)


def test_info_reply_must_carry_a_registration() -> None:
    from proofs.codec import pack

    with pytest.raises(DecodeError):
        wire.decode_response(pack([wire.TAG_INFO_REPLY, b"\x91\x06"]))
    with pytest.raises(DecodeError):
        wire.decode_response(pack([wire.TAG_INFO_REPLY, pack([2, 1])]))


def test_random_and_mutated_bytes_raise_only_decode_error() -> None:
    rng = random.Random(1234)
    samples = [m.encode() for m in REQUESTS] + [m.encode() for m in _responses()]
    for _ in range(3000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            mutated = bytearray(rng.choice(samples))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
        for decode in (wire.decode_request, wire.decode_response):
            try:
                decode(data)
            except DecodeError:
                pass


def test_peer_id_matches_libp2p() -> None:
    from p2p.host import peer_id_from_seed

    for name in ("a", "b", "c"):
        seed = seed_for(name)
        key = public_key(seed)
        peer_id = wire.peer_id_from_public_key(key)
        assert peer_id == peer_id_from_seed(seed)
        assert peer_id.startswith("12D3KooW")
        assert wire.public_key_from_peer_id(peer_id) == key


@pytest.mark.parametrize("peer_id", [
    "", "0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # a sha256 (RSA-style) id
    "12D3KooW",
])
def test_bad_peer_ids(peer_id: str) -> None:
    with pytest.raises(DecodeError):
        wire.public_key_from_peer_id(peer_id)


def test_heartbeat_offsets_are_deterministic_and_inside_the_round() -> None:
    seed, other_seed = b"s" * 32, b"t" * 32
    providers = [public_key(seed_for(f"p{i}")) for i in range(20)]
    offsets = []
    for provider in providers:
        for round_index in range(50):
            offset = wire.heartbeat_offset(seed, provider, round_index, 3.0)
            assert 0.0 <= offset < 3.0
            assert offset == wire.heartbeat_offset(seed, provider, round_index, 3.0)
            offsets.append(offset)
    # Spread over the round, and a different epoch seed gives a different schedule.
    assert min(offsets) < 0.3 and max(offsets) > 2.7
    assert len({round(o, 9) for o in offsets}) == len(offsets)
    assert [wire.heartbeat_offset(other_seed, providers[0], r, 3.0) for r in range(5)] != \
        [wire.heartbeat_offset(seed, providers[0], r, 3.0) for r in range(5)]


def test_heartbeat_offset_is_sha256_of_seed_provider_round() -> None:
    import hashlib
    import struct

    seed, provider = b"s" * 32, b"p" * 32
    digest = hashlib.sha256(seed + provider + struct.pack(">I", 9)).digest()
    expected = struct.unpack(">Q", digest[:8])[0] / 2.0**64 * 60.0
    assert wire.heartbeat_offset(seed, provider, 9, 60.0) == expected


def _timeline(rates: list[tuple[float, float]], step: float = 0.01) -> list[tuple[float, int]]:
    """Cumulative bytes every ``step`` seconds from (duration, bytes per second) segments."""
    points, t, total = [], 0.0, 0.0
    for duration, rate in rates:
        for _ in range(round(duration / step)):
            t += step
            total += rate * step
            points.append((round(t, 6), int(total)))
    return points


def test_steady_rate_discards_slow_start() -> None:
    # 0.5 s of slow start at 1 MB/s, then 12.5 MB/s (100 Mbit/s) to the end of a 2 s window.
    timeline = _timeline([(0.5, 1e6), (1.5, 12.5e6)])
    assert wire.steady_kbps(timeline, 0.0, 2.0, 0.25) == pytest.approx(100_000, rel=0.01)
    # Without the warm-up slice the slow start drags the rate down.
    assert wire.steady_kbps(timeline, 0.0, 2.0, 0.0) < 80_000


def test_steady_rate_ignores_points_after_the_window_and_offsets_start() -> None:
    timeline = [(100 + t, b) for t, b in _timeline([(1.0, 5e6), (1.0, 50e6)])]
    assert wire.steady_kbps(timeline, 100.0, 1.0, 0.5) == pytest.approx(40_000, rel=0.02)


@pytest.mark.parametrize("timeline", [[], [(0.1, 1000)], [(0.1, 0), (0.9, 0)]])
def test_steady_rate_is_zero_without_a_measurable_span(timeline: list[tuple[float, int]]) -> None:
    assert wire.steady_kbps(timeline, 0.0, 1.0, 0.25) == 0


def test_steady_rate_uses_the_last_point_inside_the_warmup() -> None:
    # Points at 0.2 s (1000 B) and 1.0 s (101000 B): 100000 B over 0.8 s = 1000 kbit/s.
    assert wire.steady_kbps([(0.2, 1000), (1.0, 101_000)], 0.0, 1.0, 0.25) == 1000


def test_upload_rate_ends_when_the_receiver_confirmed() -> None:
    # 1 MB/s written for 1 s, but the last 0.5 MB was still queued here when the window
    # closed: it reached the provider 0.5 s later. The rate covers the whole delivery.
    timeline = [(t / 10, int(t * 100_000)) for t in range(1, 11)]
    rate = wire.delivered_kbps(timeline, 0.0, 1.0, 0.2, delivered_at=1.5)
    assert rate == int(800_000 * 8 / 1000 / 1.3)
    assert wire.steady_kbps(timeline, 0.0, 1.0, 0.2) == 8000  # what the sender alone claims
    assert wire.delivered_kbps([], 0.0, 1.0, 0.2, 1.0) == 0
    assert wire.delivered_kbps(timeline, 0.0, 1.0, 0.2, delivered_at=0.1) == 0


def _feed(sampler: wire.ChunkSampler, data: bytes, piece: int) -> None:
    for offset in range(0, len(data), piece):
        sampler.feed(offset, memoryview(data)[offset:offset + piece])


def test_sampler_accepts_the_keystream_and_stays_bounded() -> None:
    seed = b"k" * 32
    data = Keystream(seed).next(8 << 20)
    sampler = wire.ChunkSampler(random.Random(5), first_gap=1024, max_samples=64)
    _feed(sampler, data, 100_000)
    assert 16 <= len(sampler.samples) < 64
    offsets = [o for o, _ in sampler.samples]
    assert offsets == sorted(offsets) and offsets[-1] > len(data) // 2
    assert all(0 < len(chunk) <= 32 for _, chunk in sampler.samples)
    assert sampler.mismatches(seed) == 0


def test_sampler_catches_zeros_other_seeds_and_a_faked_tail() -> None:
    seed = b"k" * 32
    honest = Keystream(seed).next(4 << 20)
    fakes = {
        "zeros": bytes(len(honest)),
        "other_seed": Keystream(b"o" * 32).next(len(honest)),
        "shifted": Keystream(seed).at(1, len(honest)),
        "tail_10pct": honest[: len(honest) * 9 // 10] + bytes(len(honest) // 10 + 1),
    }
    for name, data in fakes.items():
        sampler = wire.ChunkSampler(random.Random(name))
        _feed(sampler, data[: len(honest)], 65_536)
        assert sampler.mismatches(seed) > 0, name


def test_keystream_next_into_continues_the_stream() -> None:
    seed = b"q" * 32
    reference = Keystream(seed).next(5000)
    stream = Keystream(seed)
    first, second = bytearray(1000), bytearray(4000)
    stream.next_into(first)
    stream.next_into(memoryview(second))
    assert bytes(first) + bytes(second) == reference
