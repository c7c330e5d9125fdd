"""ChainPoster against the real pool program on a real local chain, driven from trio through
the asyncio bridge.

Every test gets its own pool (`new_pool`: `validator.pool_setup.setup_pool` with n fresh
validator keys). What the chain holds is read back independently of the poster: the pool's
EpochReport account for the header (`pool_client.read_report`), and every transaction that
names that account (getSignaturesForAddress + getTransaction, parsed with
`parse_post_transaction`, each signature verified again with nacl).

Reports whose threshold needs several posts (n >= 8) and concurrent posters:
``test_chain_post_parts.py``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey, VerifyKey
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction_status import UiTransaction

from proofs.report import ReportHeader
from tests.integration.conftest import POOL_PROGRAM_ID
from validator import pool_client
from validator.bridge import AsyncioBridge
from validator.chain import (
    MAX_SIGNATURES_PER_TX,
    ChainLedger,
    ChainPoster,
    PoolTarget,
    ReportPost,
    build_post_transaction,
    member_signatures,
    parse_post_transaction,
)
from validator.pool_program import (
    EpochReportState,
    PoolState,
    post_parts,
    post_report_ixs,
    report_address,
    set_f,
    set_threshold,
)
from validator.pool_setup import setup_pool

SOL = 1_000_000_000
START = bytes(32)  # the pool's chain head before its first report (init_pool's default)


# -- a pool and its reports ------------------------------------------------------------------


@dataclass(frozen=True)
class Landed:
    """A post of one report that landed without error, read back from the chain."""

    tx: str
    payer: str
    keys: tuple[bytes, ...]  # in the order its Ed25519 instruction holds them


@dataclass(frozen=True)
class Net:
    """A pool on the local chain whose validator set is `signers` (sorted by public key)."""

    url: str
    signers: tuple[SigningKey, ...]
    pool: Pubkey
    digest: bytes  # the network's config digest, in the set and in every header
    program_id: Pubkey = POOL_PROGRAM_ID

    @property
    def members(self) -> list[bytes]:
        return [bytes(k.verify_key) for k in self.signers]

    @property
    def threshold(self) -> int:
        return set_threshold(len(self.signers))

    @property
    def f(self) -> int:
        return set_f(len(self.signers))

    def header(self, epoch: int, prev: bytes, salt: bytes = b"honest") -> bytes:
        """A well-formed header of `epoch` following `prev` (one record of weight 1)."""
        tag = b"%s %d" % (salt, epoch)
        return ReportHeader(self.digest, epoch, hashlib.sha256(b"root " + tag).digest(), 1, 1,
                            hashlib.sha256(b"providers " + tag).digest(), prev,
                            hashlib.sha256(b"seed " + tag).digest()).to_bytes()

    def report(self, epoch: int, prev: bytes = START, by: Iterable[int] | None = None, *,
               salt: bytes = b"honest", extra: Sequence[tuple[bytes, bytes]] = ()) -> ReportPost:
        """The header signed by members `by` (default all), plus `extra` pairs as given."""
        header = self.header(epoch, prev, salt)
        message = hashlib.sha256(header).digest()
        chosen = range(len(self.signers)) if by is None else by
        sigs = tuple((bytes(self.signers[i].verify_key), self.signers[i].sign(message).signature)
                     for i in chosen) + tuple(extra)
        return ReportPost(epoch, header, sigs, self.digest)

    def poster(self, db: Path, payer: Keypair | None = None, **opts: Any) -> ChainPoster:
        """A poster for this pool with a fresh (or the given) payer; nothing is sent yet."""
        options: dict[str, Any] = {"poll_interval": 0.05, **opts}
        return ChainPoster(self.url, payer or Keypair(), ChainLedger(db),
                           program_id=self.program_id, pool=self.pool, members=self.members,
                           threshold=self.threshold, **options)

    def report_address(self, report: ReportPost) -> Pubkey:
        return report_address(self.program_id, self.pool, report.epoch, report.header_sha256)


async def new_pool(bridge: AsyncioBridge, url: str, n: int, *, seed: int) -> Net:
    """A funded pool of `n` fresh validator keys on the chain at `url`."""
    rng = random.Random(seed)
    signers = tuple(sorted((SigningKey(rng.randbytes(32)) for _ in range(n)),
                           key=lambda k: bytes(k.verify_key)))
    digest = hashlib.sha256(b"network %d" % seed).digest()
    setup = functools.partial(
        setup_pool, url, authority=Keypair(), program_id=POOL_PROGRAM_ID,
        pool_keypair=Keypair(), config_digest=digest,
        validator_keys=[bytes(k.verify_key) for k in signers], payouts=[],
        epoch_budget=1_000, claim_window=4, supply=1_000_000)
    pool = await bridge.run(setup)
    return Net(url, signers, pool.pool, digest)


async def funded(bridge: AsyncioBridge, poster: ChainPoster) -> ChainPoster:
    assert await bridge.run(poster.ensure_funded, SOL), poster.last_error
    return poster


async def report_state(bridge: AsyncioBridge, net: Net, report: ReportPost) -> EpochReportState | None:
    async def read() -> EpochReportState | None:
        async with AsyncClient(net.url, commitment=Confirmed) as client:
            return await pool_client.read_report(client, net.program_id, net.pool, report.epoch,
                                                 report.header_sha256)

    return await bridge.run(read)


async def pool_state(bridge: AsyncioBridge, net: Net) -> PoolState:
    async def read() -> PoolState:
        async with AsyncClient(net.url, commitment=Confirmed) as client:
            return (await pool_client.read_pool(client, net.program_id, net.pool)).state

    return await bridge.run(read)


async def chain_posts(bridge: AsyncioBridge, net: Net, report: ReportPost) -> list[Landed]:
    """Successful posts naming the report's account, oldest first; every signature verified
    against sha256(header), and by a member."""

    async def fetch() -> list[Landed]:
        out = []
        async with AsyncClient(net.url, commitment=Confirmed) as client:
            listed = (await client.get_signatures_for_address(net.report_address(report),
                                                              limit=1000)).value
            for item in reversed(listed):
                if item.err is not None:
                    continue
                got = (await client.get_transaction(item.signature, "json", Confirmed, 0)).value
                assert got is not None and got.transaction.meta is not None
                assert got.transaction.meta.err is None
                epoch, digest, pairs = parse_post_transaction(got, net.program_id)
                assert (epoch, digest) == (report.epoch, report.header_sha256)
                for pubkey, sig in pairs:
                    VerifyKey(pubkey).verify(digest, sig)
                    assert pubkey in net.members
                ui_tx = got.transaction.transaction
                assert isinstance(ui_tx, UiTransaction)  # "json" encoding
                payer = str(ui_tx.message.account_keys[0])
                out.append(Landed(str(item.signature), payer, tuple(pk for pk, _ in pairs)))
        return out

    return await bridge.run(fetch)


async def failed_posts(bridge: AsyncioBridge, net: Net, report: ReportPost) -> int:
    """Transactions naming the report's account that landed with an error (fee paid)."""

    async def fetch() -> int:
        async with AsyncClient(net.url, commitment=Confirmed) as client:
            listed = (await client.get_signatures_for_address(net.report_address(report))).value
            return sum(1 for item in listed if item.err is not None)

    return await bridge.run(fetch)


