"""The pool client against the real pool program (programs/pool/pool.so) on a local chain
over HTTP: mint, pool setup, funding and reads, then a report's whole life (posted in
parts, accepted, claimed, closed) with the program's answers read back through RPC."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from proofs import merkle
from proofs.report import Record, ReportHeader
from validator import pool_client as pc
from validator import pool_program as pp
from validator.localchain import LocalChainThread

POOL_SO = Path(__file__).resolve().parents[2] / "programs" / "pool" / "pool.so"
PROGRAM_ID = Pubkey.from_bytes(hashlib.sha256(b"bwpool test program").digest())
DIGEST = hashlib.sha256(b"test network").digest()
SOL = 10**9

if not POOL_SO.exists():
    pytest.skip("programs/pool/pool.so is not built (make program)", allow_module_level=True)


@pytest.fixture(scope="module")
def pool_chain() -> Iterator[str]:
    with LocalChainThread(slot_ms=50, finality_slots=4, programs=[(PROGRAM_ID, POOL_SO.read_bytes())]) as url:
        yield url


def run(url: str, body: Callable[[AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncClient(url, commitment=Confirmed, timeout=10) as client:
            await asyncio.wait_for(body(client), 120)

    asyncio.run(main())


async def funded(client: AsyncClient) -> Keypair:
    kp = Keypair()
    sig = (await client.request_airdrop(kp.pubkey(), 100 * SOL)).value
    await client.confirm_transaction(sig, Confirmed, sleep_seconds=0.05)
    return kp


def signing_keys(n: int) -> list[SigningKey]:
    keys = [SigningKey(hashlib.sha256(b"validator %d" % i).digest()) for i in range(n)]
    return sorted(keys, key=lambda k: bytes(k.verify_key))


async def token_setup(client: AsyncClient, payer: Keypair) -> tuple[Pubkey, Pubkey]:
    mint = await pc.create_mint(client, payer, 6)
    source = await pc.create_token_account(client, payer, mint, payer.pubkey())
    await pc.mint_to(client, payer, mint, source, 10**12)
    return mint, source


def test_init_fund_and_read_a_pool_of_four(pool_chain: str) -> None:
    async def body(client: AsyncClient) -> None:
        authority = await funded(client)
        mint, source = await token_setup(client, authority)
        assert await pc.token_balance(client, source) == 10**12
        keys = [bytes(k.verify_key) for k in signing_keys(4)][::-1]  # init_pool sorts them
        start = hashlib.sha256(b"genesis").digest()
        pool = await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST, keys, epoch_budget=10**9,
                                  claim_window=2, start_header_hash=start)
        view = await pc.read_pool(client, PROGRAM_ID, pool)
        state, vset = view.state, view.validator_set
        assert (state.authority, state.mint, state.version) == (authority.pubkey(), mint, 1)
        assert state.vault == pp.vault_address(PROGRAM_ID, pool)[0]
        assert state.validator_set == pp.set_address(PROGRAM_ID, pool, 0)[0]
        assert state.vault_bump == pp.vault_address(PROGRAM_ID, pool)[1]
        assert state.authority_bump == pp.authority_address(PROGRAM_ID, pool)[1]
        assert (state.last_header_hash, state.epoch_budget, state.claim_window) == (start, 10**9, 2)
        assert (state.accepted_count, state.reserved_outstanding, state.total_paid, state.set_index) == (0, 0, 0, 0)
        assert (vset.pool, vset.config_digest, vset.set_index) == (pool, DIGEST, 0)
        assert (vset.n, vset.f, vset.threshold, vset.keys_written) == (4, 1, 3, 4) and vset.complete
        assert vset.keys == tuple(sorted(keys)) and view.vault_amount == 0

        await pc.fund_pool(client, authority, source, PROGRAM_ID, pool, 5 * 10**9)
        view = await pc.read_pool(client, PROGRAM_ID, pool)
        assert view.vault_amount == 5 * 10**9 == view.unreserved
        assert await pc.token_balance(client, state.vault) == 5 * 10**9
        assert await pc.token_balance(client, source) == 10**12 - 5 * 10**9
        assert await pc.read_report(client, PROGRAM_ID, pool, 1, bytes(32)) is None
        assert await pc.read_reports(client, PROGRAM_ID, pool) == []

        again = pp.initialize_ix(PROGRAM_ID, authority.pubkey(), pool, mint, config_digest=DIGEST,
                                 validator_keys=sorted(keys), epoch_budget=1, claim_window=1)
        with pytest.raises(pc.TransactionFailed) as refused:  # a second initialize of the same pool
            await pc.send_and_confirm(client, authority, [again])
        assert (refused.value.code, refused.value.name) == (6007, "AlreadyInitialized")
        with pytest.raises(pc.BadAccount):
            await pc.read_pool(client, PROGRAM_ID, source)  # not a pool: owned by the token program
        with pytest.raises(pc.BadAccount):
            await pc.read_pool(client, PROGRAM_ID, Keypair().pubkey())  # no account at all
        with pytest.raises(pc.RpcRefused, match="not a Token account"):
            await pc.token_balance(client, pool)

    run(pool_chain, body)


def test_a_set_of_forty_takes_initialize_and_extend_set(pool_chain: str) -> None:
    async def body(client: AsyncClient) -> None:
        authority = await funded(client)
        mint, _ = await token_setup(client, authority)
        keys = [bytes(k.verify_key) for k in signing_keys(40)]
        assert [len(c) for c in pp.set_key_chunks(keys)] == [19, 21]
        pool = await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST, keys, 10**9, 2)
        vset = (await pc.read_pool(client, PROGRAM_ID, pool)).validator_set
        assert (vset.n, vset.f, vset.threshold, vset.keys_written, vset.keys) == (40, 13, 27, 40, tuple(keys))

    run(pool_chain, body)


def header_of(epoch: int, records: list[bytes], total: int, prev: bytes) -> bytes:
    return ReportHeader(DIGEST, epoch, merkle.root(records), len(records), total, bytes(32), prev,
                        bytes(32)).to_bytes()


async def post(client: AsyncClient, payer: Keypair, view: pc.PoolView, header: bytes,
               signers: list[SigningKey]) -> list[Any]:
    """Post `signers`' signatures in parts of at most max_signatures_per_post()."""
    message = hashlib.sha256(header).digest()
    pairs = [(bytes(k.verify_key), k.sign(message).signature) for k in signers]
    step, sent = pp.max_signatures_per_post(), []
    for i in range(0, len(pairs), step):
        ixs = pp.post_report_ixs(PROGRAM_ID, view.address, view.state.validator_set, view.state.vault,
                                 payer.pubkey(), header, pairs[i:i + step])
        sent.append(await pc.send_and_confirm(client, payer, ixs))
    return sent


