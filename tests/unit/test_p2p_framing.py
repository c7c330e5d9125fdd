"""Frame decoding byte by byte, and identities derived from seeds (no sockets, no loop)."""

from __future__ import annotations

import pytest

from p2p.abc import FrameTooLarge, P2PError
from p2p.framing import HEADER_SIZE, FrameDecoder, encode_frame
from p2p.host import peer_id_from_seed


def test_frame_round_trip_when_fed_one_byte_at_a_time() -> None:
    frames = [b"", b"a", b"hello world", bytes(range(256)) * 40]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        while (frame := decoder.next_frame(max_size=1 << 20)) is not None:
            out.append(frame)
    assert out == frames
    assert decoder.buffered == 0


def test_coalesced_frames_come_out_one_at_a_time() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"thr")[:5])
    assert decoder.next_frame(10) == b"one"
    assert decoder.next_frame(10) == b"two"
    assert decoder.next_frame(10) is None
    assert decoder.buffered == 5  # a truncated frame is visible at EOF


def test_oversized_frame_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"x" * 101)[:HEADER_SIZE])  # no body yet
    with pytest.raises(FrameTooLarge):
        decoder.next_frame(max_size=100)


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"x" * 100))
    assert decoder.next_frame(max_size=100) == b"x" * 100


def test_empty_feed_is_a_no_op() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.next_frame(10) is None and decoder.buffered == 0


def test_peer_id_from_seed_is_stable_and_distinct() -> None:
    a = peer_id_from_seed(b"\x01" * 32)
    assert a == peer_id_from_seed(b"\x01" * 32)
    assert a != peer_id_from_seed(b"\x02" * 32)
    assert a.startswith("12D3KooW")  # ed25519 identity multihash, base58


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(P2PError):
        peer_id_from_seed(b"short")