async def send_by_hand(bridge: AsyncioBridge, poster: ChainPoster, report: ReportPost,
                       part: Sequence[tuple[bytes, bytes]]) -> str:
    """What a poster does up to the crash: record the signature, send; never settle."""

    async def send() -> str:
        target = await poster.target()
        latest = (await poster.client.get_latest_blockhash(Confirmed)).value
        tx = build_post_transaction(report, poster.payer, latest.blockhash, target, part)
        poster.ledger.record_sending(report.epoch, report.header_sha256, str(tx.signatures[0]),
                                     latest.last_valid_block_height, 0.0)
        await poster.client.send_raw_transaction(bytes(tx), TxOpts(skip_confirmation=True))
        return str(tx.signatures[0])

    return await bridge.run(send)


def restart(poster: ChainPoster, net: Net, db: Path) -> ChainPoster:
    """The same payer and ledger file in a new poster: what a restarted validator builds."""
    return net.poster(db, poster.payer)


# -- accepted in ceil(threshold / 5) posts ---------------------------------------------------


@pytest.mark.parametrize("n", [4, 7, 10])
async def test_a_report_is_accepted_in_ceil_threshold_over_five_posts(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path, n: int
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, n, seed=n)
        report = net.report(0)  # signed by all n members, as a final report may be
        poster = await funded(bridge, net.poster(tmp_path / "v.sqlite"))
        outcome = await bridge.run(poster.post, report)
        parts = math.ceil(net.threshold / MAX_SIGNATURES_PER_TX)
        assert parts == post_parts(net.threshold) == {4: 1, 7: 1, 10: 2}[n]
        assert (outcome.status, outcome.source, outcome.error) == ("confirmed", "sent", None)
        assert (len(outcome.sent), outcome.on_chain, outcome.needed) == (parts, net.threshold,
                                                                         net.threshold)
        assert outcome.tx == outcome.sent[-1] and outcome.slot is not None
        print(f"\nn={n} threshold={net.threshold}: {len(outcome.sent)} transactions")

        state = await report_state(bridge, net, report)
        assert state is not None and state.accepted and state.header == report.header
        assert state.signer_count == net.threshold  # exactly what was needed, no more
        assert state.poster == poster.payer.pubkey() and state.accepted_seq == 1
        pool = await pool_state(bridge, net)
        assert (pool.accepted_count, pool.last_accepted_epoch) == (1, 0)
        assert pool.last_header_hash == report.header_sha256

        posts = await chain_posts(bridge, net, report)
        assert [p.tx for p in posts] == list(outcome.sent)
        ordered = sorted(net.members)  # parts carry the missing keys in key order
        cuts = list(range(0, net.threshold, MAX_SIGNATURES_PER_TX)) + [net.threshold]
        assert [list(p.keys) for p in posts] == [ordered[a:b] for a, b in itertools.pairwise(cuts)]
        assert await failed_posts(bridge, net, report) == 0
        row = poster.ledger.get(0)
        assert row is not None and (row.status, row.tx, row.attempts) == ("confirmed", outcome.tx,
                                                                          parts)
        assert poster.ledger.last_error() is None and poster.last_error is None

        # Reposting after acceptance sends nothing: neither this poster nor another validator.
        again = await bridge.run(poster.post, report)
        assert (again.status, again.source, again.sent) == ("confirmed", "ledger", ())
        other = await funded(bridge, net.poster(tmp_path / "other.sqlite"))
        theirs = await bridge.run(other.post, report)
        assert (theirs.status, theirs.source, theirs.sent) == ("confirmed", "chain", ())
        assert theirs.on_chain == net.threshold
        assert len(await chain_posts(bridge, net, report)) == parts
        for p in (poster, other):
            await bridge.run(p.aclose)


