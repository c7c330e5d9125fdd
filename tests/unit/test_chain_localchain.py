"""The local chain's JSON-RPC, driven sans-IO: bytes in, bytes out, time as an argument."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import base58
import pytest
from nacl.signing import SigningKey
from solders.compute_budget import set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from validator import localchain_rpc
from validator.pool_program import ed25519_instruction
from validator.localchain import MEMO_V1_PROGRAM_ID, LocalChain

NOW = 1_700_000_000.0


def rpc(chain: LocalChain, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    out = localchain_rpc.handle_body(chain, body)
    assert out is not None
    answer: dict[str, Any] = json.loads(out)
    return answer


def raw(chain: LocalChain, body: bytes) -> Any:
    out = localchain_rpc.handle_body(chain, body)
    return None if out is None else json.loads(out)


def funded(chain: LocalChain, lamports: int = 10**9) -> Keypair:
    kp = Keypair()
    chain.airdrop(kp.pubkey(), lamports)
    return kp


def memo_tx(
    payer: Keypair, blockhash: Hash, text: bytes = b"hello", extra: list[Pubkey] | None = None
) -> VersionedTransaction:
    metas = [AccountMeta(payer.pubkey(), True, True)] + [AccountMeta(k, False, False) for k in extra or []]
    return VersionedTransaction(Message.new_with_blockhash([Instruction(MEMO_V1_PROGRAM_ID, text, metas)],
                                                           payer.pubkey(), blockhash), [payer])


def b64(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain(NOW, finality_slots=3)


# -- envelopes -------------------------------------------------------------------


def test_unparseable_body_is_a_parse_error(chain: LocalChain) -> None:
    for body in (b"{", b"\xff\xfe", b"", b'{"jsonrpc": "2.0",', b"[" * 50_000 + b"]" * 50_000):
        assert raw(chain, body) == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}


@pytest.mark.parametrize("request_", [
    [], "text", 5, {"method": "getSlot", "id": 1}, {"jsonrpc": "1.0", "method": "getSlot", "id": 1},
    {"jsonrpc": "2.0", "method": 7, "id": 1}, {"jsonrpc": "2.0", "method": "getSlot", "params": "x", "id": 1},
    {"jsonrpc": "2.0", "method": "getSlot", "id": [1]}, {"jsonrpc": "2.0", "method": "getSlot", "id": True},
])
def test_malformed_envelope_is_an_invalid_request(chain: LocalChain, request_: Any) -> None:
    answer = raw(chain, json.dumps(request_).encode())
    assert answer["error"] == {"code": -32600, "message": "Invalid request"} and answer["id"] is None


def test_an_infinite_id_is_an_invalid_request(chain: LocalChain) -> None:
    answer = raw(chain, b'{"jsonrpc":"2.0","id":1e999,"method":"getSlot"}')
    assert answer["error"]["code"] == -32600 and answer["id"] is None


def test_unknown_method_echoes_the_id(chain: LocalChain) -> None:
    answer = raw(chain, b'{"jsonrpc":"2.0","id":"abc","method":"getEverything"}')
    assert answer == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "abc"}


def test_batch_answers_calls_in_order_and_skips_notifications(chain: LocalChain) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
        {"jsonrpc": "2.0", "method": "getSlot"},  # notification: no answer
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        "garbage",
        {"jsonrpc": "2.0", "id": 3, "method": "getHealth"},
    ]
    answers = raw(chain, json.dumps(batch).encode())
    assert [a["id"] for a in answers] == [1, 2, None, 3]
    assert answers[0]["result"] == 0 and answers[1]["error"]["code"] == -32601
    assert answers[2]["error"]["code"] == -32600 and answers[3]["result"] == "ok"
    assert raw(chain, b'[{"jsonrpc":"2.0","method":"getSlot"}]') is None


@pytest.mark.parametrize(("method", "params", "message"), [
    ("getBalance", [], "Invalid params: invalid length 0"),
    ("getBalance", ["not-base58-0OIl"], "Invalid param: Invalid"),
    ("getBalance", ["abc"], "Invalid param: WrongSize"),
    ("getBalance", [5], "Invalid params: invalid type: integer `5`, expected a string."),
    ("getBalance", [str(Pubkey.default()), "finalized"], "expected a map"),
    ("getLatestBlockhash", [{"commitment": "soon"}], "unknown variant `soon`"),
    ("getSignatureStatuses", [["1" * 64] * 257], "Too many inputs provided; max 256"),
    ("getSignaturesForAddress", [str(Pubkey.default()), {"limit": 1001}], "Invalid limit; max 1000"),
    ("getTransaction", ["1" * 64, {"commitment": "processed"}], "commitment below `confirmed`"),
    ("requestAirdrop", [str(Pubkey.default()), -1], "expected u64"),
    ("sendTransaction", ["%%%", {"encoding": "base64"}], "invalid base64 encoding"),
    ("sendTransaction", ["0OIl", {"encoding": "base58"}], "invalid base58 encoding"),
    ("sendTransaction", ["AAAA", {"encoding": "base64"}], "failed to deserialize"),
    ("sendTransaction", ["AAAA", {"encoding": "json"}], "unsupported encoding: json"),
    ("simulateTransaction", ["AAAA", {"sigVerify": True, "replaceRecentBlockhash": True, "encoding": "base64"}],
     "failed to deserialize"),
])
def test_bad_params_are_invalid_params(chain: LocalChain, method: str, params: list[Any], message: str) -> None:
    answer = rpc(chain, method, *params)
    assert answer["error"]["code"] == -32602, answer
    assert message in answer["error"]["message"]


def test_a_bug_is_an_internal_error_without_a_traceback(chain: LocalChain, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("secret internals")

    monkeypatch.setitem(localchain_rpc.METHODS, "getSlot", broken)
    answer = rpc(chain, "getSlot")
    assert answer["error"] == {"code": -32603, "message": "Internal error"}


# -- packet size -----------------------------------------------------------------


def test_transactions_over_1232_bytes_are_refused_as_a_cluster_does(chain: LocalChain) -> None:
    payer = funded(chain)
    blockhash = Hash.from_string(rpc(chain, "getLatestBlockhash")["result"]["value"]["blockhash"])
    overhead = len(bytes(memo_tx(payer, blockhash, b"")))
    fits = memo_tx(payer, blockhash, b"a" * (1232 - overhead - 1))  # -1: the length prefix grows to 2 bytes
    assert len(bytes(fits)) == 1232
    assert "result" in rpc(chain, "sendTransaction", b64(fits), {"encoding": "base64"})
    one_over = memo_tx(payer, blockhash, b"b" * (1233 - overhead - 1))
    assert len(bytes(one_over)) == 1233
    answer = rpc(chain, "sendTransaction", b64(one_over), {"encoding": "base64"})
    assert answer["error"] == {"code": -32602, "message": (
        "decoded solana_transaction::versioned::VersionedTransaction too large: 1233 bytes (max: 1232 bytes)")}
    far_over = memo_tx(payer, blockhash, b"c" * 1300)
    answer = rpc(chain, "sendTransaction", b64(far_over), {"encoding": "base64", "skipPreflight": True})
    assert answer["error"]["message"].startswith("base64 encoded solana_transaction::versioned::VersionedTransaction"
                                                  " too large: ")
    answer = rpc(chain, "sendTransaction", base58.b58encode(bytes(far_over)).decode())  # base58 is the default
    assert "(max: encoded/raw 1683/1232)" in answer["error"]["message"]
    assert rpc(chain, "getSignatureStatuses", [str(one_over.signatures[0])])["result"]["value"] == [None]


# -- slots, blockhashes, commitment ---------------------------------------------


def test_blockhash_older_than_150_blocks_is_not_found(chain: LocalChain) -> None:
    payer = funded(chain)
    old = chain.blockhash_at("processed")[0]
    for i in range(150):
        chain.advance_slot(NOW + i)
    # 150 blocks old: still valid for execution, but preflight allows only 144.
    late = memo_tx(payer, old, b"late")
    answer = rpc(chain, "sendTransaction", b64(late), {"encoding": "base64"})
    assert answer["error"]["code"] == -32002
    assert answer["error"]["message"] == "Transaction simulation failed: Blockhash not found"
    assert answer["error"]["data"]["err"] == "BlockhashNotFound"
    assert "result" in rpc(chain, "sendTransaction", b64(late), {"encoding": "base64", "skipPreflight": True})
    assert rpc(chain, "getSignatureStatuses", [str(late.signatures[0])])["result"]["value"][0] is not None
    chain.advance_slot(NOW + 151)
    expired = memo_tx(payer, old, b"expired")
    sig = rpc(chain, "sendTransaction", b64(expired), {"encoding": "base64", "skipPreflight": True})["result"]
    assert rpc(chain, "getSignatureStatuses", [sig])["result"]["value"] == [None]  # dropped, never landed
    assert rpc(chain, "isBlockhashValid", str(old))["result"]["value"] is False


def test_status_goes_processed_confirmed_finalized(chain: LocalChain) -> None:
    payer = funded(chain)
    tx = memo_tx(payer, chain.blockhash_at("processed")[0])
    sig = rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})["result"]

    def status() -> dict[str, Any]:
        value: dict[str, Any] = rpc(chain, "getSignatureStatuses", [sig])["result"]["value"][0]
        return value

    assert (status()["confirmationStatus"], status()["confirmations"]) == ("processed", 0)
    assert rpc(chain, "getTransaction", sig, {"commitment": "confirmed"})["result"] is None
    chain.advance_slot(NOW + 1)
    assert (status()["confirmationStatus"], status()["confirmations"]) == ("confirmed", 1)
    assert rpc(chain, "getTransaction", sig, {"commitment": "confirmed"})["result"]["slot"] == 0
    assert rpc(chain, "getTransaction", sig)["result"] is None  # finalized is the default
    for i in range(2, 4):
        chain.advance_slot(NOW + i)
    assert (status()["confirmationStatus"], status()["confirmations"]) == ("finalized", None)
    assert status()["status"] == {"Ok": None} and status()["err"] is None
    assert rpc(chain, "getTransaction", sig)["result"]["meta"]["logMessages"][-1].endswith("success")


def test_duplicate_is_already_processed(chain: LocalChain) -> None:
    payer = funded(chain)
    tx = memo_tx(payer, chain.blockhash_at("processed")[0])
    assert "result" in rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})
    again = rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})
    assert again["error"]["message"] == "Transaction simulation failed: This transaction has already been processed"


def test_signature_verification_failure_in_preflight(chain: LocalChain) -> None:
    payer = funded(chain)
    wire = bytearray(bytes(memo_tx(payer, chain.blockhash_at("processed")[0])))
    wire[1] ^= 0xFF  # corrupt the signature
    answer = rpc(chain, "sendTransaction", base64.b64encode(wire).decode(), {"encoding": "base64"})
    assert answer["error"] == {"code": -32003, "message": "Transaction signature verification failure"}


def test_bad_ed25519_signature_lands_as_failed_with_skip_preflight(chain: LocalChain) -> None:
    payer = funded(chain)
    message = hashlib.sha256(b"header").digest()
    key = SigningKey(bytes(range(32)))
    ix = ed25519_instruction(message, [(bytes(key.verify_key), bytes(64))])
    tx = VersionedTransaction(Message.new_with_blockhash([ix], payer.pubkey(), chain.blockhash_at("processed")[0]),
                              [payer])
    refused = rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})
    assert refused["error"]["message"] == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x2")
    assert refused["error"]["data"]["err"] == {"InstructionError": [0, {"Custom": 2}]}
    before = chain.balance(payer.pubkey())
    sig = rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64", "skipPreflight": True})["result"]
    status = rpc(chain, "getSignatureStatuses", [sig])["result"]["value"][0]
    assert status["err"] == {"InstructionError": [0, {"Custom": 2}]}
    assert status["status"] == {"Err": status["err"]}
    assert before - chain.balance(payer.pubkey()) == 10_000  # fee: tx signature + one precompile signature


@pytest.mark.parametrize("priority", [False, True])
def test_fee_for_message_matches_what_the_chain_charges(chain: LocalChain, priority: bool) -> None:
    payer = funded(chain)
    message = hashlib.sha256(b"h").digest()
    keys = [SigningKey(bytes([i]) * 32) for i in range(3)]
    ixs = [ed25519_instruction(message, [(bytes(k.verify_key), k.sign(message).signature) for k in keys]),
           Instruction(MEMO_V1_PROGRAM_ID, b"memo", [])]
    if priority:  # default limit: 3k for each builtin, 200k for the memo program
        ixs.insert(0, set_compute_unit_price(777_777))
    tx = VersionedTransaction(Message.new_with_blockhash(ixs, payer.pubkey(), chain.blockhash_at("processed")[0]),
                              [payer])
    quoted = rpc(chain, "getFeeForMessage", base64.b64encode(bytes(tx.message)).decode())["result"]["value"]
    before = chain.balance(payer.pubkey())
    rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})
    paid = before - chain.balance(payer.pubkey())
    assert quoted == paid == 20_000 + (-(-777_777 * 206_000 // 1_000_000) if priority else 0)


def test_signatures_for_address_newest_first_with_memo_and_bounds(chain: LocalChain) -> None:
    payer = funded(chain)
    log = Pubkey.new_unique()
    sigs = []
    for i in range(4):
        tx = memo_tx(payer, chain.blockhash_at("processed")[0], f"memo {i}".encode(), [log])
        sigs.append(rpc(chain, "sendTransaction", b64(tx), {"encoding": "base64"})["result"])
        chain.advance_slot(NOW + i + 1)
    listed = rpc(chain, "getSignaturesForAddress", str(log), {"commitment": "confirmed"})["result"]
    assert [x["signature"] for x in listed] == sigs[::-1]
    assert listed[0]["memo"] == "[6] memo 3" and listed[0]["err"] is None
    assert {x["confirmationStatus"] for x in listed} == {"confirmed", "finalized"}
    page = rpc(chain, "getSignaturesForAddress", str(log),
               {"commitment": "confirmed", "before": sigs[3], "until": sigs[0], "limit": 5})["result"]
    assert [x["signature"] for x in page] == [sigs[2], sigs[1]]
    finalized = rpc(chain, "getSignaturesForAddress", str(log))["result"]
    assert [x["signature"] for x in finalized] == sigs[:2][::-1]


def test_airdrops_are_real_transfers_paid_once_per_slot(chain: LocalChain) -> None:
    who = Pubkey.new_unique()
    first = rpc(chain, "requestAirdrop", str(who), 10**9)["result"]
    again = rpc(chain, "requestAirdrop", str(who), 10**9)["result"]  # same slot, same amount: same tx
    assert first == again
    chain.advance_slot(NOW + 1)
    second = rpc(chain, "requestAirdrop", str(who), 10**9)["result"]
    assert second != first
    assert rpc(chain, "getBalance", str(who))["result"]["value"] == 2 * 10**9
    chain.advance_slot(NOW + 2)
    got = rpc(chain, "getTransaction", first, {"commitment": "confirmed"})["result"]
    assert got["meta"]["postBalances"][1] - got["meta"]["preBalances"][1] == 10**9
    assert got["transaction"]["message"]["instructions"][0]["programIdIndex"] == 2  # the system program