def test_report_posted_in_parts_accepted_claimed_and_closed(pool_chain: str) -> None:
    async def body(client: AsyncClient) -> None:
        authority = await funded(client)
        mint, source = await token_setup(client, authority)
        validators = signing_keys(10)  # threshold 7: two posts of 5 and 2
        pool = await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST,
                                  [bytes(k.verify_key) for k in validators], epoch_budget=10**9, claim_window=1)
        await pc.fund_pool(client, authority, source, PROGRAM_ID, pool, 3 * 10**9)
        view = await pc.read_pool(client, PROGRAM_ID, pool)
        owners = [Keypair().pubkey() for _ in range(3)]
        dests = [await pc.create_token_account(client, authority, mint, o) for o in owners]
        records = [Record(bytes([i + 1]) * 32, bytes(owners[i]), 10_000, 1, 2, 3, weight, flags).to_bytes()
                   for i, (weight, flags) in enumerate([(30, 0), (67, 0), (3, 0x0002)])]
        header = header_of(1, records, 100, bytes(32))
        digest = hashlib.sha256(header).digest()

        await post(client, authority, view, header, validators[:5])
        tally = await pc.read_report(client, PROGRAM_ID, pool, 1, digest)
        assert tally is not None and not tally.accepted and tally.signer_count == 5
        assert tally.signers(view.validator_set.keys) == [bytes(k.verify_key) for k in validators[:5]]
        with pytest.raises(pc.TransactionFailed) as early:
            await pc.send_and_confirm(client, authority, [pp.claim_ix(
                PROGRAM_ID, pool, 1, digest, authority.pubkey(),
                dests[0], view.state.vault, 0, records[0], merkle.proof(records, 0))])
        assert early.value.name == "NotAccepted" and any("NotAccepted" in line for line in early.value.logs)

        await post(client, authority, view, header, validators[5:7])
        report = await pc.read_report(client, PROGRAM_ID, pool, 1, digest)
        assert report is not None and report.accepted and report.signer_count == 7
        assert (report.reserved, report.poster, report.accepted_seq, report.header) == (
            10**9, authority.pubkey(), 1, header)
        pool_state = (await pc.read_pool(client, PROGRAM_ID, pool)).state
        assert (pool_state.last_header_hash, pool_state.last_accepted_epoch, pool_state.accepted_count,
                pool_state.reserved_outstanding) == (digest, 1, 1, 10**9)
        assert [a for a, _ in await pc.read_reports(client, PROGRAM_ID, pool)] == [
            pp.report_address(PROGRAM_ID, pool, 1, digest)]

        address = pp.report_address(PROGRAM_ID, pool, 1, digest)
        claimer = await funded(client)  # anyone may claim for a provider
        for i, record in enumerate(records):
            await pc.send_and_confirm(client, claimer, [pp.claim_ix(
                PROGRAM_ID, pool, 1, digest, claimer.pubkey(), dests[i], view.state.vault, i, record,
                merkle.proof(records, i))])
            assert await pc.token_balance(client, dests[i]) == pp.record_payout(10**9, record, 100)
        assert [await pc.token_balance(client, d) for d in dests] == [300_000_000, 670_000_000, 0]
        with pytest.raises(pc.TransactionFailed) as twice:
            await pc.send_and_confirm(client, claimer, [pp.claim_ix(
                PROGRAM_ID, pool, 1, digest, claimer.pubkey(), dests[0], view.state.vault, 0, records[0],
                merkle.proof(records, 0))])
        assert (twice.value.code, twice.value.name) == (6024, "AlreadyClaimed")
        report = await pc.read_report(client, PROGRAM_ID, pool, 1, digest)
        assert report is not None and report.chunks == [0] and report.claimed_count == 3
        claims = pp.report_chunks(PROGRAM_ID, report)[0]
        claims_account = (await client.get_account_info(claims)).value
        assert claims_account is not None and claims_account.owner == PROGRAM_ID
        claim_map = pp.ClaimMapState.from_bytes(bytes(claims_account.data))
        assert claim_map.payer == claimer.pubkey() and all(claim_map.is_claimed(i) for i in range(3))

        close = pp.close_epoch_ix(PROGRAM_ID, pool, address, report.poster, [(claims, claim_map.payer)])
        with pytest.raises(pc.TransactionFailed) as window:
            await pc.send_and_confirm(client, authority, [close])
        assert window.value.name == "ClaimWindowOpen"
        header2 = header_of(2, records, 100, digest)
        await post(client, authority, view, header2, validators[3:10])
        before = (await client.get_balance(claimer.pubkey())).value
        await pc.send_and_confirm(client, authority, [close])
        assert await pc.read_report(client, PROGRAM_ID, pool, 1, digest) is None
        assert (await client.get_account_info(claims)).value is None
        assert (await client.get_balance(claimer.pubkey())).value > before  # the ClaimMap's rent came back
        final = await pc.read_pool(client, PROGRAM_ID, pool)
        assert (final.state.total_paid, final.state.accepted_count, final.state.last_header_hash) == (
            970_000_000, 2, hashlib.sha256(header2).digest())
        assert final.state.reserved_outstanding == 10**9  # epoch 2's; epoch 1's unclaimed 30M went back
        assert final.vault_amount == 3 * 10**9 - 970_000_000

    run(pool_chain, body)


