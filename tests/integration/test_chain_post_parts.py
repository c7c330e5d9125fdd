"""Reports whose quorum needs more than one transaction (more than 7 signatures) on a real
local chain: the signatures of several posts add up, across calls, restarts and validators.

Every landed post is read back independently (getSignaturesForAddress + getTransaction, parsed
with `parse_post_transaction`) and each of its signatures is verified again with nacl.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import VerifyKey
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.transaction_status import UiTransaction

from tests.integration.test_chain_post import funded_poster, signed_report
from validator.bridge import AsyncioBridge
from validator.chain import (
    MAX_SIGNATURES_PER_TX,
    ChainLedger,
    ChainPoster,
    ReportPost,
    build_post_transaction,
    member_signatures,
    parse_post_transaction,
    report_log_address,
)

RPC_METHODS = ("get_signatures_for_address", "get_transaction", "get_latest_blockhash",
               "send_raw_transaction", "get_signature_statuses", "get_block_height")


class Crash(Exception):
    """Stands for the process dying at an injected point (nothing in chain.py catches it)."""


@dataclass(frozen=True)
class Landed:
    tx: str
    payer: str
    keys: tuple[bytes, ...]  # in the order the Ed25519 instruction holds them


def restart(poster: ChainPoster, url: str, db: Path, members: list[bytes]) -> ChainPoster:
    """The same payer and ledger file in a new poster: what a restarted validator builds."""
    return ChainPoster(url, poster.payer, ChainLedger(db), poll_interval=0.05,
                       min_signatures=9, members=members)


def keys_of(report: ReportPost) -> list[bytes]:
    return [pubkey for pubkey, _ in report.signatures]


async def log_posts(bridge: AsyncioBridge, url: str, report: ReportPost) -> list[Landed]:
    """Successful posts of `report` in its report log, oldest first; every signature verified."""

    async def fetch() -> list[Landed]:
        out = []
        async with AsyncClient(url, commitment=Confirmed) as client:
            log = report_log_address(report.config_digest)
            listed = (await client.get_signatures_for_address(log, limit=1000)).value
            for item in reversed(listed):
                if item.err is not None:
                    continue
                got = (await client.get_transaction(item.signature, "json", Confirmed, 0)).value
                assert got is not None and got.transaction.meta is not None
                assert got.transaction.meta.err is None
                epoch, digest, pairs = parse_post_transaction(got)
                if (epoch, digest) != (report.epoch, report.header_sha256):
                    continue
                for pubkey, sig in pairs:
                    VerifyKey(pubkey).verify(digest, sig)
                    assert (pubkey, sig) in report.signatures
                ui_tx = got.transaction.transaction
                assert isinstance(ui_tx, UiTransaction)  # "json" encoding
                payer = str(ui_tx.message.account_keys[0])
                out.append(Landed(str(item.signature), payer, tuple(pk for pk, _ in pairs)))
        return out

    return await bridge.run(fetch)


def union(posts: list[Landed]) -> set[bytes]:
    return {key for post in posts for key in post.keys}


async def patch_client(
    bridge: AsyncioBridge,
    poster: ChainPoster,
    hook: Callable[[str, int], None] = lambda name, count: None,
) -> Counter[str]:
    """Count the poster's RPC calls by method; `hook(method, n)` runs before the n-th call.

    Patched on the asyncio side, where the poster's client lives.
    """
    calls: Counter[str] = Counter()

    def wrap(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            hook(name, calls[name])
            return await method(*args, **kwargs)

        return counted

    async def patch() -> None:
        client = poster.client
        for name in RPC_METHODS:
            setattr(client, name, wrap(name, getattr(client, name)))

    await bridge.run(patch)
    return calls


async def test_a_quorum_of_nine_lands_in_two_posts_and_is_found_again(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        report = signed_report(21, 13, seed=2113)
        members = keys_of(report)
        db = tmp_path / "a.sqlite"
        poster = await funded_poster(bridge, chain_url, db, min_signatures=9, members=members)
        outcome = await bridge.run(poster.post, report)
        assert (outcome.status, outcome.source, outcome.error) == ("confirmed", "sent", None)
        assert (outcome.on_chain, outcome.needed) == (9, 9)
        assert len(outcome.sent) == 2 and outcome.tx == outcome.sent[-1]

        posts = await log_posts(bridge, chain_url, report)
        assert [p.tx for p in posts] == list(outcome.sent)
        ordered = sorted(members)
        assert [list(p.keys) for p in posts] == [ordered[:7], ordered[7:9]]  # sorted, no overlap
        assert len(union(posts)) >= 9
        row = poster.ledger.get(21)
        assert row is not None and (row.status, row.tx, row.attempts) == ("confirmed",
                                                                          outcome.tx, 2)

        again = await bridge.run(poster.post, report)
        assert (again.status, again.source, again.tx, again.sent) == ("confirmed", "ledger",
                                                                      outcome.tx, ())
        await bridge.run(poster.aclose)

        restarted = ChainPoster(chain_url, poster.payer, ChainLedger(db), min_signatures=9,
                                members=members)
        assert (await bridge.run(restarted.post, report)).sent == ()
        await bridge.run(restarted.aclose)

        # Another validator (own payer, empty ledger): the union of both posts proves it.
        other = await funded_poster(bridge, chain_url, tmp_path / "b.sqlite", min_signatures=9,
                                    members=members)
        theirs = await bridge.run(other.post, report)
        assert (theirs.status, theirs.source, theirs.sent) == ("confirmed", "chain", ())
        assert (theirs.tx, theirs.on_chain) == (outcome.sent[-1], 9)  # where the union hit 9
        assert other.ledger.get(21).status == "confirmed"  # type: ignore[union-attr]
        assert await log_posts(bridge, chain_url, report) == posts
        await bridge.run(other.aclose)


async def test_a_hundred_validators_post_sixty_seven_signatures_in_ten_posts(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """The union is read once, then only what is new: getTransaction is never asked for a
    post of this call, and a later reader asks for each post once (not O(parts^2))."""
    with trio.fail_after(60):
        report = signed_report(22, 100, seed=22100)
        members = keys_of(report)
        poster = await funded_poster(bridge, chain_url, tmp_path / "a.sqlite", min_signatures=67,
                                     members=members)
        calls = await patch_client(bridge, poster)
        started = time.monotonic()
        outcome = await bridge.run(poster.post, report)
        took = time.monotonic() - started
        parts = math.ceil(67 / MAX_SIGNATURES_PER_TX)
        assert (outcome.status, outcome.on_chain, len(outcome.sent)) == ("confirmed", 67, parts)
        assert calls["send_raw_transaction"] == calls["get_latest_blockhash"] == parts
        assert calls["get_signatures_for_address"] == parts  # before each part, not after
        assert calls["get_transaction"] == 0
        print(f"\nn=100 need=67: {parts} transactions in {took:.2f}s, "
              f"{sum(calls.values())} RPC calls {dict(calls)}")

        posts = await log_posts(bridge, chain_url, report)
        assert [p.tx for p in posts] == list(outcome.sent)
        assert [len(p.keys) for p in posts] == [7] * 9 + [4]
        assert len(union(posts)) == sum(len(p.keys) for p in posts) == 67

        reader = await funded_poster(bridge, chain_url, tmp_path / "b.sqlite", min_signatures=67,
                                     members=members)
        read = await patch_client(bridge, reader)
        theirs = await bridge.run(reader.post, report)
        assert (theirs.status, theirs.source, theirs.sent) == ("confirmed", "chain", ())
        assert (read["get_signatures_for_address"], read["get_transaction"]) == (1, parts)
        assert read["send_raw_transaction"] == 0
        print(f"a later reader: {sum(read.values())} RPC calls {dict(read)}")
        for p in (poster, reader):
            await bridge.run(p.aclose)


async def test_a_second_poster_after_the_first_sends_nothing(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        report = signed_report(23, 13, seed=2313)
        members = keys_of(report)
        first, second = [
            await funded_poster(bridge, chain_url, tmp_path / f"{name}.sqlite", min_signatures=9,
                                members=members)
            for name in "ab"
        ]
        one = await bridge.run(first.post, report)
        two = await bridge.run(second.post, report)
        assert (one.status, len(one.sent)) == ("confirmed", 2)
        assert (two.status, two.source, two.sent) == ("confirmed", "chain", ())
        assert len(await log_posts(bridge, chain_url, report)) == 2
        for p in (first, second):
            await bridge.run(p.aclose)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_posters_may_duplicate_a_part_but_land_only_verified_signatures(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path, seed: int
) -> None:
    """No coordination: each reads the union before each part, so both can send the same
    part. Each sends a key at most once per call, hence at most 2 posts each."""
    with trio.fail_after(30):
        report = signed_report(24 + seed, 13, seed=2400 + seed)
        members = keys_of(report)
        posters = [
            await funded_poster(bridge, chain_url, tmp_path / f"{i}.sqlite", min_signatures=9,
                                members=members)
            for i in range(2)
        ]
        outcomes = []

        async def post(poster: ChainPoster) -> None:
            outcomes.append(await bridge.run(poster.post, report))

        async with trio.open_nursery() as nursery:
            for poster in posters:
                nursery.start_soon(post, poster)
        assert [o.status for o in outcomes] == ["confirmed"] * 2
        assert all(len(o.sent) <= 2 for o in outcomes)

        posts = await log_posts(bridge, chain_url, report)  # each signature verified in there
        assert len(union(posts)) >= 9
        for poster in posters:
            payer = str(poster.payer.pubkey())
            theirs = [key for p in posts if p.payer == payer for key in p.keys]
            assert len(theirs) == len(set(theirs))  # never the same key twice from one poster
        duplicates = sum(len(p.keys) for p in posts) - len(union(posts))
        print(f"\nseed {seed}: {len(posts)} posts, {duplicates} duplicate signatures")
        for poster in posters:
            await bridge.run(poster.aclose)


async def test_a_crash_after_the_first_part_resumes_with_the_missing_signatures_only(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """The process dies after part 1 landed, before part 2 is built: the ledger still says
    "sending" part 1; the restarted poster settles it and sends only what the union lacks."""
    with trio.fail_after(30):
        report = signed_report(30, 13, seed=3013)
        members = keys_of(report)
        db = tmp_path / "v.sqlite"
        poster = await funded_poster(bridge, chain_url, db, min_signatures=9, members=members)

        def crash_before_part_two(name: str, count: int) -> None:
            if name == "get_latest_blockhash" and count == 2:
                raise Crash

        await patch_client(bridge, poster, crash_before_part_two)
        with pytest.raises(Crash):
            await bridge.run(poster.post, report)
        (part_one,) = await log_posts(bridge, chain_url, report)
        row = poster.ledger.get(30)
        assert row is not None and (row.status, row.tx) == ("sending", part_one.tx)
        await bridge.run(poster.aclose)

        restarted = restart(poster, chain_url, db, members)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, len(outcome.sent)) == ("confirmed", "sent", 1)
        posts = await log_posts(bridge, chain_url, report)
        assert [p.tx for p in posts] == [part_one.tx, outcome.tx]
        assert set(posts[1].keys) == set(sorted(members)[7:9])  # only missing ones
        assert not set(posts[0].keys) & set(posts[1].keys)
        await bridge.run(restarted.aclose)


async def test_a_crash_after_sending_the_last_part_is_settled_from_the_ledger(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        report = signed_report(31, 13, seed=3113)
        members = keys_of(report)
        db = tmp_path / "v.sqlite"
        poster = await funded_poster(bridge, chain_url, db, min_signatures=9, members=members)

        calls: Counter[str] = Counter()

        def crash_after_part_two(name: str, count: int) -> None:
            if name == "get_signature_statuses" and calls["send_raw_transaction"] == 2:
                raise Crash  # sent, not yet settled

        calls = await patch_client(bridge, poster, crash_after_part_two)
        with pytest.raises(Crash):
            await bridge.run(poster.post, report)
        await bridge.run(poster.aclose)

        restarted = restart(poster, chain_url, db, members)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, outcome.sent) == ("confirmed", "ledger", ())
        posts = await log_posts(bridge, chain_url, report)
        assert len(posts) == 2 and outcome.tx == posts[-1].tx
        await bridge.run(restarted.aclose)


async def test_a_restart_after_a_part_sent_by_hand_sends_only_what_is_missing(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """As test_chain_post's crash after sending, with a first part of 7 of 13 signatures."""
    with trio.fail_after(30):
        report = signed_report(32, 13, seed=3213)
        members = keys_of(report)
        db = tmp_path / "v.sqlite"
        poster = await funded_poster(bridge, chain_url, db)
        part_one = member_signatures(report)[:MAX_SIGNATURES_PER_TX]

        async def send_and_crash() -> str:
            latest = (await poster.client.get_latest_blockhash(Confirmed)).value
            tx = build_post_transaction(report, poster.payer, latest.blockhash, part_one)
            poster.ledger.record_sending(32, report.header_sha256, str(tx.signatures[0]),
                                         latest.last_valid_block_height, 0.0)
            await poster.client.send_raw_transaction(bytes(tx), TxOpts(skip_confirmation=True))
            return str(tx.signatures[0])

        first = await bridge.run(send_and_crash)
        await bridge.run(poster.aclose)
        restarted = restart(poster, chain_url, db, members)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, len(outcome.sent)) == ("confirmed", "sent", 1)
        posts = await log_posts(bridge, chain_url, report)
        assert [p.tx for p in posts] == [first, outcome.tx]
        assert list(posts[1].keys) == sorted(members)[7:9]
        assert restarted.ledger.get(32).attempts == 2  # type: ignore[union-attr]
        await bridge.run(restarted.aclose)


