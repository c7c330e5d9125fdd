"""Instructions in ``jsonParsed`` form, as Agave's transaction-status crate parses them.

Owns: ``parse_ui_instruction`` (one compiled instruction -> the parsed form
``{program, programId, parsed: {type, info}, stackHeight}`` or, for anything not parsed here,
Agave's partially decoded form ``{programId, accounts, data, stackHeight}``), and the parsers
behind it: the system program (every instruction), SPL Token and Token-2022 (the base
instruction set, 0..24, and ``batch``), the associated token account program and SPL Memo
(v1, v3). Token-2022 extension instructions, the loaders, stake, vote and address lookup
tables are shown partially decoded here where Agave parses them.

Pure: keys and bytes in, dicts out. An instruction whose data or accounts do not fit its
layout is not parsable and falls back to the partially decoded form, like Agave's; nothing
here raises on a transaction's content.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import base58
from solders.pubkey import Pubkey

from validator.localchain_decode import TOKEN_PROGRAM_IDS, ui_token_amount

JsonObj = dict[str, Any]

SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
ATA_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM_IDS = (Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"),
                    Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"))


class NotParsable(Exception):
    """The instruction does not fit its program's layout (Agave: InstructionNotParsable or
    InstructionKeyMismatch); shown partially decoded instead."""


class _Reader:
    """Little-endian fields of instruction data, in order; NotParsable past the end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise NotParsable
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def pubkey(self) -> str:
        return str(Pubkey.from_bytes(self.take(32)))

    def string(self) -> str:
        """bincode String: a u64 length, then UTF-8."""
        try:
            return self.take(self.u64()).decode("utf-8")
        except UnicodeDecodeError:
            raise NotParsable from None

    def coption_pubkey(self) -> str | None:
        """spl-token's instruction COption<Pubkey>: one tag byte (0 none, 1 some) then 32."""
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return self.pubkey()
        raise NotParsable


class _Accounts:
    """An instruction's account list, resolved to base58 keys by position."""

    def __init__(self, keys: Sequence[Pubkey], indexes: bytes, minimum: int) -> None:
        if not indexes or max(indexes) >= len(keys) or len(indexes) < minimum:
            raise NotParsable  # Agave: InstructionKeyMismatch
        self.keys, self.indexes = keys, indexes

    def __getitem__(self, position: int) -> str:
        return str(self.keys[self.indexes[position]])

    def __len__(self) -> int:
        return len(self.indexes)

    def from_(self, position: int) -> list[str]:
        return [str(self.keys[i]) for i in self.indexes[position:]]


# -- system program (bincode: a u32 tag) --------------------------------------------------


def _system(keys: Sequence[Pubkey], indexes: bytes, data: bytes) -> JsonObj:
    r = _Reader(data)
    tag = r.u32()

    def accounts(n: int) -> _Accounts:
        return _Accounts(keys, indexes, n)

    if tag == 0:
        lamports, space, owner = r.u64(), r.u64(), r.pubkey()
        a = accounts(2)
        return _typed("createAccount", {"source": a[0], "newAccount": a[1], "lamports": lamports,
                                        "space": space, "owner": owner})
    if tag == 1:
        owner = r.pubkey()
        return _typed("assign", {"account": accounts(1)[0], "owner": owner})
    if tag == 2:
        lamports = r.u64()
        a = accounts(2)
        return _typed("transfer", {"source": a[0], "destination": a[1], "lamports": lamports})
    if tag == 3:
        base, seed, lamports, space, owner = r.pubkey(), r.string(), r.u64(), r.u64(), r.pubkey()
        a = accounts(2)
        return _typed("createAccountWithSeed", {
            "source": a[0], "newAccount": a[1], "base": base, "seed": seed, "lamports": lamports,
            "space": space, "owner": owner})
    if tag == 4:
        a = accounts(3)
        return _typed("advanceNonce", {"nonceAccount": a[0], "recentBlockhashesSysvar": a[1],
                                       "nonceAuthority": a[2]})
    if tag == 5:
        lamports = r.u64()
        a = accounts(5)
        return _typed("withdrawFromNonce", {
            "nonceAccount": a[0], "destination": a[1], "recentBlockhashesSysvar": a[2],
            "rentSysvar": a[3], "nonceAuthority": a[4], "lamports": lamports})
    if tag == 6:
        authority = r.pubkey()
        a = accounts(3)
        return _typed("initializeNonce", {"nonceAccount": a[0], "recentBlockhashesSysvar": a[1],
                                          "rentSysvar": a[2], "nonceAuthority": authority})
    if tag == 7:
        authority = r.pubkey()
        a = accounts(2)
        return _typed("authorizeNonce", {"nonceAccount": a[0], "nonceAuthority": a[1],
                                         "newAuthorized": authority})
    if tag == 8:
        space = r.u64()
        return _typed("allocate", {"account": accounts(1)[0], "space": space})
    if tag == 9:
        base, seed, space, owner = r.pubkey(), r.string(), r.u64(), r.pubkey()
        return _typed("allocateWithSeed", {"account": accounts(2)[0], "base": base, "seed": seed,
                                           "space": space, "owner": owner})
    if tag == 10:
        base, seed, owner = r.pubkey(), r.string(), r.pubkey()
        return _typed("assignWithSeed", {"account": accounts(2)[0], "base": base, "seed": seed,
                                         "owner": owner})
    if tag == 11:
        lamports, seed, owner = r.u64(), r.string(), r.pubkey()
        a = accounts(3)
        return _typed("transferWithSeed", {
            "source": a[0], "sourceBase": a[1], "destination": a[2], "lamports": lamports,
            "sourceSeed": seed, "sourceOwner": owner})
    if tag == 12:
        return _typed("upgradeNonce", {"nonceAccount": accounts(1)[0]})
    raise NotParsable


