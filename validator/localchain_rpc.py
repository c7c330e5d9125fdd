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
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import base58
import solders
from solders.hash import Hash
from solders.litesvm import FeatureSet
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
from validator.localchain_accounts import (
    get_account_info,
    get_balance,
    get_minimum_balance_for_rent_exemption,
    get_multiple_accounts,
    get_program_accounts,
    get_token_account_balance,
    get_token_accounts_by_delegate,
    get_token_accounts_by_owner,
    get_token_largest_accounts,
    get_token_supply,
    ui_account,
)
from validator.localchain_decode import ui_token_amount  # noqa: F401  (tests read it from here)
from validator.localchain_instructions import parse_ui_instruction
from validator.localchain_params import (
    JsonObj,
    Params,
    RpcError,
    as_bool,
    as_pubkey,
    as_signature,
    as_str,
    as_u64,
    at_least_confirmed,
    b58,
    b64,
    bounded_list,
    config_param,
    context_slot,
    invalid_params,
    param,
    read_commitment,
    type_error,
    with_context,
)

log = logging.getLogger(__name__)

MAX_BASE58_SIZE = 1683  # Agave: base58 length of a PACKET_DATA_SIZE transaction
MAX_BASE64_SIZE = 1644
MAX_SIGNATURE_STATUSES = 256
MAX_SIGNATURES_FOR_ADDRESS = 1000
TX_TYPE = "solana_transaction::versioned::VersionedTransaction"  # Agave's type_name in messages
MSG_TYPE = "solana_message::versions::VersionedMessage"
VERSION = f"litesvm (solders {getattr(solders, '__version__', 'unknown')})"


def feature_set_id(features: FeatureSet) -> int:
    """solana-version's ``feature-set``: the first four bytes, little-endian, of the sha256 of
    every feature id the build knows, sorted (Agave's ``solana_feature_set::ID``). A fresh
    ``LiteSVM()`` runs with ``FeatureSet.all_enabled()``, so that set is what is hashed."""
    known = sorted(bytes(key) for key in (*features.active, *features.inactive))
    return int.from_bytes(hashlib.sha256(b"".join(known)).digest()[:4], "little")


FEATURE_SET = feature_set_id(FeatureSet.all_enabled())


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
    data = as_str(param(params, 0, "a transaction"))
    encoding = cfg.get("encoding") or "base58"
    raw = _decode_wire(data, as_str(encoding), TX_TYPE)
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:
        raise invalid_params(f"failed to deserialize {TX_TYPE}: {exc}") from None


def _sanitize(chain: LocalChain, tx: VersionedTransaction) -> None:
    try:
        chain.sanitize(tx)
    except InvalidTransaction as exc:
        raise invalid_params(f"invalid transaction: {exc}") from None


# -- JSON shapes -----------------------------------------------------------------


