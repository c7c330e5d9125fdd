"""Crash safety with real processes (issue 4, item 6), the short version for the suite.

A devnet of real processes (local chain, 4 validators, 3 providers, 10 s epochs); a seeded
killer SIGKILLs a random validator at a uniform moment inside an epoch and restarts it with
``validator join`` after a short random pause, never more than f = 1 down at once. Then,
from SQLite files opened read-only and the chain read over JSON-RPC (crash_harness.verify):
no signer signed two headers for one epoch, no final report was lost, no payer posted an
epoch twice, and reports kept coming. ``benchmarks/sigkill_soak.py`` is the long version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import base58
import pytest
from nacl.signing import SigningKey

from tests.adversarial.crash_harness import (ChainPost, CrashOptions, DbView, FinalRow,
                                             KillRecord, Member, PostRow, Verdict,
                                             check_posts, check_signatures, lost_after,
                                             run_crash_soak)
from tests.integration.e2e_checks import HEADER

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
    context = "\n".join(lines + [verdict.line()])

    assert verdict.kills == KILLS
    assert not verdict.double_signatures, context
    assert not verdict.conflicting_finals, context
    assert not verdict.bad_signatures, context
    assert not verdict.lost_finals, context
    assert not verdict.double_posts_per_payer, context
    assert not verdict.ledger_problems, context
    assert not verdict.evidence, context  # nobody here is byzantine: no equivocation at all

    # Reports keep coming: the final count grows in each half of the run, and at the end
    # most epochs since genesis are final.
    samples = verdict.finals_during_kills
    half = len(samples) // 2
    assert samples[half] > samples[0] and verdict.finals > samples[half], context
    assert verdict.finals * 2 >= verdict.epochs, context


# -- the checks themselves catch what they look for (no processes; fabricated disk state) ----
def _header(epoch: int, salt: bytes) -> bytes:
    return HEADER.pack(b"BWPR", 1, b"\0\0\0", bytes(32), epoch, salt.ljust(32, b"\0"), 0, 0,
                       bytes(32), bytes(32), bytes(32))


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


def test_checks_flag_a_bad_or_missing_signature() -> None:
    members, keys = _members()
    final = _final(2, _header(2, b"x"), keys[:3])
    forged = FinalRow(2, final.header, final.header_hash,
                      final.signatures[:2] + ((final.signatures[2][0], bytes(64)),))
    verdict = Verdict()
    views = {m.name: _view() for m in members} | {"v0": _view([forged])}
    check_signatures(verdict, members, views, {}, threshold=3)
    assert len(verdict.bad_signatures) == 2  # the forged one, and then below threshold


def test_checks_flag_a_payer_posting_one_epoch_twice_and_a_ledger_that_forgot() -> None:
    members, keys = _members()
    digest = b"\7" * 32
    h = hashlib.sha256(_header(3, b"h")).digest()

    def post(tx: str, payer: str, ok: bool = True, keys: str = "ab") -> ChainPost:
        return ChainPost(tx, 10, payer, 3, h, digest[:4].hex(), ok,
                         tuple((k.encode() * 32, bytes(64)) for k in keys))

    # payer0 lands the same signatures twice; payer1 two parts with different signatures
    posts = {p.tx: p for p in (post("t1", "payer0"), post("t2", "payer0"),
                               post("t3", "payer1", keys="a"), post("t5", "payer1", keys="b"),
                               post("t4", "payer2", ok=False))}
    views = {m.name: _view() for m in members}
    views["v1"] = _view(posts={3: PostRow(3, h, "confirmed", "t5")})
    verdict = Verdict()
    check_posts(verdict, members, views, posts, digest)
    assert len(verdict.double_posts_per_payer) == 1 and "payer0" in verdict.double_posts_per_payer[0]
    assert verdict.multi_post_epochs == 1 and verdict.failed_posts == 1
    # v0's own posts landed but its ledger names nothing: sent without being recorded first
    assert [line.split()[0] for line in verdict.ledger_problems] == ["v0"]


def test_checks_flag_a_lost_final_and_a_forgotten_signed_header() -> None:
    record = KillRecord(1, "v2", 0.0, 4, 1.0, "probing", False, {2: b"\1" * 32, 3: b"\2" * 32},
                        frozenset({2, 3, 4}), {4: b"\3" * 32}, 1.0, 1, (), "?")
    after = _view([FinalRow(2, b"", b"\1" * 32, ()), FinalRow(3, b"", b"\9" * 32, ())])
    lost = lost_after(record, after)
    assert [line.split(": ")[0] for line in lost] == [
        "kill 1 v2 epoch 3", "kill 1 v2 epoch 4", "kill 1 v2 epoch 4"]
