"""JSON-RPC 2.0 for the local chain, answered in the shapes an Agave node uses.

Sans-IO: `handle_body(chain, bytes) -> bytes | None`. The HTTP pump in
`localchain` only moves bytes. Every answer is computed from `LocalChain`
state; nothing here invents chain data.

Errors are JSON-RPC error objects, never an exception reaching the pump:
-32700 unparseable body, -32600 malformed envelope, -32601 unknown method,
-32602 bad params (Agave's wording where Agave has one), -32002/-32003/-32015/
-32016 Agave's custom errors, -32603 for a bug on our side (logged here) and, as Agave
answers it, for an airdrop the faucet refuses (its reason is logged, not sent).

Lengths are checked before anything is decoded: base58 and base64 strings (transactions,
messages, keys, signatures, memcmp bytes) against Agave's limits, the body (50 KiB) by the
HTTP pump before it reaches `handle_body`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import base58
import solders
from solders.account import Account
from solders.hash import Hash
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from validator.localchain import (
    COMMITMENT_RANK,
    PACKET_DATA_SIZE,
    AirdropRefused,
    InvalidTransaction,
    LocalChain,
    TxRecord,
    err_display,
    err_json,
)

log = logging.getLogger(__name__)

JsonObj = dict[str, Any]

MAX_BASE58_SIZE = 1683  # Agave: base58 length of a PACKET_DATA_SIZE transaction
MAX_BASE64_SIZE = 1644
MAX_SIGNATURE_STATUSES = 256
MAX_SIGNATURES_FOR_ADDRESS = 1000
MAX_MULTIPLE_ACCOUNTS = 100
MAX_BASE58_ACCOUNT_BYTES = 128
# Longest base58 text of a value of this many bytes (Agave: MAX_BASE58_LEN 44 for a pubkey,
# 88 for a signature); anything longer is WrongSize before it is decoded (base58 decoding
# is quadratic in the text's length).
MAX_BASE58_TEXT = {32: 44, 64: 88}
MAX_PROGRAM_ACCOUNT_FILTERS = 4
MAX_MEMCMP_BYTES, MAX_MEMCMP_BASE58, MAX_MEMCMP_BASE64 = 128, 175, 172  # Agave's filter limits
TOKEN_PROGRAM_IDS = (Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"),
                     Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"))
NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
TX_TYPE = "solana_transaction::versioned::VersionedTransaction"  # Agave's type_name in messages
MSG_TYPE = "solana_message::versions::VersionedMessage"
VERSION = f"litesvm (solders {getattr(solders, '__version__', 'unknown')})"


class RpcError(Exception):
    """A JSON-RPC error object to send back; raised by method handlers."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_json(self) -> JsonObj:
        out: JsonObj = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def invalid_params(message: str) -> RpcError:
    return RpcError(-32602, message)


# -- envelopes -------------------------------------------------------------------


