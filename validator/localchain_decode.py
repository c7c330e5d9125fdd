"""Account layouts the local chain reads back out, as Agave's account-decoder shows them.

Owns: SPL Token / Token-2022 state (accounts, mints, multisigs: ``parse_token``), the BPF
upgradeable loader's states (``parse_bpf_upgradeable_loader``), the ``jsonParsed`` account
data built from them (``parsed_account_data``), the ``UiTokenAmount`` form of an amount, and
a transaction's token balances (``token_balances``, what ``pre/postTokenBalances`` list).

Pure: bytes in, JSON-ready dicts out; where a mint's decimals are needed the caller passes
a lookup. A layout that does not unpack is None (the caller falls back to base64, as Agave
does), never an exception. Not decoded here, where Agave would: Token-2022 extensions (an
account with extensions is shown without its ``extensions`` list), nonce, vote, stake,
sysvar, config and address-lookup-table accounts (base64 instead).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey

JsonObj = dict[str, Any]

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_PROGRAM_IDS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
NATIVE_DECIMALS = 9
BPF_UPGRADEABLE_LOADER_ID = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")

TOKEN_ACCOUNT_LEN, MINT_LEN, MULTISIG_LEN = 165, 82, 355
ACCOUNT_TYPE_MINT, ACCOUNT_TYPE_ACCOUNT = 1, 2
_STATES = {1: "initialized", 2: "frozen"}  # 0 (uninitialized) does not unpack
_BUFFER_METADATA, _PROGRAMDATA_METADATA = 37, 45  # UpgradeableLoaderState::size_of_*_metadata

Decimals = Callable[[Pubkey], "int | None"]  # a mint's decimals, None when it is no mint


class _Malformed(Exception):
    """A layout field that does not unpack (the whole account is then not parsable)."""


def _coption(raw: bytes) -> bytes | None:
    """spl-token's COption: a u32 tag (0 none, 1 some) then the value."""
    tag = int.from_bytes(raw[:4], "little")
    if tag not in (0, 1):
        raise _Malformed
    return raw[4:] if tag == 1 else None


def _key_option(raw: bytes) -> Pubkey | None:
    value = _coption(raw)
    return None if value is None else Pubkey.from_bytes(value)


def _with_extensions(data: bytes, base_len: int, account_type: int) -> bool:
    """Token-2022's StateWithExtensions length rule: the base layout exactly, or base padded
    with zeros to 165 bytes plus an account-type byte (1 mint, 2 account); never multisig size."""
    if len(data) == MULTISIG_LEN or len(data) < base_len:
        return False
    if len(data) == base_len:
        return True
    return (len(data) > TOKEN_ACCOUNT_LEN and data[TOKEN_ACCOUNT_LEN] == account_type
            and not any(data[base_len:TOKEN_ACCOUNT_LEN]))


@dataclass(frozen=True)
class TokenAccount:
    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None
    state: str
    native_reserve: int | None  # is_native: the rent-exempt reserve of a wrapped-SOL account
    delegated_amount: int
    close_authority: Pubkey | None


@dataclass(frozen=True)
class Mint:
    mint_authority: Pubkey | None
    supply: int
    decimals: int
    freeze_authority: Pubkey | None


def unpack_token_account(data: bytes) -> TokenAccount | None:
    """An initialized (or frozen) token account, or None (wrong length, uninitialized, bad
    option tags: what ``StateWithExtensions::<Account>::unpack`` refuses)."""
    if not _with_extensions(data, TOKEN_ACCOUNT_LEN, ACCOUNT_TYPE_ACCOUNT) or data[108] not in _STATES:
        return None
    try:
        delegate, close, native = _key_option(data[72:108]), _key_option(data[129:165]), _coption(data[109:121])
    except _Malformed:
        return None
    return TokenAccount(
        mint=Pubkey.from_bytes(data[:32]), owner=Pubkey.from_bytes(data[32:64]),
        amount=int.from_bytes(data[64:72], "little"), delegate=delegate, state=_STATES[data[108]],
        native_reserve=None if native is None else int.from_bytes(native, "little"),
        delegated_amount=int.from_bytes(data[121:129], "little"), close_authority=close)