def _ui_instruction(program_id_index: int, accounts: bytes, data: bytes, stack_height: int | None) -> JsonObj:
    return {
        "programIdIndex": program_id_index,
        "accounts": list(accounts),
        "data": b58(data),
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
        out["addressTableLookups"] = _lookups_json(msg)
    return out


InstructionJson = Callable[[int, bytes, bytes, "int | None"], JsonObj]  # (program index, accounts, data, height)


def _inner_json(groups: tuple[tuple[Any, ...], ...], encode: InstructionJson = _ui_instruction) -> list[JsonObj]:
    return [
        {
            "index": index,
            "instructions": [
                encode(
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


# Agave's ReservedAccountKeys (all activated): never shown writable in jsonParsed account lists.
RESERVED_ACCOUNT_KEYS = frozenset(Pubkey.from_string(key) for key in (
    "AddressLookupTab1e1111111111111111111111111", "BPFLoader2111111111111111111111111111111111",
    "BPFLoader1111111111111111111111111111111111", "BPFLoaderUpgradeab1e11111111111111111111111",
    "ComputeBudget111111111111111111111111111111", "Config1111111111111111111111111111111111111",
    "Ed25519SigVerify111111111111111111111111111", "Feature111111111111111111111111111111111111",
    "LoaderV411111111111111111111111111111111111", "KeccakSecp256k11111111111111111111111111111",
    "Secp256r1SigVerify1111111111111111111111111", "Stake11111111111111111111111111111111111111",
    "11111111111111111111111111111111", "Vote111111111111111111111111111111111111111",
    "ZkE1Gama1Proof11111111111111111111111111111", "ZkTokenProof1111111111111111111111111111111",
    "SysvarC1ock11111111111111111111111111111111", "SysvarEpochRewards1111111111111111111111111",
    "SysvarEpochSchedu1e111111111111111111111111", "SysvarFees111111111111111111111111111111111",
    "Sysvar1nstructions1111111111111111111111111", "SysvarLastRestartS1ot1111111111111111111111",
    "SysvarRecentB1ockHashes11111111111111111111", "SysvarRent111111111111111111111111111111111",
    "SysvarRewards111111111111111111111111111111", "SysvarS1otHashes111111111111111111111111111",
    "SysvarS1otHistory11111111111111111111111111", "SysvarStakeHistory1111111111111111111111111",
    "NativeLoader1111111111111111111111111111111", "Sysvar1111111111111111111111111111111111111",
))
_UPGRADEABLE_LOADER = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")


def _parsed_account_keys(rec: TxRecord) -> list[JsonObj]:
    """Agave's parse_legacy/v0_message_accounts: {pubkey, writable, signer, source}. Writable
    as the runtime sees it: by header position (loaded: its table list), never a reserved key,
    and not a called program unless the upgradeable loader is in the message."""
    msg = rec.tx.message
    header, static = msg.header, list(msg.account_keys)
    keys = static + list(rec.loaded_writable) + list(rec.loaded_readonly)
    signers = header.num_required_signatures
    called = {ix.program_id_index for ix in msg.instructions}
    demote = _UPGRADEABLE_LOADER not in keys

    def by_position(i: int) -> bool:
        if i >= len(static):
            return i < len(static) + len(rec.loaded_writable)
        if i < signers:
            return i < signers - header.num_readonly_signed_accounts
        return i < len(static) - header.num_readonly_unsigned_accounts

    return [{"pubkey": str(key),
             "writable": by_position(i) and key not in RESERVED_ACCOUNT_KEYS and not (demote and i in called),
             "signer": i < signers,
             "source": "transaction" if i < len(static) else "lookupTable"}
            for i, key in enumerate(keys)]


def _all_keys(rec: TxRecord) -> list[Pubkey]:
    return list(rec.tx.message.account_keys) + list(rec.loaded_writable) + list(rec.loaded_readonly)


def _parsed_message(rec: TxRecord) -> JsonObj:
    """Agave's UiParsedMessage; addressTableLookups only for a v0 message."""
    msg, keys = rec.tx.message, _all_keys(rec)
    out: JsonObj = {
        "accountKeys": _parsed_account_keys(rec),
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [parse_ui_instruction(keys, ix.program_id_index, bytes(ix.accounts), bytes(ix.data), None)
                         for ix in msg.instructions],
    }
    if isinstance(msg, MessageV0):
        out["addressTableLookups"] = _lookups_json(msg)
    return out


def _lookups_json(msg: MessageV0) -> list[JsonObj]:
    return [
        {
            "accountKey": str(lookup.account_key),
            "writableIndexes": list(bytes(lookup.writable_indexes)),
            "readonlyIndexes": list(bytes(lookup.readonly_indexes)),
        }
        for lookup in msg.address_table_lookups
    ]


def _return_data(rd: tuple[Pubkey, bytes] | None) -> JsonObj | None:
    return None if rd is None else {"programId": str(rd[0]), "data": [b64(rd[1]), "base64"]}


def _meta_json(rec: TxRecord, parsed: bool = False) -> JsonObj:
    """Agave's UiTransactionStatusMeta; ``parsed`` (jsonParsed): inner instructions parsed
    against all keys, and no loadedAddresses (Agave skips it there)."""
    err = None if rec.err is None else err_json(rec.err)
    inner = _inner_json(rec.inner_instructions)
    if parsed:
        keys = _all_keys(rec)
        inner = _inner_json(rec.inner_instructions, lambda index, accounts, data, height: parse_ui_instruction(
            keys, index, accounts, data, height))
    meta: JsonObj = {
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "fee": rec.fee,
        "preBalances": list(rec.pre_balances),
        "postBalances": list(rec.post_balances),
        "innerInstructions": inner,
        "logMessages": list(rec.logs),
        "preTokenBalances": [b.to_json() for b in rec.pre_token_balances],
        "postTokenBalances": [b.to_json() for b in rec.post_token_balances],
        "rewards": [],
    }
    if not parsed:
        meta["loadedAddresses"] = {
            "writable": [str(k) for k in rec.loaded_writable],
            "readonly": [str(k) for k in rec.loaded_readonly],
        }
    if rec.return_data is not None:
        meta["returnData"] = _return_data(rec.return_data)
    meta["computeUnitsConsumed"] = rec.compute_units
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
    elif encoding == "jsonParsed":
        encoded = {"signatures": [str(s) for s in tx.signatures], "message": _parsed_message(rec)}
    elif encoding == "base64":
        encoded = [b64(bytes(tx)), "base64"]
    elif encoding == "base58":
        encoded = [b58(bytes(tx)), "base58"]
    elif encoding == "binary":
        encoded = b58(bytes(tx))
    else:
        raise invalid_params(f"Invalid params: unknown variant `{encoding}`, expected one of `binary`, `base64`, "
                             "`base58`, `json`, `jsonParsed`.")
    out: JsonObj = {"slot": rec.slot, "transaction": encoded, "meta": _meta_json(rec, encoding == "jsonParsed"),
                    "blockTime": rec.block_time}
    if max_version is not None:
        out["version"] = "legacy" if version is None else version
    return out


# -- methods ---------------------------------------------------------------------


def get_latest_blockhash(chain: LocalChain, p: Params) -> JsonObj:
    cfg = config_param(p, 0)
    commitment = read_commitment(cfg)
    slot = context_slot(chain, cfg, commitment)
    blockhash, last_valid = chain.blockhash_at(commitment)
    return with_context(slot, {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid})


def is_blockhash_valid(chain: LocalChain, p: Params) -> JsonObj:
    text = as_str(param(p, 0, "a blockhash"))
    try:
        blockhash = Hash.from_string(text)
    except ValueError:
        raise invalid_params("Invalid") from None
    cfg = config_param(p, 1)
    return with_context(context_slot(chain, cfg), chain.is_blockhash_valid(blockhash))


def send_transaction(chain: LocalChain, p: Params) -> str:
    cfg = config_param(p, 1)
    tx = _read_transaction(p, cfg)
    skip_preflight = as_bool(cfg.get("skipPreflight"))
    read_commitment(cfg, "preflightCommitment")
    context_slot(chain, cfg, "processed")
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
    cfg = config_param(p, 1)
    tx = _read_transaction(p, cfg)
    sig_verify, replace = as_bool(cfg.get("sigVerify")), as_bool(cfg.get("replaceRecentBlockhash"))
    commitment = read_commitment(cfg)
    slot = context_slot(chain, cfg, commitment)
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
            raise type_error(accounts_cfg, "struct RpcSimulateTransactionAccountsConfig")
        encoding = accounts_cfg.get("encoding") or "base64"
        if encoding in ("binary", "base58"):
            raise invalid_params("base58 encoding not supported")
        addresses = [as_pubkey(a) for a in accounts_cfg["addresses"]]
        if len(addresses) > len(tx.message.account_keys):
            raise invalid_params(f"Too many accounts provided; max {len(tx.message.account_keys)}")
        accounts = [
            None if sim.err is not None or acct is None else ui_account(acct, encoding, None)
            for acct in (sim.post_accounts.get(a) or chain.account(a) for a in addresses)
        ]
    inner = None
    if as_bool(cfg.get("innerInstructions")) and sim.inner_instructions is not None:
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
    return with_context(slot, value)


def get_signature_statuses(chain: LocalChain, p: Params) -> JsonObj:
    signatures = [as_signature(s) for s in bounded_list(p, 0, "a list of signatures", MAX_SIGNATURE_STATUSES)]
    search = as_bool(config_param(p, 1).get("searchTransactionHistory"))
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
    return with_context(chain.slot, statuses)


def get_transaction(chain: LocalChain, p: Params) -> JsonObj | None:
    sig = as_signature(param(p, 0, "a signature"))
    second = p[1] if len(p) > 1 else None
    cfg = {"encoding": second} if isinstance(second, str) else config_param(p, 1)  # old form: encoding string
    encoding = as_str(cfg.get("encoding") or "json")
    commitment = at_least_confirmed(cfg)
    raw_version = cfg.get("maxSupportedTransactionVersion")
    max_version = None if raw_version is None else as_u64(raw_version)
    rec = chain.record(sig)
    if rec is None or COMMITMENT_RANK[chain.commitment_of(rec.slot)] < COMMITMENT_RANK[commitment]:
        return None
    return encode_transaction(rec, encoding, max_version)


def get_signatures_for_address(chain: LocalChain, p: Params) -> list[JsonObj]:
    address = as_pubkey(param(p, 0, "an address"))
    cfg = config_param(p, 1)
    limit = cfg.get("limit")
    limit = MAX_SIGNATURES_FOR_ADDRESS if limit is None else as_u64(limit)
    if limit == 0 or limit > MAX_SIGNATURES_FOR_ADDRESS:
        raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_FOR_ADDRESS}")
    before = None if cfg.get("before") is None else as_signature(cfg["before"])
    until = None if cfg.get("until") is None else as_signature(cfg["until"])
    commitment = at_least_confirmed(cfg)
    context_slot(chain, cfg, commitment)
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


def get_fee_for_message(chain: LocalChain, p: Params) -> JsonObj:
    raw = _decode_wire(as_str(param(p, 0, "a message")), "base64", MSG_TYPE)
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
    cfg = config_param(p, 1)
    return with_context(context_slot(chain, cfg), chain.fee_for_message(msg))


def request_airdrop(chain: LocalChain, p: Params) -> str:
    pubkey = as_pubkey(param(p, 0, "an address"))
    lamports = as_u64(param(p, 1, "lamports"))
    read_commitment(config_param(p, 2))
    try:
        return str(chain.airdrop(pubkey, lamports))
    except AirdropRefused as exc:  # Agave: request_airdrop_transaction failed -> internal_error
        log.info("localchain: airdrop refused: %s", exc)
        raise RpcError(-32603, "Internal error") from None


def _at_commitment(fn: Callable[[LocalChain, str], Any]) -> Callable[[LocalChain, Params], Any]:
    """A method whose only param is an optional {commitment, minContextSlot}."""

    def method(chain: LocalChain, p: Params) -> Any:
        cfg = config_param(p, 0)
        commitment = read_commitment(cfg)
        context_slot(chain, cfg, commitment)
        return fn(chain, commitment)

    return method


def _constant(fn: Callable[[LocalChain], Any]) -> Callable[[LocalChain, Params], Any]:
    return lambda chain, p: fn(chain)


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
    "getTokenAccountsByDelegate": get_token_accounts_by_delegate,
    "getTokenAccountsByOwner": get_token_accounts_by_owner,
    "getTokenLargestAccounts": get_token_largest_accounts,
    "getTokenSupply": get_token_supply,
    "getVersion": _constant(lambda chain: {"solana-core": VERSION, "feature-set": FEATURE_SET}),
    "isBlockhashValid": is_blockhash_valid,
    "minimumLedgerSlot": _constant(lambda chain: 0),
    "requestAirdrop": request_airdrop,
    "sendTransaction": send_transaction,
    "simulateTransaction": simulate_transaction,
}
