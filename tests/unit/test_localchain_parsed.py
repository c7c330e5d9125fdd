"""What wallets and explorers read from the local chain, driven sans-IO: jsonParsed
transactions and accounts, token queries and getVersion. Each shape is also read back by
solders' response types (Agave's own Rust types), so a field of the wrong type or a
missing one fails here, not only in a JS client."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import base58
import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import FeatureSet, LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetAccountInfoJsonParsedResp,
    GetMultipleAccountsMaybeJsonParsedResp,
    GetProgramAccountsJsonParsedResp,
    GetTokenAccountsByOwnerJsonParsedResp,
    GetTokenAccountsByOwnerResp,
    GetTokenLargestAccountsResp,
    GetTokenSupplyResp,
    GetTransactionResp,
    GetVersionResp,
)
from solders.transaction import VersionedTransaction
from solders.system_program import (
    AssignWithSeedParams,
    CreateAccountWithSeedParams,
    TransferWithSeedParams,
    AllocateParams,
    AssignParams,
    allocate,
    assign,
    assign_with_seed,
    create_account_with_seed,
    transfer_with_seed,
)

from tests.unit.test_localchain_tokens import MEMO_ELF, NOW, funded, make_account, make_mint, rpc
from validator.localchain import LocalChain
from validator.localchain_decode import parse_token, parsed_account_data
from validator.localchain_instructions import parse_ui_instruction
from validator.localchain_rpc import FEATURE_SET, feature_set_id
from validator.pool_client import transfer_ix
from validator.pool_program import TOKEN_PROGRAM_ID

SYSTEM = "11111111111111111111111111111111"


def result(answer: dict[str, Any]) -> Any:
    assert "result" in answer, answer
    return answer["result"]


def agave_reads(resp_type: Any, answer: dict[str, Any]) -> Any:
    """The answer read back by solders' response type (Agave's serde types); its value."""
    return resp_type.from_json(json.dumps(answer)).value


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain(NOW, finality_slots=3)


@pytest.fixture
def world(chain: LocalChain) -> dict[str, Any]:
    payer, alice, bob = funded(chain), Keypair(), Keypair()
    mint = make_mint(chain, payer, 2)
    alice_ata = make_account(chain, payer, mint, alice.pubkey(), 500)
    bob_ata = make_account(chain, payer, mint, bob.pubkey(), 0)
    chain.airdrop(alice.pubkey(), 10**9)
    chain.advance_slot(NOW + 1)
    message = Message.new_with_blockhash([transfer_ix(alice_ata, bob_ata, alice.pubkey(), 125)], payer.pubkey(),
                                         chain.blockhash_at("processed")[0])
    done = chain.process(VersionedTransaction(message, [payer, alice]))
    assert done.record is not None and done.err is None
    sig = done.signature
    chain.advance_slot(NOW + 2)
    return {"payer": payer, "alice": alice, "bob": bob, "mint": mint, "alice_ata": alice_ata, "bob_ata": bob_ata,
            "sig": sig}


# -- getVersion ----------------------------------------------------------------------------


def test_feature_set_is_agaves_id_of_the_known_features(chain: LocalChain) -> None:
    answer = rpc(chain, "getVersion")
    version = agave_reads(GetVersionResp, answer)
    assert version.feature_set == FEATURE_SET and 0 <= FEATURE_SET < 2**32
    every = FeatureSet.all_enabled()
    ids = sorted(bytes(k) for k in every.active)
    assert FEATURE_SET == int.from_bytes(hashlib.sha256(b"".join(ids)).digest()[:4], "little")
    # The id names the features a build knows, not which are active (solana-version's rule).
    assert feature_set_id(LiteSVM.mainnet_feature_set()) == FEATURE_SET  # some inactive: the same id


# -- jsonParsed transactions -----------------------------------------------------------------


def test_parsed_token_transfer_with_token_balances(chain: LocalChain, world: dict[str, Any]) -> None:
    answer = rpc(chain, "getTransaction", str(world["sig"]), {"encoding": "jsonParsed", "commitment": "confirmed"})
    agave_reads(GetTransactionResp, answer)  # Agave's types read it
    tx = result(answer)
    (ix,) = tx["transaction"]["message"]["instructions"]
    assert ix == {"program": "spl-token", "programId": str(TOKEN_PROGRAM_ID), "stackHeight": None, "parsed": {
        "type": "transfer", "info": {"source": str(world["alice_ata"]), "destination": str(world["bob_ata"]),
                                     "amount": "125", "authority": str(world["alice"].pubkey())}}}
    keys = tx["transaction"]["message"]["accountKeys"]
    assert [k["signer"] for k in keys] == [True, True, False, False, False]
    by_key = {k["pubkey"]: k for k in keys}
    assert by_key[str(TOKEN_PROGRAM_ID)]["writable"] is False
    assert by_key[str(world["alice_ata"])]["writable"] and by_key[str(world["bob_ata"])]["writable"]
    assert all(k["source"] == "transaction" for k in keys)
    assert "loadedAddresses" not in tx["meta"]  # Agave leaves it out of jsonParsed metas
    index = {k["pubkey"]: i for i, k in enumerate(keys)}

    def amounts(rows: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
        return {r["accountIndex"]: (r["uiTokenAmount"]["uiAmountString"], r["owner"]) for r in rows}

    alice, bob = str(world["alice"].pubkey()), str(world["bob"].pubkey())
    assert amounts(tx["meta"]["preTokenBalances"]) == {index[str(world["alice_ata"])]: ("5", alice),
                                                       index[str(world["bob_ata"])]: ("0", bob)}
    assert amounts(tx["meta"]["postTokenBalances"]) == {index[str(world["alice_ata"])]: ("3.75", alice),
                                                        index[str(world["bob_ata"])]: ("1.25", bob)}
    plain = result(rpc(chain, "getTransaction", str(world["sig"]), {"encoding": "json", "commitment": "confirmed"}))
    assert plain["meta"]["postTokenBalances"] == tx["meta"]["postTokenBalances"]
    assert plain["meta"]["loadedAddresses"] == {"writable": [], "readonly": []}


def test_a_failed_transaction_keeps_its_token_balances(chain: LocalChain, world: dict[str, Any]) -> None:
    payer, alice = world["payer"], world["alice"]
    too_much = transfer_ix(world["alice_ata"], world["bob_ata"], alice.pubkey(), 10**6)
    tx = VersionedTransaction(Message.new_with_blockhash([too_much], payer.pubkey(), chain.blockhash_at("processed")[0]),
                              [payer, alice])
    done = chain.process(tx)
    assert done.record is not None and done.err is not None  # failed with a fee: it landed
    chain.advance_slot(NOW + 3)
    meta = result(rpc(chain, "getTransaction", str(done.signature), {"encoding": "jsonParsed",
                                                                      "commitment": "confirmed"}))["meta"]
    assert meta["err"] is not None and meta["preTokenBalances"] == meta["postTokenBalances"] != []


@pytest.mark.parametrize("make,kind,info_keys", [
    (lambda a, b, o: assign(AssignParams(pubkey=a, owner=o)), "assign", {"account", "owner"}),
    (lambda a, b, o: allocate(AllocateParams(pubkey=a, space=99)), "allocate", {"account", "space"}),
    (lambda a, b, o: create_account_with_seed(CreateAccountWithSeedParams(
        from_pubkey=a, to_pubkey=b, base=a, seed="seed-1", lamports=7, space=8, owner=o)),
     "createAccountWithSeed", {"source", "newAccount", "base", "seed", "lamports", "space", "owner"}),
    (lambda a, b, o: assign_with_seed(AssignWithSeedParams(address=b, base=a, seed="s", owner=o)),
     "assignWithSeed", {"account", "base", "seed", "owner"}),
    (lambda a, b, o: transfer_with_seed(TransferWithSeedParams(
        from_pubkey=b, from_base=a, from_seed="s2", from_owner=o, to_pubkey=a, lamports=3)),
     "transferWithSeed", {"source", "sourceBase", "destination", "lamports", "sourceSeed", "sourceOwner"}),
])
def test_system_instructions_parse_like_agave(make: Any, kind: str, info_keys: set[str]) -> None:
    a, b, owner = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    ix: Instruction = make(a, b, owner)
    keys = [m.pubkey for m in ix.accounts] + [ix.program_id]
    keys = list(dict.fromkeys(keys))
    indexes = bytes(keys.index(m.pubkey) for m in ix.accounts)
    parsed = parse_ui_instruction(keys, keys.index(ix.program_id), indexes, bytes(ix.data), 1)
    assert parsed["program"] == "system" and parsed["stackHeight"] == 1
    assert parsed["parsed"]["type"] == kind and set(parsed["parsed"]["info"]) == info_keys
    for field in ("seed", "sourceSeed"):
        if field in info_keys:
            assert parsed["parsed"]["info"][field] in ("seed-1", "s", "s2")


def _token_ix(data: bytes, count: int) -> tuple[list[Pubkey], dict[str, Any]]:
    keys = [Pubkey.new_unique() for _ in range(count)] + [TOKEN_PROGRAM_ID]
    return keys, parse_ui_instruction(keys, count, bytes(range(count)), data, None)


def test_token_instructions_with_amounts_authorities_and_multisigs() -> None:
    keys, checked = _token_ix(bytes([12]) + (1_500).to_bytes(8, "little") + bytes([3]), 4)
    assert checked["parsed"] == {"type": "transferChecked", "info": {
        "source": str(keys[0]), "mint": str(keys[1]), "destination": str(keys[2]), "authority": str(keys[3]),
        "tokenAmount": {"amount": "1500", "decimals": 3, "uiAmount": 1.5, "uiAmountString": "1.5"}}}
    keys, burn = _token_ix(bytes([8]) + (9).to_bytes(8, "little"), 5)  # a 2-of-2 multisig authority
    assert burn["parsed"]["info"] == {"account": str(keys[0]), "mint": str(keys[1]), "amount": "9",
                                      "multisigAuthority": str(keys[2]), "signers": [str(keys[3]), str(keys[4])]}
    new = Pubkey.new_unique()
    keys, owner = _token_ix(bytes([6, 2, 1]) + bytes(new), 2)
    assert owner["parsed"] == {"type": "setAuthority", "info": {
        "account": str(keys[0]), "authorityType": "accountOwner", "newAuthority": str(new), "authority": str(keys[1])}}
    keys, revoke_mint = _token_ix(bytes([6, 0, 0]), 2)
    assert revoke_mint["parsed"]["info"] == {"mint": str(keys[0]), "authorityType": "mintTokens",
                                             "newAuthority": None, "authority": str(keys[1])}
    keys, ui = _token_ix(bytes([24]) + b"2.5", 1)
    assert ui["parsed"] == {"type": "uiAmountToAmount", "info": {"mint": str(keys[0]), "uiAmount": "2.5"}}


@pytest.mark.parametrize("data,count", [
    (bytes([3, 1, 2]), 3),  # transfer with a truncated amount
    (bytes([3]) + bytes(8), 2),  # transfer with too few accounts
    (bytes([99]), 1),  # no such instruction
    (bytes([6, 77, 0]), 2),  # no such authority type
    (bytes([21, 7]), 1),  # an odd-length extension list
])
def test_token_data_that_does_not_fit_is_partially_decoded(data: bytes, count: int) -> None:
    keys, shown = _token_ix(data, count)
    assert shown == {"programId": str(TOKEN_PROGRAM_ID), "accounts": [str(k) for k in keys[:count]],
                     "data": base58.b58encode(data).decode(), "stackHeight": None}


def test_an_instruction_with_no_accounts_is_not_parsed_as_system() -> None:
    keys = [Pubkey.from_string(SYSTEM)]
    shown = parse_ui_instruction(keys, 0, b"", bytes([2, 0, 0, 0]) + bytes(8), None)
    assert "parsed" not in shown and shown["accounts"] == []


# -- jsonParsed accounts -------------------------------------------------------------------


def test_parsed_accounts_read_back_by_agaves_types(chain: LocalChain, world: dict[str, Any]) -> None:
    one = rpc(chain, "getAccountInfo", str(world["bob_ata"]), {"encoding": "jsonParsed"})
    agave_reads(GetAccountInfoJsonParsedResp, one)
    info = result(one)["value"]["data"]["parsed"]["info"]
    assert info["tokenAmount"] == {"amount": "125", "decimals": 2, "uiAmount": 1.25, "uiAmountString": "1.25"}
    many = rpc(chain, "getMultipleAccounts", [str(world["mint"]), str(world["alice"].pubkey()), str(Pubkey.new_unique())],
               {"encoding": "jsonParsed"})
    agave_reads(GetMultipleAccountsMaybeJsonParsedResp, many)
    mint, system, missing = result(many)["value"]
    assert mint["data"]["parsed"]["info"]["supply"] == "500" and missing is None
    assert system["data"] == ["", "base64"]  # a system account with no data: base64, as Agave
    scan = rpc(chain, "getProgramAccounts", str(TOKEN_PROGRAM_ID), {"encoding": "jsonParsed"})
    agave_reads(GetProgramAccountsJsonParsedResp, scan)
    assert {item["account"]["data"]["parsed"]["type"] for item in result(scan)} == {"mint", "account"}
    owned = rpc(chain, "getTokenAccountsByOwner", str(world["alice"].pubkey()), {"mint": str(world["mint"])},
                {"encoding": "jsonParsed"})
    agave_reads(GetTokenAccountsByOwnerJsonParsedResp, owned)
    assert [i["pubkey"] for i in result(owned)["value"]] == [str(world["alice_ata"])]
    raw = rpc(chain, "getTokenAccountsByOwner", str(world["bob"].pubkey()), {"programId": str(TOKEN_PROGRAM_ID)},
              {"encoding": "base64"})
    (held,) = agave_reads(GetTokenAccountsByOwnerResp, raw)
    assert held.pubkey == world["bob_ata"] and int.from_bytes(bytes(held.account.data)[64:72], "little") == 125
    supply = agave_reads(GetTokenSupplyResp, rpc(chain, "getTokenSupply", str(world["mint"])))
    assert (supply.amount, supply.decimals) == ("500", 2)
    largest = agave_reads(GetTokenLargestAccountsResp, rpc(chain, "getTokenLargestAccounts", str(world["mint"])))
    assert [(a.address, a.amount.amount) for a in largest] == [(world["alice_ata"], "375"),
                                                                     (world["bob_ata"], "125")]


def test_token_account_queries_refuse_like_agave(chain: LocalChain, world: dict[str, Any]) -> None:
    owner = str(world["alice"].pubkey())

    def error(*params: Any) -> dict[str, Any]:
        answer = rpc(chain, "getTokenAccountsByOwner", *params)
        assert "result" not in answer, answer
        err: dict[str, Any] = answer["error"]
        return err

    assert error(owner, {"mint": str(Pubkey.new_unique())}) == {
        "code": -32602, "message": "Invalid param: could not find mint"}
    assert error(owner, {"mint": str(world["alice_ata"])}) == {
        "code": -32602, "message": "Invalid param: Token mint could not be unpacked"}
    assert error(owner, {"programId": SYSTEM}) == {
        "code": -32602, "message": "Invalid param: unrecognized Token program id"}
    assert error(owner, {"mint": str(world["mint"]), "programId": str(TOKEN_PROGRAM_ID)})["code"] == -32602
    assert error(owner, "mint")["code"] == -32602
    assert error(owner)["message"].startswith("Invalid params: invalid length 1")
    assert error(owner, {"programId": str(TOKEN_PROGRAM_ID)})["code"] == -32600  # default binary: > 128 bytes
    assert rpc(chain, "getTokenSupply", str(world["alice_ata"]))["error"] == {
        "code": -32602, "message": "Invalid param: mint could not be unpacked"}
    assert rpc(chain, "getTokenSupply", owner)["error"] == {"code": -32602, "message": "Invalid param: not a Token mint"}


def test_token_state_variants_parse_like_agave() -> None:
    mint, owner, delegate = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    data = bytearray(165)
    data[0:32], data[32:64] = bytes(mint), bytes(owner)
    data[64:72] = (2_000_000_000).to_bytes(8, "little")
    data[72:76], data[76:108] = (1).to_bytes(4, "little"), bytes(delegate)
    data[108] = 2  # frozen
    data[109:113], data[113:121] = (1).to_bytes(4, "little"), (2_039_280).to_bytes(8, "little")  # wrapped SOL
    data[121:129] = (5).to_bytes(8, "little")
    parsed = parse_token(bytes(data), 9)
    assert parsed == {"type": "account", "info": {
        "mint": str(mint), "owner": str(owner), "delegate": str(delegate), "state": "frozen", "isNative": True,
        "tokenAmount": {"amount": "2000000000", "decimals": 9, "uiAmount": 2.0, "uiAmountString": "2"},
        "rentExemptReserve": {"amount": "2039280", "decimals": 9, "uiAmount": 0.00203928,
                              "uiAmountString": "0.00203928"},
        "delegatedAmount": {"amount": "5", "decimals": 9, "uiAmount": 5e-9, "uiAmountString": "0.000000005"}}}
    assert parse_token(bytes(data), None) is None  # an account needs its mint's decimals
    data[72:76] = (7).to_bytes(4, "little")
    assert parse_token(bytes(data), 9) is None  # a COption tag that is neither 0 nor 1
    multisig = bytearray(355)
    multisig[0:3] = bytes([2, 3, 1])
    signers = [Pubkey.new_unique() for _ in range(3)]
    for i, s in enumerate(signers):
        multisig[3 + 32 * i: 35 + 32 * i] = bytes(s)
    assert parse_token(bytes(multisig), None) == {"type": "multisig", "info": {
        "numRequiredSigners": 2, "numValidSigners": 3, "isInitialized": True, "signers": [str(s) for s in signers]}}
    assert parse_token(bytes(82), None) is None  # an uninitialized mint


def test_a_loaded_program_parses_as_the_upgradeable_loader_shows_it() -> None:
    program_id = Pubkey.new_unique()
    loaded = LocalChain(NOW, programs=[(program_id, MEMO_ELF)])
    value = result(rpc(loaded, "getAccountInfo", str(program_id), {"encoding": "jsonParsed"}))["value"]
    assert value["executable"] and value["data"]["program"] == "bpf-upgradeable-loader"
    assert value["data"]["parsed"]["type"] == "program"
    programdata = value["data"]["parsed"]["info"]["programData"]
    data = result(rpc(loaded, "getAccountInfo", programdata, {"encoding": "jsonParsed"}))["value"]["data"]
    assert data["parsed"]["type"] == "programData"
    assert base64.b64decode(data["parsed"]["info"]["data"][0]).startswith(MEMO_ELF[:64])
    assert parsed_account_data(Pubkey.new_unique(), b"\x00" * 8, lambda m: None) is None  # unknown owner