def handle_body(chain: LocalChain, body: bytes) -> bytes | None:
    """Answer one HTTP body: a request or a batch. None when nothing is owed (notifications)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past Python's stack
        return _dump(_error(None, RpcError(-32700, "Parse error")))
    if isinstance(request, list):
        if not request:
            return _dump(_error(None, RpcError(-32600, "Invalid request")))
        answers = [a for a in (_handle_one(chain, r) for r in request) if a is not None]
        return _dump(answers) if answers else None
    answer = _handle_one(chain, request)
    return None if answer is None else _dump(answer)


def too_large_response(limit: int) -> JsonObj:
    return _error(None, RpcError(-32600, f"Request body too large (limit {limit} bytes)"))


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(req_id: Any, err: RpcError) -> JsonObj:
    return {"jsonrpc": "2.0", "error": err.to_json(), "id": req_id}


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses as inf, which JSON cannot carry back
    return value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))


def _handle_one(chain: LocalChain, req: Any) -> JsonObj | None:
    if (
        not isinstance(req, dict)
        or req.get("jsonrpc") != "2.0"
        or not isinstance(req.get("method"), str)
        or not isinstance(req.get("params", []), (list, dict))
        or not _valid_id(req.get("id"))
    ):
        return _error(None, RpcError(-32600, "Invalid request"))
    is_call = "id" in req  # no id: a notification, run it but answer nothing
    req_id = req.get("id")
    handler = METHODS.get(req["method"])
    try:
        if handler is None:
            raise RpcError(-32601, "Method not found")
        params = req.get("params", [])
        if isinstance(params, dict):
            if params:
                raise invalid_params("Invalid params: invalid type: map, expected a sequence.")
            params = []
        result = handler(chain, params)
    except RpcError as err:
        return _error(req_id, err) if is_call else None
    except Exception:  # a bug of ours: say so without leaking a traceback
        log.exception("localchain: %s failed", req["method"])
        return _error(req_id, RpcError(-32603, "Internal error")) if is_call else None
    return {"jsonrpc": "2.0", "result": result, "id": req_id} if is_call else None


# -- params ------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """How serde names a JSON value in its "invalid type" messages."""
    if value is None or isinstance(value, (list, dict)):
        return "null" if value is None else "sequence" if isinstance(value, list) else "map"
    if isinstance(value, str):
        return f'string "{value[:64]}"'
    kind = "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "floating point"
    return f"{kind} `{json.dumps(value)}`"


def _type_error(value: Any, expected: str) -> RpcError:
    return invalid_params(f"Invalid params: invalid type: {_describe(value)}, expected {expected}.")


def _arg(params: list[Any], index: int, expected: str) -> Any:
    if index >= len(params):
        raise invalid_params(f"Invalid params: invalid length {len(params)}, expected {expected}.")
    return params[index]


def _cfg(params: list[Any], index: int) -> JsonObj:
    value = params[index] if index < len(params) else None
    if value is not None and not isinstance(value, dict):
        raise _type_error(value, "a map")
    return value or {}


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(value, "a string")
    return value


def _uint(value: Any, *, optional: bool = False) -> int:
    if value is None and optional:
        return -1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise _type_error(value, "u64")
    return value


def _bool(value: Any) -> bool:
    if value is not None and not isinstance(value, bool):
        raise _type_error(value, "a boolean")
    return bool(value)


def _b58_bytes(value: Any, size: int) -> bytes:
    """Agave's verify_pubkey/verify_signature wording: "Invalid param: WrongSize"."""
    text = _str(value)
    if len(text) > MAX_BASE58_TEXT[size]:
        raise invalid_params("Invalid param: WrongSize")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None
    if len(raw) != size:
        raise invalid_params("Invalid param: WrongSize")
    return raw


def _pubkey(value: Any) -> Pubkey:
    return Pubkey.from_bytes(_b58_bytes(value, 32))


def _signature(value: Any) -> Signature:
    return Signature.from_bytes(_b58_bytes(value, 64))


_COMMITMENTS = {"processed": "processed", "confirmed": "confirmed", "finalized": "finalized",
                "recent": "processed", "single": "confirmed", "singleGossip": "confirmed",
                "root": "finalized", "max": "finalized"}  # the last five: deprecated spellings


def _commitment(cfg: JsonObj, key: str = "commitment") -> str:
    value = cfg.get(key)
    if value is None:
        return "finalized"
    if not isinstance(value, str) or value not in _COMMITMENTS:
        raise invalid_params(
            f"Invalid params: unknown variant `{value}`, expected one of `processed`, `confirmed`, `finalized`."
        )
    return _COMMITMENTS[value]


def _at_least_confirmed(cfg: JsonObj) -> str:
    commitment = _commitment(cfg)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    return commitment


def _context_slot(chain: LocalChain, cfg: JsonObj, commitment: str | None = None) -> int:
    slot = chain.slot_at(commitment or _commitment(cfg))
    wanted = _uint(cfg.get("minContextSlot"), optional=True)
    if wanted > slot:
        raise RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": slot})
    return slot


def _wrap(slot: int, value: Any) -> JsonObj:
    return {"context": {"slot": slot}, "value": value}


# -- wire formats --------------------------------------------------------------


