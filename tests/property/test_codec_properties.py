"""Decoding arbitrary bytes only ever raises our DecodeError; encodings round-trip."""

from dataclasses import replace

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs.errors import DecodeError
from proofs.messages import (OBSERVATION, BundleNotice, FinalReport, MeasurementBundle,
                             NoticeList, Observation, Proposal, ProviderSet, ReportSignature,
                             decode_message, pack_observations, unpack_observations)
from proofs.report import HEADER_SIZE, ReportHeader

keys = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, 2**32 - 1)
observations = st.builds(lambda p, s, d: Observation(p, s, s // 2, d, d // 2, d, d, 0),
                         keys, u32, u32)


@given(st.binary(max_size=4096))
@settings(max_examples=600)
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    for bare in (False, True):
        try:
            decode_message(data, bare=bare)
        except DecodeError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=80)
    | st.text(max_size=20) | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@given(st.lists(msgpack_values, max_size=10), st.integers(0, 8))
@settings(max_examples=600)
def test_well_formed_msgpack_of_wrong_shape_is_decode_error(items: list, tag: int) -> None:
    for bare in (False, True):
        try:
            decode_message(msgpack.packb([tag] + items, use_bin_type=True), bare=bare)
        except DecodeError:
            pass


@given(keys, st.integers(0, 2**63), keys, st.lists(observations, max_size=20, unique_by=lambda o: o.provider))
def test_bundle_round_trips(digest: bytes, epoch: int, validator: bytes, obs: list) -> None:
    bundle = MeasurementBundle(digest, epoch, validator,
                               tuple(sorted(obs, key=lambda o: o.provider)),
                               beacon=b"\x05" * 80, signature=b"\x07" * 64)
    assert decode_message(bundle.encode()) == bundle


@given(keys, st.integers(0, 2**63), keys, keys, st.binary(min_size=64, max_size=64))
def test_signature_round_trips(d: bytes, e: int, h: bytes, s: bytes, sig: bytes) -> None:
    header = ReportHeader(d, e, h, 1, 2, h, h, h).to_bytes()
    message = ReportSignature(header, s, sig)
    decoded = decode_message(message.encode())
    assert decoded == message
    assert isinstance(decoded, ReportSignature)
    assert (decoded.epoch, decoded.config_digest) == (e, d)  # read from the signed header


@given(st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE), keys,
       st.binary(min_size=64, max_size=64))
def test_a_signature_whose_header_does_not_parse_is_a_decode_error(
        header: bytes, s: bytes, sig: bytes) -> None:
    data = ReportSignature(header, s, sig).encode()
    try:
        ReportHeader.from_bytes(header)
    except DecodeError:
        try:
            decode_message(data)
        except DecodeError as exc:
            assert exc.reason == "bad_header"
        else:
            raise AssertionError("decoded a signature over an unparseable header")
    else:
        assert decode_message(data) == ReportSignature(header, s, sig)


@given(st.lists(keys, min_size=1, max_size=30, unique=True),
       st.lists(st.binary(min_size=88, max_size=88), max_size=30))
def test_bare_decoding_refuses_carried_lists_before_reading_them(
        hashes: list, records: list) -> None:
    """Gossip (``bare=True``): a final with records or a provider set, or a proposal with a
    provider set, is refused by name, whatever the entries are (not even valid ones)."""
    header = ReportHeader(bytes(32), 1, bytes(32), 0, 0, bytes(32), bytes(32),
                          bytes(32)).to_bytes()
    provider_set = tuple(sorted(hashes))
    with_set = FinalReport(header, (), (), provider_set).encode()
    junk = msgpack.packb([5, header, [], [b"x"] * len(hashes), []], use_bin_type=True)
    proposal = Proposal(bytes(32), 1, 0, bytes(32), (), header, bytes(64), provider_set)
    expected = [(with_set, "carries_provider_set"), (junk, "carries_records"),
                (proposal.encode(), "carries_provider_set")]
    if records:
        expected.append((FinalReport(header, (), tuple(records)).encode(), "carries_records"))
    for data, reason in expected:
        try:
            decode_message(data, bare=True)
        except DecodeError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"bare decode accepted a message that {reason}")
    assert decode_message(FinalReport(header, ()).encode(), bare=True) == FinalReport(header, ())


def test_oversized_is_rejected_before_decoding() -> None:
    big = FinalReport(b"BWPR\x01" + bytes(183), (), tuple(bytes(88) for _ in range(100)))
    try:
        decode_message(big.encode(), max_bytes=1000)
    except DecodeError as exc:
        assert exc.reason == "oversized"
    else:
        raise AssertionError("oversized message decoded")


@given(keys, st.integers(0, 2**63), keys, keys, st.binary(min_size=64, max_size=64))
def test_bundle_notice_round_trips(d: bytes, e: int, v: bytes, h: bytes, sig: bytes) -> None:
    notice = BundleNotice(d, e, v, h, sig)
    assert decode_message(notice.encode()) == notice


@given(st.lists(keys, max_size=50, unique=True))
def test_provider_set_round_trips(hashes: list) -> None:
    message = ProviderSet(tuple(sorted(hashes)))
    assert decode_message(message.encode()) == message


@given(st.lists(observations, min_size=2, max_size=20, unique_by=lambda o: o.provider),
       st.data())
def test_packed_observations_reject_what_a_bundle_may_not_hold(obs: list, data) -> None:
    """Entries must be whole, sorted and distinct by provider, with heartbeats ok <= sent."""
    ordered = tuple(sorted(obs, key=lambda o: o.provider))
    packed = pack_observations(ordered)
    assert unpack_observations(packed) == ordered
    cut = data.draw(st.integers(1, OBSERVATION.size - 1))
    broken = [packed[:-cut],
              pack_observations(tuple(reversed(ordered))),
              pack_observations(ordered + ordered[-1:]),
              pack_observations((replace(ordered[0], heartbeats_sent=0, heartbeats_ok=1),)
                                + ordered[1:])]
    for blob in broken:
        try:
            unpack_observations(blob)
        except DecodeError as exc:
            assert exc.reason == "malformed"
        else:
            raise AssertionError("accepted a malformed observation list")


@given(st.lists(st.tuples(keys, st.integers(0, 2**63), keys, keys,
                          st.binary(min_size=64, max_size=64)), max_size=8))
def test_notice_list_round_trips(entries: list) -> None:
    message = NoticeList(tuple(BundleNotice(*e) for e in entries))
    assert decode_message(message.encode()) == message


def test_notice_list_entries_must_be_notices() -> None:
    wrong = ProviderSet((b"\x02" * 32,))  # well formed, small, of another type
    for entry in (wrong.encode(), b"\xc1", 7):
        try:
            decode_message(msgpack.packb([9, [entry]], use_bin_type=True))
        except DecodeError as exc:
            assert exc.reason == "malformed"
        else:
            raise AssertionError(f"accepted {entry!r} as a notice")
