"""Reports whose threshold needs more than one post (more than 5 signatures) on the real pool
program: the EpochReport account adds the parts up, across calls, restarts, validators and
concurrent posters; a hundred validators take fourteen posts.

Every landed post is read back independently (`chain_posts` in test_chain_post) and each of
its signatures is verified again with nacl.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from solders.keypair import Keypair

from tests.integration.test_chain_post import (
    Landed,
    chain_posts,
    funded,
    new_pool,
    pool_state,
    report_state,
    restart,
    send_by_hand,
)
from validator.bridge import AsyncioBridge
from validator.chain import MAX_SIGNATURES_PER_TX, ChainPoster, member_signatures
from validator.pool_program import post_parts

RPC_METHODS = ("get_multiple_accounts", "get_latest_blockhash", "send_raw_transaction",
               "get_signature_statuses", "get_block_height", "get_transaction",
               "get_signatures_for_address")


class Crash(Exception):
    """Stands for the process dying at an injected point (nothing in chain.py catches it)."""


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


async def test_a_hundred_validators_reach_sixty_seven_in_fourteen_posts(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """The poster alone: 14 transactions sent (PostOutcome.sent), 13 of 5 signatures and one
    of 2; the chain is read once per part (one getMultipleAccounts), never scanned."""
    with trio.fail_after(120):
        net = await new_pool(bridge, chain_url, 100, seed=22100)
        assert net.threshold == 67
        report = net.report(0)
        poster = await funded(bridge, net.poster(tmp_path / "a.sqlite"))
        calls = await patch_client(bridge, poster)
        started = trio.current_time()
        outcome = await bridge.run(poster.post, report)
        took = trio.current_time() - started
        parts = post_parts(67)
        assert parts == 14
        assert (outcome.status, outcome.source, outcome.on_chain) == ("confirmed", "sent", 67)
        assert len(outcome.sent) == len(set(outcome.sent)) == parts
        assert calls["send_raw_transaction"] == calls["get_latest_blockhash"] == parts
        # two reads for the pool and its set (once), then one before each part and the last
        assert calls["get_multiple_accounts"] == 2 + parts + 1
        assert calls["get_transaction"] == calls["get_signatures_for_address"] == 0
        print(f"\nn=100 threshold=67: {len(outcome.sent)} transactions in {took:.2f}s, "
              f"{sum(calls.values())} RPC calls {dict(calls)}")

        state = await report_state(bridge, net, report)
        assert state is not None and state.accepted and state.signer_count == 67
        posts = await chain_posts(bridge, net, report)
        assert [p.tx for p in posts] == list(outcome.sent)
        assert [len(p.keys) for p in posts] == [MAX_SIGNATURES_PER_TX] * 13 + [2]
        assert len(union(posts)) == sum(len(p.keys) for p in posts) == 67
        assert union(posts) == set(sorted(net.members)[:67])

        reader = await funded(bridge, net.poster(tmp_path / "b.sqlite"))
        read = await patch_client(bridge, reader)
        theirs = await bridge.run(reader.post, report)
        assert (theirs.status, theirs.source, theirs.sent) == ("confirmed", "chain", ())
        assert read["get_multiple_accounts"] == 3 and read["send_raw_transaction"] == 0
        for p in (poster, reader):
            await bridge.run(p.aclose)


async def test_a_second_poster_after_the_first_sends_nothing(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=2313)
        report = net.report(0)
        first, second = [await funded(bridge, net.poster(tmp_path / f"{name}.sqlite"))
                         for name in "ab"]
        one = await bridge.run(first.post, report)
        two = await bridge.run(second.post, report)
        assert (one.status, len(one.sent)) == ("confirmed", 2)
        assert (two.status, two.source, two.sent, two.on_chain) == ("confirmed", "chain", (), 7)
        assert len(await chain_posts(bridge, net, report)) == 2
        for p in (first, second):
            await bridge.run(p.aclose)


async def test_another_validators_signatures_count_and_only_the_missing_are_sent(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """One validator's copy holds members 0-4 (posts them, short of 7); another's holds 3-9:
    it sends 5 and 6 only. Strangers' pairs in a copy are never sent."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=2410)
        strangers = (await new_pool(bridge, chain_url, 4, seed=2411)).report(0)
        ours = net.report(0, by=range(5), extra=strangers.signatures)
        a = await funded(bridge, net.poster(tmp_path / "a.sqlite"))
        short = await bridge.run(a.post, ours)
        assert (short.status, short.on_chain, len(short.sent)) == ("failed", 5, 1)
        b = await funded(bridge, net.poster(tmp_path / "b.sqlite"))
        done = await bridge.run(b.post, net.report(0, by=range(3, 10)))
        assert (done.status, done.source, done.on_chain, len(done.sent)) == ("confirmed", "sent",
                                                                             7, 1)
        posts = await chain_posts(bridge, net, ours)
        assert [list(p.keys) for p in posts] == [net.members[:5], net.members[5:7]]
        assert (posts[0].payer, posts[1].payer) == (str(a.payer.pubkey()), str(b.payer.pubkey()))
        for p in (a, b):
            await bridge.run(p.aclose)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_posters_end_accepted_and_never_land_a_key_twice_each(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path, seed: int
) -> None:
    """No coordination: each reads the account before each part, so both may send the same
    part (the program counts a signature once). Each sends a key at most once per call,
    hence at most 2 posts each."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=2400 + seed)
        report = net.report(0)
        posters = [await funded(bridge, net.poster(tmp_path / f"{i}.sqlite")) for i in range(2)]
        outcomes = []

        async def post(poster: ChainPoster) -> None:
            outcomes.append(await bridge.run(poster.post, report))

        async with trio.open_nursery() as nursery:
            for poster in posters:
                nursery.start_soon(post, poster)
        assert [o.status for o in outcomes] == ["confirmed"] * 2
        assert all(len(o.sent) <= 2 for o in outcomes)

        state = await report_state(bridge, net, report)
        assert state is not None and state.accepted and state.signer_count == net.threshold
        assert (await pool_state(bridge, net)).accepted_count == 1
        posts = await chain_posts(bridge, net, report)  # each signature verified in there
        assert len(union(posts)) >= net.threshold
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
    "sending" part 1; the restarted poster settles it and sends only what the account lacks."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=3013)
        report = net.report(0)
        db = tmp_path / "v.sqlite"
        poster = await funded(bridge, net.poster(db))

        def crash_before_part_two(name: str, count: int) -> None:
            if name == "get_latest_blockhash" and count == 2:
                raise Crash

        await patch_client(bridge, poster, crash_before_part_two)
        with pytest.raises(Crash):
            await bridge.run(poster.post, report)
        (part_one,) = await chain_posts(bridge, net, report)
        row = poster.ledger.get(0)
        assert row is not None and (row.status, row.tx) == ("sending", part_one.tx)
        await bridge.run(poster.aclose)

        restarted = restart(poster, net, db)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, len(outcome.sent)) == ("confirmed", "sent", 1)
        posts = await chain_posts(bridge, net, report)
        assert [p.tx for p in posts] == [part_one.tx, outcome.tx]
        assert [list(p.keys) for p in posts] == [net.members[:5], net.members[5:7]]
        await bridge.run(restarted.aclose)


async def test_a_crash_after_sending_the_last_part_is_settled_from_the_ledger(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=3113)
        report = net.report(0)
        db = tmp_path / "v.sqlite"
        poster = await funded(bridge, net.poster(db))
        calls: Counter[str] = Counter()

        def crash_after_part_two(name: str, count: int) -> None:
            if name == "get_signature_statuses" and calls["send_raw_transaction"] == 2:
                raise Crash  # sent, not yet settled

        calls = await patch_client(bridge, poster, crash_after_part_two)
        with pytest.raises(Crash):
            await bridge.run(poster.post, report)
        await bridge.run(poster.aclose)

        restarted = restart(poster, net, db)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, outcome.sent) == ("confirmed", "ledger", ())
        posts = await chain_posts(bridge, net, report)
        assert len(posts) == 2 and outcome.tx == posts[-1].tx
        row = restarted.ledger.get(0)
        assert row is not None and (row.status, row.attempts) == ("confirmed", 2)
        await bridge.run(restarted.aclose)


async def test_a_restart_after_a_part_sent_by_hand_sends_only_what_is_missing(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """As test_chain_post's crash after sending, with a first part of 5 of 7 signatures."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=3213)
        report = net.report(0)
        db = tmp_path / "v.sqlite"
        poster = await funded(bridge, net.poster(db))
        first = await send_by_hand(bridge, poster, report,
                                   member_signatures(report)[:MAX_SIGNATURES_PER_TX])
        await bridge.run(poster.aclose)
        restarted = restart(poster, net, db)
        outcome = await bridge.run(restarted.post, report)
        assert (outcome.status, outcome.source, len(outcome.sent)) == ("confirmed", "sent", 1)
        posts = await chain_posts(bridge, net, report)
        assert [p.tx for p in posts] == [first, outcome.tx]
        assert list(posts[1].keys) == net.members[5:7]
        assert restarted.ledger.get(0).attempts == 2  # type: ignore[union-attr]
        await bridge.run(restarted.aclose)


