"""The local chain, as a client we did not write sees it: @solana/web3.js 1.x run by Node.

A real `validator localchain` process; accounts and transactions are made here with
solana-py (a transfer with a memo, a mint, two associated token accounts and a mint-to, a
token transfer next to a compute-budget and an Ed25519 instruction, and a run of transfers
to page through), then `node tests/js/web3_check.mjs` drives every read a wallet or an
explorer makes (getVersion, jsonParsed transactions and accounts, token queries, filtered
program scans, signature paging, refused params) and prints what web3.js returned. Every
value asserted below is known here independently: what was sent, to whom, and how much.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import base58
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_limit
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction

from proofs.signing import public_key, sign_raw
from validator.localchain import MEMO_V1_PROGRAM_ID
from validator.localchain_rpc import FEATURE_SET
from validator.pool_client import (
    ATA_PROGRAM_ID,
    MINT_SIZE,
    associated_token_address,
    create_ata_idempotent_ix,
    initialize_mint2_ix,
    mint_to_ix,
    transfer_ix,
)
from validator.pool_program import ED25519_PROGRAM_ID, TOKEN_PROGRAM_ID, ed25519_instruction

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
SOL = 1_000_000_000
TO_ALICE, MINTED, MOVED, DECIMALS = 3 * SOL // 2, 1_234_500, 34_500, 6
TO_CAROL = [10_000_000 + i for i in range(5)]  # rent-exempt amounts, each one distinct
MEMO = "hello from web3 check"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@solana" / "web3.js").is_dir(),
    reason="needs node and tests/js/node_modules (make install runs npm ci there)")


def _url_from(line: str) -> str | None:
    """`validator localchain` prints its URL first: plain text, or a JSON object in json logs."""
    line = line.strip()
    if line.startswith("http://"):
        return line
    if line.startswith("{"):
        values = json.loads(line).values()
        return next((v for v in values if isinstance(v, str) and v.startswith("http://")), None)
    return None


@pytest.fixture(scope="module")
def chain_url() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "validator.cli", "localchain", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:  # ends when the process does: then the assert says why
            url = _url_from(line)
            if url:
                break
        assert url, proc.stderr.read() if proc.stderr else "no URL"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


async def _send(client: AsyncClient, payer: Keypair, ixs: list[Instruction], *signers: Keypair) -> str:
    blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
    tx = VersionedTransaction(Message.new_with_blockhash(ixs, payer.pubkey(), blockhash), [payer, *signers])
    sent = await client.send_transaction(tx, TxOpts(skip_confirmation=False, preflight_commitment=Confirmed))
    return str(sent.value)


async def make_world(url: str) -> dict[str, Any]:
    """Everything web3.js will be asked about, and the signatures that made it."""
    payer, alice, bob, carol, mint = (Keypair() for _ in range(5))
    async with AsyncClient(url, commitment=Confirmed, timeout=10) as client:
        airdrop = await client.request_airdrop(payer.pubkey(), 20 * SOL)
        await client.confirm_transaction(airdrop.value, Confirmed, sleep_seconds=0.1)
        memo = Instruction(MEMO_V1_PROGRAM_ID, MEMO.encode(), [AccountMeta(payer.pubkey(), True, False)])
        sigs: dict[str, Any] = {"transfer": await _send(client, payer, [
            transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=alice.pubkey(), lamports=TO_ALICE)), memo])}
        rent = (await client.get_minimum_balance_for_rent_exemption(MINT_SIZE)).value
        sigs["mint"] = await _send(client, payer, [
            create_account(CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=mint.pubkey(), lamports=rent,
                                               space=MINT_SIZE, owner=TOKEN_PROGRAM_ID)),
            initialize_mint2_ix(mint.pubkey(), DECIMALS, payer.pubkey())], mint)
        alice_ata = associated_token_address(alice.pubkey(), mint.pubkey())
        bob_ata = associated_token_address(bob.pubkey(), mint.pubkey())
        sigs["mintTo"] = await _send(client, payer, [
            create_ata_idempotent_ix(payer.pubkey(), alice.pubkey(), mint.pubkey()),
            create_ata_idempotent_ix(payer.pubkey(), bob.pubkey(), mint.pubkey()),
            mint_to_ix(mint.pubkey(), alice_ata, payer.pubkey(), MINTED)])
        note = b"web3 check"
        signer_seed = os.urandom(32)
        sigs["tokenTransfer"] = await _send(client, payer, [
            set_compute_unit_limit(200_000),
            ed25519_instruction(note, [(public_key(signer_seed), sign_raw(signer_seed, note))]),
            transfer_ix(alice_ata, bob_ata, alice.pubkey(), MOVED)], alice)
        sigs["carol"] = [await _send(client, payer, [
            transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=carol.pubkey(), lamports=amount))])
            for amount in TO_CAROL]
    return {"payer": str(payer.pubkey()), "alice": str(alice.pubkey()), "bob": str(bob.pubkey()),
            "carol": str(carol.pubkey()), "mint": str(mint.pubkey()), "aliceAta": str(alice_ata),
            "bobAta": str(bob_ata), "missing": str(Keypair().pubkey()), "sigs": sigs}


@pytest.fixture(scope="module")
def world(chain_url: str) -> dict[str, Any]:
    return asyncio.run(make_world(chain_url))


@pytest.fixture(scope="module")
def seen(chain_url: str, world: dict[str, Any]) -> dict[str, Any]:
    """What web3.js returned for every call, by name."""
    done = subprocess.run(["node", str(JS / "web3_check.mjs"), chain_url, json.dumps(world)],
                          capture_output=True, text=True, timeout=120, cwd=JS)
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def ok(seen: dict[str, Any], name: str) -> Any:
    assert "ok" in seen[name], f"{name}: web3.js threw {seen[name]['error']}"
    return seen[name]["ok"]


def refusal(seen: dict[str, Any], name: str) -> dict[str, Any]:
    assert "error" in seen[name], f"{name}: expected a JSON-RPC error, got {seen[name]['ok']!r}"
    err: dict[str, Any] = seen[name]["error"]
    return err


# -- version and balances --------------------------------------------------------------------


def test_get_version_has_a_u32_feature_set(seen: dict[str, Any]) -> None:
    version = ok(seen, "getVersion")
    assert version["feature-set"] == FEATURE_SET and 0 <= FEATURE_SET < 2**32
    assert isinstance(version["solana-core"], str) and version["solana-core"]


def test_balances_are_what_was_sent(seen: dict[str, Any]) -> None:
    assert ok(seen, "getBalance.alice") == TO_ALICE
    assert ok(seen, "getBalance.carol") == sum(TO_CAROL)


# -- jsonParsed transactions -----------------------------------------------------------------


def test_parsed_transfer_with_memo(seen: dict[str, Any], world: dict[str, Any]) -> None:
    tx = ok(seen, "getParsedTransaction.transfer")
    assert tx["transaction"]["signatures"] == [world["sigs"]["transfer"]]
    assert tx["version"] == "legacy" and tx["meta"]["err"] is None and tx["meta"]["fee"] == 5000
    keys = tx["transaction"]["message"]["accountKeys"]
    assert keys[0] == {"pubkey": world["payer"], "signer": True, "writable": True, "source": "transaction"}
    assert {"pubkey": world["alice"], "signer": False, "writable": True, "source": "transaction"} in keys
    system, memo = tx["transaction"]["message"]["instructions"]
    assert system["program"] == "system" and system["programId"] == "11111111111111111111111111111111"
    assert system["parsed"] == {"type": "transfer", "info": {
        "source": world["payer"], "destination": world["alice"], "lamports": TO_ALICE}}
    assert memo["program"] == "spl-memo" and memo["parsed"] == MEMO and memo["programId"] == str(MEMO_V1_PROGRAM_ID)
    assert tx["meta"]["preTokenBalances"] == [] and tx["meta"]["postTokenBalances"] == []


def test_parsed_mint_creation(seen: dict[str, Any], world: dict[str, Any]) -> None:
    tx = ok(seen, "getParsedTransaction.mint")
    create, init = tx["transaction"]["message"]["instructions"]
    assert create["parsed"]["type"] == "createAccount"
    assert create["parsed"]["info"]["newAccount"] == world["mint"]
    assert create["parsed"]["info"]["owner"] == str(TOKEN_PROGRAM_ID) and create["parsed"]["info"]["space"] == MINT_SIZE
    assert init["program"] == "spl-token" and init["parsed"] == {"type": "initializeMint2", "info": {
        "mint": world["mint"], "decimals": DECIMALS, "mintAuthority": world["payer"]}}


def test_parsed_associated_accounts_and_their_inner_instructions(seen: dict[str, Any], world: dict[str, Any]) -> None:
    tx = ok(seen, "getParsedTransaction.mintTo")
    alice_ata, bob_ata, mint_to = tx["transaction"]["message"]["instructions"]
    for ix, wallet, account in ((alice_ata, "alice", "aliceAta"), (bob_ata, "bob", "bobAta")):
        assert ix["program"] == "spl-associated-token-account" and ix["programId"] == str(ATA_PROGRAM_ID)
        assert ix["parsed"] == {"type": "createIdempotent", "info": {
            "source": world["payer"], "account": world[account], "wallet": world[wallet], "mint": world["mint"],
            "systemProgram": "11111111111111111111111111111111", "tokenProgram": str(TOKEN_PROGRAM_ID)}}
    assert mint_to["parsed"] == {"type": "mintTo", "info": {
        "mint": world["mint"], "account": world["aliceAta"], "amount": str(MINTED), "mintAuthority": world["payer"]}}
    inner = {group["index"]: group["instructions"] for group in tx["meta"]["innerInstructions"]}
    assert set(inner) == {0, 1}  # the ATA program's CPIs; mintTo makes none
    assert [ix["parsed"]["type"] for ix in inner[0]] == [
        "getAccountDataSize", "createAccount", "initializeImmutableOwner", "initializeAccount3"]
    assert inner[0][0]["parsed"]["info"] == {"mint": world["mint"], "extensionTypes": ["immutableOwner"]}
    assert inner[0][1]["parsed"]["info"]["newAccount"] == world["aliceAta"]
    init3 = next(ix for ix in inner[0] if ix["parsed"]["type"] == "initializeAccount3")
    assert init3["parsed"]["info"] == {"account": world["aliceAta"], "mint": world["mint"], "owner": world["alice"]}
    assert all(ix["stackHeight"] == 2 for ix in inner[0])
    post = {b["accountIndex"]: b for b in tx["meta"]["postTokenBalances"]}
    keys = [k["pubkey"] for k in tx["transaction"]["message"]["accountKeys"]]
    assert post[keys.index(world["aliceAta"])]["uiTokenAmount"]["amount"] == str(MINTED)
    assert post[keys.index(world["bobAta"])]["owner"] == world["bob"]
    assert tx["meta"]["preTokenBalances"] == []  # neither account existed before


def test_parsed_token_transfer_next_to_unparsed_programs(seen: dict[str, Any], world: dict[str, Any]) -> None:
    tx = ok(seen, "getParsedTransaction.tokenTransfer")
    budget, ed25519, token = tx["transaction"]["message"]["instructions"]
    # Programs Agave does not parse come back partially decoded: id, accounts, base58 data.
    assert budget == {"programId": "ComputeBudget111111111111111111111111111111", "accounts": [],
                      "data": base58.b58encode(bytes(set_compute_unit_limit(200_000).data)).decode(),
                      "stackHeight": None}
    assert ed25519["programId"] == str(ED25519_PROGRAM_ID) and "parsed" not in ed25519
    assert token["parsed"] == {"type": "transfer", "info": {
        "source": world["aliceAta"], "destination": world["bobAta"], "amount": str(MOVED),
        "authority": world["alice"]}}
    keys = [k["pubkey"] for k in tx["transaction"]["message"]["accountKeys"]]

    def amounts(rows: list[dict[str, Any]]) -> dict[str, str]:
        return {keys[r["accountIndex"]]: r["uiTokenAmount"]["amount"] for r in rows}

    assert amounts(tx["meta"]["preTokenBalances"]) == {world["aliceAta"]: str(MINTED), world["bobAta"]: "0"}
    assert amounts(tx["meta"]["postTokenBalances"]) == {world["aliceAta"]: str(MINTED - MOVED),
                                                        world["bobAta"]: str(MOVED)}
    row = next(r for r in tx["meta"]["postTokenBalances"] if keys[r["accountIndex"]] == world["bobAta"])
    assert row == {"accountIndex": keys.index(world["bobAta"]), "mint": world["mint"], "owner": world["bob"],
                   "programId": str(TOKEN_PROGRAM_ID), "uiTokenAmount": {
                       "amount": str(MOVED), "decimals": DECIMALS, "uiAmount": MOVED / 10**DECIMALS,
                       "uiAmountString": "0.0345"}}
    batch = ok(seen, "getParsedTransactions")
    assert [t["transaction"]["signatures"][0] for t in batch] == [world["sigs"]["transfer"],
                                                                 world["sigs"]["tokenTransfer"]]
    plain = ok(seen, "getTransaction.tokenTransfer")
    assert plain["signatures"][0] == world["sigs"]["tokenTransfer"]
    assert plain["fee"] == 15_000  # 5,000 per signature: two signers and the one the Ed25519 instruction checks
    assert plain["postTokenBalances"] == tx["meta"]["postTokenBalances"]


# -- jsonParsed accounts and token queries ------------------------------------------------------


def test_parsed_mint_and_token_account(seen: dict[str, Any], world: dict[str, Any]) -> None:
    mint = ok(seen, "getParsedAccountInfo.mint")["value"]
    assert mint["owner"] == str(TOKEN_PROGRAM_ID)
    assert mint["data"] == {"program": "spl-token", "space": MINT_SIZE, "parsed": {"type": "mint", "info": {
        "mintAuthority": world["payer"], "supply": str(MINTED), "decimals": DECIMALS, "isInitialized": True,
        "freezeAuthority": None}}}
    holding = ok(seen, "getParsedAccountInfo.aliceAta")["value"]["data"]
    assert holding["program"] == "spl-token" and holding["space"] == 165
    assert holding["parsed"] == {"type": "account", "info": {
        "mint": world["mint"], "owner": world["alice"], "state": "initialized", "isNative": False,
        "tokenAmount": {"amount": str(MINTED - MOVED), "decimals": DECIMALS, "uiAmount": 1.2,
                        "uiAmountString": "1.2"}}}
    system = ok(seen, "getParsedAccountInfo.alice")["value"]
    assert system["data"] == {"base64": ""} and system["lamports"] == TO_ALICE  # nothing to parse: raw, as Agave
    listed = ok(seen, "getMultipleParsedAccounts")["value"]
    assert [a and a["owner"] for a in listed] == [str(TOKEN_PROGRAM_ID), str(TOKEN_PROGRAM_ID),
                                                  "11111111111111111111111111111111", None]
    assert listed[1]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == str(MOVED)


def test_spl_tokens_own_decoders_agree(seen: dict[str, Any], world: dict[str, Any]) -> None:
    assert ok(seen, "getAccountInfo.mint")["owner"] == str(TOKEN_PROGRAM_ID)
    mint = ok(seen, "splToken.getMint")
    assert (mint["decimals"], mint["supply"], mint["mintAuthority"]) == (DECIMALS, str(MINTED), world["payer"])
    account = ok(seen, "splToken.getAccount.aliceAta")
    assert (account["owner"], account["mint"], account["amount"]) == (world["alice"], world["mint"],
                                                                      str(MINTED - MOVED))
    assert ok(seen, "splToken.associatedAddress.alice") == world["aliceAta"]


def test_token_accounts_by_owner(seen: dict[str, Any], world: dict[str, Any]) -> None:
    for name in ("getTokenAccountsByOwner.alice.mint", "getTokenAccountsByOwner.alice.programId"):
        (found,) = ok(seen, name)["value"]
        assert found["pubkey"] == world["aliceAta"] and found["account"]["owner"] == str(TOKEN_PROGRAM_ID)
    assert ok(seen, "getTokenAccountsByOwner.carol.programId")["value"] == []
    (parsed,) = ok(seen, "getParsedTokenAccountsByOwner.bob")["value"]
    assert parsed["pubkey"] == world["bobAta"]
    assert parsed["account"]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == str(MOVED)


def test_token_balance_supply_and_largest(seen: dict[str, Any], world: dict[str, Any]) -> None:
    assert ok(seen, "getTokenAccountBalance.bobAta")["value"] == {
        "amount": str(MOVED), "decimals": DECIMALS, "uiAmount": 0.0345, "uiAmountString": "0.0345"}
    err = refusal(seen, "getTokenAccountBalance.alice")
    assert err["code"] == -32602 and "not a Token account" in err["message"]
    assert ok(seen, "getTokenSupply")["value"]["amount"] == str(MINTED)
    largest = ok(seen, "getTokenLargestAccounts")["value"]
    assert [(a["address"], a["amount"]) for a in largest] == [(world["aliceAta"], str(MINTED - MOVED)),
                                                              (world["bobAta"], str(MOVED))]


def test_program_accounts_with_filters(seen: dict[str, Any], world: dict[str, Any]) -> None:
    def keys(name: str) -> list[str]:
        return sorted(item["pubkey"] for item in ok(seen, name))

    holders = sorted([world["aliceAta"], world["bobAta"]])
    assert keys("getProgramAccounts.mintHolders") == holders
    assert keys("getProgramAccounts.bobHolding") == [world["bobAta"]]
    assert keys("getProgramAccounts.mintsOfPayer") == [world["mint"]]
    with_context = ok(seen, "getProgramAccounts.withContext")
    assert with_context["context"]["slot"] > 0
    assert sorted(item["pubkey"] for item in with_context["value"]) == holders
    parsed = ok(seen, "getParsedProgramAccounts.mintHolders")
    assert {item["pubkey"]: item["account"]["data"]["parsed"]["info"]["tokenAmount"]["amount"]
            for item in parsed} == {world["aliceAta"]: str(MINTED - MOVED), world["bobAta"]: str(MOVED)}


# -- signatures, paged -------------------------------------------------------------------------


def test_signatures_for_address_pages(seen: dict[str, Any], world: dict[str, Any]) -> None:
    newest_first = list(reversed(world["sigs"]["carol"]))

    def sigs(name: str) -> list[str]:
        return [item["signature"] for item in ok(seen, name)]

    everything = ok(seen, "getSignaturesForAddress.carol.all")
    assert [item["signature"] for item in everything] == newest_first
    assert all(item["err"] is None and item["memo"] is None and item["confirmationStatus"] in ("confirmed", "finalized")
               for item in everything)
    assert [item["slot"] for item in everything] == sorted((item["slot"] for item in everything), reverse=True)
    assert sigs("getSignaturesForAddress.carol.page1") == newest_first[:2]
    assert sigs("getSignaturesForAddress.carol.page2") == newest_first[2:4]
    assert sigs("getSignaturesForAddress.carol.until") == newest_first[:3]  # newer than the second oldest
    assert sigs("getSignaturesForAddress.carol.beforeUntil") == newest_first[1:4]


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,code,message", [
    ("bad.programIdNotToken", -32602, "Invalid param: unrecognized Token program id"),
    ("bad.filterKind", -32602, "Invalid params: unknown variant `owner`, expected `mint` or `programId`."),
    ("bad.base58TooLarge", -32600,
     "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding."),
    ("bad.pubkey", -32602, "Invalid param: Invalid"),
    ("bad.limit", -32602, "Invalid limit; max 1000"),
    ("bad.tooManyFilters", -32602, "Too many filters provided; max 4"),
    ("bad.transactionEncoding", -32602, "Invalid params: unknown variant `yaml`"),
    ("bad.method", -32601, "Method not found"),
])
def test_bad_params_are_json_rpc_errors(seen: dict[str, Any], name: str, code: int, message: str) -> None:
    err = refusal(seen, name)
    assert err["code"] == code and err["message"].startswith(message), err


def test_the_chain_still_answers_after_the_refusals(chain_url: str, world: dict[str, Any]) -> None:
    async def balance() -> int:
        async with AsyncClient(chain_url, commitment=Confirmed, timeout=10) as client:
            return (await client.get_balance(Pubkey.from_string(world["alice"]))).value

    assert asyncio.run(balance()) == TO_ALICE