# -- idempotence -------------------------------------------------------------------------------


async def test_posting_is_idempotent_across_calls_restarts_and_validators(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=70)
        report = net.report(0, by=[0, 1, 3])
        db = tmp_path / "v1.sqlite"
        first = await funded(bridge, net.poster(db))
        one = await bridge.run(first.post, report)
        two = await bridge.run(first.post, report)
        assert one.status == two.status == "confirmed" and one.tx == two.tx
        assert (one.source, len(one.sent), two.source, two.sent) == ("sent", 1, "ledger", ())
        await bridge.run(first.aclose)

        restarted = restart(first, net, db)  # same ledger file after a "restart"
        again = await bridge.run(restarted.post, report)
        assert (again.tx, again.source, again.sent) == (one.tx, "ledger", ())
        await bridge.run(restarted.aclose)

        # Another validator (own payer, empty ledger), holding another subset of signatures.
        other = await funded(bridge, net.poster(tmp_path / "v2.sqlite"))
        theirs = await bridge.run(other.post, net.report(0, by=[1, 2, 3]))
        assert (theirs.status, theirs.source, theirs.sent) == ("confirmed", "chain", ())
        row = other.ledger.get(0)
        assert row is not None and row.status == "confirmed"
        assert [p.tx for p in await chain_posts(bridge, net, report)] == [one.tx]
        await bridge.run(other.aclose)


