"""The pool program's client side: layouts at the README's offsets, PDAs, instruction bytes,
transaction sizes measured on real transactions, payout rounding, error names."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from fractions import Fraction

import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from proofs.report import Record, ReportHeader
from validator import pool_program as pp

PROGRAM = Pubkey.from_bytes(hashlib.sha256(b"pool program").digest())
POOL = Pubkey.from_bytes(bytes(range(32)))
U64 = 2**64 - 1


def key(i: int) -> bytes:
    return i.to_bytes(2, "big") + bytes(30)


def pk(i: int) -> Pubkey:
    return Pubkey.from_bytes(bytes([i]) * 32)


def header(epoch: int = 7, count: int = 3, total: int = 100) -> bytes:
    return ReportHeader(b"\x11" * 32, epoch, b"\x22" * 32, count, total, b"\x33" * 32, b"\x44" * 32,
                        b"\x55" * 32).to_bytes()


def put(buf: bytearray, offset: int, value: bytes) -> None:
    buf[offset:offset + len(value)] = value


def wire_size(ixs: list[Instruction], payer: Pubkey) -> int:
    msg = Message.new_with_blockhash(ixs, payer, Hash.default())
    return len(bytes(VersionedTransaction.populate(msg, [Signature.default()] * msg.header.num_required_signatures)))


# -- layouts, written at the README's offsets by hand -------------------------------------


def test_pool_state_reads_every_field_at_its_offset() -> None:
    raw = bytearray(pp.POOL_SIZE)
    put(raw, 0, b"BWP:POOL")
    for offset, i in ((8, 1), (40, 2), (72, 3), (104, 4)):
        put(raw, offset, bytes(pk(i)))
    put(raw, 136, b"\x99" * 32)
    for offset, value in ((168, 1000), (176, 4), (184, 9), (192, 2), (200, 700), (208, 300)):
        put(raw, offset, struct.pack("<Q", value))
    put(raw, 216, struct.pack("<I", 5))
    put(raw, 220, bytes([254, 253, 1]))
    state = pp.PoolState.from_bytes(bytes(raw))
    assert (state.authority, state.mint, state.vault, state.validator_set) == (pk(1), pk(2), pk(3), pk(4))
    assert state.last_header_hash == b"\x99" * 32
    assert (state.epoch_budget, state.claim_window, state.last_accepted_epoch, state.accepted_count,
            state.reserved_outstanding, state.total_paid) == (1000, 4, 9, 2, 700, 300)
    assert (state.set_index, state.authority_bump, state.vault_bump, state.version) == (5, 254, 253, 1)
    assert state.unreserved(1000) == 300 and state.unreserved(10) == 0


def test_validator_set_reads_written_keys_only() -> None:
    n, written = 7, 5
    raw = bytearray(pp.set_size(n))
    assert len(raw) == 88 + 32 * 7
    put(raw, 0, b"BWP:VSET")
    put(raw, 8, bytes(POOL))
    put(raw, 40, b"\xdd" * 32)
    put(raw, 72, struct.pack("<IHHHHB", 2, n, pp.set_f(n), pp.set_threshold(n), written, 251))
    for i in range(written):
        put(raw, 88 + 32 * i, key(i + 1))
    vset = pp.ValidatorSetState.from_bytes(bytes(raw))
    assert (vset.pool, vset.config_digest, vset.set_index) == (POOL, b"\xdd" * 32, 2)
    assert (vset.n, vset.f, vset.threshold, vset.keys_written, vset.bump) == (7, 2, 5, 5, 251)
    assert vset.keys == tuple(key(i + 1) for i in range(5)) and not vset.complete
    with pytest.raises(pp.PoolFormatError):
        pp.ValidatorSetState.from_bytes(bytes(raw) + bytes(32))  # size disagrees with n
    put(raw, 82, struct.pack("<H", 8))
    with pytest.raises(pp.PoolFormatError):
        pp.ValidatorSetState.from_bytes(bytes(raw))  # more written than n


def test_epoch_report_reads_every_field_and_its_signers() -> None:
    h = header(epoch=12, count=70_000, total=5_000)
    raw = bytearray(pp.REPORT_SIZE)
    put(raw, 0, b"BWP:REPT")
    put(raw, 8, bytes(POOL))
    put(raw, 40, struct.pack("<Q", 12))
    put(raw, 48, hashlib.sha256(h).digest())
    put(raw, 80, h)
    put(raw, 268, bytes([2, 250]) + struct.pack("<H", 3))
    put(raw, 272, bytes([0b0000_0101]) + bytes(30) + bytes([0x80]))  # keys 0, 2 and 255
    put(raw, 304, struct.pack("<IH", 1, 0b11))
    put(raw, 312, struct.pack("<QQI", 900, 400, 2))
    put(raw, 336, struct.pack("<Q", 777))
    put(raw, 344, bytes(pk(9)))
    put(raw, 376, struct.pack("<Q", 4))
    report = pp.EpochReportState.from_bytes(bytes(raw))
    assert (report.pool, report.epoch, report.header, report.header_hash) == (POOL, 12, h, hashlib.sha256(h).digest())
    assert report.accepted and report.status == pp.ReportStatus.ACCEPTED and report.bump == 250
    assert (report.signer_count, report.set_index, report.chunk_mask, report.chunks) == (3, 1, 3, [0, 1])
    assert (report.reserved, report.claimed_total, report.claimed_count) == (900, 400, 2)
    assert (report.accepted_slot, report.poster, report.accepted_seq) == (777, pk(9), 4)
    assert (report.record_count, report.total_weight) == (70_000, 5_000)
    keys = [key(i) for i in range(256)]
    assert report.signers(keys) == [key(0), key(2), key(255)]
    assert report.signers(keys[:4]) == [key(0), key(2)] and not report.has_signer(256)
    put(raw, 268, b"\x01")
    assert not pp.EpochReportState.from_bytes(bytes(raw)).accepted


def test_claim_map_bits_are_report_wide_indexes() -> None:
    raw = bytearray(pp.CLAIMS_SIZE)
    put(raw, 0, b"BWP:CLMS")
    put(raw, 8, bytes(pk(5)))
    put(raw, 40, struct.pack("<HB", 1, 249))
    put(raw, 48, bytes(pk(6)))
    put(raw, 80 + 2, bytes([0b1000_0001]))  # i = 16 and i = 23 of chunk 1
    claims = pp.ClaimMapState.from_bytes(bytes(raw))
    assert (claims.report, claims.chunk, claims.bump, claims.payer) == (pk(5), 1, 249, pk(6))
    base = pp.RECORDS_PER_CHUNK
    assert [i - base for i in range(base, base + 32) if claims.is_claimed(i)] == [16, 23]
    with pytest.raises(ValueError):
        claims.is_claimed(16)  # chunk 0's bit is in another account


@pytest.mark.parametrize("parse,tag,size", [
    (pp.PoolState.from_bytes, b"BWP:POOL", pp.POOL_SIZE),
    (pp.EpochReportState.from_bytes, b"BWP:REPT", pp.REPORT_SIZE),
    (pp.ClaimMapState.from_bytes, b"BWP:CLMS", pp.CLAIMS_SIZE),
    (pp.ValidatorSetState.from_bytes, b"BWP:VSET", pp.set_size(1)),
])
def test_wrong_tag_or_size_is_our_format_error(parse: Callable[[bytes], object], tag: bytes, size: int) -> None:
    good = bytearray(size)
    put(good, 0, tag)
    if tag == b"BWP:VSET":
        put(good, 76, struct.pack("<HHH", 1, 0, 1))
    parse(bytes(good))
    for bad in (b"", bytes(good[:-1]), bytes(good) + b"\x00", b"BWP:XXXX" + bytes(good[8:]), bytes(size)):
        with pytest.raises(pp.PoolFormatError):
            parse(bad)


# -- addresses ----------------------------------------------------------------------------


def test_pdas_use_the_readme_seeds() -> None:
    expect = {
        pp.set_address(PROGRAM, POOL, 3): [b"set", bytes(POOL), (3).to_bytes(4, "little")],
        pp.vault_address(PROGRAM, POOL): [b"vault", bytes(POOL)],
        pp.authority_address(PROGRAM, POOL): [b"authority", bytes(POOL)],
    }
    for got, seeds in expect.items():
        assert got == Pubkey.find_program_address(seeds, PROGRAM)
        assert not got[0].is_on_curve()
    assert pp.set_address(PROGRAM, POOL)[0] != pp.set_address(PROGRAM, POOL, 1)[0]


def _seeded(tag: bytes, data: bytes) -> Pubkey:
    """README: sha256(pool authority || tag + urlsafe-b64(data) || program id), by hand."""
    seed = tag + base64.urlsafe_b64encode(data).rstrip(b"=")
    assert len(seed) == 32
    base = bytes(pp.authority_address(PROGRAM, POOL)[0])
    return Pubkey.from_bytes(hashlib.sha256(base + seed + bytes(PROGRAM)).digest())


def test_report_and_claim_map_addresses_are_the_readme_seeded_addresses() -> None:
    digest = hashlib.sha256(header()).digest()
    report = pp.report_address(PROGRAM, POOL, 7, digest)
    assert report == _seeded(b"R", (7).to_bytes(8, "little") + digest[:15])
    assert pp.claims_address(PROGRAM, POOL, 7, digest, 15) == _seeded(
        b"C", (7).to_bytes(8, "little") + digest[:14] + bytes([15]))
    addresses = {report} | {pp.claims_address(PROGRAM, POOL, 7, digest, c) for c in range(16)}
    assert len(addresses) == 17  # one account each, none shared
    assert pp.report_address(PROGRAM, POOL, 8, digest) != report
    with pytest.raises(ValueError):
        pp.claims_address(PROGRAM, POOL, 7, digest, 16)
    with pytest.raises(ValueError):
        pp.report_address(PROGRAM, POOL, 7, b"short")


def test_program_ids() -> None:
    assert str(pp.TOKEN_PROGRAM_ID) == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
    assert str(pp.SYSTEM_PROGRAM_ID) == "11111111111111111111111111111111"
    assert str(pp.INSTRUCTIONS_SYSVAR_ID) == "Sysvar1nstructions1111111111111111111111111"
    assert str(pp.ED25519_PROGRAM_ID) == "Ed25519SigVerify111111111111111111111111111"


# -- instructions ------------------------------------------------------------------------


def test_initialize_data_and_accounts() -> None:
    keys = [key(i) for i in range(1, 26)]
    ix = pp.initialize_ix(PROGRAM, pk(1), POOL, pk(2), config_digest=b"\xcc" * 32, validator_keys=keys,
                          epoch_budget=10**9, claim_window=3, start_header_hash=b"\xee" * 32)
    count = pp.keys_per_initialize()
    data = bytes(ix.data)
    assert len(data) == 91 + 32 * count  # README says "75 + 32 count": its field list sums to 91
    vset, set_bump = pp.set_address(PROGRAM, POOL)
    vault, vault_bump = pp.vault_address(PROGRAM, POOL)
    authority, authority_bump = pp.authority_address(PROGRAM, POOL)
    assert data[:4] == bytes([0, authority_bump, set_bump, vault_bump])
    assert struct.unpack_from("<QQ", data, 4) == (10**9, 3)
    assert data[20:52] == b"\xee" * 32 and data[52:84] == b"\xcc" * 32
    assert struct.unpack_from("<HHHB", data, 84) == (25, 8, 17, count)
    assert data[91:] == b"".join(keys[:count])
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts] == [
        (pk(1), True, True), (POOL, False, True), (vset, False, True), (vault, False, True), (pk(2), False, False),
        (authority, False, False), (pp.TOKEN_PROGRAM_ID, False, False), (pp.SYSTEM_PROGRAM_ID, False, False)]


def test_keys_must_be_strictly_ascending() -> None:
    common = dict(config_digest=bytes(32), epoch_budget=1, claim_window=1)
    for keys in ([key(2), key(1)], [key(1), key(1)], [key(1), b"short"]):
        with pytest.raises(ValueError):
            pp.initialize_ix(PROGRAM, pk(1), POOL, pk(2), validator_keys=keys, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pp.initialize_ix(PROGRAM, pk(1), POOL, pk(2), validator_keys=[], **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pp.extend_set_ix(PROGRAM, pk(1), POOL, pk(3), [key(3), key(2)])


def test_extend_set_and_key_chunks() -> None:
    vset = pp.set_address(PROGRAM, POOL)[0]
    ix = pp.extend_set_ix(PROGRAM, pk(1), POOL, vset, [key(5), key(6)])
    assert bytes(ix.data) == bytes([4, 2]) + key(5) + key(6)
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts] == [
        (pk(1), True, False), (POOL, False, False), (vset, False, True)]
    keys = [key(i) for i in range(100)]
    chunks = pp.set_key_chunks(keys)
    assert [len(c) for c in chunks] == [19, 31, 31, 19] and sum(chunks, []) == keys
    assert pp.set_key_chunks(keys[:4]) == [keys[:4]]
    with pytest.raises(ValueError):
        pp.set_key_chunks([key(i) for i in range(257)])


def test_post_report_is_the_readme_ed25519_layout_then_post_report() -> None:
    h = header(epoch=9)
    m = hashlib.sha256(h).digest()
    sigs = [(key(i), bytes([i]) * 64) for i in range(1, 4)]
    ed, post = pp.post_report_ixs(PROGRAM, POOL, pk(4), pk(5), pk(6), h, sigs)
    k, data = 3, bytes(ed.data)
    assert ed.program_id == pp.ED25519_PROGRAM_ID and list(ed.accounts) == []
    assert data[:2] == bytes([k, 0]) and len(data) == 2 + 110 * k + 32 and data[-32:] == m
    for i, (pubkey, sig) in enumerate(sigs):
        pk_off = 2 + 14 * k + 96 * i
        assert struct.unpack_from("<7H", data, 2 + 14 * i) == (
            pk_off + 32, 0xFFFF, pk_off, 0xFFFF, 2 + 110 * k, 32, 0xFFFF)
        assert data[pk_off:pk_off + 96] == pubkey + sig
    report = pp.report_address(PROGRAM, POOL, 9, m)
    assert bytes(post.data) == bytes([1]) + h and len(post.data) == 189
    assert [(a.pubkey, a.is_signer, a.is_writable) for a in post.accounts] == [
        (pk(6), True, True), (POOL, False, True), (pk(4), False, False), (report, False, True), (pk(5), False, False),
        (pp.INSTRUCTIONS_SYSVAR_ID, False, False), (pp.SYSTEM_PROGRAM_ID, False, False),
        (pp.authority_address(PROGRAM, POOL)[0], False, False)]
    with pytest.raises(ValueError):
        pp.post_report_ixs(PROGRAM, POOL, pk(4), pk(5), pk(6), h[:-1], sigs)
    with pytest.raises(ValueError):
        pp.post_report_ixs(PROGRAM, POOL, pk(4), pk(5), pk(6), h, [])


def test_claim_data_and_accounts() -> None:
    record = Record(b"\x01" * 32, bytes(pk(7)), 9_000, 1, 2, 3, 50, 0).to_bytes()
    path = [b"\xa0" * 32, b"\xb0" * 32]
    digest = hashlib.sha256(b"header").digest()
    report = pp.report_address(PROGRAM, POOL, 4, digest)
    ix = pp.claim_ix(PROGRAM, POOL, 4, digest, pk(1), pk(2), pk(3), 65_537, record, path)
    claims = pp.claims_address(PROGRAM, POOL, 4, digest, 1)
    assert bytes(ix.data) == bytes([2]) + struct.pack("<I", 65_537) + record + bytes([2]) + b"".join(path)
    assert len(ix.data) == 94 + 32 * 2
    assert [(a.pubkey, a.is_signer, a.is_writable) for a in ix.accounts] == [
        (pk(1), True, True), (POOL, False, True), (report, False, True), (claims, False, True), (pk(3), False, True),
        (pk(2), False, True), (pp.authority_address(PROGRAM, POOL)[0], False, False),
        (pp.TOKEN_PROGRAM_ID, False, False), (pp.SYSTEM_PROGRAM_ID, False, False)]
    for bad in (dict(index=pp.MAX_RECORDS), dict(record_bytes=record[:-1]), dict(path=[b"\x00" * 32] * 33)):
        args = dict(index=0, record_bytes=record, path=path) | bad
        with pytest.raises(ValueError):
            pp.claim_ix(PROGRAM, POOL, 4, digest, pk(1), pk(2), pk(3), **args)  # type: ignore[arg-type]


def test_close_epoch_accounts_in_chunk_order() -> None:
    ix = pp.close_epoch_ix(PROGRAM, POOL, pk(8), pk(9), [(pk(10), pk(11)), (pk(12), pk(13))])
    assert bytes(ix.data) == b"\x03"
    assert [(a.pubkey, a.is_signer, a.is_writable) for a in ix.accounts] == [
        (k, False, True) for k in (POOL, pk(8), pk(9), pk(10), pk(11), pk(12), pk(13))]


# -- transaction sizes, measured ---------------------------------------------------------


def test_signatures_per_post_are_measured_on_the_real_transaction() -> None:
    assert pp.max_signatures_per_post() == 5
    h = header()
    sizes = {}
    for k in (5, 6):
        sigs = [(key(i), bytes(64)) for i in range(k)]
        sizes[k] = wire_size(pp.post_report_ixs(PROGRAM, POOL, pk(4), pk(5), pk(6), h, sigs), pk(6))
    assert sizes == {5: 1211, 6: 1321}  # 661 + 110 k
    assert [pp.post_parts(t) for t in (1, 3, 5, 6, 13, 67, 171)] == [1, 1, 1, 2, 3, 14, 35]
    with pytest.raises(ValueError):
        pp.post_parts(0)


def test_keys_per_initialize_and_extend_are_measured() -> None:
    assert (pp.keys_per_initialize(), pp.keys_per_extend()) == (19, 31)

    def init_size(count: int) -> int:
        keys = [key(i) for i in range(count)]
        ixs = [pp.create_pool_account_ix(pk(1), POOL, U64, PROGRAM),
               pp.initialize_ix(PROGRAM, pk(1), POOL, pk(2), config_digest=bytes(32), validator_keys=keys,
                                epoch_budget=U64, claim_window=U64, count=count)]
        return wire_size(ixs, pk(1))

    def extend_size(count: int) -> int:
        return wire_size([pp.extend_set_ix(PROGRAM, pk(1), POOL, pk(3), [key(i) for i in range(count)])], pk(1))

    assert init_size(19) <= 1232 < init_size(20)
    assert extend_size(31) <= 1232 < extend_size(32)
    create = pp.create_pool_account_ix(pk(1), POOL, 5, PROGRAM)
    assert create.program_id == pp.SYSTEM_PROGRAM_ID and struct.unpack_from("<IQQ", bytes(create.data)) == (
        0, 5, pp.POOL_SIZE) and bytes(create.data)[20:] == bytes(PROGRAM)


# -- payouts and errors -------------------------------------------------------------------


@pytest.mark.parametrize("reserved,weight,total", [
    (U64, U64, U64), (U64, U64 - 1, U64), (U64, 1, U64), (U64, 2**63, U64), (10**18, 3, 7),
    (2**64 - 59, 2**64 - 83, 2**64 - 57), (1, 1, 2), (0, 5, 9), (123, 0, 456),
])
def test_payout_is_the_128_bit_product_rounded_down(reserved: int, weight: int, total: int) -> None:
    got = pp.payout(reserved, weight, total)
    assert got == int(Fraction(reserved * weight, total)) and got <= reserved
    assert got * total <= reserved * weight < (got + 1) * total


def test_payout_edges() -> None:
    assert pp.payout(1000, 0, 0) == 0
    assert sum(pp.payout(100, 1, 3) for _ in range(3)) == 99  # rounding never pays more than reserved
    for args in ((1, 2, 1), (-1, 0, 1), (2**64, 1, 1), (1, 1, 2**64)):
        with pytest.raises(ValueError):
            pp.payout(*args)
    fraud = Record(b"\x01" * 32, b"\x02" * 32, 10_000, 1, 1, 1, 50, 0x0002).to_bytes()
    honest = Record(b"\x01" * 32, b"\x02" * 32, 10_000, 1, 1, 1, 50, 0x0001).to_bytes()
    assert pp.record_payout(1000, fraud, 100) == 0 and pp.record_payout(1000, honest, 100) == 500


def test_error_names() -> None:
    assert [int(e) for e in pp.PoolError] == list(range(6000, 6034))
    assert pp.error_name(6016) == "SignerNotMember" and pp.error_name(6033) == "TooManyRecords"
    assert pp.error_name(6000) == "InvalidInstruction" and pp.error_name(5999) is None
    assert pp.error_name(6034) is None and pp.ERROR_NAMES[6022] == "DifferentHeader"
    assert pp.PoolError(6026).name == "WrongMerklePath"


def test_set_rule() -> None:
    assert [(pp.set_f(n), pp.set_threshold(n)) for n in (1, 4, 7, 10, 19, 100, 256)] == [
        (0, 1), (1, 3), (2, 5), (3, 7), (6, 13), (33, 67), (85, 171)]
    with pytest.raises(ValueError):
        pp.set_threshold(0)