def _decode_wire(data: str, encoding: str, type_name: str) -> bytes:
    """Agave's decode_and_deserialize size rules: encoded limit, then decoded limit."""
    codecs: dict[str, tuple[int, Callable[[str], bytes], tuple[type[Exception], ...]]] = {
        "base58": (MAX_BASE58_SIZE, base58.b58decode, (ValueError,)),
        "base64": (MAX_BASE64_SIZE, lambda text: base64.b64decode(text, validate=True), (binascii.Error, ValueError)),
    }
    if encoding not in codecs:
        raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")
    limit, decode, errors = codecs[encoding]
    if len(data) > limit:
        raise invalid_params(f"{encoding} encoded {type_name} too large: {len(data)} bytes "
                             f"(max: encoded/raw {limit}/{PACKET_DATA_SIZE})")
    try:
        raw = decode(data)
    except errors as exc:
        raise invalid_params(f"invalid {encoding} encoding: {exc}") from None
    if len(raw) > PACKET_DATA_SIZE:
        raise invalid_params(f"decoded {type_name} too large: {len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)")
    return raw


def _read_transaction(params: list[Any], cfg: JsonObj) -> VersionedTransaction:
    data = _str(_arg(params, 0, "a transaction"))
    encoding = cfg.get("encoding") or "base58"
    raw = _decode_wire(data, _str(encoding), TX_TYPE)
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:
        raise invalid_params(f"failed to deserialize {TX_TYPE}: {exc}") from None


def _sanitize(chain: LocalChain, tx: VersionedTransaction) -> None:
    try:
        chain.sanitize(tx)
    except InvalidTransaction as exc:
        raise invalid_params(f"invalid transaction: {exc}") from None


def _b58(data: bytes) -> str:
    return base58.b58encode(data).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- JSON shapes -----------------------------------------------------------------


def ui_account(acct: Account, encoding: str, data_slice: JsonObj | None) -> JsonObj:
    data = bytes(acct.data)
    if data_slice:
        offset, length = _uint(data_slice.get("offset")), _uint(data_slice.get("length"))
        data = data[offset : offset + length]
    encoded: Any
    if encoding in ("binary", "base58"):
        if len(data) > MAX_BASE58_ACCOUNT_BYTES:
            raise invalid_params(
                "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding."
            )
        encoded = _b58(data) if encoding == "binary" else [_b58(data), "base58"]
    elif encoding in ("base64", "jsonParsed"):  # nothing here parses: jsonParsed falls back like Agave
        encoded = [_b64(data), "base64"]
    elif encoding == "base64+zstd":
        raise invalid_params("unsupported encoding: base64+zstd (no zstd codec in this local chain)")
    else:
        raise invalid_params(
            f"Invalid params: unknown variant `{encoding}`, expected one of `binary`, `base58`, `base64`, "
            "`jsonParsed`, `base64+zstd`."
        )
    return {
        "lamports": acct.lamports,
        "data": encoded,
        "owner": str(acct.owner),
        "executable": acct.executable,
        "rentEpoch": acct.rent_epoch,
        "space": len(acct.data),
    }


def _ui_instruction(program_id_index: int, accounts: bytes, data: bytes, stack_height: int | None) -> JsonObj:
    return {
        "programIdIndex": program_id_index,
        "accounts": list(accounts),
        "data": _b58(data),
        "stackHeight": stack_height,
    }


def _ui_message(msg: Message | MessageV0) -> JsonObj:
    header = msg.header
    out: JsonObj = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": [str(k) for k in msg.account_keys],
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [
            _ui_instruction(ix.program_id_index, bytes(ix.accounts), bytes(ix.data), None) for ix in msg.instructions
        ],
    }
    if isinstance(msg, MessageV0):
        out["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(bytes(lookup.writable_indexes)),
                "readonlyIndexes": list(bytes(lookup.readonly_indexes)),
            }
            for lookup in msg.address_table_lookups
        ]
    return out


def _inner_json(groups: tuple[tuple[Any, ...], ...]) -> list[JsonObj]:
    return [
        {
            "index": index,
            "instructions": [
                _ui_instruction(
                    inner.instruction().program_id_index,
                    bytes(inner.instruction().accounts),
                    bytes(inner.instruction().data),
                    inner.stack_height(),
                )
                for inner in group
            ],
        }
        for index, group in enumerate(groups)
        if group
    ]


def _return_data(rd: tuple[Pubkey, bytes] | None) -> JsonObj | None:
    return None if rd is None else {"programId": str(rd[0]), "data": [_b64(rd[1]), "base64"]}


