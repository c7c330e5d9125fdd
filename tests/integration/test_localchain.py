"""The local chain over real HTTP, spoken to by solana-py's AsyncClient and by raw requests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.rpc.errors import InvalidParamsMessage
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from validator.localchain import MEMO_V1_PROGRAM_ID, LocalChainThread

SOL = 1_000_000_000


@pytest.fixture(scope="module")
def chain_url() -> Iterator[str]:
    with LocalChainThread(slot_ms=50, finality_slots=4) as url:
        yield url


def post(url: str, body: bytes, path: str = "/") -> tuple[int, Any]:
    request = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def wait_confirmed(client: AsyncClient, sig: Any) -> None:
    await client.confirm_transaction(sig, Confirmed, sleep_seconds=0.05)


async def memo_transfer_round_trip(url: str) -> None:
    async with AsyncClient(url, commitment=Confirmed, timeout=5) as client:
        assert await client.is_connected()
        alice, bob = Keypair(), Keypair()
        airdrop = await client.request_airdrop(alice.pubkey(), 2 * SOL)
        await wait_confirmed(client, airdrop.value)
        assert (await client.get_balance(alice.pubkey())).value == 2 * SOL

        blockhash = (await client.get_latest_blockhash()).value.blockhash
        ixs = [
            transfer(TransferParams(from_pubkey=alice.pubkey(), to_pubkey=bob.pubkey(), lamports=SOL // 2)),
            Instruction(MEMO_V1_PROGRAM_ID, "rent for march".encode(), [AccountMeta(alice.pubkey(), True, False)]),
        ]
        tx = VersionedTransaction(MessageV0.try_compile(alice.pubkey(), ixs, [], blockhash), [alice])
        sent = await client.send_transaction(tx, TxOpts(skip_confirmation=False, preflight_commitment=Confirmed))
        sig = sent.value
        assert (await client.get_balance(bob.pubkey())).value == SOL // 2
        assert (await client.get_balance(alice.pubkey())).value == 2 * SOL - SOL // 2 - 5000

        got = (await client.get_transaction(sig, "json", Confirmed, 0)).value
        assert got is not None and got.transaction.version == 0 and got.block_time is not None
        meta = got.transaction.meta
        assert meta is not None and meta.err is None and meta.fee == 5000
        assert meta.log_messages is not None and any("Memo1Uhk" in line for line in meta.log_messages)
        assert meta.pre_balances[0] - meta.post_balances[0] == SOL // 2 + 5000
        ui = got.transaction.transaction
        assert [str(k) for k in ui.message.account_keys][0] == str(alice.pubkey())  # type: ignore[union-attr]

        raw = (await client.get_transaction(sig, "base64", Confirmed, 0)).value
        assert raw is not None and raw.transaction.transaction == tx and raw.slot == got.slot

        listed = (await client.get_signatures_for_address(alice.pubkey(), commitment=Confirmed)).value
        assert [x.signature for x in listed] == [sig, airdrop.value]
        assert listed[0].memo == "[14] rent for march" and listed[1].memo is None

        statuses = (await client.get_signature_statuses([sig, airdrop.value])).value
        assert all(s is not None and s.err is None for s in statuses)
        assert statuses[0].confirmation_status in (  # type: ignore[union-attr,operator]
            TransactionConfirmationStatus.Confirmed, TransactionConfirmationStatus.Finalized)

        info = (await client.get_account_info(bob.pubkey())).value
        assert info is not None and info.lamports == SOL // 2 and info.data == b""
        assert (await client.get_account_info(Keypair().pubkey())).value is None
        epoch = (await client.get_epoch_info()).value
        assert epoch.absolute_slot >= (await client.get_slot(Confirmed)).value
        assert (await client.get_minimum_balance_for_rent_exemption(0)).value > 0
        simulated = (await client.simulate_transaction(tx, replace_recent_blockhash=True)).value
        assert simulated.err is None and simulated.replacement_blockhash is not None


def test_solana_py_round_trip_against_a_real_subprocess(tmp_path: Any) -> None:
    """`python -m validator.localchain --port 0` prints its URL, serves, and exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "validator.localchain", "--port", "0", "--slot-ms", "50", "--finality-slots", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        asyncio.run(memo_transfer_round_trip(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_port_in_use_is_one_clear_line_and_exit_2(chain_url: str) -> None:
    port = chain_url.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "validator.localchain", "--port", port],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith(f"localchain: cannot listen on 127.0.0.1:{port}") and "Traceback" not in done.stderr


def test_oversized_transaction_is_refused_with_the_cluster_error(chain_url: str) -> None:
    async def check() -> None:
        async with AsyncClient(chain_url, commitment=Confirmed, timeout=5) as client:
            payer = Keypair()
            await wait_confirmed(client, (await client.request_airdrop(payer.pubkey(), SOL)).value)
            blockhash = (await client.get_latest_blockhash()).value.blockhash
            memo = Instruction(MEMO_V1_PROGRAM_ID, b"x" * 1200, [AccountMeta(payer.pubkey(), True, False)])
            tx = VersionedTransaction(Message.new_with_blockhash([memo], payer.pubkey(), blockhash), [payer])
            assert len(bytes(tx)) > 1232
            with pytest.raises(RPCException) as caught:
                await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))
            err = caught.value.args[0]
            assert isinstance(err, InvalidParamsMessage)
            encoded = (len(bytes(tx)) + 2) // 3 * 4
            assert err.message == (
                f"base64 encoded solana_transaction::versioned::VersionedTransaction too large: {encoded} bytes "
                "(max: encoded/raw 1644/1232)")

    asyncio.run(check())


def test_malformed_http_requests_get_json_rpc_errors(chain_url: str) -> None:
    assert post(chain_url, b"{nope") == (200, {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                                               "id": None})
    status, body = post(chain_url, b'{"jsonrpc":"2.0","id":9,"method":"getSlot","params":"x"}')
    assert (status, body["error"]["code"]) == (200, -32600)
    status, body = post(chain_url, b'{"jsonrpc":"2.0","id":9,"method":"launchRocket"}')
    assert body == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 9}
    status, body = post(chain_url, b'{"jsonrpc":"2.0","id":9,"method":"getBalance","params":["zz"]}')
    assert body["error"] == {"code": -32602, "message": "Invalid param: WrongSize"}
    status, body = post(chain_url, json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": ["!!", {"encoding": "base64"}]}).encode())
    assert body["error"]["code"] == -32602 and body["error"]["message"].startswith("invalid base64 encoding")
    status, body = post(chain_url, json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": "getHealth"} for i in range(3)]).encode())
    assert [a["result"] for a in body] == ["ok"] * 3
    status, body = post(chain_url, b"[" + b'{"jsonrpc":"2.0","id":1,"method":"getHealth"},' * 2000 + b"1]")
    assert status == 413 and body["error"]["code"] == -32600
    with urllib.request.urlopen(chain_url + "/health", timeout=5) as response:
        assert response.read() == b"ok"
