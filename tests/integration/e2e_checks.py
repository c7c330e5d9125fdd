"""Independent checks of a served epoch report: written from DESIGN §9, the pool program's
README and the Solana wire format, without importing the code that produced the report (no
proofs/, no validator/; solders only derives program addresses)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import urllib.error
import urllib.request
from typing import Any

import base58
from nacl.signing import VerifyKey
from solders.pubkey import Pubkey

HEADER = struct.Struct("<4sB3s32sQ32sIQ32s32s32s")
RECORD = struct.Struct("<32s32sHIIIQH")


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


def account_data(rpc_url: str, address: str) -> bytes | None:
    value = rpc(rpc_url, "getAccountInfo", [address, {"encoding": "base64",
                                                      "commitment": "confirmed"}])["value"]
    return None if value is None else base64.b64decode(value["data"][0])


def _seeded(program_id: str, pool: str, tag: bytes, data: bytes) -> str:
    """programs/pool/README.md: sha256(pool authority || tag + b64url(data) || program id)."""
    program = Pubkey.from_string(program_id)
    base = Pubkey.find_program_address([b"authority", bytes(Pubkey.from_string(pool))], program)[0]
    seed = tag + base64.urlsafe_b64encode(data).rstrip(b"=")
    return base58.b58encode(hashlib.sha256(bytes(base) + seed + bytes(program)).digest()).decode()


def report_pda(program_id: str, pool: str, epoch: int, header_hash: bytes) -> str:
    """The EpochReport address of (epoch, header)."""
    return _seeded(program_id, pool, b"R", struct.pack("<Q", epoch) + header_hash[:15])


def check_posted(rpc_url: str, report: dict[str, Any], network: dict[str, Any]) -> dict[str, int]:
    """Read the pool's EpochReport account for this header back from the chain: accepted,
    the same header, at least `threshold` distinct members counted. Returns its reserve
    and claim totals (README layout: status at 268, signers at 270, reserved at 312)."""
    chain = report["chain"]
    assert chain["status"] == "confirmed", chain
    header = bytes.fromhex(report["header"])
    address = report_pda(network["pool_program_id"], network["pool_address"], report["epoch"],
                         hashlib.sha256(header).digest())
    data = account_data(rpc_url, address)
    assert data is not None and len(data) == 384 and data[:8] == b"BWP:REPT", address
    assert data[80:268] == header
    status, signers = data[268], struct.unpack_from("<H", data, 270)[0]
    assert status == 2 and signers >= network["threshold"], (status, signers)
    reserved, claimed_total, claimed_count = struct.unpack_from("<QQI", data, 312)
    return {"reserved": reserved, "claimed_total": claimed_total, "claimed_count": claimed_count}


def claims_pda(program_id: str, pool: str, epoch: int, header_hash: bytes, chunk: int) -> str:
    """The ClaimMap address of chunk `chunk` of (epoch, header)."""
    return _seeded(program_id, pool, b"C", struct.pack("<Q", epoch) + header_hash[:14]
                   + bytes([chunk]))


def expected_payouts(rpc_url: str, url: str, network: dict[str, Any]) -> dict[str, int]:
    """Per payout address: the sum of floor(reserved * weight / total_weight) over every
    record of a served final report that the chain marks claimed (ClaimMap bit set), with
    `reserved` read from the report's account and records from the validator's API; fraud
    flags (0x005A) pay nothing."""
    program, pool = network["pool_program_id"], network["pool_address"]
    _, epochs = get_json(url + "/epochs")
    owed: dict[str, int] = {}
    for entry in epochs:
        status, report = get_json(f"{url}/epochs/{entry['epoch']}")
        if status != 200:
            continue
        header = bytes.fromhex(report["header"])
        total = HEADER.unpack(header)[7]
        digest = hashlib.sha256(header).digest()
        data = account_data(rpc_url, report_pda(program, pool, report["epoch"], digest))
        if data is None or data[268] != 2:
            continue  # not accepted on chain: nothing can have been paid for it
        reserved = struct.unpack_from("<Q", data, 312)[0]
        bits = account_data(rpc_url, claims_pda(program, pool, report["epoch"], digest, 0))
        for index, record in enumerate(report["records"]):
            if bits is None or not bits[80 + index // 8] >> (index % 8) & 1:
                continue
            paid = 0 if record["weight"] == 0 or record["flags"] & 0x005A else \
                reserved * record["weight"] // total
            owed[record["payout"]] = owed.get(record["payout"], 0) + paid
    return owed


def token_balance(rpc_url: str, account: str) -> int:
    answer = rpc(rpc_url, "getTokenAccountBalance", [account, {"commitment": "confirmed"}])
    return int(answer["value"]["amount"])
