"""The local chain with programs loaded at genesis, and its SPL Token reads:
getTokenAccountBalance and getProgramAccounts, driven sans-IO (bytes in, bytes out)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import base58
import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction

from validator import cli, localchain_rpc
from validator.localchain import MEMO_V1_PROGRAM_ID, LocalChain, ProgramLoadError, parse_program_arg
from validator.localchain_rpc import ui_token_amount
from validator.pool_client import (
    MINT_SIZE,
    TOKEN_ACCOUNT_SIZE,
    associated_token_address,
    create_ata_idempotent_ix,
    initialize_mint2_ix,
    mint_to_ix,
)
from validator.pool_program import TOKEN_PROGRAM_ID

NOW = 1_700_000_000.0
MEMO_ELF = bytes(LiteSVM().get_account(MEMO_V1_PROGRAM_ID).data)  # type: ignore[union-attr]  # an SBPF ELF


def rpc(chain: LocalChain, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    out = localchain_rpc.handle_body(chain, body)
    assert out is not None
    answer: dict[str, Any] = json.loads(out)
    return answer


def send(chain: LocalChain, payer: Keypair, ixs: list[Instruction], *signers: Keypair) -> None:
    message = Message.new_with_blockhash(ixs, payer.pubkey(), chain.blockhash_at("processed")[0])
    done = chain.process(VersionedTransaction(message, [payer, *signers]))
    assert done.record is not None and done.err is None, (done.err, done.record and done.record.logs)


def funded(chain: LocalChain) -> Keypair:
    kp = Keypair()
    chain.airdrop(kp.pubkey(), 10**10)
    return kp


def make_mint(chain: LocalChain, payer: Keypair, decimals: int) -> Pubkey:
    mint = Keypair()
    rent = chain.minimum_balance_for_rent_exemption(MINT_SIZE)
    send(chain, payer, [create_account(CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=mint.pubkey(),
                                                           lamports=rent, space=MINT_SIZE, owner=TOKEN_PROGRAM_ID)),
                        initialize_mint2_ix(mint.pubkey(), decimals, payer.pubkey())], mint)
    return mint.pubkey()


def make_account(chain: LocalChain, payer: Keypair, mint: Pubkey, owner: Pubkey, amount: int) -> Pubkey:
    ata = associated_token_address(owner, mint)
    send(chain, payer, [create_ata_idempotent_ix(payer.pubkey(), owner, mint),
                        mint_to_ix(mint, ata, payer.pubkey(), amount)])
    return ata


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain(NOW, finality_slots=3)


@pytest.fixture
def tokens(chain: LocalChain) -> dict[str, Pubkey]:
    payer = funded(chain)
    mint = make_mint(chain, payer, 6)
    alice, bob = Keypair().pubkey(), Keypair().pubkey()
    return {"payer": payer.pubkey(), "mint": mint, "alice": make_account(chain, payer, mint, alice, 1_234_500),
            "bob": make_account(chain, payer, mint, bob, 0), "alice_owner": alice, "bob_owner": bob}


# -- programs at genesis ---------------------------------------------------------------


def test_a_program_loaded_at_genesis_runs(chain: LocalChain) -> None:
    program_id = Pubkey.new_unique()
    loaded = LocalChain(NOW, programs=[(program_id, MEMO_ELF)])
    acct = loaded.account(program_id)
    assert acct is not None and acct.executable
    payer = funded(loaded)
    send(loaded, payer, [Instruction(program_id, b"hello", [AccountMeta(payer.pubkey(), True, False)])])
    assert chain.account(program_id) is None  # only where it was asked for


def test_unloadable_programs_are_one_line_errors() -> None:
    program_id = Pubkey.new_unique()
    with pytest.raises(ProgramLoadError, match="not a loadable SBF program"):
        LocalChain(NOW, programs=[(program_id, b"\x7fELF not really")])
    with pytest.raises(ProgramLoadError, match="given twice"):
        LocalChain(NOW, programs=[(program_id, MEMO_ELF), (program_id, MEMO_ELF)])
    with pytest.raises(ProgramLoadError, match="already deployed"):
        LocalChain(NOW, programs=[(TOKEN_PROGRAM_ID, MEMO_ELF)])


def test_program_option_parsing(tmp_path: Path) -> None:
    elf = tmp_path / "memo.so"
    elf.write_bytes(MEMO_ELF)
    program_id = Pubkey.new_unique()
    assert parse_program_arg(f"{program_id}={elf}") == (program_id, MEMO_ELF)
    for text, reason in [("nothing", "expects PROGRAM_ID=PATH.so"), (f"={elf}", "expects"),
                         (f"{program_id}=", "expects"), (f"notbase58!={elf}", "not a base58 program id"),
                         (f"{program_id}={tmp_path / 'missing.so'}", "cannot read")]:
        with pytest.raises(ProgramLoadError, match=reason):
            parse_program_arg(text)


@pytest.mark.parametrize("make_arg,expect", [
    (lambda tmp: "no-equals-sign", "--program expects PROGRAM_ID=PATH.so"),
    (lambda tmp: f"{Pubkey.new_unique()}={tmp / 'absent.so'}", "cannot read"),
    (lambda tmp: f"{Pubkey.new_unique()}={tmp / 'junk.so'}", "not a loadable SBF program"),
])
def test_cli_localchain_program_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                make_arg: Any, expect: str) -> None:
    (tmp_path / "junk.so").write_bytes(b"junk")
    assert cli.main(["localchain", "--port", "0", "--program", make_arg(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("validator localchain: ") and expect in err
    assert err.count("\n") == 1 and "Traceback" not in err


# -- getTokenAccountBalance -------------------------------------------------------------


def test_token_account_balance_has_agaves_shape(chain: LocalChain, tokens: dict[str, Pubkey]) -> None:
    answer = rpc(chain, "getTokenAccountBalance", str(tokens["alice"]), {"commitment": "confirmed"})
    assert answer["result"] == {"context": {"slot": chain.slot},
                                "value": {"amount": "1234500", "decimals": 6, "uiAmount": 1.2345,
                                          "uiAmountString": "1.2345"}}
    empty = rpc(chain, "getTokenAccountBalance", str(tokens["bob"]))["result"]["value"]
    assert empty == {"amount": "0", "decimals": 6, "uiAmount": 0.0, "uiAmountString": "0"}


def test_token_account_balance_refusals(chain: LocalChain, tokens: dict[str, Pubkey]) -> None:
    not_token = {"code": -32602, "message": "Invalid param: not a Token account"}
    assert rpc(chain, "getTokenAccountBalance", str(tokens["payer"]))["error"] == not_token  # a system account
    assert rpc(chain, "getTokenAccountBalance", str(tokens["mint"]))["error"] == not_token  # token-owned, a mint
    assert rpc(chain, "getTokenAccountBalance", str(Keypair().pubkey()))["error"] == {
        "code": -32602, "message": "Invalid param: could not find account"}
    assert rpc(chain, "getTokenAccountBalance", "xyz")["error"] == {
        "code": -32602, "message": "Invalid param: WrongSize"}
    assert rpc(chain, "getTokenAccountBalance")["error"]["code"] == -32602
    assert rpc(chain, "getTokenAccountBalance", str(tokens["alice"]), {"commitment": "soon"})["error"]["code"] == -32602


@pytest.mark.parametrize("amount,decimals,ui,text", [
    (0, 9, 0.0, "0"), (1, 9, 1e-9, "0.000000001"), (10**9, 9, 1.0, "1"), (1_500_000_000, 9, 1.5, "1.5"),
    (123, 0, 123.0, "123"), (2**64 - 1, 0, float(2**64 - 1), "18446744073709551615"),
    (2**64 - 1, 19, (2**64 - 1) / 1e19, "1.8446744073709551615"), (5, 20, None, "0.00000000000000000005"),
])
def test_ui_token_amount_follows_agave(amount: int, decimals: int, ui: float | None, text: str) -> None:
    assert ui_token_amount(amount, decimals) == {"amount": str(amount), "decimals": decimals, "uiAmount": ui,
                                                 "uiAmountString": text}


# -- getProgramAccounts -------------------------------------------------------------------


def keys_of(result: list[dict[str, Any]]) -> list[str]:
    return [item["pubkey"] for item in result]


def test_program_accounts_filters_and_encodings(chain: LocalChain, tokens: dict[str, Pubkey]) -> None:
    token = str(TOKEN_PROGRAM_ID)
    all_three = sorted([tokens["mint"], tokens["alice"], tokens["bob"]], key=bytes)
    listed = rpc(chain, "getProgramAccounts", token, {"encoding": "base64"})["result"]
    assert keys_of(listed) == [str(k) for k in all_three]  # sorted by address, like Agave
    mint_item = next(item for item in listed if item["pubkey"] == str(tokens["mint"]))
    assert mint_item["account"]["owner"] == token and mint_item["account"]["space"] == MINT_SIZE
    assert base64.b64decode(mint_item["account"]["data"][0])[44] == 6

    accounts = sorted([str(tokens["alice"]), str(tokens["bob"])], key=lambda s: base58.b58decode(s))
    by_size = rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "filters": [{"dataSize": 165}]})
    assert keys_of(by_size["result"]) == accounts
    mint_b58 = {"memcmp": {"offset": 0, "bytes": str(tokens["mint"])}}
    owner_b64 = {"memcmp": {"offset": 32, "bytes": base64.b64encode(bytes(tokens["alice_owner"])).decode(),
                            "encoding": "base64"}}
    owner_raw = {"memcmp": {"offset": 32, "bytes": list(bytes(tokens["bob_owner"])), "encoding": "bytes"}}
    assert keys_of(rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "filters": [
        {"dataSize": TOKEN_ACCOUNT_SIZE}, mint_b58]})["result"]) == accounts
    assert keys_of(rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "filters": [
        mint_b58, owner_b64]})["result"]) == [str(tokens["alice"])]
    assert keys_of(rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "filters": [
        owner_raw, {"tokenAccountState": None}]})["result"]) == [str(tokens["bob"])]
    past_end = {"memcmp": {"offset": 160, "bytes": base58.b58encode(bytes(10)).decode()}}
    assert rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "filters": [past_end]})["result"] == []

    ctx = rpc(chain, "getProgramAccounts", token, {"encoding": "base64", "withContext": True,
                                                   "filters": [{"dataSize": 82}]})["result"]
    assert ctx["context"] == {"slot": chain.slot} and keys_of(ctx["value"]) == [str(tokens["mint"])]
    sliced = rpc(chain, "getProgramAccounts", token, {"dataSlice": {"offset": 64, "length": 8},
                                                      "filters": [{"dataSize": 165}]})["result"]
    amounts = {item["pubkey"]: int.from_bytes(base58.b58decode(item["account"]["data"]), "little")
               for item in sliced}  # default encoding: binary (a base58 string)
    assert amounts == {str(tokens["alice"]): 1_234_500, str(tokens["bob"]): 0}
    assert rpc(chain, "getProgramAccounts", str(Pubkey.new_unique()))["result"] == []


def test_program_accounts_refusals(chain: LocalChain, tokens: dict[str, Pubkey]) -> None:
    token = str(TOKEN_PROGRAM_ID)

    def error(cfg: dict[str, Any]) -> dict[str, Any]:
        answer = rpc(chain, "getProgramAccounts", token, cfg)
        assert "result" not in answer
        refusal: dict[str, Any] = answer["error"]
        return refusal

    assert error({"filters": [{"dataSize": 1}] * 5}) == {"code": -32602, "message": "Too many filters provided; max 4"}
    too_big = {"memcmp": {"offset": 0, "bytes": base58.b58encode(bytes([1]) * 129).decode()}}
    assert error({"filters": [too_big]}) == {"code": -32602, "message": "Invalid param: DataTooLarge"}
    assert error({"filters": [{"memcmp": {"offset": 0, "bytes": "0OIl"}}]})["message"].startswith(
        "Invalid param: Base58DecodeError")
    assert error({"filters": [{"memcmp": {"offset": 0, "bytes": "!!", "encoding": "base64"}}]})["message"].startswith(
        "Invalid param: Base64DecodeError")
    assert error({"filters": [{"lamports": 5}]})["code"] == -32602
    assert error({"filters": [{"memcmp": {"offset": -1, "bytes": "1"}}]})["code"] == -32602
    assert error({"filters": "dataSize"})["code"] == -32602
    assert error({"encoding": "base58"})["message"].startswith("Encoded binary (base 58) data should be less than 128")
    assert rpc(chain, "getProgramAccounts", "0Il")["error"] == {"code": -32602, "message": "Invalid param: Invalid"}
