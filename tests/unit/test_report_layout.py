"""The report layouts of DESIGN §9, byte for byte, and the merkle tree."""

import hashlib
import struct

import pytest

from proofs import merkle
from proofs.errors import DecodeError
from proofs.report import HEADER_SIZE, RECORD_SIZE, Record, ReportHeader


def test_header_layout_is_the_documented_one() -> None:
    header = ReportHeader(b"\x11" * 32, 7, b"\x22" * 32, 3, 1000, b"\x33" * 32, b"\x44" * 32,
                          b"\x55" * 32)
    raw = header.to_bytes()
    assert len(raw) == HEADER_SIZE == 188
    assert raw[:4] == b"BWPR" and raw[4] == 1 and raw[5:8] == b"\0\0\0"
    assert raw[8:40] == b"\x11" * 32
    assert struct.unpack_from("<Q", raw, 40)[0] == 7
    assert raw[48:80] == b"\x22" * 32
    assert struct.unpack_from("<I", raw, 80)[0] == 3
    assert struct.unpack_from("<Q", raw, 84)[0] == 1000
    assert raw[92:124] == b"\x33" * 32 and raw[124:156] == b"\x44" * 32
    assert raw[156:188] == b"\x55" * 32
    assert header.hash() == hashlib.sha256(raw).digest()
    assert ReportHeader.from_bytes(raw) == header


def test_record_layout_is_the_documented_one() -> None:
    record = Record(b"\x01" * 32, b"\x02" * 32, 9_950, 12_345, 50_000, 20_000, 2**40, 0x12)
    raw = record.to_bytes()
    assert len(raw) == RECORD_SIZE == 88
    assert struct.unpack("<32s32sHIIIQH", raw) == (b"\x01" * 32, b"\x02" * 32, 9_950, 12_345,
                                                  50_000, 20_000, 2**40, 0x12)
    assert Record.from_bytes(raw) == record


@pytest.mark.parametrize("raw", [b"", b"BWPR", b"XXXX" + bytes(184),
                                 b"BWPR\x02" + bytes(183), b"BWPR\x01\x00\x00\x01" + bytes(180)])
def test_bad_headers_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        ReportHeader.from_bytes(raw)


def test_record_out_of_range_is_decode_error() -> None:
    raw = struct.pack("<32s32sHIIIQH", bytes(32), bytes(32), 10_001, 0, 0, 0, 0, 0)
    with pytest.raises(DecodeError):
        Record.from_bytes(raw)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_merkle_proofs_verify_for_every_leaf(count: int) -> None:
    leaves = [bytes([i]) * 88 for i in range(count)]
    root = merkle.root(leaves)
    for index, leaf in enumerate(leaves):
        path = merkle.proof(leaves, index)
        assert merkle.verify(root, leaf, index, count, path)
        assert not merkle.verify(root, b"\xff" * 88, index, count, path)
        if count > 1:
            assert not merkle.verify(root, leaf, (index + 1) % count, count, path)


def test_merkle_shape_matches_design() -> None:
    a, b, c = b"a", b"b", b"c"
    h = lambda d: hashlib.sha256(d).digest()  # noqa: E731
    la, lb, lc = h(b"\0a"), h(b"\0b"), h(b"\0c")
    # odd node is promoted unchanged
    assert merkle.root([a, b, c]) == h(b"\1" + h(b"\1" + la + lb) + lc)
    assert merkle.root([]) == bytes(32)
    assert merkle.root([a]) == la