def _meta_json(rec: TxRecord) -> JsonObj:
    err = None if rec.err is None else err_json(rec.err)
    meta: JsonObj = {
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "fee": rec.fee,
        "preBalances": list(rec.pre_balances),
        "postBalances": list(rec.post_balances),
        "innerInstructions": _inner_json(rec.inner_instructions),
        "logMessages": list(rec.logs),
        "preTokenBalances": None,  # not tracked here: null rather than a made-up []
        "postTokenBalances": None,
        "rewards": [],
        "loadedAddresses": {
            "writable": [str(k) for k in rec.loaded_writable],
            "readonly": [str(k) for k in rec.loaded_readonly],
        },
        "computeUnitsConsumed": rec.compute_units,
    }
    if rec.return_data is not None:
        meta["returnData"] = _return_data(rec.return_data)
    return meta


def encode_transaction(rec: TxRecord, encoding: str, max_version: int | None) -> JsonObj:
    tx, msg = rec.tx, rec.tx.message
    assert isinstance(msg, (Message, MessageV0))  # sanitize() let nothing else land
    version = 0 if isinstance(msg, MessageV0) else None
    if version is not None and (max_version is None or max_version < version):
        raise RpcError(
            -32015,
            f"Transaction version ({version}) is not supported by the requesting client. Please try the request "
            f'again with the following configuration parameter: "maxSupportedTransactionVersion": {version}',
        )
    encoded: Any
    if encoding == "json":
        encoded = {"signatures": [str(s) for s in tx.signatures], "message": _ui_message(msg)}
    elif encoding == "base64":
        encoded = [_b64(bytes(tx)), "base64"]
    elif encoding == "base58":
        encoded = [_b58(bytes(tx)), "base58"]
    elif encoding == "binary":
        encoded = _b58(bytes(tx))
    else:
        raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings here: json, base58, base64")
    out: JsonObj = {"slot": rec.slot, "transaction": encoded, "meta": _meta_json(rec), "blockTime": rec.block_time}
    if max_version is not None:
        out["version"] = "legacy" if version is None else version
    return out


# -- methods ---------------------------------------------------------------------

Params = list[Any]


def get_latest_blockhash(chain: LocalChain, p: Params) -> JsonObj:
    cfg = _cfg(p, 0)
    commitment = _commitment(cfg)
    slot = _context_slot(chain, cfg, commitment)
    blockhash, last_valid = chain.blockhash_at(commitment)
    return _wrap(slot, {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid})


def is_blockhash_valid(chain: LocalChain, p: Params) -> JsonObj:
    text = _str(_arg(p, 0, "a blockhash"))
    try:
        blockhash = Hash.from_string(text)
    except ValueError:
        raise invalid_params("Invalid") from None
    cfg = _cfg(p, 1)
    return _wrap(_context_slot(chain, cfg), chain.is_blockhash_valid(blockhash))


def send_transaction(chain: LocalChain, p: Params) -> str:
    cfg = _cfg(p, 1)
    tx = _read_transaction(p, cfg)
    skip_preflight = _bool(cfg.get("skipPreflight"))
    _commitment(cfg, "preflightCommitment")
    _context_slot(chain, cfg, "processed")
    _sanitize(chain, tx)
    if not skip_preflight:
        if not all(tx.verify_with_results()):
            raise RpcError(-32003, "Transaction signature verification failure")
        sim = chain.simulate(tx)
        if sim.err is not None:
            err = err_json(sim.err)
            raise RpcError(
                -32002,
                f"Transaction simulation failed: {err_display(err)}",
                {
                    "err": err,
                    "logs": list(sim.logs),
                    "accounts": None,
                    "unitsConsumed": sim.units_consumed,
                    "returnData": _return_data(sim.return_data),
                    "innerInstructions": None,
                    "replacementBlockhash": None,
                },
            )
    chain.process(tx)  # lands or is dropped, as on a cluster; the caller polls statuses
    return str(tx.signatures[0])


def _with_blockhash(tx: VersionedTransaction, blockhash: Hash) -> VersionedTransaction:
    msg = tx.message
    if isinstance(msg, MessageV0):
        new: Message | MessageV0 = MessageV0(
            msg.header, msg.account_keys, blockhash, msg.instructions, msg.address_table_lookups
        )
    else:
        h = msg.header
        new = Message.new_with_compiled_instructions(
            h.num_required_signatures,
            h.num_readonly_signed_accounts,
            h.num_readonly_unsigned_accounts,
            msg.account_keys,
            blockhash,
            msg.instructions,
        )
    return VersionedTransaction.populate(new, tx.signatures)


