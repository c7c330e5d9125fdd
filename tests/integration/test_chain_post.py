"""ChainPoster against a real local chain, driven from trio through the asyncio bridge."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio
from nacl.signing import SigningKey, VerifyKey
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.signature import Signature

from validator.bridge import AsyncioBridge
from validator.chain import (
    MAX_SIGNATURES_PER_TX,
    ChainLedger,
    ChainPoster,
    ReportPost,
    build_post_transaction,
    memo_text,
    parse_post_transaction,
    report_log_address,
)

SOL = 1_000_000_000


def signed_report(epoch: int, n: int, *, seed: int, bad: int | None = None) -> ReportPost:
    """A report signed by `n` fresh keys; signature number `bad` is corrupted."""
    rng = random.Random(seed)
    header = rng.randbytes(180)
    message = hashlib.sha256(header).digest()
    keys = [SigningKey(rng.randbytes(32)) for _ in range(n)]
    sigs = [(bytes(k.verify_key), k.sign(message).signature) for k in keys]
    if bad is not None:
        pk, sig = sigs[bad]
        sigs[bad] = (pk, bytes([sig[0] ^ 1]) + sig[1:])
    return ReportPost(epoch, header, tuple(sigs), hashlib.sha256(rng.randbytes(8)).digest())


async def funded_poster(bridge: AsyncioBridge, url: str, db: Path, **opts: object) -> ChainPoster:
    poster = ChainPoster(url, Keypair(), ChainLedger(db), poll_interval=0.05, **opts)  # type: ignore[arg-type]
    assert await bridge.run(poster.ensure_funded, SOL)
    return poster


async def posts_in_log(bridge: AsyncioBridge, url: str, report: ReportPost) -> list[str]:
    async def fetch() -> list[str]:
        async with AsyncClient(url, commitment=Confirmed) as client:
            resp = await client.get_signatures_for_address(report_log_address(report.config_digest))
            return [str(x.signature) for x in resp.value if x.err is None]

    return await bridge.run(fetch)


async def landed(
    bridge: AsyncioBridge, url: str, sig: str, report: ReportPost
) -> tuple[int, bytes, list[tuple[bytes, bytes]], str]:
    """Read a posted transaction back, independently of the poster: parse it and its log memo."""

    async def fetch() -> tuple[int, bytes, list[tuple[bytes, bytes]], str]:
        async with AsyncClient(url, commitment=Confirmed) as client:
            got = (await client.get_transaction(Signature.from_string(sig), "json", Confirmed, 0)).value
            assert got is not None and got.transaction.meta is not None and got.transaction.meta.err is None
            epoch, digest, pairs = parse_post_transaction(got)
            listed = await client.get_signatures_for_address(report_log_address(report.config_digest))
            memo = next(x.memo for x in listed.value if str(x.signature) == sig)
            assert memo is not None
            return epoch, digest, pairs, memo

    return await bridge.run(fetch)


@pytest.mark.parametrize("count", [3, 8])
async def test_post_confirms_and_the_landed_transaction_verifies(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path, count: int
) -> None:
    with trio.fail_after(30):
        poster = await funded_poster(bridge, chain_url, tmp_path / "v.sqlite")
        report = signed_report(5, count, seed=count)
        outcome = await bridge.run(poster.post, report)
        assert (outcome.status, outcome.source, outcome.error) == ("confirmed", "sent", None)
        assert outcome.tx is not None and outcome.slot is not None

        epoch, digest, pairs, memo = await landed(bridge, chain_url, outcome.tx, report)
        assert (epoch, digest) == (5, report.header_sha256)
        assert len(pairs) == min(count, MAX_SIGNATURES_PER_TX)
        assert set(pairs) <= set(report.signatures)
        for pubkey, sig in pairs:
            VerifyKey(pubkey).verify(digest, sig)
        text = memo_text(report)
        assert memo == f"[{len(text)}] {text}"
        assert poster.ledger.last_posted_epoch() == 5 and poster.ledger.last_error() is None
        await bridge.run(poster.aclose)


async def test_a_wrong_signature_fails_in_the_precompile_and_nothing_lands(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        poster = await funded_poster(bridge, chain_url, tmp_path / "v.sqlite")
        report = signed_report(6, 4, seed=40, bad=2)
        outcome = await bridge.run(poster.post, report)
        assert outcome.status == "failed" and outcome.error is not None
        assert "Error processing Instruction 0: custom program error: 0x2" in outcome.error
        assert "ed25519: invalid signature" in outcome.error
        assert poster.last_error == outcome.error == poster.ledger.last_error()
        row = poster.ledger.get(6)
        assert row is not None and row.status == "failed"
        assert await posts_in_log(bridge, chain_url, report) == []
        await bridge.run(poster.aclose)


async def test_posting_is_idempotent_across_calls_restarts_and_validators(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        db = tmp_path / "v1.sqlite"
        report = signed_report(7, 5, seed=70)
        first = await funded_poster(bridge, chain_url, db)
        one = await bridge.run(first.post, report)
        two = await bridge.run(first.post, report)
        assert one.status == two.status == "confirmed" and one.tx == two.tx
        assert two.source == "ledger"
        await bridge.run(first.aclose)

        restarted = ChainPoster(chain_url, first.payer, ChainLedger(db))  # same ledger file after a "restart"
        again = await bridge.run(restarted.post, report)
        assert (again.tx, again.source) == (one.tx, "ledger")
        await bridge.run(restarted.aclose)

        other = await funded_poster(bridge, chain_url, tmp_path / "v2.sqlite")  # another payer and ledger
        theirs = await bridge.run(other.post, report)
        assert (theirs.status, theirs.tx, theirs.source) == ("confirmed", one.tx, "chain")
        row = other.ledger.get(7)
        assert row is not None and (row.status, row.tx) == ("confirmed", one.tx)
        assert await posts_in_log(bridge, chain_url, report) == [one.tx]
        await bridge.run(other.aclose)


async def test_other_subsets_of_members_count_but_strangers_do_not(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        rng = random.Random(120)
        header, digest = rng.randbytes(180), rng.randbytes(32)
        message = hashlib.sha256(header).digest()
        members = [SigningKey(rng.randbytes(32)) for _ in range(4)]

        def by(keys: list[SigningKey]) -> ReportPost:
            return ReportPost(12, header, tuple((bytes(k.verify_key), k.sign(message).signature) for k in keys), digest)

        # A stranger front-runs with the right memo and valid signatures by its own keys.
        strangers = by([SigningKey(rng.randbytes(32)) for _ in range(3)])
        forger = await funded_poster(bridge, chain_url, tmp_path / "forger.sqlite")
        forged = await bridge.run(forger.post, strangers)
        assert forged.status == "confirmed"

        member_keys = [bytes(k.verify_key) for k in members]
        ours = await funded_poster(bridge, chain_url, tmp_path / "a.sqlite", members=member_keys)
        first = await bridge.run(ours.post, by(members[:3]))
        assert first.source == "sent"  # the strangers' post does not count
        theirs = await funded_poster(bridge, chain_url, tmp_path / "b.sqlite", members=member_keys)
        second = await bridge.run(theirs.post, by([members[0], members[1], members[3]]))
        assert (second.tx, second.source) == (first.tx, "chain")  # another subset of members counts
        assert await posts_in_log(bridge, chain_url, by(members[:3])) == [first.tx, forged.tx]
        for poster in (forger, ours, theirs):
            await bridge.run(poster.aclose)


async def test_a_crash_after_sending_is_settled_from_the_ledger(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """Signature written, transaction sent, process died before recording: no second post."""
    with trio.fail_after(30):
        db = tmp_path / "v.sqlite"
        poster = await funded_poster(bridge, chain_url, db)
        report = signed_report(8, 3, seed=80)

        async def send_and_crash() -> str:
            latest = (await poster.client.get_latest_blockhash(Confirmed)).value
            tx = build_post_transaction(report, poster.payer, latest.blockhash)
            poster.ledger.record_sending(8, report.header_sha256, str(tx.signatures[0]),
                                         latest.last_valid_block_height, 0.0)
            await poster.client.send_raw_transaction(bytes(tx), TxOpts(skip_confirmation=True))
            return str(tx.signatures[0])

        sent = await bridge.run(send_and_crash)
        await bridge.run(poster.aclose)
        after_restart = ChainPoster(chain_url, poster.payer, ChainLedger(db), poll_interval=0.05)
        outcome = await bridge.run(after_restart.post, report)
        assert (outcome.status, outcome.tx, outcome.source) == ("confirmed", sent, "ledger")
        assert await posts_in_log(bridge, chain_url, report) == [sent]
        await bridge.run(after_restart.aclose)


async def test_a_crash_before_sending_resends_once_the_old_blockhash_expired(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        poster = await funded_poster(bridge, chain_url, tmp_path / "v.sqlite")
        report = signed_report(9, 2, seed=90)
        never_sent = str(Keypair().sign_message(b"never sent"))
        height = (await bridge.run(poster.client.get_block_height, Confirmed)).value
        poster.ledger.record_sending(9, report.header_sha256, never_sent, height - 1, 0.0)  # already expired
        outcome = await bridge.run(poster.post, report)
        assert outcome.status == "confirmed" and outcome.source == "sent" and outcome.tx != never_sent
        assert await posts_in_log(bridge, chain_url, report) == [outcome.tx]
        await bridge.run(poster.aclose)


async def test_unreachable_rpc_fails_with_a_short_error_after_bounded_retries(
    bridge: AsyncioBridge, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        with trio.socket.socket() as sock:  # a port nobody listens on
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        poster = ChainPoster(f"http://127.0.0.1:{port}", Keypair(), ChainLedger(tmp_path / "v.sqlite"),
                             max_attempts=3, backoff=(0.01, 0.02))
        outcome = await bridge.run(poster.post, signed_report(10, 2, seed=100))
        assert outcome.status == "failed" and outcome.tx is None
        assert outcome.error is not None and outcome.error.startswith("rpc unreachable: ConnectError")
        assert outcome.error.endswith("(attempt 3/3)") and "\n" not in outcome.error
        assert not await bridge.run(poster.ensure_funded, 1)
        assert poster.last_error is not None and poster.last_error.startswith("rpc unreachable")
        await bridge.run(poster.aclose)


async def test_a_second_header_for_a_posted_epoch_is_refused(bridge: AsyncioBridge, tmp_path: Path) -> None:
    with trio.fail_after(5):
        ledger = ChainLedger(tmp_path / "v.sqlite")
        ledger.record_outcome(11, b"\x01" * 32, "confirmed", "sig", 3, None, 0.0)
        poster = ChainPoster("http://127.0.0.1:9", Keypair(), ledger)
        outcome = await bridge.run(poster.post, signed_report(11, 2, seed=110))
        assert outcome.status == "failed" and outcome.error == "epoch 11 is already recorded with a different header"
