"""Independent checks of a served epoch report: written from DESIGN §9 and the Solana wire
format, without importing the code that produced the report (no proofs/, no validator/)."""

from __future__ import annotations

import hashlib
import json
import struct
import urllib.error
import urllib.request
from typing import Any

import base58
from nacl.signing import VerifyKey

HEADER = struct.Struct("<4sB3s32sQ32sIQ32s32s32s")
RECORD = struct.Struct("<32s32sHIIIQH")
ED25519_PROGRAM = "Ed25519SigVerify111111111111111111111111111"
MEMO_PROGRAMS = {"Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo",
                 "MemoSq4gqABAXKd9ThPPEXDnQpoSSV7vvh2pUMTkKqP"}


def get_json(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode(errors="replace")
    except OSError as exc:  # not listening (yet, or any more)
        return 0, str(exc)


def rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.load(response)
    assert "error" not in answer, answer
    return answer["result"]


def merkle_root(records: list[bytes]) -> bytes:
    h = lambda data: hashlib.sha256(data).digest()  # noqa: E731
    if not records:
        return bytes(32)
    level = [h(b"\x00" + r) for r in records]
    while len(level) > 1:
        level = [h(b"\x01" + level[i] + level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def check_report(report: dict[str, Any], network: dict[str, Any], config_digest: str) -> dict:
    """Assert everything a consumer relies on; return the parsed header fields."""
    header = bytes.fromhex(report["header"])
    (magic, version, pad, digest, epoch, records_root, count, total, _providers_root,
     _prev, _seed) = HEADER.unpack(header)
    assert (magic, version, pad) == (b"BWPR", 1, b"\0\0\0")
    assert digest.hex() == config_digest and epoch == report["epoch"]
    message = hashlib.sha256(header).digest()
    assert report["header_sha256"] == message.hex()
    members = {base58.b58decode(v["signing_key"]) for v in network["validators"]}
    signers = set()
    for entry in report["signatures"]:
        signer = base58.b58decode(entry["signer"])
        assert signer in members
        VerifyKey(signer).verify(message, bytes.fromhex(entry["signature"]))
        signers.add(signer)
    assert len(signers) == len(report["signatures"]) >= network["threshold"]
    raw_records = [RECORD.pack(base58.b58decode(r["provider"]), base58.b58decode(r["payout"]),
                               r["uptime_bps"], r["rtt_us"], r["down_kbps"], r["up_kbps"],
                               r["weight"], r["flags"]) for r in report["records"]]
    assert [r[:32] for r in raw_records] == sorted(r[:32] for r in raw_records)
    assert merkle_root(raw_records) == records_root
    assert count == len(raw_records) and total == sum(r["weight"] for r in report["records"])
    return {"epoch": epoch, "header_hash": message, "record_count": count}


def check_posted(rpc_url: str, report: dict[str, Any], config_digest: str) -> None:
    """Read the posting transaction back from the chain and check what it proves."""
    chain = report["chain"]
    assert chain["status"] == "confirmed" and chain["tx"], chain
    tx = rpc(rpc_url, "getTransaction",
             [chain["tx"], {"encoding": "json", "commitment": "confirmed",
                            "maxSupportedTransactionVersion": 0}])
    assert tx is not None and tx["meta"]["err"] is None
    message = tx["transaction"]["message"]
    keys = message["accountKeys"]
    programs = [keys[ix["programIdIndex"]] for ix in message["instructions"]]
    assert ED25519_PROGRAM in programs and MEMO_PROGRAMS & set(programs)
    header_hash = bytes.fromhex(report["header_sha256"])
    for ix, program in zip(message["instructions"], programs):
        data = base58.b58decode(ix["data"])
        if program in MEMO_PROGRAMS:
            assert data.decode() == (f"bwpool:v1:{config_digest[:8]}:{report['epoch']}:"
                                     f"{header_hash.hex()}")
        elif program == ED25519_PROGRAM:
            count = data[0]
            assert 1 <= count <= 8
            served = {(s["signer"], s["signature"]) for s in report["signatures"]}
            for i in range(count):
                (sig_off, sig_ix, key_off, key_ix, msg_off, msg_size,
                 msg_ix) = struct.unpack_from("<7H", data, 2 + 14 * i)
                assert sig_ix == key_ix == msg_ix == 0xFFFF  # all inside this instruction
                assert data[msg_off:msg_off + msg_size] == header_hash
                key, sig = data[key_off:key_off + 32], data[sig_off:sig_off + 64]
                VerifyKey(key).verify(header_hash, sig)
                assert (base58.b58encode(key).decode(), sig.hex()) in served
