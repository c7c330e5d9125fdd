"""ed25519 signing with domain separation.

Every signed message except the report header is ``domain || payload`` with a distinct ASCII
domain per message kind, so a signature can never be replayed as another kind. The report
header hash is signed raw (32 bytes), because the Solana Ed25519 program checks exactly that
message; no domain-prefixed message is 32 bytes long, so the two spaces cannot collide.
"""

from __future__ import annotations

import hashlib

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from proofs.errors import BadSignature

DOMAIN_REGISTRATION = b"bwpool/registration/1"
DOMAIN_BUNDLE = b"bwpool/bundle/1"
DOMAIN_BUNDLE_NOTICE = b"bwpool/bundle-notice/1"
DOMAIN_PROPOSAL = b"bwpool/proposal/2"
DOMAIN_VOTE = b"bwpool/vote/1"
DOMAIN_HEARTBEAT = b"bwpool/hb/1"
DOMAIN_UPLOAD = b"bwpool/upload/1"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def public_key(seed: bytes) -> bytes:
    return bytes(SigningKey(seed).verify_key)


def sign(seed: bytes, domain: bytes, payload: bytes) -> bytes:
    """Sign ``domain || payload`` with the ed25519 key of 32-byte ``seed``."""
    return SigningKey(seed).sign(domain + payload).signature


def verify(key: bytes, domain: bytes, payload: bytes, signature: bytes) -> None:
    """Raise BadSignature unless ``signature`` is ``key``'s over ``domain || payload``."""
    verify_raw(key, domain + payload, signature)


def sign_raw(seed: bytes, message: bytes) -> bytes:
    return SigningKey(seed).sign(message).signature


def verify_raw(key: bytes, message: bytes, signature: bytes) -> None:
    if len(key) != 32 or len(signature) != 64:
        raise BadSignature("wrong key or signature length")
    try:
        VerifyKey(key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError) as exc:
        raise BadSignature(str(exc) or "bad signature") from None
