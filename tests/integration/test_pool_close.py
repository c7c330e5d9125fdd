"""`ChainPoster.close_finished` on a real local chain with the compiled pool program.

What it pins: reports whose claim window has passed are closed (what they did not pay goes
back to the unreserved balance, rent to the poster, claim-map rent to the claimer), a tally
that lost to the honest header is closed at once, nothing else is touched, and a second
call closes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from proofs import merkle
from proofs.report import ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from tests.integration.pool_world import (
    BUDGET,
    CLAIM_WINDOW,
    PoolWorld,
    airdrop,
    provider_key,
    record,
)
from validator import pool_client as pc
from validator import pool_program as pp
from validator.chain import ChainLedger, ChainPoster


@pytest.fixture
def world(tmp_path: Path) -> Iterator[PoolWorld]:
    built = PoolWorld.build(tmp_path)
    try:
        yield built
    finally:
        built.close()


def _poster(world: PoolWorld, tmp_path: Path) -> ChainPoster:
    payer = Keypair()
    world.run(lambda client: airdrop(client, payer.pubkey(), 10**9))
    return ChainPoster(world.url, payer, ChainLedger(tmp_path / "ledger.sqlite"),
                       program_id=world.program_id, pool=world.pool,
                       members=[v.signing_key for v in world.spec.validators], threshold=3)


def test_finished_epochs_and_lost_tallies_are_closed_and_nothing_else(
        world: PoolWorld, tmp_path: Path) -> None:
    payout = Keypair()
    claimer = Keypair()
    world.run(lambda client: pc.create_token_account(client, world.authority, world.mint,
                                                     payout.pubkey()))
    for epoch in range(CLAIM_WINDOW + 2):  # epochs 0 .. 5; with 6 accepted, 0-2 are past
        world.add_final(epoch, [record(provider_key(f"p{epoch}"), payout.pubkey(), 3),
                                record(provider_key(f"q{epoch}"), Keypair().pubkey(), 1)])
        world.post(epoch)

    # A claim in epoch 0 (its claim map's rent is the claimer's), none in epochs 1 and 2.
    final = world.finals[0]
    raw = [r.to_bytes() for r in world.records[0]]
    index = world.index_of(0, payout.pubkey())[0]

    async def claim(client: AsyncClient) -> None:
        await airdrop(client, claimer.pubkey(), 10**9)
        ix = pp.claim_ix(world.program_id, world.pool, 0, final.header_hash, claimer.pubkey(),
                         pc.associated_token_address(payout.pubkey(), world.mint), world.vault,
                         index, raw[index], merkle.proof(raw, index))
        await pc.send_and_confirm(client, claimer, [ix])

    world.run(claim)
    paid = world.expected(0, payout.pubkey())
    assert world.balance(payout.pubkey()) == paid > 0

    # A tally for epoch 6 signed by one validator (f = 1), then the honest epoch 6 accepted.
    forged_records = [record(provider_key("evil"), Keypair().pubkey(), 100)]
    raw_forged = [r.to_bytes() for r in forged_records]
    forged = ReportHeader(world.spec.config_digest, 6, merkle.root(raw_forged), 1, 100,
                          sha256(b"x"), world.finals[5].header_hash, sha256(b"y")).to_bytes()
    signature = sign_raw(world.seeds[3], sha256(forged))
    vset = pp.set_address(world.program_id, world.pool, 0)[0]
    ixs = pp.post_report_ixs(world.program_id, world.pool, vset, world.vault,
                             world.authority.pubkey(), forged,
                             [(public_key(world.seeds[3]), signature)])
    world.run(lambda client: pc.send_and_confirm(client, world.authority, ixs))
    forged_address = pp.report_address(world.program_id, world.pool, 6, sha256(forged))
    world.add_final(6, [record(provider_key("p6"), payout.pubkey(), 1)])
    world.post(6)

    async def state(client: AsyncClient) -> tuple[pp.PoolState, list[int], int, int]:
        pool = (await pc.read_pool(client, world.program_id, world.pool)).state
        reports = [r.epoch for _, r in await pc.read_reports(client, world.program_id, world.pool)]
        poster = (await client.get_balance(world.authority.pubkey())).value
        return pool, reports, poster, (await client.get_balance(claimer.pubkey())).value

    before, reports, poster_before, claimer_before = world.run(state)
    assert reports == [0, 1, 2, 3, 4, 5, 6, 6]  # the lost tally is there too
    poster = _poster(world, tmp_path)

    closed = world.run(lambda client: poster.close_finished())
    assert closed == [0, 1, 2, 6] and poster.last_error is None, poster.last_error
    after, reports, poster_after, claimer_after = world.run(state)
    assert reports == [3, 4, 5, 6]
    assert world.report(6) is not None and world.report(6).accepted  # type: ignore[union-attr]
    released = (BUDGET - paid) + 2 * BUDGET  # epoch 0's unpaid part, all of epochs 1 and 2
    assert after.reserved_outstanding == before.reserved_outstanding - released
    # Rent back to whoever paid it: the poster (four reports), the claimer (one claim map).
    rent_report = world.run(lambda client: client.get_minimum_balance_for_rent_exemption(
        pp.REPORT_SIZE)).value
    rent_claims = world.run(lambda client: client.get_minimum_balance_for_rent_exemption(
        pp.CLAIMS_SIZE)).value
    assert poster_after == poster_before + 4 * rent_report
    assert claimer_after == claimer_before + rent_claims
    assert world.run(lambda client: client.get_account_info(forged_address)).value is None

    again = _poster(world, tmp_path)  # a fresh poster (its client binds to one event loop)
    assert world.run(lambda client: again.close_finished()) == []