def simulate_transaction(chain: LocalChain, p: Params) -> JsonObj:
    cfg = _cfg(p, 1)
    tx = _read_transaction(p, cfg)
    sig_verify, replace = _bool(cfg.get("sigVerify")), _bool(cfg.get("replaceRecentBlockhash"))
    commitment = _commitment(cfg)
    slot = _context_slot(chain, cfg, commitment)
    _sanitize(chain, tx)
    replacement = None
    if replace:
        if sig_verify:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        blockhash, last_valid = chain.blockhash_at(commitment)
        tx = _with_blockhash(tx, blockhash)
        replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
    if sig_verify and not all(tx.verify_with_results()):
        raise RpcError(-32003, "Transaction signature verification failure")
    sim = chain.simulate(tx, blockhash_replaced=replace)
    accounts = None
    accounts_cfg = cfg.get("accounts")
    if accounts_cfg is not None:
        if not isinstance(accounts_cfg, dict) or not isinstance(accounts_cfg.get("addresses"), list):
            raise _type_error(accounts_cfg, "struct RpcSimulateTransactionAccountsConfig")
        encoding = accounts_cfg.get("encoding") or "base64"
        if encoding in ("binary", "base58"):
            raise invalid_params("base58 encoding not supported")
        addresses = [_pubkey(a) for a in accounts_cfg["addresses"]]
        if len(addresses) > len(tx.message.account_keys):
            raise invalid_params(f"Too many accounts provided; max {len(tx.message.account_keys)}")
        accounts = [
            None if sim.err is not None or acct is None else ui_account(acct, encoding, None)
            for acct in (sim.post_accounts.get(a) or chain.account(a) for a in addresses)
        ]
    inner = None
    if _bool(cfg.get("innerInstructions")) and sim.inner_instructions is not None:
        inner = _inner_json(sim.inner_instructions)
    value = {
        "err": None if sim.err is None else err_json(sim.err),
        "logs": list(sim.logs),
        "accounts": accounts,
        "unitsConsumed": sim.units_consumed,
        "returnData": _return_data(sim.return_data),
        "innerInstructions": inner,
        "replacementBlockhash": replacement,
        "fee": sim.fee if sim.err is None else None,
    }
    return _wrap(slot, value)


def get_signature_statuses(chain: LocalChain, p: Params) -> JsonObj:
    raw = _arg(p, 0, "a list of signatures")
    if not isinstance(raw, list):
        raise _type_error(raw, "a sequence")
    if len(raw) > MAX_SIGNATURE_STATUSES:
        raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
    signatures = [_signature(s) for s in raw]
    search = _bool(_cfg(p, 1).get("searchTransactionHistory"))
    statuses: list[JsonObj | None] = []
    for sig in signatures:
        rec = chain.record(sig)
        if rec is None or not chain.status_visible(rec, search):
            statuses.append(None)
            continue
        commitment = chain.commitment_of(rec.slot)
        err = None if rec.err is None else err_json(rec.err)
        statuses.append(
            {
                "slot": rec.slot,
                "confirmations": None if commitment == "finalized" else chain.slot - rec.slot,
                "err": err,
                "status": {"Ok": None} if err is None else {"Err": err},
                "confirmationStatus": commitment,
            }
        )
    return _wrap(chain.slot, statuses)


def get_transaction(chain: LocalChain, p: Params) -> JsonObj | None:
    sig = _signature(_arg(p, 0, "a signature"))
    second = p[1] if len(p) > 1 else None
    cfg = {"encoding": second} if isinstance(second, str) else _cfg(p, 1)  # old form: encoding string
    encoding = _str(cfg.get("encoding") or "json")
    commitment = _at_least_confirmed(cfg)
    raw_version = cfg.get("maxSupportedTransactionVersion")
    max_version = None if raw_version is None else _uint(raw_version)
    rec = chain.record(sig)
    if rec is None or COMMITMENT_RANK[chain.commitment_of(rec.slot)] < COMMITMENT_RANK[commitment]:
        return None
    return encode_transaction(rec, encoding, max_version)


