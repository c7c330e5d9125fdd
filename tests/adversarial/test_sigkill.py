"""Crash safety with real processes (issue 4, item 6), the short version for the suite.

A devnet of real processes (local chain with the pool program and a funded pool, 4
validators, 3 providers with --auto-claim, 10 s epochs); a seeded killer SIGKILLs a random
validator at a uniform moment inside an epoch and restarts it with ``validator join`` after
a short random pause, never more than f = 1 down at once. Then, from SQLite files opened
read-only and the chain read over JSON-RPC (crash_harness.verify): no signer signed two
headers for one epoch, no final report was lost, no payer landed a signature twice for an
epoch, no epoch was accepted twice and the accepted headers form one chain, no record was
paid twice and every balance is what its claims pay, and reports kept coming and being
accepted. ``benchmarks/sigkill_soak.py`` is the long version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import base58
import pytest
from nacl.signing import SigningKey
from solders.pubkey import Pubkey

from proofs.report import Record
from tests.adversarial.crash_harness import (
    Accepted,
    ChainClaim,
    ChainClose,
    ChainPost,
    ChainView,
    CrashOptions,
    DbView,
    FinalRow,
    KillRecord,
    Member,
    PostRow,
    Verdict,
    check_claims,
    check_posts,
    check_reports,
    check_signatures,
    lost_after,
    run_crash_soak,
)
from tests.integration.e2e_checks import HEADER
from validator.pool_program import EpochReportState, PoolState, payout

KILLS = 8


@pytest.mark.parametrize("seed", [20240604])
def test_sigkill_validators_keep_safety(tmp_path: Path, seed: int) -> None:
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    verdict = run_crash_soak(CrashOptions(tmp_path / "net", seed=seed, kills=KILLS),
                             progress=progress)
    print(verdict.line())
    context = "\n".join(lines + [verdict.line()] + verdict.unparsed_pool_txs)

    assert verdict.kills == KILLS
    assert not verdict.double_signatures, context
    assert not verdict.conflicting_finals, context
    assert not verdict.bad_signatures, context
    assert not verdict.lost_finals, context
    assert not verdict.double_posts_per_payer, context
    assert not verdict.ledger_problems, context
    assert not verdict.evidence, context  # nobody here is byzantine: no equivocation at all
    assert not verdict.reports_accepted_twice, context
    assert not verdict.double_claims, context
    assert not verdict.payout_mismatches, context
    assert not verdict.unparsed_pool_txs, context

    # Reports keep coming: the final count grows in each half of the run, and at the end
    # most epochs since genesis are final, and most of those accepted on chain.
    samples = verdict.finals_during_kills
    half = len(samples) // 2
    assert samples[half] > samples[0] and verdict.finals > samples[half], context
    assert verdict.finals * 2 >= verdict.epochs, context
    assert verdict.accepted_epochs * 2 >= verdict.finals, context
    if verdict.auto_claim:  # providers claim what the accepted reports owe them
        assert verdict.claims > 0 and verdict.claimed > 0, context


# -- the checks themselves catch what they look for (no processes; fabricated state) --------
def _header(epoch: int, salt: bytes, prev: bytes = bytes(32), total: int = 0) -> bytes:
    return HEADER.pack(b"BWPR", 1, b"\0\0\0", bytes(32), epoch, salt.ljust(32, b"\0"), 0, total,
                       bytes(32), prev, bytes(32))


def _members(n: int = 4) -> tuple[list[Member], list[SigningKey]]:
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(n)]
    members = [Member(f"v{i}", Path(f"/nonexistent/v{i}"), "", k.verify_key.encode(),
                      f"payer{i}") for i, k in enumerate(keys)]
    return members, keys


def _final(epoch: int, header: bytes, keys: list[SigningKey]) -> FinalRow:
    digest = hashlib.sha256(header).digest()
    return FinalRow(epoch, header, digest,
                    tuple((k.verify_key.encode(), k.sign(digest).signature) for k in keys))


def _view(finals: Sequence[FinalRow] = (), signed: dict[int, bytes] | None = None,
          posts: dict[int, PostRow] | None = None) -> DbView:
    return DbView(signed or {}, {f.epoch: f for f in finals}, posts or {}, ())


def _filled(cls: type, **values: object) -> object:
    """An instance of a pool_program layout dataclass: the given fields, zeros elsewhere."""
    zero = {"int": 0, "bytes": bytes(32), "Pubkey": Pubkey.default()}
    return cls(**{f.name: values.get(f.name, zero[str(f.type)])
                  for f in dataclasses.fields(cls)})


def _report(header: bytes, *, seq: int = 0, accepted: bool = True, reserved: int = 0,
            claimed_total: int = 0, claimed_count: int = 0) -> EpochReportState:
    return _filled(EpochReportState, epoch=HEADER.unpack(header)[4],  # type: ignore[return-value]
                   header=header, header_hash=hashlib.sha256(header).digest(),
                   status=2 if accepted else 1, accepted_seq=seq, reserved=reserved,
                   claimed_total=claimed_total, claimed_count=claimed_count)


def _accepting(tx: str, report: str, header: bytes, slot: int, reserved: int = 0) -> ChainPost:
    """A post whose log says it accepted `report` (no signatures: check_reports needs none)."""
    epoch = HEADER.unpack(header)[4]
    return ChainPost(tx, slot, "payer0", epoch, hashlib.sha256(header).digest(), True, (),
                     report, header, (epoch, 3, 3, reserved))


def _chain(reports: dict[str, EpochReportState], claims: Sequence[ChainClaim] = (),
           balances: dict[str, int] | None = None, pool: Mapping[str, object] | None = None,
           posts: Sequence[ChainPost] = (), closes: Sequence[ChainClose] = ()) -> ChainView:
    state = _filled(PoolState, **(pool or {}))
    return ChainView("program", "pool", state, reports, {p.tx: p for p in posts},  # type: ignore[arg-type]
                     {c.tx: c for c in claims}, balances or {}, 0, (),
                     {c.tx: c for c in closes})


def test_checks_flag_a_double_signature_and_conflicting_finals() -> None:
    members, keys = _members()
    a, b = _header(5, b"a"), _header(5, b"b")
    views = {"v0": _view([_final(5, a, keys[:3])]), "v1": _view([_final(5, b, keys[1:])]),
             "v2": _view(), "v3": _view(signed={6: b"\1" * 32})}
    verdict = Verdict()
    check_signatures(verdict, members, views, {}, threshold=3)
    signers = {line.split(" signer ")[1].split(":")[0] for line in verdict.double_signatures}
    assert signers == {base58.b58encode(k.verify_key.encode()).decode() for k in keys[1:3]}
    assert len(verdict.conflicting_finals) == 1 and not verdict.bad_signatures


def test_checks_flag_a_final_other_than_the_accepted_report() -> None:
    members, keys = _members()
    a, b = _header(5, b"a"), _header(5, b"b")
    views = {m.name: _view() for m in members} | {"v0": _view([_final(5, a, keys[:3])])}
    accepted = [Accepted("R1", 5, b, hashlib.sha256(b).digest(), 0, "t", 1, None)]
    verdict = Verdict()
    check_signatures(verdict, members, views, {}, 3, accepted)
    assert len(verdict.conflicting_finals) == 1 and "accepted report R1" in \
        verdict.conflicting_finals[0]


def test_checks_flag_a_bad_or_missing_signature() -> None:
    members, keys = _members()
    final = _final(2, _header(2, b"x"), keys[:3])
    forged = FinalRow(2, final.header, final.header_hash,
                      final.signatures[:2] + ((final.signatures[2][0], bytes(64)),))
    verdict = Verdict()
    views = {m.name: _view() for m in members} | {"v0": _view([forged])}
    check_signatures(verdict, members, views, {}, threshold=3)
    assert len(verdict.bad_signatures) == 2  # the forged one, and then below threshold


def test_checks_flag_a_payer_landing_a_signature_twice_and_ledgers_that_disagree() -> None:
    members, _ = _members()
    h = hashlib.sha256(_header(3, b"h")).digest()

    def post(tx: str, payer: str, ok: bool = True, keys: str = "ab") -> ChainPost:
        return ChainPost(tx, 10, payer, 3, h, ok, tuple((k.encode() * 32, bytes(64)) for k in keys))

    # payer0 lands key b twice; payer1 two parts with different keys; payer2's failed post
    posts = {p.tx: p for p in (post("t1", "payer0"), post("t2", "payer0", keys="b"),
                               post("t3", "payer1", keys="a"), post("t5", "payer1", keys="b"),
                               post("t4", "payer2", ok=False))}
    views = {m.name: _view() for m in members}
    views["v0"] = _view(posts={3: PostRow(3, h, "sending", "t2", 2)})
    views["v1"] = _view(posts={3: PostRow(3, h, "confirmed", "t5", 1)})  # 1 attempt, 2 landed
    views["v3"] = _view(posts={4: PostRow(4, b"\5" * 32, "confirmed", None, 1)})
    accepted = [Accepted("R", 3, _header(3, b"h"), h, 0, "t1", 10, None)]
    verdict = Verdict()
    check_posts(verdict, members, views, posts, accepted)
    assert len(verdict.double_posts_per_payer) == 1 and "payer0" in verdict.double_posts_per_payer[0]
    assert (verdict.multi_post_epochs, verdict.failed_posts, verdict.unsettled_posts) == (1, 1, 1)
    # v1's ledger counts fewer attempts than its posts that landed (sent unrecorded); v3's
    # says confirmed with nothing accepted on chain
    assert [line.split()[0] for line in verdict.ledger_problems] == ["v1", "v3"]


def test_checks_flag_an_epoch_accepted_twice_a_broken_chain_and_an_early_close() -> None:
    zero = _header(0, b"z")
    one = _header(1, b"o", prev=hashlib.sha256(zero).digest())
    two = _header(2, b"t", prev=hashlib.sha256(one).digest())
    rival = _header(1, b"r", prev=hashlib.sha256(zero).digest())
    posts = [_accepting("p0", "A", zero, 10), _accepting("p1", "B", one, 20),
             _accepting("p2", "C", two, 30)]
    # A closed after epoch 2 was accepted (claim window 2); B and C still open; X a tally
    # that never reached threshold (fine)
    opened = {"B": _report(one, seq=2), "C": _report(two, seq=3),
              "X": _report(rival, accepted=False)}
    closes = [ChainClose("k0", 31, "payer0", "A", True, True, 0, 0)]
    head = {"accepted_count": 3, "last_accepted_epoch": 2, "claim_window": 2,
            "last_header_hash": hashlib.sha256(two).digest()}
    verdict = Verdict()
    accepted = check_reports(verdict, _chain(opened, pool=head, posts=posts, closes=closes))
    assert (verdict.reports_accepted_twice, verdict.accepted_epochs) == ([], 3)
    assert ([a.epoch for a in accepted], verdict.closed_epochs) == ([0, 1, 2], 1)

    twice = posts + [_accepting("p3", "X", rival, 40)]  # epoch 1 accepted again, later
    verdict = Verdict()
    check_reports(verdict, _chain(opened, pool=head, posts=twice, closes=closes))
    lines = verdict.reports_accepted_twice
    assert any(line.startswith("epoch 1 accepted 2 times") for line in lines)
    assert any("accepted_count is 3, the chain shows 4 acceptances" in line for line in lines)
    assert any(line.startswith("epoch 1 (X) follows") for line in lines)

    early = [ChainClose("k0", 25, "payer0", "A", True, True, 0, 0)]  # before epoch 2's slot 30
    gone = {"C": _report(two, seq=3)}  # B vanished without a close
    verdict = Verdict()
    check_reports(verdict, _chain(gone, pool=head, posts=posts, closes=early))
    lines = verdict.reports_accepted_twice
    assert any("before its claim window" in line for line in lines)
    assert any(line.startswith("epoch 1 (B): accepted, gone, and no close_epoch") for line in lines)
    assert not any(line.startswith("epoch 2 (C): its account") for line in lines)  # seq 3 is right

    gap = posts[:1] + posts[2:]  # two does not follow zero
    verdict = Verdict()
    check_reports(verdict, _chain({}, pool=head | {"claim_window": 0}, posts=gap,
                                  closes=[ChainClose("k", 99, "p", r, True, True, e, 0)
                                          for r, e in (("A", 0), ("C", 2))]))
    assert any(line.startswith("epoch 2 (C) follows") for line in verdict.reports_accepted_twice)


def test_checks_flag_a_record_paid_twice_and_balances_other_than_the_claims() -> None:
    payout_key = Pubkey.from_bytes(b"\7" * 32)
    record = Record(b"\1" * 32, bytes(payout_key), 9_000, 1, 2, 3, 30, 0).to_bytes()
    header, other = _header(4, b"c", total=90), _header(5, b"s")
    amount = payout(1_000, 30, 90)

    def claim(tx: str, index: int = 0, ok: bool = True, report: str = "R",
              slot: int = 5) -> ChainClaim:
        return ChainClaim(tx, slot, "provider", report, index, record, "ATA", ok, amount)

    accepted = [Accepted("R", 4, header, hashlib.sha256(header).digest(), 1_000, "p", 1,
                         _report(header, seq=1, reserved=1_000, claimed_total=amount,
                                 claimed_count=1)),
                Accepted("S", 5, other, hashlib.sha256(other).digest(), 0, "q", 2,
                         _report(other, seq=2))]  # accepted, never claimed: fine
    pool = {"total_paid": amount, "reserved_outstanding": 1_000 - amount}
    verdict = Verdict()
    check_claims(verdict, _chain({}, [claim("c1"), claim("c0", ok=False)], {"ATA": amount},
                                 pool), accepted)
    assert (verdict.double_claims, verdict.payout_mismatches) == ([], [])
    assert (verdict.claims, verdict.failed_claims, verdict.claimed,
            verdict.accepted_unclaimed) == (1, 1, amount, 1)

    verdict = Verdict()
    check_claims(verdict, _chain({}, [claim("c1"), claim("c2")], {"ATA": amount}, pool),
                 accepted)
    assert len(verdict.double_claims) == 1 and "record 0 claimed 2 times" in verdict.double_claims[0]
    assert [line.split()[0] for line in verdict.payout_mismatches] == ["token", "report", "the"]

    verdict = Verdict()
    check_claims(verdict, _chain({}, [claim("c1", report="nowhere")], {"ATA": 0}, pool),
                 accepted)
    assert "which is not an accepted report" in verdict.payout_mismatches[0]

    # R closed (releasing what was not claimed) in slot 6; a claim in slot 7 is paid from it
    closed = [dataclasses.replace(accepted[0], state=None), accepted[1]]
    close = ChainClose("k", 6, "payer0", "R", True, True, 4, 1_000 - amount)
    verdict = Verdict()
    check_claims(verdict, _chain({}, [claim("c1"), claim("c3", index=1, slot=7)],
                                 {"ATA": 2 * amount},
                                 {"total_paid": 2 * amount, "reserved_outstanding": 0},
                                 closes=[close]), closed)
    assert [line.split()[0] for line in verdict.double_claims] == ["claim"]
    assert [line.split()[0] for line in verdict.payout_mismatches] == ["close"]  # released


def test_checks_flag_a_lost_final_and_a_forgotten_signed_header() -> None:
    record = KillRecord(1, "v2", 0.0, 4, 1.0, "probing", False, {2: b"\1" * 32, 3: b"\2" * 32},
                        frozenset({2, 3, 4}), {4: b"\3" * 32}, 1.0, 1, (), "?")
    after = _view([FinalRow(2, b"", b"\1" * 32, ()), FinalRow(3, b"", b"\x09" * 32, ())])
    lost = lost_after(record, after)
    assert [line.split(": ")[0] for line in lost] == [
        "kill 1 v2 epoch 3", "kill 1 v2 epoch 4", "kill 1 v2 epoch 4"]