def unpack_mint(data: bytes) -> Mint | None:
    """An initialized mint, or None (``StateWithExtensions::<Mint>::unpack`` refuses it)."""
    if not _with_extensions(data, MINT_LEN, ACCOUNT_TYPE_MINT) or data[45] != 1:
        return None
    try:
        authority, freeze = _key_option(data[0:36]), _key_option(data[46:82])
    except _Malformed:
        return None
    return Mint(authority, int.from_bytes(data[36:44], "little"), data[44], freeze)


def ui_token_amount(amount: int, decimals: int) -> JsonObj:
    """Agave's token_amount_to_ui_amount: f64 quotient, and the trimmed decimal string."""
    text = str(amount)
    if decimals:
        padded = text.rjust(decimals + 1, "0")
        text = f"{padded[:-decimals]}.{padded[-decimals:]}".rstrip("0").rstrip(".")
    ui = float(amount) / float(10**decimals) if 10**decimals < 2**64 else None  # checked_pow(usize)
    return {"uiAmount": ui, "decimals": decimals, "amount": str(amount), "uiAmountString": text}


def _key(value: Pubkey | None) -> str | None:
    return None if value is None else str(value)


def parse_token(data: bytes, decimals: int | None) -> JsonObj | None:
    """Agave's ``parse_token``: {"type": "account"|"mint"|"multisig", "info": ...}, or None.
    A token account needs its mint's ``decimals`` (None: not parsable, as in Agave)."""
    account = unpack_token_account(data)
    if account is not None:
        if decimals is None:
            return None
        info: JsonObj = {"mint": str(account.mint), "owner": str(account.owner),
                         "tokenAmount": ui_token_amount(account.amount, decimals)}
        if account.delegate is not None:
            info["delegate"] = str(account.delegate)
        info["state"] = account.state
        info["isNative"] = account.native_reserve is not None
        if account.native_reserve is not None:
            info["rentExemptReserve"] = ui_token_amount(account.native_reserve, decimals)
        if account.delegate is not None:
            info["delegatedAmount"] = ui_token_amount(account.delegated_amount, decimals)
        if account.close_authority is not None:
            info["closeAuthority"] = str(account.close_authority)
        return {"type": "account", "info": info}
    mint = unpack_mint(data)
    if mint is not None:
        return {"type": "mint", "info": {
            "mintAuthority": _key(mint.mint_authority), "supply": str(mint.supply),
            "decimals": mint.decimals, "isInitialized": True,
            "freezeAuthority": _key(mint.freeze_authority)}}
    if len(data) == MULTISIG_LEN and data[2] == 1:  # Multisig::unpack needs it initialized
        signers = [data[3 + 32 * i: 35 + 32 * i] for i in range(11)]
        return {"type": "multisig", "info": {
            "numRequiredSigners": data[0], "numValidSigners": data[1], "isInitialized": True,
            "signers": [str(Pubkey.from_bytes(s)) for s in signers if any(s)]}}
    return None


def _authority(raw: bytes) -> str | None:
    """bincode Option<Pubkey>: a one-byte tag, then 32 bytes."""
    if raw[:1] == b"\x00":
        return None
    if raw[:1] == b"\x01" and len(raw) >= 33:
        return str(Pubkey.from_bytes(raw[1:33]))
    raise _Malformed