async def test_a_report_short_of_the_quorum_posts_what_it_has_then_fails_quietly(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """5 of 13 members' signatures (and 2 strangers'): one post of the 5, "failed", nothing
    more on the next call; another validator's copy with 6 others completes the quorum."""
    with trio.fail_after(30):
        full = signed_report(33, 13, seed=3313)
        strangers = signed_report(33, 2, seed=3314)
        assert strangers.header != full.header
        members = keys_of(full)
        by_key = dict(full.signatures)
        ordered = sorted(members)
        # Strangers' pairs (over another header, too): never sent, never counted.
        ours = ReportPost(33, full.header, tuple((k, by_key[k]) for k in ordered[:5])
                          + strangers.signatures, full.config_digest)
        poster = await funded_poster(bridge, chain_url, tmp_path / "a.sqlite", min_signatures=9,
                                     members=members)
        short = await bridge.run(poster.post, ours)
        expected = "only 5 of 9 members' signatures on chain, and the report carries no others"
        assert (short.status, short.error, short.on_chain, len(short.sent)) == (
            "failed", expected, 5, 1)
        assert poster.ledger.get(33).status == "failed"  # type: ignore[union-attr]
        again = await bridge.run(poster.post, ours)
        assert (again.status, again.error, again.sent) == ("failed", expected, ())

        theirs = ReportPost(33, full.header, tuple((k, by_key[k]) for k in ordered[3:]),
                            full.config_digest)
        other = await funded_poster(bridge, chain_url, tmp_path / "b.sqlite", min_signatures=9,
                                    members=members)
        done = await bridge.run(other.post, theirs)
        assert (done.status, done.on_chain, len(done.sent)) == ("confirmed", 9, 1)
        posts = await log_posts(bridge, chain_url, full)
        assert [list(p.keys) for p in posts] == [ordered[:5], ordered[5:9]]
        for p in (poster, other):
            await bridge.run(p.aclose)


def test_a_quorum_below_one_or_above_the_members_is_refused(tmp_path: Path) -> None:
    ledger = ChainLedger(tmp_path / "v.sqlite")
    members = [bytes([i]) * 32 for i in range(3)]
    with pytest.raises(ValueError, match="exceeds the 3 members"):
        ChainPoster("http://127.0.0.1:9", Keypair(), ledger, min_signatures=4, members=members)
    with pytest.raises(ValueError, match="at least 1"):
        ChainPoster("http://127.0.0.1:9", Keypair(), ledger, min_signatures=0, members=members)
    ledger.close()