def test_client_failures_are_named_errors(pool_chain: str) -> None:
    async def body(client: AsyncClient) -> None:
        authority = await funded(client)
        mint, _ = await token_setup(client, authority)
        pool = await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST,
                                  [bytes(k.verify_key) for k in signing_keys(4)], 1, 1)
        vset = pp.set_address(PROGRAM_ID, pool)[0]
        with pytest.raises(pc.BadAccount, match="Pool: 216 bytes"):  # the program's, but a ValidatorSet
            await pc.read_pool(client, PROGRAM_ID, vset)
        with pytest.raises(pc.BadAccount, match="owned by"):
            await pc.read_pool(client, Pubkey.new_unique(), pool)  # another program id
        with pytest.raises(ValueError):  # ours: a set of 257 is refused before anything is sent
            await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST, [bytes([i // 256, i % 256]) + bytes(30)
                                                                           for i in range(257)], 1, 1)
        with pytest.raises(ValueError):
            await pc.init_pool(client, authority, PROGRAM_ID, mint, DIGEST, [bytes(32), bytes(32)], 1, 1)

    run(pool_chain, body)

    async def unreachable() -> None:
        async with AsyncClient("http://127.0.0.1:9", timeout=2) as client:
            with pytest.raises(pc.RpcUnavailable):
                await pc.read_pool(client, PROGRAM_ID, Pubkey.new_unique())
            with pytest.raises(pc.RpcUnavailable):
                await pc.token_balance(client, Pubkey.new_unique())

    asyncio.run(unreachable())


def test_validator_localchain_serves_the_pool_program() -> None:
    """`validator localchain --program ID=pool.so` (what a devnet runs) has the program deployed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "validator.cli", "localchain", "--port", "0", "--program", f"{PROGRAM_ID}={POOL_SO}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getAccountInfo",
                           "params": [str(PROGRAM_ID), {"encoding": "base64"}]}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            value = json.loads(response.read())["result"]["value"]
        assert value["executable"] and value["owner"] == "BPFLoaderUpgradeab1e11111111111111111111111"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
