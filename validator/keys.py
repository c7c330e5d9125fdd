"""Key files: a 32-byte ed25519 seed in hex, mode 0600, refused if others can read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class KeyFileError(Exception):
    """A key file is missing, malformed, or readable by others (message says how to fix)."""


def write_key(path: Path, seed: bytes) -> None:
    """Create ``path`` with mode 0600; never overwrites an existing key."""
    if len(seed) != 32:
        raise ValueError("a key seed is 32 bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(seed.hex() + "\n")


def read_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (create one with `validator init`)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by others (mode {oct(mode & 0o777)}); "
                           f"run `chmod 600 {path}`")
    text = path.read_text().strip()
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise KeyFileError(f"{path}: not a key file (expected 64 hex characters)")
    return seed


def load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        write_key(path, os.urandom(32))
    return read_key(path)