def get_signatures_for_address(chain: LocalChain, p: Params) -> list[JsonObj]:
    address = _pubkey(_arg(p, 0, "an address"))
    cfg = _cfg(p, 1)
    limit = cfg.get("limit")
    limit = MAX_SIGNATURES_FOR_ADDRESS if limit is None else _uint(limit)
    if limit == 0 or limit > MAX_SIGNATURES_FOR_ADDRESS:
        raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_FOR_ADDRESS}")
    before = None if cfg.get("before") is None else _signature(cfg["before"])
    until = None if cfg.get("until") is None else _signature(cfg["until"])
    commitment = _at_least_confirmed(cfg)
    _context_slot(chain, cfg, commitment)
    records = chain.signatures_for_address(address, before=before, until=until, limit=limit, commitment=commitment)
    return [
        {
            "signature": str(rec.signature),
            "slot": rec.slot,
            "err": None if rec.err is None else err_json(rec.err),
            "memo": rec.memo,
            "blockTime": rec.block_time,
            "confirmationStatus": chain.commitment_of(rec.slot),
        }
        for rec in records
    ]


def get_balance(chain: LocalChain, p: Params) -> JsonObj:
    pubkey = _pubkey(_arg(p, 0, "an address"))
    return _wrap(_context_slot(chain, _cfg(p, 1), "processed"), chain.balance(pubkey))


def _account_value(chain: LocalChain, pubkey: Pubkey, cfg: JsonObj) -> JsonObj | None:
    acct = chain.account(pubkey)
    slice_cfg = cfg.get("dataSlice")
    if slice_cfg is not None and not isinstance(slice_cfg, dict):
        raise _type_error(slice_cfg, "struct UiDataSliceConfig")
    return None if acct is None else ui_account(acct, _str(cfg.get("encoding") or "binary"), slice_cfg)


def get_account_info(chain: LocalChain, p: Params) -> JsonObj:
    pubkey = _pubkey(_arg(p, 0, "an address"))
    cfg = _cfg(p, 1)
    _commitment(cfg)
    return _wrap(_context_slot(chain, cfg, "processed"), _account_value(chain, pubkey, cfg))


def get_multiple_accounts(chain: LocalChain, p: Params) -> JsonObj:
    raw = _arg(p, 0, "a list of addresses")
    if not isinstance(raw, list):
        raise _type_error(raw, "a sequence")
    if len(raw) > MAX_MULTIPLE_ACCOUNTS:
        raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
    pubkeys = [_pubkey(a) for a in raw]
    cfg = _cfg(p, 1)
    _commitment(cfg)
    return _wrap(_context_slot(chain, cfg, "processed"), [_account_value(chain, k, cfg) for k in pubkeys])


def get_fee_for_message(chain: LocalChain, p: Params) -> JsonObj:
    raw = _decode_wire(_str(_arg(p, 0, "a message")), "base64", MSG_TYPE)
    try:
        msg = from_bytes_versioned(raw)
    except Exception as exc:
        raise invalid_params(f"failed to deserialize {MSG_TYPE}: {exc}") from None
    if not isinstance(msg, (Message, MessageV0)):
        raise invalid_params("invalid transaction message: Transaction version is unsupported")
    try:  # legacy messages have no sanitize() of their own in solders
        unsigned = [Signature.default()] * msg.header.num_required_signatures
        VersionedTransaction.populate(msg, unsigned).sanitize()
    except Exception as exc:
        raise invalid_params(f"invalid transaction message: {exc}") from None
    cfg = _cfg(p, 1)
    return _wrap(_context_slot(chain, cfg), chain.fee_for_message(msg))


def request_airdrop(chain: LocalChain, p: Params) -> str:
    pubkey = _pubkey(_arg(p, 0, "an address"))
    lamports = _uint(_arg(p, 1, "lamports"))
    _commitment(_cfg(p, 2))
    try:
        return str(chain.airdrop(pubkey, lamports))
    except AirdropRefused as exc:  # Agave: request_airdrop_transaction failed -> internal_error
        log.info("localchain: airdrop refused: %s", exc)
        raise RpcError(-32603, "Internal error") from None


