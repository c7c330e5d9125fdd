"""Slashing-protection interchange: what a signing key signed, as a JSON file (after EIP-3076).

A validator's store holds one signed header hash per epoch (``signed_headers``). Moving a
validator to another machine or data directory without that history lets it sign a second
header for an epoch it already signed, which every other validator keeps as equivocation
evidence. The file carries the history across::

    {"metadata": {"interchange_format_version": "1",
                  "config_digest": "<64 hex: the network, as EIP-3076's genesis root>",
                  "network_id": "<informational>"},
     "data": [{"pubkey": "<signing key, base58>",
               "signed_headers": [{"epoch": "12", "header_hash": "<64 hex>"}, ...]}]}

Epochs are decimal strings as EIP-3076 writes integers (integers are accepted too). Import
refuses a file of another network or without this signing key (entries of other keys are
left out and counted), merges without ever replacing a stored row, and raises the store's
slashing floor to the highest imported epoch: from then on the store refuses any header for
an epoch at or below it unless it is the one it holds (``Store.record_signed_header``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58

from validator.store import Store

FORMAT_VERSION = "1"
_HEX32 = re.compile(r"[0-9a-f]{64}")
_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_EPOCH = re.compile(r"[0-9]{1,19}")
MAX_EPOCH = 2**63 - 1  # SQLite's INTEGER


class InterchangeError(Exception):
    """The file cannot be imported here (one line: which file, and why)."""


@dataclass(frozen=True)
class ImportResult:
    added: int
    already: int
    conflicting: int  # the file names another header for an epoch we hold: ours is kept
    other_keys: int  # entries for other signing keys, left out
    highest: int | None  # the highest epoch imported (the store's floor rises to it)


def export_document(store: Store, signing_key: bytes, config_digest: bytes,
                    network_id: str) -> dict[str, Any]:
    """The interchange document of everything ``store`` holds as signed by ``signing_key``."""
    rows = sorted(store.signed_headers().items())
    return {"metadata": {"interchange_format_version": FORMAT_VERSION,
                         "config_digest": config_digest.hex(), "network_id": network_id},
            "data": [{"pubkey": base58.b58encode(signing_key).decode(),
                      "signed_headers": [{"epoch": str(epoch), "header_hash": digest.hex()}
                                         for epoch, digest in rows]}]}


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Write the file (mode 0644: public keys and hashes only); never overwrites."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise InterchangeError(f"{path}: already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as fh:
        json.dump(document, fh, indent=1)
        fh.write("\n")


def read_history(path: Path, *, signing_key: bytes,
                 config_digest: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """(epoch, header hash) rows the file holds for ``signing_key``, and the number of
    entries for other keys. Raises InterchangeError for a malformed file, another network's,
    or one without this key."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InterchangeError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InterchangeError(f"{path}: not a JSON file ({exc})") from None
    where = str(path)
    metadata = _field(document, "metadata", dict, where)
    version = _field(metadata, "interchange_format_version", str, where)
    if version != FORMAT_VERSION:
        raise InterchangeError(f"{where}: interchange_format_version {version!r}; this "
                               f"version reads {FORMAT_VERSION!r}")
    digest = _field(metadata, "config_digest", str, where)
    if digest != config_digest.hex():
        raise InterchangeError(f"{where}: a slashing history of config_digest {digest}, not "
                               f"this network's {config_digest.hex()}")
    rows: list[tuple[int, bytes]] = []
    others, found = 0, False
    for i, entry in enumerate(_field(document, "data", list, where)):
        at = f"{where}: data[{i}]"
        pubkey = _field(entry, "pubkey", str, at)
        key = base58.b58decode(pubkey) if _BASE58.fullmatch(pubkey) else b""
        if len(key) != 32:
            raise InterchangeError(f"{at}.pubkey {pubkey!r}: not a base58 ed25519 key")
        if key != signing_key:
            others += 1
            continue
        found = True
        for j, item in enumerate(_field(entry, "signed_headers", list, at)):
            rows.append(_signed_header(item, f"{at}.signed_headers[{j}]"))
    if not found:
        raise InterchangeError(f"{where}: no history for this validator's signing key "
                               f"{base58.b58encode(signing_key).decode()} ({others} other "
                               f"key(s) in it)")
    return rows, others


def import_file(store: Store, path: Path, *, signing_key: bytes,
                config_digest: bytes) -> ImportResult:
    rows, others = read_history(path, signing_key=signing_key, config_digest=config_digest)
    added, already, conflicting = store.import_signed_headers(rows)
    return ImportResult(added, already, conflicting, others,
                        max((epoch for epoch, _ in rows), default=None))


def _field(container: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(container, dict):
        raise InterchangeError(f"{where}: expected a JSON object")
    value = container.get(name)
    if not isinstance(value, kind):
        raise InterchangeError(f"{where}: {name} must be a JSON {kind.__name__}")
    return value


def _signed_header(item: Any, where: str) -> tuple[int, bytes]:
    if not isinstance(item, dict):
        raise InterchangeError(f"{where}: expected a JSON object")
    epoch = item.get("epoch")
    if not (isinstance(epoch, str) and _EPOCH.fullmatch(epoch)
            or isinstance(epoch, int) and not isinstance(epoch, bool)):
        raise InterchangeError(f"{where}.epoch {epoch!r}: not a decimal epoch")
    if not 0 <= int(epoch) <= MAX_EPOCH:
        raise InterchangeError(f"{where}.epoch {epoch}: out of range")
    digest = _field(item, "header_hash", str, where)
    if not _HEX32.fullmatch(digest):
        raise InterchangeError(f"{where}.header_hash: expected 64 lowercase hex characters")
    return int(epoch), bytes.fromhex(digest)