# -- SPL Token / Token-2022 (a u8 tag) -------------------------------------------------------

_AUTHORITY_TYPES = (
    "mintTokens", "freezeAccount", "accountOwner", "closeAccount", "transferFeeConfig",
    "withheldWithdraw", "closeMint", "interestRate", "permanentDelegate",
    "confidentialTransferMint", "transferHookProgramId", "confidentialTransferFeeConfig",
    "metadataPointer", "groupPointer", "groupMemberPointer", "scaledUiAmount", "pause",
    "permissionedBurn")
_ACCOUNT_AUTHORITIES = {"accountOwner", "closeAccount"}  # the rest belong to a mint
_EXTENSION_TYPES = (  # spl-token-2022's ExtensionType, by its u16 value
    "uninitialized", "transferFeeConfig", "transferFeeAmount", "mintCloseAuthority",
    "confidentialTransferMint", "confidentialTransferAccount", "defaultAccountState",
    "immutableOwner", "memoTransfer", "nonTransferable", "interestBearingConfig", "cpiGuard",
    "permanentDelegate", "nonTransferableAccount", "transferHook", "transferHookAccount",
    "confidentialTransferFeeConfig", "confidentialTransferFeeAmount", "metadataPointer",
    "tokenMetadata", "groupPointer", "groupMemberPointer", "tokenGroup", "tokenGroupMember",
    "confidentialMintBurn", "scaledUiAmount", "pausable", "pausableAccount", "permissionedBurn")


def _extension_types(raw: bytes) -> list[str]:
    """GetAccountDataSize's list: u16 values, each a known ExtensionType."""
    values = [int.from_bytes(raw[i:i + 2], "little") for i in range(0, len(raw), 2)]
    if len(raw) % 2 or any(v >= len(_EXTENSION_TYPES) for v in values):
        raise NotParsable
    return [_EXTENSION_TYPES[v] for v in values]


def _signers(info: JsonObj, a: _Accounts, last_nonsigner: int, single: str, multisig: str) -> JsonObj:
    """Agave's parse_signers: one authority, or a multisig and the signers after it."""
    if len(a) > last_nonsigner + 1:
        info[multisig] = a[last_nonsigner]
        info["signers"] = a.from_(last_nonsigner + 1)
    elif len(a) > last_nonsigner:
        info[single] = a[last_nonsigner]
    return info


def _mint_init(r: _Reader, a: _Accounts, with_rent: bool) -> JsonObj:
    decimals, authority, freeze = r.u8(), r.pubkey(), r.coption_pubkey()
    info: JsonObj = {"mint": a[0], "decimals": decimals, "mintAuthority": authority}
    if with_rent:
        info["rentSysvar"] = a[1]
    if freeze is not None:
        info["freezeAuthority"] = freeze
    return info


