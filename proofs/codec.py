"""Strict msgpack decoding with size limits.

Decoding arbitrary bytes can only raise ``DecodeError``: msgpack's own exceptions, recursion,
wrong types and out-of-range numbers are all mapped to it. Every field is checked by a typed
reader, so a decoded message never carries a value of the wrong type or size.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import msgpack

from proofs.errors import DecodeError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

T = TypeVar("T")


def pack(value: Any) -> bytes:
    """Canonical packing: bin type for bytes, no floats, no maps (fields are positional)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack_list(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> list[Any]:
    """Decode ``data`` into a top-level list. ``b""`` is a DecodeError (``empty``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("not_bytes")
    if len(data) == 0:
        raise DecodeError("empty")
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes}")
    try:
        value = msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many exception types on hostile input
        raise DecodeError("malformed", type(exc).__name__) from None
    if not isinstance(value, list):
        raise DecodeError("malformed", "top level is not a list")
    return value


class Reader:
    """Positional field reader over a decoded list; every accessor checks type and range."""

    def __init__(self, items: list[Any], name: str) -> None:
        self._items = items
        self._pos = 0
        self._name = name

    def _next(self) -> Any:
        if self._pos >= len(self._items):
            raise DecodeError("malformed", f"{self._name}: missing field {self._pos}")
        value = self._items[self._pos]
        self._pos += 1
        return value

    def uint(self, max_value: int = U64_MAX) -> int:
        value = self._next()
        if type(value) is not int or value < 0 or value > max_value:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} not uint")
        return value

    def sint(self, min_value: int, max_value: int) -> int:
        value = self._next()
        if type(value) is not int or not min_value <= value <= max_value:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} out of range")
        return value

    def fixed_bytes(self, size: int) -> bytes:
        value = self._next()
        if type(value) is not bytes or len(value) != size:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} not {size} bytes")
        return value

    def var_bytes(self, max_size: int) -> bytes:
        value = self._next()
        if type(value) is not bytes or len(value) > max_size:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} bad bytes")
        return value

    def text(self, max_len: int) -> str:
        value = self._next()
        if type(value) is not str or len(value) > max_len:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} bad text")
        return value

    def list_of(self, max_len: int, item: Callable[[Any], T]) -> tuple[T, ...]:
        value = self._next()
        if type(value) is not list or len(value) > max_len:
            raise DecodeError("malformed", f"{self._name}: field {self._pos - 1} bad list")
        return tuple(item(v) for v in value)

    def sub(self, name: str) -> "Reader":
        value = self._next()
        if type(value) is not list:
            raise DecodeError("malformed", f"{self._name}: {name} is not a list")
        return Reader(value, name)

    def end(self) -> None:
        if self._pos != len(self._items):
            raise DecodeError("malformed", f"{self._name}: trailing fields")


def item_fixed_bytes(size: int) -> Callable[[Any], bytes]:
    def read(value: Any) -> bytes:
        if type(value) is not bytes or len(value) != size:
            raise DecodeError("malformed", f"list item not {size} bytes")
        return value

    return read
