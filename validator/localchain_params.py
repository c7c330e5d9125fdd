"""Reading JSON-RPC params the way an Agave node does, for the local chain's methods.

Owns: the error object a method raises (``RpcError``), and every check a param goes through
before a method uses it (presence, JSON type, base58 lengths, commitment, minContextSlot),
each failing with Agave's code and, where Agave has one, its wording (serde's "invalid
type" phrasing, "Invalid param: WrongSize"). Pure: no I/O; ``context_slot`` only reads the
chain's slot clock.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import base58
from solders.pubkey import Pubkey
from solders.signature import Signature

if TYPE_CHECKING:
    from validator.localchain import LocalChain

JsonObj = dict[str, Any]
Params = list[Any]

# Longest base58 text of a value of this many bytes (Agave: MAX_BASE58_LEN 44 for a pubkey,
# 88 for a signature); anything longer is WrongSize before it is decoded (base58 decoding
# is quadratic in the text's length).
MAX_BASE58_TEXT = {32: 44, 64: 88}


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


def invalid_request(message: str) -> RpcError:
    """-32600: what Agave answers for a valid request it will not encode (base58 > 128 bytes)."""
    return RpcError(-32600, message)


def _describe(value: Any) -> str:
    """How serde names a JSON value in its "invalid type" messages."""
    if value is None or isinstance(value, (list, dict)):
        return "null" if value is None else "sequence" if isinstance(value, list) else "map"
    if isinstance(value, str):
        return f'string "{value[:64]}"'
    kind = "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "floating point"
    return f"{kind} `{json.dumps(value)}`"


def type_error(value: Any, expected: str) -> RpcError:
    return invalid_params(f"Invalid params: invalid type: {_describe(value)}, expected {expected}.")


def param(params: Params, index: int, expected: str) -> Any:
    """A required positional param; serde's "invalid length" when it is missing."""
    if index >= len(params):
        raise invalid_params(f"Invalid params: invalid length {len(params)}, expected {expected}.")
    return params[index]


def config_param(params: Params, index: int) -> JsonObj:
    """An optional config object; {} when absent or null."""
    value = params[index] if index < len(params) else None
    if value is not None and not isinstance(value, dict):
        raise type_error(value, "a map")
    return value or {}


def bounded_list(params: Params, index: int, expected: str, limit: int) -> list[Any]:
    """A required list param of at most ``limit`` items (Agave: "Too many inputs provided")."""
    raw = param(params, index, expected)
    if not isinstance(raw, list):
        raise type_error(raw, "a sequence")
    if len(raw) > limit:
        raise invalid_params(f"Too many inputs provided; max {limit}")
    return raw


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise type_error(value, "a string")
    return value


def as_u64(value: Any, *, optional: bool = False) -> int:
    """A u64; -1 for an absent optional one (no real value is negative)."""
    if value is None and optional:
        return -1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise type_error(value, "u64")
    return value


def as_bool(value: Any) -> bool:
    if value is not None and not isinstance(value, bool):
        raise type_error(value, "a boolean")
    return bool(value)


def b58_bytes(value: Any, size: int) -> bytes:
    """Agave's verify_pubkey/verify_signature wording: "Invalid param: WrongSize"."""
    text = as_str(value)
    if len(text) > MAX_BASE58_TEXT[size]:
        raise invalid_params("Invalid param: WrongSize")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None
    if len(raw) != size:
        raise invalid_params("Invalid param: WrongSize")
    return raw


def as_pubkey(value: Any) -> Pubkey:
    return Pubkey.from_bytes(b58_bytes(value, 32))


def as_signature(value: Any) -> Signature:
    return Signature.from_bytes(b58_bytes(value, 64))


_COMMITMENTS = {"processed": "processed", "confirmed": "confirmed", "finalized": "finalized",
                "recent": "processed", "single": "confirmed", "singleGossip": "confirmed",
                "root": "finalized", "max": "finalized"}  # the last five: deprecated spellings


def read_commitment(cfg: JsonObj, key: str = "commitment") -> str:
    value = cfg.get(key)
    if value is None:
        return "finalized"
    if not isinstance(value, str) or value not in _COMMITMENTS:
        raise invalid_params(
            f"Invalid params: unknown variant `{value}`, expected one of `processed`, `confirmed`, `finalized`."
        )
    return _COMMITMENTS[value]


def at_least_confirmed(cfg: JsonObj) -> str:
    commitment = read_commitment(cfg)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    return commitment


def context_slot(chain: "LocalChain", cfg: JsonObj, commitment: str | None = None) -> int:
    """The slot a read answers at; -32016 when ``minContextSlot`` is ahead of it."""
    slot = chain.slot_at(commitment or read_commitment(cfg))
    wanted = as_u64(cfg.get("minContextSlot"), optional=True)
    if wanted > slot:
        raise RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": slot})
    return slot


def with_context(slot: int, value: Any) -> JsonObj:
    return {"context": {"slot": slot}, "value": value}


def b58(data: bytes) -> str:
    return base58.b58encode(data).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