def parse_bpf_upgradeable_loader(data: bytes) -> JsonObj | None:
    """Agave's ``parse_bpf_upgradeable_loader``: the four ``UpgradeableLoaderState`` kinds."""
    tag = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
    try:
        if tag == 0:
            return {"type": "uninitialized"}
        if tag == 1:
            return {"type": "buffer", "info": {"authority": _authority(data[4:]),
                                               "data": [_b64(data[_BUFFER_METADATA:]), "base64"]}}
        if tag == 2 and len(data) >= 36:
            return {"type": "program", "info": {"programData": str(Pubkey.from_bytes(data[4:36]))}}
        if tag == 3 and len(data) >= 12:
            return {"type": "programData", "info": {
                "slot": int.from_bytes(data[4:12], "little"), "authority": _authority(data[12:]),
                "data": [_b64(data[_PROGRAMDATA_METADATA:]), "base64"]}}
    except _Malformed:
        return None
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def valid_token_account_data(data: bytes) -> bool:
    """spl-token-2022's ``GenericTokenAccount::valid_account_data`` (the tokenAccountState
    filter): 165 bytes, or more with account type 2 (not multisig-sized), state byte not 0."""
    if len(data) == TOKEN_ACCOUNT_LEN:
        return data[108] != 0
    return (len(data) > TOKEN_ACCOUNT_LEN and len(data) != MULTISIG_LEN
            and data[TOKEN_ACCOUNT_LEN] == ACCOUNT_TYPE_ACCOUNT and data[108] != 0)


def token_mint_of(data: bytes) -> Pubkey | None:
    """The mint of a valid token account's data (Agave's ``get_token_account_mint``)."""
    return Pubkey.from_bytes(data[:32]) if valid_token_account_data(data) else None


def parsed_account_data(owner: Pubkey, data: bytes, decimals: Decimals) -> JsonObj | None:
    """The ``jsonParsed`` data of an account: {"program", "parsed", "space"}, or None when
    Agave would fall back to base64 (an owner nothing here parses, or a layout that does not
    unpack)."""
    parsed: JsonObj | None
    if owner in TOKEN_PROGRAM_IDS:
        mint = token_mint_of(data)
        parsed = parse_token(data, None if mint is None else decimals(mint))
        program = "spl-token" if owner == TOKEN_PROGRAM_ID else "spl-token-2022"
    elif owner == BPF_UPGRADEABLE_LOADER_ID:
        parsed, program = parse_bpf_upgradeable_loader(data), "bpf-upgradeable-loader"
    else:
        return None
    return None if parsed is None else {"program": program, "parsed": parsed, "space": len(data)}


@dataclass(frozen=True)
class TokenBalance:
    """One row of a transaction's pre/postTokenBalances."""

    account_index: int
    mint: Pubkey
    owner: Pubkey
    program_id: Pubkey
    amount: int
    decimals: int

    def to_json(self) -> JsonObj:
        return {"accountIndex": self.account_index, "mint": str(self.mint),
                "uiTokenAmount": ui_token_amount(self.amount, self.decimals),
                "owner": str(self.owner), "programId": str(self.program_id)}


def token_balances(keys: Iterable[Pubkey], invoked: set[int],
                   account: Callable[[Pubkey], "tuple[Pubkey, bytes] | None"],
                   decimals: Decimals) -> tuple[TokenBalance, ...]:
    """Agave's ``collect_token_balances`` for one transaction: nothing unless a token program
    is among its keys; then every key that is not an invoked program nor a token program,
    holds a token account (``account(key)`` gives owner and data) and whose mint is known."""
    keys = list(keys)
    if not any(k in TOKEN_PROGRAM_IDS for k in keys):
        return ()
    out = []
    for index, key in enumerate(keys):
        if index in invoked or key in TOKEN_PROGRAM_IDS:
            continue
        found = account(key)
        if found is None or found[0] not in TOKEN_PROGRAM_IDS:
            continue
        state = unpack_token_account(found[1])
        if state is None:
            continue
        places = decimals(state.mint)
        if places is not None:
            out.append(TokenBalance(index, state.mint, state.owner, found[0], state.amount, places))
    return tuple(out)


def mint_decimals_from(account: Callable[[Pubkey], "tuple[Pubkey, bytes] | None"]) -> Decimals:
    """A ``Decimals`` lookup over ``account`` (owner, data): Agave's ``get_mint_decimals``
    (the native mint has 9; a mint must be owned by a token program and unpack)."""

    def decimals(mint: Pubkey) -> int | None:
        if mint == NATIVE_MINT:
            return NATIVE_DECIMALS
        found = account(mint)
        if found is None or found[0] not in TOKEN_PROGRAM_IDS:
            return None
        state = unpack_mint(found[1])
        return None if state is None else state.decimals

    return decimals