async def test_a_report_short_of_the_threshold_posts_what_it_has_then_fails_quietly(
    bridge: AsyncioBridge, chain_url: str, tmp_path: Path
) -> None:
    """6 of 10 members' signatures (threshold 7): parts of 5 and 1, "failed", and nothing
    more on the next call or after a restart; a copy with one more completes it."""
    with trio.fail_after(60):
        net = await new_pool(bridge, chain_url, 10, seed=3313)
        ours = net.report(0, by=range(6))
        db = tmp_path / "a.sqlite"
        poster = await funded(bridge, net.poster(db))
        short = await bridge.run(poster.post, ours)
        expected = "only 6 of 7 members' signatures on chain, and the report carries no others"
        assert (short.status, short.error, short.on_chain, short.needed, len(short.sent)) == (
            "failed", expected, 6, 7, 2)
        assert poster.last_error == expected == poster.ledger.last_error()
        again = await bridge.run(poster.post, ours)
        assert (again.status, again.error, again.sent) == ("failed", expected, ())
        await bridge.run(poster.aclose)
        restarted = restart(poster, net, db)
        assert (await bridge.run(restarted.post, ours)).sent == ()
        tally = await report_state(bridge, net, ours)
        assert tally is not None and not tally.accepted and tally.signer_count == 6

        full = net.report(0, by=range(1, 10))
        other = await funded(bridge, net.poster(tmp_path / "b.sqlite", Keypair()))
        done = await bridge.run(other.post, full)
        assert (done.status, done.on_chain, len(done.sent)) == ("confirmed", 7, 1)
        posts = await chain_posts(bridge, net, full)
        assert [list(p.keys) for p in posts] == [net.members[:5], net.members[5:6],
                                                 net.members[6:7]]
        # The short copy now finds it accepted (its own last part, settled again, is its tx).
        settled = await bridge.run(restarted.post, ours)
        assert (settled.status, settled.source, settled.sent) == ("confirmed", "ledger", ())
        assert settled.tx == posts[1].tx
        for p in (restarted, other):
            await bridge.run(p.aclose)
