"""Key files: a 32-byte ed25519 seed, mode 0600, refused if others can read it.

Two formats are read: ours (the seed in hex, what `validator init` writes) and solana-keygen's
(a JSON array of the 64 bytes seed || public key, what `solana-keygen new -o F` writes and
`validator keys export-payer` writes), so a Solana wallet's key can be a payer or payout key
and ours can go into a Solana wallet. A solana-keygen file whose public half is not its
seed's public key is refused as damaged.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from proofs.signing import public_key


class KeyFileError(Exception):
    """A key file is missing, malformed, or readable by others (message says how to fix)."""


def write_key(path: Path, seed: bytes) -> None:
    """Create ``path`` with mode 0600; never overwrites an existing key."""
    if len(seed) != 32:
        raise ValueError("a key seed is 32 bytes")
    _write_new(path, seed.hex() + "\n")


def write_solana_keypair(path: Path, seed: bytes) -> None:
    """Write ``seed`` as a solana-keygen JSON keypair file (mode 0600); never overwrites."""
    if len(seed) != 32:
        raise ValueError("a key seed is 32 bytes")
    _write_new(path, json.dumps(list(seed + public_key(seed)), separators=(",", ":")))


def _write_new(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def read_key(path: Path) -> bytes:
    """The seed in ``path``, in either format (module docstring)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (create one with `validator init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by others (mode {oct(mode & 0o777)}); "
                           f"run `chmod 600 {path}`")
    if text.startswith("["):
        return _solana_seed(path, text)
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise KeyFileError(f"{path}: not a key file (expected 64 hex characters, or "
                           f"solana-keygen's JSON array of 64 bytes)")
    return seed


def _solana_seed(path: Path, text: str) -> bytes:
    try:
        raw = json.loads(text)
    except ValueError:
        raw = None
    if (not isinstance(raw, list) or len(raw) != 64
            or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                       for b in raw)):
        raise KeyFileError(f"{path}: not a solana-keygen key file (a JSON array of 64 bytes)")
    secret = bytes(raw)
    if public_key(secret[:32]) != secret[32:]:
        raise KeyFileError(f"{path}: its public key does not match its seed (a damaged key file)")
    return secret[:32]


def load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        write_key(path, os.urandom(32))
    return read_key(path)
