"""Probe challenges (DESIGN §6): what a provider signs and what its data bytes must be.

Pure functions: the prober and the provider agent do the I/O.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

from proofs import signing

NONCE_SIZE = 32
SEED_SIZE = 32
_BLOCK = 64  # ChaCha20 block size: the counter advances once per 64 bytes
_CHACHA_NONCE = b"bwpool/ks/1\x00"  # 12 bytes; fixed, because every seed is fresh


def heartbeat_payload(network_id: str, epoch: int, nonce: bytes, validator_key: bytes) -> bytes:
    """What a provider signs (after the heartbeat domain) to answer a heartbeat."""
    if len(nonce) != NONCE_SIZE or len(validator_key) != 32:
        raise ValueError("nonce and validator key are 32 bytes")
    net = network_id.encode()
    return struct.pack("<H", len(net)) + net + struct.pack("<Q", epoch) + nonce + validator_key


def sign_heartbeat(provider_seed: bytes, network_id: str, epoch: int, nonce: bytes,
                   validator_key: bytes) -> bytes:
    return signing.sign(provider_seed, signing.DOMAIN_HEARTBEAT,
                        heartbeat_payload(network_id, epoch, nonce, validator_key))


def verify_heartbeat(provider_key: bytes, network_id: str, epoch: int, nonce: bytes,
                     validator_key: bytes, signature: bytes) -> None:
    """Raise BadSignature unless the provider answered this exact challenge."""
    signing.verify(provider_key, signing.DOMAIN_HEARTBEAT,
                   heartbeat_payload(network_id, epoch, nonce, validator_key), signature)


class Keystream:
    """The ChaCha20 keystream of ``seed``, read sequentially or at any offset."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError("keystream seed is 32 bytes")
        self._seed = seed
        self._encryptor = self._at_block(0)

    def _at_block(self, block: int):  # type: ignore[no-untyped-def]
        nonce = struct.pack("<I", block) + _CHACHA_NONCE
        return Cipher(ChaCha20(self._seed, nonce), mode=None).encryptor()

    def next(self, length: int) -> bytes:
        """The next ``length`` bytes of the stream (sequential reads)."""
        return self._encryptor.update(bytes(length))

    def at(self, offset: int, length: int) -> bytes:
        """``length`` bytes starting at ``offset``, without touching the sequential position."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        block, skip = divmod(offset, _BLOCK)
        if block > 0xFFFF_FFFF:
            raise ValueError("offset beyond the 256 GiB keystream")
        return self._at_block(block).update(bytes(skip + length))[skip:]

    def next_into(self, out: bytearray | memoryview) -> None:
        """Fill ``out`` with the next ``len(out)`` bytes of the stream (same stream as ``next``).

        The data plane streams gigabits per second: ``next`` allocates its input and output on
        every call, this reuses ``out`` and a cached zero block (about 5x faster here).
        """
        zeros: bytes = getattr(self, "_zeros", b"")
        if len(zeros) != len(out):
            zeros = bytes(len(out))
            self._zeros = zeros
        self._encryptor.update_into(zeros, out)