def _token(keys: Sequence[Pubkey], indexes: bytes, data: bytes, depth: int = 0) -> JsonObj:
    r = _Reader(data)
    tag = r.u8()

    def accounts(n: int) -> _Accounts:
        return _Accounts(keys, indexes, n)

    if tag in (0, 20):
        with_rent = tag == 0
        return _typed("initializeMint" if with_rent else "initializeMint2",
                      _mint_init(r, accounts(2 if with_rent else 1), with_rent))
    if tag == 1:
        a = accounts(4)
        return _typed("initializeAccount", {"account": a[0], "mint": a[1], "owner": a[2], "rentSysvar": a[3]})
    if tag in (16, 18):
        owner = r.pubkey()
        a = accounts(3 if tag == 16 else 2)
        info: JsonObj = {"account": a[0], "mint": a[1], "owner": owner}
        if tag == 16:
            info["rentSysvar"] = a[2]
        return _typed("initializeAccount2" if tag == 16 else "initializeAccount3", info)
    if tag in (2, 19):
        m = r.u8()
        skip = 2 if tag == 2 else 1
        a = accounts(3 if tag == 2 else 2)
        multisig: JsonObj = {"multisig": a[0]}
        if tag == 2:
            multisig["rentSysvar"] = a[1]
        return _typed("initializeMultisig" if tag == 2 else "initializeMultisig2",
                      {**multisig, "signers": a.from_(skip), "m": m})
    if tag in (3, 4, 7, 8):
        plain_amount = str(r.u64())
        a = accounts(3)
        first, second, single, multi, name = {
            3: ("source", "destination", "authority", "multisigAuthority", "transfer"),
            4: ("source", "delegate", "owner", "multisigOwner", "approve"),
            7: ("mint", "account", "mintAuthority", "multisigMintAuthority", "mintTo"),
            8: ("account", "mint", "authority", "multisigAuthority", "burn")}[tag]
        return _typed(name, _signers({first: a[0], second: a[1], "amount": plain_amount}, a, 2, single, multi))
    if tag == 5:
        a = accounts(2)
        return _typed("revoke", _signers({"source": a[0]}, a, 1, "owner", "multisigOwner"))
    if tag == 6:
        kind = r.u8()
        if kind >= len(_AUTHORITY_TYPES):
            raise NotParsable
        new_authority = r.coption_pubkey()
        a = accounts(2)
        name = _AUTHORITY_TYPES[kind]
        owned = "account" if name in _ACCOUNT_AUTHORITIES else "mint"
        return _typed("setAuthority", _signers({owned: a[0], "authorityType": name, "newAuthority": new_authority},
                                               a, 1, "authority", "multisigAuthority"))
    if tag == 9:
        a = accounts(3)
        return _typed("closeAccount", _signers({"account": a[0], "destination": a[1]}, a, 2, "owner",
                                               "multisigOwner"))
    if tag in (10, 11):
        a = accounts(3)
        return _typed("freezeAccount" if tag == 10 else "thawAccount",
                      _signers({"account": a[0], "mint": a[1]}, a, 2, "freezeAuthority", "multisigFreezeAuthority"))
    if tag in (12, 13):
        amount, decimals = r.u64(), r.u8()
        a = accounts(4)
        third, single, multi = ("destination", "authority", "multisigAuthority") if tag == 12 else (
            "delegate", "owner", "multisigOwner")
        checked: JsonObj = {"source": a[0], "mint": a[1], third: a[2],
                            "tokenAmount": ui_token_amount(amount, decimals)}
        return _typed("transferChecked" if tag == 12 else "approveChecked", _signers(checked, a, 3, single, multi))
    if tag in (14, 15):
        amount, decimals = r.u64(), r.u8()
        a = accounts(3)
        first, second, single, multi, name = (
            ("mint", "account", "mintAuthority", "multisigMintAuthority", "mintToChecked") if tag == 14 else
            ("account", "mint", "authority", "multisigAuthority", "burnChecked"))
        supply: JsonObj = {first: a[0], second: a[1], "tokenAmount": ui_token_amount(amount, decimals)}
        return _typed(name, _signers(supply, a, 2, single, multi))
    if tag in (17, 22):
        return _typed("syncNative" if tag == 17 else "initializeImmutableOwner", {"account": accounts(1)[0]})
    if tag == 21:
        size: JsonObj = {"mint": accounts(1)[0]}
        if len(data) > 1:
            size["extensionTypes"] = _extension_types(data[1:])
        return _typed("getAccountDataSize", size)
    if tag == 23:
        return _typed("amountToUiAmount", {"mint": accounts(1)[0], "amount": str(r.u64())})
    if tag == 24:
        try:
            ui_amount = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            raise NotParsable from None
        return _typed("uiAmountToAmount", {"mint": accounts(1)[0], "uiAmount": ui_amount})
    if tag == 255 and depth == 0:
        return _typed("batch", {"instructions": _batch(keys, indexes, data[1:])})
    raise NotParsable


