"""A funded pool on a fresh chain, as `validator devnet` and the integration tests need it.

On a real cluster an operator does these steps by hand (`validator pool init`, then a token
transfer into the vault); on a local chain one call does all of them: airdrops for the
authority and the providers (their auto-claims pay fees), a mint, the pool with its
validator set, the authority's token account with the whole supply, the vault's funding,
and an associated token account of the mint for every provider's payout address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from validator.pool_client import (
    PoolClientError,
    create_mint,
    create_token_account,
    fund_pool,
    init_pool,
    mint_to,
)
from validator.pool_program import vault_address

DECIMALS = 6
LAMPORTS_PER_SOL = 1_000_000_000


@dataclass(frozen=True)
class DevnetPool:
    program_id: Pubkey
    pool: Pubkey
    mint: Pubkey
    vault: Pubkey
    authority_tokens: Pubkey
    payout_accounts: dict[Pubkey, Pubkey]  # payout address -> its token account


async def airdrop(client: AsyncClient, to: Pubkey, lamports: int, timeout: float = 30.0) -> None:
    """Ask the chain's faucet and wait until the balance shows it (PoolClientError if not)."""
    before = (await client.get_balance(to, Confirmed)).value
    await client.request_airdrop(to, lamports, Confirmed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await client.get_balance(to, Confirmed)).value < before + lamports:
        if loop.time() > deadline:
            raise PoolClientError(f"airdrop to {to} not confirmed within {timeout:g} s")
        await asyncio.sleep(0.2)


async def setup_pool(
    rpc_url: str,
    *,
    authority: Keypair,
    program_id: Pubkey,
    pool_keypair: Keypair,
    config_digest: bytes,
    validator_keys: Sequence[bytes],
    payouts: Sequence[Pubkey],
    epoch_budget: int,
    claim_window: int,
    supply: int,
    fee_payers: Sequence[Pubkey] = (),
) -> DevnetPool:
    """Create and fund a pool on a local chain; see the module docstring.

    `supply` base units are minted to the authority and all of them go into the vault.
    `fee_payers` get 1 SOL each. Raises PoolClientError for chain trouble.
    """
    async with AsyncClient(rpc_url, commitment=Confirmed, timeout=10) as client:
        await airdrop(client, authority.pubkey(), 10 * LAMPORTS_PER_SOL)
        for payer in fee_payers:
            await airdrop(client, payer, LAMPORTS_PER_SOL)
        mint = await create_mint(client, authority, DECIMALS)
        pool = await init_pool(client, authority, program_id, mint, config_digest,
                               validator_keys, epoch_budget, claim_window,
                               pool_keypair=pool_keypair)
        tokens = await create_token_account(client, authority, mint, authority.pubkey())
        await mint_to(client, authority, mint, tokens, supply)
        await fund_pool(client, authority, tokens, program_id, pool, supply)
        accounts = {payout: await create_token_account(client, authority, mint, payout)
                    for payout in dict.fromkeys(payouts)}
        return DevnetPool(program_id, pool, mint, vault_address(program_id, pool)[0], tokens,
                          accounts)
