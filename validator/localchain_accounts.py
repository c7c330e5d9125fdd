"""The local chain's account reads, in Agave's shapes: balances, accounts, program scans and
SPL Token queries.

Owns: how an account is encoded (``UiAccount``: binary, base58, base64, and ``jsonParsed``
through ``localchain_decode``), the getProgramAccounts filters (dataSize, memcmp,
tokenAccountState), and the methods getBalance, getAccountInfo, getMultipleAccounts,
getProgramAccounts, getTokenAccountBalance, getTokenAccountsByOwner/-ByDelegate,
getTokenSupply, getTokenLargestAccounts and getMinimumBalanceForRentExemption. Every answer
is read from ``LocalChain``; bad params are ``RpcError`` with Agave's code and wording.
Reads see the newest state whatever commitment is asked (see ``localchain``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import base58
from solders.account import Account
from solders.pubkey import Pubkey

from validator.localchain import LocalChain
from validator.localchain_decode import (
    NATIVE_DECIMALS,
    NATIVE_MINT,
    TOKEN_PROGRAM_ID,
    TOKEN_PROGRAM_IDS,
    parsed_account_data,
    ui_token_amount,
    unpack_mint,
    unpack_token_account,
    valid_token_account_data,
)
from validator.localchain_params import (
    JsonObj,
    Params,
    as_bool,
    as_pubkey,
    as_str,
    as_u64,
    b58,
    b64,
    bounded_list,
    config_param,
    context_slot,
    invalid_params,
    invalid_request,
    param,
    read_commitment,
    type_error,
    with_context,
)

MAX_MULTIPLE_ACCOUNTS = 100
MAX_BASE58_ACCOUNT_BYTES = 128
MAX_PROGRAM_ACCOUNT_FILTERS = 4
MAX_MEMCMP_BYTES, MAX_MEMCMP_BASE58, MAX_MEMCMP_BASE64 = 128, 175, 172  # Agave's filter limits
NUM_LARGEST_ACCOUNTS = 20
TOKEN_OWNER_OFFSET, TOKEN_MINT_OFFSET = 32, 0
_ENCODINGS = ("binary", "base58", "base64", "jsonParsed", "base64+zstd")


# -- encoding one account -------------------------------------------------------------------


def _slice(data: bytes, data_slice: JsonObj | None) -> bytes:
    if not data_slice:
        return data
    offset, length = as_u64(data_slice.get("offset")), as_u64(data_slice.get("length"))
    return data[offset : offset + length]


def ui_account(acct: Account, encoding: str, data_slice: JsonObj | None,
               parsed: JsonObj | None = None) -> JsonObj:
    """Agave's ``UiAccount::encode``. ``parsed``: the jsonParsed data when the account parses
    (else jsonParsed falls back to base64 of the sliced data, as Agave's does)."""
    if encoding not in _ENCODINGS:
        raise invalid_params(f"Invalid params: unknown variant `{encoding}`, expected one of "
                             + ", ".join(f"`{e}`" for e in _ENCODINGS) + ".")
    data = _slice(bytes(acct.data), data_slice)
    encoded: Any
    if encoding in ("binary", "base58"):
        if len(data) > MAX_BASE58_ACCOUNT_BYTES:
            raise invalid_request(
                "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding.")
        encoded = b58(data) if encoding == "binary" else [b58(data), "base58"]
    elif encoding == "jsonParsed" and parsed is not None:
        encoded = parsed
    elif encoding in ("base64", "jsonParsed"):
        encoded = [b64(data), "base64"]
    else:
        raise invalid_params("unsupported encoding: base64+zstd (no zstd codec in this local chain)")
    return {
        "lamports": acct.lamports,
        "data": encoded,
        "owner": str(acct.owner),
        "executable": acct.executable,
        "rentEpoch": acct.rent_epoch,
        "space": len(acct.data),
    }


def _parsed(chain: LocalChain, acct: Account) -> JsonObj | None:
    return parsed_account_data(acct.owner, bytes(acct.data), chain.mint_decimals)


def _encoding(cfg: JsonObj, default: str = "binary") -> str:
    return as_str(cfg.get("encoding") or default)


def _data_slice(cfg: JsonObj) -> JsonObj | None:
    slice_cfg = cfg.get("dataSlice")
    if slice_cfg is not None and not isinstance(slice_cfg, dict):
        raise type_error(slice_cfg, "struct UiDataSliceConfig")
    return slice_cfg


def account_value(chain: LocalChain, pubkey: Pubkey, cfg: JsonObj) -> JsonObj | None:
    """Agave's ``get_encoded_account``: a token account in jsonParsed is parsed whole (its
    slice ignored; base64 of all of it if it does not parse)."""
    acct = chain.account(pubkey)
    if acct is None:
        return None
    encoding, data_slice = _encoding(cfg), _data_slice(cfg)
    if encoding == "jsonParsed":
        if acct.owner in TOKEN_PROGRAM_IDS:
            data_slice = None
        return ui_account(acct, encoding, data_slice, _parsed(chain, acct))
    return ui_account(acct, encoding, data_slice)


def _keyed(chain: LocalChain, found: list[tuple[Pubkey, Account]], cfg: JsonObj, token_program: bool
           ) -> list[JsonObj]:
    """[{pubkey, account}]. jsonParsed over a token program keeps only what parses (Agave's
    ``get_parsed_token_accounts``)."""
    if token_program and _encoding(cfg) == "jsonParsed":
        out = []
        for key, acct in found:
            parsed = _parsed(chain, acct)
            if parsed is not None:
                out.append({"pubkey": str(key), "account": ui_account(acct, "jsonParsed", None, parsed)})
        return out
    return [{"pubkey": str(key), "account": account_value(chain, key, cfg)} for key, _ in found]


# -- balances and plain accounts -------------------------------------------------------------


def get_balance(chain: LocalChain, p: Params) -> JsonObj:
    pubkey = as_pubkey(param(p, 0, "an address"))
    return with_context(context_slot(chain, config_param(p, 1), "processed"), chain.balance(pubkey))


def get_account_info(chain: LocalChain, p: Params) -> JsonObj:
    pubkey = as_pubkey(param(p, 0, "an address"))
    cfg = config_param(p, 1)
    read_commitment(cfg)
    return with_context(context_slot(chain, cfg, "processed"), account_value(chain, pubkey, cfg))


def get_multiple_accounts(chain: LocalChain, p: Params) -> JsonObj:
    pubkeys = [as_pubkey(a) for a in bounded_list(p, 0, "a list of addresses", MAX_MULTIPLE_ACCOUNTS)]
    cfg = config_param(p, 1)
    read_commitment(cfg)
    return with_context(context_slot(chain, cfg, "processed"), [account_value(chain, k, cfg) for k in pubkeys])


def get_minimum_balance_for_rent_exemption(chain: LocalChain, p: Params) -> int:
    size = as_u64(param(p, 0, "a data length"))
    read_commitment(config_param(p, 1))
    return chain.minimum_balance_for_rent_exemption(size)


# -- program scans ---------------------------------------------------------------------------

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


def _memcmp(offset: int, want: bytes) -> AccountFilter:
    return lambda data: offset + len(want) <= len(data) and data[offset : offset + len(want)] == want


def _account_filter(value: Any) -> AccountFilter:
    """One getProgramAccounts filter: {"dataSize": n}, {"memcmp": {...}}, {"tokenAccountState": _}."""
    kind = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else None
    if kind == "dataSize":
        size = as_u64(value[kind])
        return lambda data: len(data) == size
    if kind == "memcmp":
        spec = value[kind]
        if not isinstance(spec, dict):
            raise type_error(spec, "struct Memcmp")
        return _memcmp(as_u64(spec.get("offset")), _memcmp_bytes(spec))
    if kind == "tokenAccountState":
        return valid_token_account_data
    raise invalid_params(
        "Invalid params: unknown variant, expected one of `dataSize`, `memcmp`, `tokenAccountState`.")


def _scan(chain: LocalChain, program_id: Pubkey, filters: list[AccountFilter]) -> list[tuple[Pubkey, Account]]:
    return [(key, acct) for key, acct in chain.program_accounts(program_id)
            if all(keep(bytes(acct.data)) for keep in filters)]


def get_program_accounts(chain: LocalChain, p: Params) -> Any:
    """Agave's shape: [{pubkey, account}] sorted by address, or {context, value} withContext."""
    program_id = as_pubkey(param(p, 0, "a program id"))
    cfg = config_param(p, 1)
    raw_filters = cfg.get("filters") or []
    if not isinstance(raw_filters, list):
        raise type_error(raw_filters, "a sequence")
    if len(raw_filters) > MAX_PROGRAM_ACCOUNT_FILTERS:
        raise invalid_params(f"Too many filters provided; max {MAX_PROGRAM_ACCOUNT_FILTERS}")
    filters = [_account_filter(f) for f in raw_filters]
    read_commitment(cfg)
    slot = context_slot(chain, cfg, "processed")
    found = _keyed(chain, _scan(chain, program_id, filters), cfg, program_id in TOKEN_PROGRAM_IDS)
    return with_context(slot, found) if as_bool(cfg.get("withContext")) else found


# -- SPL Token --------------------------------------------------------------------------------


def _mint_decimals(chain: LocalChain, mint: Pubkey) -> tuple[Pubkey, int]:
    """Agave's get_mint_owner_and_additional_data: (owner, decimals); the native mint is 9."""
    if mint == NATIVE_MINT:
        return TOKEN_PROGRAM_ID, NATIVE_DECIMALS
    acct = chain.account(mint)
    if acct is None:
        raise invalid_params("Invalid param: could not find mint")
    state = unpack_mint(bytes(acct.data))
    if state is None:
        raise invalid_params("Invalid param: Token mint could not be unpacked")
    return acct.owner, state.decimals


def _existing(chain: LocalChain, p: Params, what: str) -> tuple[int, Pubkey, Account]:
    """(slot, key, account) of a token read's first param, with its {commitment} config;
    Agave's "could not find account" when there is none."""
    key = as_pubkey(param(p, 0, what))
    cfg = config_param(p, 1)
    read_commitment(cfg)
    slot = context_slot(chain, cfg, "processed")
    acct = chain.account(key)
    if acct is None:
        raise invalid_params("Invalid param: could not find account")
    return slot, key, acct


def get_token_account_balance(chain: LocalChain, p: Params) -> JsonObj:
    slot, _, acct = _existing(chain, p, "an address")
    state = unpack_token_account(bytes(acct.data)) if acct.owner in TOKEN_PROGRAM_IDS else None
    if state is None:
        raise invalid_params("Invalid param: not a Token account")
    _, decimals = _mint_decimals(chain, state.mint)
    return with_context(slot, ui_token_amount(state.amount, decimals))


def _token_mint(chain: LocalChain, p: Params) -> tuple[int, Pubkey, Account]:
    """getTokenSupply / getTokenLargestAccounts: (slot, mint, its account), Agave's checks."""
    slot, mint, acct = _existing(chain, p, "a mint address")
    if acct.owner not in TOKEN_PROGRAM_IDS:
        raise invalid_params("Invalid param: not a Token mint")
    return slot, mint, acct


def get_token_supply(chain: LocalChain, p: Params) -> JsonObj:
    slot, _, acct = _token_mint(chain, p)
    state = unpack_mint(bytes(acct.data))
    if state is None:
        raise invalid_params("Invalid param: mint could not be unpacked")
    return with_context(slot, ui_token_amount(state.supply, state.decimals))


def get_token_largest_accounts(chain: LocalChain, p: Params) -> JsonObj:
    """The 20 largest token accounts of a mint: [{address, amount, decimals, uiAmount, ...}]."""
    slot, mint, acct = _token_mint(chain, p)
    _, decimals = _mint_decimals(chain, mint)
    holders = [(state.amount, key) for key, a in _scan(chain, acct.owner, [_memcmp(TOKEN_MINT_OFFSET, bytes(mint))])
               if (state := unpack_token_account(bytes(a.data))) is not None]
    holders.sort(key=lambda held: -held[0])  # stable: equal amounts keep address order
    return with_context(slot, [{"address": str(key), **ui_token_amount(amount, decimals)}
                               for amount, key in holders[:NUM_LARGEST_ACCOUNTS]])


def _token_filter(chain: LocalChain, raw: Any) -> tuple[Pubkey, list[AccountFilter]]:
    """Agave's get_token_program_id_and_mint: {"mint": M} or {"programId": P} -> (program, filters)."""
    if not isinstance(raw, dict):
        raise type_error(raw, "map with a single key")
    if len(raw) != 1 or next(iter(raw)) not in ("mint", "programId"):
        name = next(iter(raw), "")
        raise invalid_params(f"Invalid params: unknown variant `{name}`, expected `mint` or `programId`.")
    (kind, value), = raw.items()
    key = as_pubkey(value)
    if kind == "programId":
        if key not in TOKEN_PROGRAM_IDS:
            raise invalid_params("Invalid param: unrecognized Token program id")
        return key, []
    owner, _ = _mint_decimals(chain, key)
    if owner not in TOKEN_PROGRAM_IDS:
        raise invalid_params("Invalid param: not a Token mint")
    return owner, [_memcmp(TOKEN_MINT_OFFSET, bytes(key))]


def _token_accounts_by(chain: LocalChain, p: Params, who: str,
                       holder_filters: Callable[[Pubkey], list[AccountFilter]]) -> JsonObj:
    holder = as_pubkey(param(p, 0, f"{who} address"))
    program, filters = _token_filter(chain, param(p, 1, "a token account filter"))
    cfg = config_param(p, 2)
    read_commitment(cfg)
    slot = context_slot(chain, cfg, "processed")
    found = _scan(chain, program, [valid_token_account_data, *holder_filters(holder), *filters])
    return with_context(slot, _keyed(chain, found, cfg, True))


def get_token_accounts_by_owner(chain: LocalChain, p: Params) -> JsonObj:
    """Token accounts whose owner field is the address (offset 32), by mint or token program."""
    return _token_accounts_by(chain, p, "an owner", lambda owner: [_memcmp(TOKEN_OWNER_OFFSET, bytes(owner))])


def get_token_accounts_by_delegate(chain: LocalChain, p: Params) -> JsonObj:
    """Token accounts delegated to the address: delegate COption tag 1 at 72, the key at 76."""
    return _token_accounts_by(chain, p, "a delegate", lambda delegate: [
        _memcmp(72, (1).to_bytes(4, "little")), _memcmp(76, bytes(delegate))])