def _batch(keys: Sequence[Pubkey], indexes: bytes, data: bytes) -> list[JsonObj]:
    """Agave's parse_batch_instruction: per inner instruction a u8 account count, a u8 data
    length, then the data; the accounts are the outer ones in order. No nested batches."""
    out, at, account_at = [], 0, 0
    while at < len(data):
        if at + 2 > len(data):
            raise NotParsable
        count, size = data[at], data[at + 1]
        inner = data[at + 2:at + 2 + size]
        if len(inner) != size or account_at + count > len(indexes) or inner[:1] == b"\xff":
            raise NotParsable
        out.append(_token(keys, indexes[account_at:account_at + count], inner, depth=1))
        at, account_at = at + 2 + size, account_at + count
    return out


# -- associated token accounts and memos ---------------------------------------------------


def _associated_token(keys: Sequence[Pubkey], indexes: bytes, data: bytes) -> JsonObj:
    """Empty data is the legacy Create; otherwise exactly one borsh tag byte."""
    if len(data) > 1 or (data and data[0] > 2):
        raise NotParsable
    tag = data[0] if data else 0
    if tag == 2:
        a = _Accounts(keys, indexes, 7)
        return _typed("recoverNested", {
            "nestedSource": a[0], "nestedMint": a[1], "destination": a[2], "nestedOwner": a[3],
            "ownerMint": a[4], "wallet": a[5], "tokenProgram": a[6]})
    a = _Accounts(keys, indexes, 6)
    return _typed("create" if tag == 0 else "createIdempotent", {
        "source": a[0], "account": a[1], "wallet": a[2], "mint": a[3], "systemProgram": a[4],
        "tokenProgram": a[5]})


def _memo(keys: Sequence[Pubkey], indexes: bytes, data: bytes) -> Any:
    try:
        return data.decode("utf-8")  # Agave: the memo text itself is `parsed`
    except UnicodeDecodeError:
        raise NotParsable from None


def _typed(kind: str, info: JsonObj) -> JsonObj:
    return {"type": kind, "info": info}


Parser = Callable[[Sequence[Pubkey], bytes, bytes], Any]
PARSERS: dict[Pubkey, tuple[str, Parser]] = {
    SYSTEM_PROGRAM_ID: ("system", _system),
    ATA_PROGRAM_ID: ("spl-associated-token-account", _associated_token),
    **{program: ("spl-token", _token) for program in TOKEN_PROGRAM_IDS},
    **{program: ("spl-memo", _memo) for program in MEMO_PROGRAM_IDS},
}


def parse_ui_instruction(keys: Sequence[Pubkey], program_id_index: int, indexes: bytes, data: bytes,
                         stack_height: int | None) -> JsonObj:
    """One compiled instruction in Agave's jsonParsed form. ``keys``: the transaction's
    account keys, static then loaded (the order its indexes refer to)."""
    program = keys[program_id_index]
    entry = PARSERS.get(program)
    if entry is not None:
        name, parser = entry
        try:
            parsed = parser(keys, indexes, data)
        except NotParsable:
            pass
        else:
            return {"program": name, "programId": str(program), "parsed": parsed, "stackHeight": stack_height}
    return {"programId": str(program), "accounts": [str(keys[i]) for i in indexes],
            "data": base58.b58encode(data).decode(), "stackHeight": stack_height}