async def test_a_poster_that_finds_the_report_accepted_names_the_accepting_post(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """PostOutcome's contract: a confirmation learnt from the chain ("chain") carries "the
    post with which the members' signatures on chain first reached the quorum", and the
    ledger row keeps it; never a transaction of this poster that did not land.

    Fails on 3bd3fa5: `ChainPoster._confirmed` takes `tx` from the poster's own ledger row
    (None for a fresh ledger, or a signature that was refused and never landed) and only the
    slot from the chain (`accepted_slot`)."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=75)
        report = net.report(0)
        first = await funded(bridge, net.poster(tmp_path / "a.sqlite"))
        accepted = await bridge.run(first.post, report)
        assert accepted.source == "sent" and accepted.tx is not None

        fresh = net.poster(tmp_path / "b.sqlite")  # reads only: no funds needed
        theirs = await bridge.run(fresh.post, report)
        refused = net.poster(tmp_path / "c.sqlite")  # its last try was refused in preflight
        never_landed = str(Keypair().sign_message(b"refused"))
        refused.ledger.record_outcome(0, report.header_sha256, "failed", never_landed, None,
                                      "rejected: preflight", 0.0)
        stale = await bridge.run(refused.post, report)
        for poster, outcome in ((fresh, theirs), (refused, stale)):
            assert (outcome.status, outcome.source, outcome.sent) == ("confirmed", "chain", ())
            assert outcome.slot == accepted.slot
            row = poster.ledger.get(0)
            assert row is not None and row.status == "confirmed"
            assert (outcome.tx, row.tx) == (accepted.tx, accepted.tx), "not the accepting post"
        for p in (first, fresh, refused):
            await bridge.run(p.aclose)


async def test_a_crash_after_sending_is_settled_from_the_ledger(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """Signature written, transaction sent, process died before settling: no second post."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=80)
        db = tmp_path / "v.sqlite"
        poster = await funded(bridge, net.poster(db))
        report = net.report(0)
        sent = await send_by_hand(bridge, poster, report, member_signatures(report)[:3])
        await bridge.run(poster.aclose)

        after_restart = restart(poster, net, db)
        outcome = await bridge.run(after_restart.post, report)
        assert (outcome.status, outcome.tx, outcome.source, outcome.sent) == (
            "confirmed", sent, "ledger", ())
        assert [p.tx for p in await chain_posts(bridge, net, report)] == [sent]
        row = after_restart.ledger.get(0)
        assert row is not None and (row.status, row.tx, row.attempts) == ("confirmed", sent, 1)
        await bridge.run(after_restart.aclose)


async def test_a_crash_before_sending_resends_once_the_old_blockhash_expired(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=90)
        poster = await funded(bridge, net.poster(tmp_path / "v.sqlite"))
        report = net.report(0)
        never_sent = str(Keypair().sign_message(b"never sent"))
        height = (await bridge.run(poster.client.get_block_height, Confirmed)).value
        poster.ledger.record_sending(0, report.header_sha256, never_sent, height - 1, 0.0)  # expired
        outcome = await bridge.run(poster.post, report)
        assert (outcome.status, outcome.source, len(outcome.sent)) == ("confirmed", "sent", 1)
        assert outcome.tx != never_sent
        assert [p.tx for p in await chain_posts(bridge, net, report)] == [outcome.tx]
        await bridge.run(poster.aclose)


# -- what the chain refuses, and what the poster does not send ------------------------------------


async def test_a_wrong_signature_fails_in_the_precompile_and_nothing_lands(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=40)
        good = net.report(0)
        pairs = member_signatures(good)
        pk, sig = pairs[1]
        report = ReportPost(0, good.header, tuple(pairs[:1]) + ((pk, bytes([sig[0] ^ 1]) + sig[1:]),)
                            + tuple(pairs[2:]), net.digest)
        poster = await funded(bridge, net.poster(tmp_path / "v.sqlite"))
        outcome = await bridge.run(poster.post, report)
        assert outcome.status == "failed" and outcome.error is not None
        assert "Error processing Instruction 0: custom program error: 0x2" in outcome.error
        assert "ed25519: invalid signature" in outcome.error and "\n" not in outcome.error
        assert poster.last_error == outcome.error == poster.ledger.last_error()
        row = poster.ledger.get(0)
        assert row is not None and row.status == "failed"
        assert outcome.sent == ()  # refused in preflight: never forwarded
        assert await report_state(bridge, net, report) is None
        assert await chain_posts(bridge, net, report) == []
        await bridge.run(poster.aclose)


async def test_a_report_waits_for_its_predecessor_then_is_accepted(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=50)
        zero = net.report(0)
        one = net.report(1, zero.header_sha256)
        poster = await funded(bridge, net.poster(tmp_path / "v.sqlite"))
        early = await bridge.run(poster.post, one)
        assert (early.status, early.sent, early.tx) == ("failed", (), None)
        assert early.error is not None and early.error.startswith(
            "waiting for the previous report: the pool's chain head is 0000000000000000… "
            "(epoch none), this report follows " + zero.header_sha256.hex()[:16])
        assert await report_state(bridge, net, one) is None  # not even a tally was opened
        row = poster.ledger.get(1)
        assert row is not None and (row.status, row.last_error) == ("failed", early.error)

        assert (await bridge.run(poster.post, zero)).status == "confirmed"
        later = await bridge.run(poster.post, one)  # what Node._rescan_posts does next epoch
        assert (later.status, later.source, len(later.sent)) == ("confirmed", "sent", 1)
        state = await report_state(bridge, net, one)
        assert state is not None and state.accepted and state.accepted_seq == 2
        pool = await pool_state(bridge, net)
        assert (pool.accepted_count, pool.last_header_hash) == (2, one.header_sha256)
        await bridge.run(poster.aclose)


@pytest.mark.parametrize("n", [4, 7])
async def test_a_forged_header_signed_by_f_members_is_never_accepted(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path, n: int
) -> None:
    """f byzantine members sign a forged header of epoch 0 and post it first: their tally
    stays below threshold; the honest header (signed by the others) is accepted; after
    that the forged one can be accepted by nobody, and the poster does not even send it."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, n, seed=60 + n)
        byzantine = range(net.f)
        forged = net.report(0, by=byzantine, salt=b"forged")
        honest = net.report(0, by=range(net.f, n))
        assert forged.header != honest.header

        liar = await funded(bridge, net.poster(tmp_path / "liar.sqlite"))
        short = await bridge.run(liar.post, forged)
        assert (short.status, short.on_chain, len(short.sent)) == ("failed", net.f, 1)
        assert short.error == (f"only {net.f} of {net.threshold} members' signatures on chain, "
                               f"and the report carries no others")
        tally = await report_state(bridge, net, forged)
        assert tally is not None and not tally.accepted and tally.signer_count == net.f

        poster = await funded(bridge, net.poster(tmp_path / "v.sqlite"))
        outcome = await bridge.run(poster.post, honest)
        assert (outcome.status, outcome.source) == ("confirmed", "sent")
        pool = await pool_state(bridge, net)
        assert (pool.accepted_count, pool.last_header_hash) == (1, honest.header_sha256)

        late = await bridge.run(liar.post, forged)
        assert (late.status, late.sent) == ("failed", ())
        assert late.error == ("the pool has accepted epoch 0 under another header; epoch 0's "
                              "report can no longer be")

        async def post_raw() -> str | None:  # around the poster: the program itself says no
            target = await liar.target()
            ixs = post_report_ixs(net.program_id, net.pool, target.validator_set, target.vault,
                                  liar.payer.pubkey(), forged.header, member_signatures(forged))
            try:
                await pool_client.send_and_confirm(liar.client, liar.payer, ixs)
            except pool_client.TransactionFailed as refused:
                return refused.name
            return None

        assert await bridge.run(post_raw) == "DifferentHeader"
        tally = await report_state(bridge, net, forged)
        assert tally is not None and not tally.accepted and tally.signer_count == net.f
        assert (await pool_state(bridge, net)).accepted_count == 1
        for p in (liar, poster):
            await bridge.run(p.aclose)


async def test_a_pool_whose_set_is_not_the_networks_is_refused_before_sending(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 4, seed=45)
        stranger = SigningKey(bytes(32))
        others = Net(net.url, net.signers[:3] + (stranger,), net.pool, net.digest)
        poster = await funded(bridge, others.poster(tmp_path / "v.sqlite"))
        outcome = await bridge.run(poster.post, others.report(0))
        assert (outcome.status, outcome.sent) == ("failed", ())
        assert outcome.error == ("the pool's validator set (4 keys, threshold 3) is not this "
                                 "network's (4 keys, threshold 3)")
        await bridge.run(poster.aclose)


async def test_unreachable_rpc_fails_with_a_short_error_after_bounded_retries(
    bridge: AsyncioBridge, tmp_path: Path
) -> None:
    with trio.fail_after(20):
        with trio.socket.socket() as sock:  # a port nobody listens on
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        keys = tuple(sorted((SigningKey(bytes([i]) * 32) for i in range(1, 5)),
                            key=lambda k: bytes(k.verify_key)))
        net = Net(f"http://127.0.0.1:{port}", keys, Keypair().pubkey(), bytes(32))
        poster = net.poster(tmp_path / "v.sqlite", max_attempts=3, backoff=(0.01, 0.02))
        outcome = await bridge.run(poster.post, net.report(0))
        assert (outcome.status, outcome.tx, outcome.sent) == ("failed", None, ())
        assert outcome.error is not None and outcome.error.startswith("rpc unreachable: ConnectError")
        assert outcome.error.endswith("(attempt 3/3)") and "\n" not in outcome.error
        assert poster.ledger.last_error() == outcome.error
        assert not await bridge.run(poster.ensure_funded, 1)
        assert poster.last_error is not None and poster.last_error.startswith("rpc unreachable")
        await bridge.run(poster.aclose)


async def test_a_second_header_for_a_posted_epoch_is_refused(bridge: AsyncioBridge, tmp_path: Path) -> None:
    with trio.fail_after(5):
        keys = tuple(sorted((SigningKey(bytes([i]) * 32) for i in range(1, 5)),
                            key=lambda k: bytes(k.verify_key)))
        net = Net("http://127.0.0.1:9", keys, Keypair().pubkey(), bytes(32))
        poster = net.poster(tmp_path / "v.sqlite")
        poster.ledger.record_outcome(11, b"\x01" * 32, "confirmed", "sig", 3, None, 0.0)
        outcome = await bridge.run(poster.post, net.report(11))
        assert (outcome.status, outcome.sent) == ("failed", ())
        assert outcome.error == "epoch 11 is already recorded with a different header"


def test_a_threshold_below_one_or_above_the_members_is_refused(tmp_path: Path) -> None:
    ledger = ChainLedger(tmp_path / "v.sqlite")
    members = [bytes([i]) * 32 for i in range(3)]
    target = {"program_id": POOL_PROGRAM_ID, "pool": Keypair().pubkey(), "members": members}
    for threshold in (0, 4):
        with pytest.raises(ValueError, match=r"threshold must be in 1\.\.3"):
            ChainPoster("http://127.0.0.1:9", Keypair(), ledger, threshold=threshold,
                        **target)  # type: ignore[arg-type]
    ledger.close()


def test_pool_target_names_the_report_account_the_program_derives() -> None:
    program, pool = POOL_PROGRAM_ID, Keypair().pubkey()
    target = PoolTarget(program, pool, Keypair().pubkey(), Keypair().pubkey())
    net = Net("", (SigningKey(bytes(32)),), pool, bytes(32))
    report = net.report(3)
    assert target.report_address(report) == report_address(program, pool, 3,
                                                            report.header_sha256)