def _at_commitment(fn: Callable[[LocalChain, str], Any]) -> Callable[[LocalChain, Params], Any]:
    """A method whose only param is an optional {commitment, minContextSlot}."""

    def method(chain: LocalChain, p: Params) -> Any:
        cfg = _cfg(p, 0)
        commitment = _commitment(cfg)
        _context_slot(chain, cfg, commitment)
        return fn(chain, commitment)

    return method


def _constant(fn: Callable[[LocalChain], Any]) -> Callable[[LocalChain, Params], Any]:
    return lambda chain, p: fn(chain)


# -- SPL Token reads and program scans ------------------------------------------------

_TOKEN_ACCOUNT_LEN, _MINT_LEN, _MULTISIG_LEN = 165, 82, 355


def _token_state(data: bytes, base_len: int, account_type: int) -> bool:
    """spl-token-2022's StateWithExtensions length rule: the base layout exactly, or
    base padded to 165 bytes plus an account-type byte (1 mint, 2 account)."""
    if len(data) == base_len:
        return True
    return len(data) > _TOKEN_ACCOUNT_LEN and len(data) != _MULTISIG_LEN and data[_TOKEN_ACCOUNT_LEN] == account_type


def _is_token_account(data: bytes) -> bool:
    """An initialized (or frozen) SPL Token / Token-2022 account: state byte 108 != 0."""
    return _token_state(data, _TOKEN_ACCOUNT_LEN, 2) and data[108] != 0


def _mint_decimals(chain: LocalChain, mint: Pubkey) -> int:
    """Agave's get_mint_owner_and_additional_data (interest/scaled-amount extensions ignored)."""
    if mint == NATIVE_MINT:
        return 9
    acct = chain.account(mint)
    if acct is None:
        raise invalid_params("Invalid param: could not find mint")
    data = bytes(acct.data)
    if not _token_state(data, _MINT_LEN, 1) or data[45] != 1:
        raise invalid_params("Invalid param: mint could not be unpacked")
    return data[44]


def ui_token_amount(amount: int, decimals: int) -> JsonObj:
    """Agave's token_amount_to_ui_amount: f64 quotient, and the trimmed decimal string."""
    text = str(amount)
    if decimals:
        padded = text.rjust(decimals + 1, "0")
        text = f"{padded[:-decimals]}.{padded[-decimals:]}".rstrip("0").rstrip(".")
    ui = float(amount) / float(10**decimals) if 10**decimals < 2**64 else None  # checked_pow(usize)
    return {"amount": str(amount), "decimals": decimals, "uiAmount": ui, "uiAmountString": text}


def get_token_account_balance(chain: LocalChain, p: Params) -> JsonObj:
    pubkey = _pubkey(_arg(p, 0, "an address"))
    cfg = _cfg(p, 1)
    _commitment(cfg)
    slot = _context_slot(chain, cfg, "processed")
    acct = chain.account(pubkey)
    if acct is None:
        raise invalid_params("Invalid param: could not find account")
    data = bytes(acct.data)
    if acct.owner not in TOKEN_PROGRAM_IDS or not _is_token_account(data):
        raise invalid_params("Invalid param: not a Token account")
    decimals = _mint_decimals(chain, Pubkey.from_bytes(data[:32]))
    return _wrap(slot, ui_token_amount(int.from_bytes(data[64:72], "little"), decimals))


AccountFilter = Callable[[bytes], bool]


def _memcmp_bytes(spec: JsonObj) -> bytes:
    """The bytes of a memcmp filter: base58 (default), base64, or a JSON array ("bytes")."""
    encoding, value = spec.get("encoding"), spec.get("bytes")
    if encoding in (None, "base58", "binary") and isinstance(value, str):
        if len(value) > MAX_MEMCMP_BASE58:
            raise invalid_params("Invalid param: DataTooLarge")
        try:
            raw = base58.b58decode(value)
        except ValueError as exc:
            raise invalid_params(f"Invalid param: Base58DecodeError({exc})") from None
    elif encoding == "base64" and isinstance(value, str):
        if len(value) > MAX_MEMCMP_BASE64:
            raise invalid_params("Invalid param: DataTooLarge")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid_params(f"Invalid param: Base64DecodeError({exc})") from None
    elif encoding == "bytes" and isinstance(value, list) and all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value):
        raw = bytes(value)
    else:
        raise invalid_params("Invalid params: invalid memcmp: encoding and bytes do not match.")
    if len(raw) > MAX_MEMCMP_BYTES:
        raise invalid_params("Invalid param: DataTooLarge")
    return raw


