"""The local chain's input limits, sans-IO (bytes in, bytes out, time as an argument):
lengths checked before decoding, and the faucet's caps with Agave's answer to a refusal."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from validator import localchain_rpc
from validator.localchain import (
    AIRDROP_MAX_LAMPORTS,
    AIRDROP_MAX_PER_ADDRESS,
    AIRDROP_MAX_PER_WINDOW,
    AIRDROP_WINDOW_SLOTS,
    AirdropRefused,
    LocalChain,
)

NOW = 1_700_000_000.0
REFUSED = {"code": -32603, "message": "Internal error"}  # Agave's answer to a faucet refusal
WRONG_SIZE = {"code": -32602, "message": "Invalid param: WrongSize"}


def rpc(chain: LocalChain, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    out = localchain_rpc.handle_body(chain, body)
    assert out is not None
    answer: dict[str, Any] = json.loads(out)
    return answer


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain(NOW, finality_slots=2)


LONG = "1" + "z" * 40_000  # base58 of a 30 kB number: seconds to decode if anyone tried


@pytest.mark.parametrize("method, params", [
    ("getBalance", [LONG]),
    ("getAccountInfo", [LONG]),
    ("getMultipleAccounts", [[LONG] * 100]),
    ("getSignatureStatuses", [[LONG] * 256]),
    ("getTransaction", [LONG]),
    ("getSignaturesForAddress", [LONG]),
    ("requestAirdrop", [LONG, 1]),
    ("getTokenAccountBalance", [LONG]),
    ("getProgramAccounts", [LONG]),
])
def test_over_long_keys_and_signatures_are_refused_before_decoding(
        chain: LocalChain, method: str, params: list[Any]) -> None:
    started = time.process_time()
    assert rpc(chain, method, *params)["error"] == WRONG_SIZE
    assert time.process_time() - started < 0.05  # 100 x 40 kB decoded would take minutes


def test_keys_and_signatures_at_their_longest_still_decode(chain: LocalChain) -> None:
    longest_key = "z" * 44  # decodes to more than 32 bytes: WrongSize after decoding
    assert rpc(chain, "getBalance", longest_key)["error"] == WRONG_SIZE
    assert rpc(chain, "getBalance", str(Pubkey.new_unique()))["result"]["value"] == 0
    longest_signature = str(Signature.from_bytes(b"\xff" * 64))
    assert len(longest_signature) == 88
    assert rpc(chain, "getSignatureStatuses", [longest_signature])["result"]["value"] == [None]


def test_one_airdrop_is_capped(chain: LocalChain) -> None:
    who = Pubkey.new_unique()
    assert rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS + 1)["error"] == REFUSED
    with pytest.raises(AirdropRefused, match=r"request too large; req: ◎100.000000001, cap: ◎100$"):
        chain.airdrop(who, AIRDROP_MAX_LAMPORTS + 1)
    assert "result" in rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)
    assert chain.balance(who) == AIRDROP_MAX_LAMPORTS


def test_airdrops_to_one_address_are_capped_per_window(chain: LocalChain) -> None:
    who = Pubkey.new_unique()
    now = NOW
    paid = 0
    while paid + AIRDROP_MAX_LAMPORTS <= AIRDROP_MAX_PER_ADDRESS:
        assert "result" in rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)
        paid += AIRDROP_MAX_LAMPORTS
        now += 0.4
        chain.advance_slot(now)  # a new slot: a new transaction, not the same one again
    assert rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)["error"] == REFUSED
    other = Pubkey.new_unique()  # another address is not held back by this one
    assert "result" in rpc(chain, "requestAirdrop", str(other), AIRDROP_MAX_LAMPORTS)
    while chain.slot % AIRDROP_WINDOW_SLOTS:  # the next window starts afresh
        now += 0.4
        chain.advance_slot(now)
    assert "result" in rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)
    assert chain.balance(who) == paid + AIRDROP_MAX_LAMPORTS


def test_airdrops_to_everyone_together_are_capped_per_window(chain: LocalChain) -> None:
    total = 0
    while total + AIRDROP_MAX_LAMPORTS <= AIRDROP_MAX_PER_WINDOW:
        assert "result" in rpc(chain, "requestAirdrop", str(Pubkey.new_unique()),
                               AIRDROP_MAX_LAMPORTS)
        total += AIRDROP_MAX_LAMPORTS
    assert rpc(chain, "requestAirdrop", str(Pubkey.new_unique()), 1)["error"] == REFUSED


def test_the_same_request_in_one_slot_counts_once(chain: LocalChain) -> None:
    who = Pubkey.new_unique()
    first = rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)["result"]
    for _ in range(5):  # the same transaction again: same signature, nothing paid, not counted
        assert rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)["result"] == first
    chain.advance_slot(NOW + 0.4)
    assert "result" in rpc(chain, "requestAirdrop", str(who), AIRDROP_MAX_LAMPORTS)
    assert chain.balance(who) == 2 * AIRDROP_MAX_LAMPORTS