def _account_filter(value: Any) -> AccountFilter:
    """One getProgramAccounts filter: {"dataSize": n}, {"memcmp": {...}}, {"tokenAccountState": _}."""
    kind = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else None
    if kind == "dataSize":
        size = _uint(value[kind])
        return lambda data: len(data) == size
    if kind == "memcmp":
        spec = value[kind]
        if not isinstance(spec, dict):
            raise _type_error(spec, "struct Memcmp")
        offset, want = _uint(spec.get("offset")), _memcmp_bytes(spec)
        return lambda data: data[offset : offset + len(want)] == want and offset + len(want) <= len(data)
    if kind == "tokenAccountState":
        return _is_token_account
    raise invalid_params(
        "Invalid params: unknown variant, expected one of `dataSize`, `memcmp`, `tokenAccountState`.")


def get_program_accounts(chain: LocalChain, p: Params) -> Any:
    """Agave's shape: [{pubkey, account}] sorted by address, or {context, value} withContext."""
    program_id = _pubkey(_arg(p, 0, "a program id"))
    cfg = _cfg(p, 1)
    raw_filters = cfg.get("filters") or []
    if not isinstance(raw_filters, list):
        raise _type_error(raw_filters, "a sequence")
    if len(raw_filters) > MAX_PROGRAM_ACCOUNT_FILTERS:
        raise invalid_params(f"Too many filters provided; max {MAX_PROGRAM_ACCOUNT_FILTERS}")
    filters = [_account_filter(f) for f in raw_filters]
    _commitment(cfg)
    slot = _context_slot(chain, cfg, "processed")
    found = [
        {"pubkey": str(key), "account": _account_value(chain, key, cfg)}
        for key, acct in chain.program_accounts(program_id)
        if all(keep(bytes(acct.data)) for keep in filters)
    ]
    return _wrap(slot, found) if _bool(cfg.get("withContext")) else found


def get_minimum_balance_for_rent_exemption(chain: LocalChain, p: Params) -> int:
    size = _uint(_arg(p, 0, "a data length"))
    _commitment(_cfg(p, 1))
    return chain.minimum_balance_for_rent_exemption(size)


METHODS: dict[str, Callable[[LocalChain, Params], Any]] = {
    "getAccountInfo": get_account_info,
    "getBalance": get_balance,
    "getBlockHeight": _at_commitment(lambda chain, c: chain.slot_at(c)),
    "getEpochInfo": _at_commitment(lambda chain, c: chain.epoch_info()),
    "getEpochSchedule": _constant(lambda chain: chain.epoch_schedule()),
    "getFeeForMessage": get_fee_for_message,
    "getFirstAvailableBlock": _constant(lambda chain: 0),
    "getGenesisHash": _constant(lambda chain: str(chain.genesis_hash)),
    "getHealth": _constant(lambda chain: "ok"),
    "getIdentity": _constant(lambda chain: {"identity": str(chain.identity.pubkey())}),
    "getLatestBlockhash": get_latest_blockhash,
    "getMinimumBalanceForRentExemption": get_minimum_balance_for_rent_exemption,
    "getMultipleAccounts": get_multiple_accounts,
    "getSignatureStatuses": get_signature_statuses,
    "getSignaturesForAddress": get_signatures_for_address,
    "getProgramAccounts": get_program_accounts,
    "getSlot": _at_commitment(lambda chain, c: chain.slot_at(c)),
    "getTokenAccountBalance": get_token_account_balance,
    "getTransaction": get_transaction,
    "getTransactionCount": _at_commitment(lambda chain, c: chain.transaction_count),
    "getVersion": _constant(lambda chain: {"solana-core": VERSION, "feature-set": None}),
    "isBlockhashValid": is_blockhash_valid,
    "minimumLedgerSlot": _constant(lambda chain: 0),
    "requestAirdrop": request_airdrop,
    "sendTransaction": send_transaction,
    "simulateTransaction": simulate_transaction,
}
