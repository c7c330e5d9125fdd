"""ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381 §5, suite §5.5) on libsodium's ed25519 primitives.

This file owns the VRF behind each validator's per-epoch ``Beacon`` (DESIGN §5). Three calls:

- ``prove(secret_seed, alpha) -> pi`` (80 bytes): our own key, so misuse raises ``VrfError``.
- ``verify(public_key, pi, alpha) -> beta`` (64 bytes): a peer's bytes, so every failure is
  ``InvalidProof`` with a stable ``reason`` (a drop-counter key); no other exception escapes
  for any ``bytes`` arguments.
- ``proof_to_hash(pi) -> beta``: no verification; only trust beta from a pi that ``verify``
  accepted (``verify`` returns the same beta).

Encodings are RFC 8032's (little-endian scalars, compressed points); ``_is_point`` is the
strict RFC 8032 §5.1.3 decoding (it also rejects y >= p and x = 0 with the sign bit set,
which libsodium's own decoder accepts). Public keys and Gamma need not lie in the
prime-order subgroup (RFC 9381 only rejects small-order keys, §5.4.5), but libsodium's
scalar multiplication refuses such points, so ``_mul_any`` falls back to clearing the
cofactor and adding the remaining small multiple by hand.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from nacl.bindings import (crypto_core_ed25519_add, crypto_core_ed25519_sub,
                           crypto_scalarmult_ed25519_base_noclamp,
                           crypto_scalarmult_ed25519_noclamp)
from nacl.exceptions import CryptoError

from proofs.errors import BadSignature, ProofsError

SEED_LEN = 32
PUBLIC_KEY_LEN = 32
PROOF_LEN = 80          # ptLen 32 + cLen 16 + qLen 32
OUTPUT_LEN = 64         # beta: SHA-512 output

_SUITE = b"\x03"        # suite_string for ECVRF-EDWARDS25519-SHA512-TAI (§5.5)
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493   # q in RFC 9381: the group order
_IDENTITY = b"\x01" + bytes(31)
# The canonical encodings of the eight points of small order (8 * P = identity).
_SMALL_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
))


class VrfError(ProofsError):
    """Our own misuse of the VRF: a seed that is not 32 bytes, an argument that is not bytes."""


class InvalidProof(BadSignature):
    """A VRF proof, public key or pair of them from outside does not verify. The peer's fault.

    ``reason`` is a short stable name for drop counters: ``pk_length``, ``pk_invalid``,
    ``pk_small_order``, ``pi_length``, ``gamma_invalid``, ``s_not_canonical``,
    ``challenge_mismatch``; and, with negligible probability, ``no_point``, ``arithmetic``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid VRF proof: {reason}")
        self.reason = reason


def _sha512(*parts: bytes) -> bytes:
    return hashlib.sha512(b"".join(parts)).digest()


def _int(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _scalar(n: int) -> bytes:
    return (n % _L).to_bytes(32, "little")


def _is_canonical(data: bytes) -> bool:
    """The RFC 8032 §5.1.3 checks libsodium's decoder skips: y < p, and no x = 0 with sign 1.

    x = 0 exactly when y = 1 or y = p - 1. Whether y has a matching x at all is left to
    libsodium (``crypto_core_ed25519_add`` raises ``CryptoError`` if it has none).
    """
    y = _int(data) & ((1 << 255) - 1)
    return y < _P and not (data[31] >> 7 and y in (1, _P - 1))


def _is_point(data: bytes) -> bool:
    """True iff ``data`` (32 bytes) is a canonical RFC 8032 encoding of a curve point."""
    if not _is_canonical(data):
        return False
    try:
        crypto_core_ed25519_add(data, _IDENTITY)
    except CryptoError:
        return False
    return True


def _add(a: bytes, b: bytes) -> bytes:
    return crypto_core_ed25519_add(a, b)


def _times8(point: bytes) -> bytes:
    """cofactor * point, for any valid point (torsion and identity included).

    Raises ``CryptoError`` if ``point`` is not on the curve.
    """
    for _ in range(3):
        point = _add(point, point)
    return point


def _mul_base(n: int) -> bytes:
    """n * B; the identity when n = 0 mod L (libsodium refuses that case)."""
    k = _scalar(n)
    return _IDENTITY if k == bytes(32) else crypto_scalarmult_ed25519_base_noclamp(k)


def _mul_prime(n: int, point: bytes) -> bytes:
    """n * point for a point in the prime-order subgroup (or the identity)."""
    k = _scalar(n)
    if k == bytes(32) or point == _IDENTITY:
        return _IDENTITY
    return crypto_scalarmult_ed25519_noclamp(k, point)


def _mul_any(n: int, point: bytes) -> bytes:
    """n * point for any valid point, torsion components and small order included.

    libsodium only multiplies points of the prime-order subgroup (it raises otherwise), which
    every honest key and Gamma is. For the rest: (n // 8) * (8 * point) + (n % 8) * point,
    as 8 * point lies in that subgroup and the multiple below 8 is done with additions.
    """
    try:
        return _mul_prime(n, point)
    except CryptoError:
        pass
    head = _mul_prime(n >> 3, _times8(point))
    tail, power, r = _IDENTITY, point, n & 7
    while r:
        if r & 1:
            tail = _add(tail, power)
        power, r = _add(power, power), r >> 1
    return _add(head, tail)


def _encode_to_curve(salt: bytes, alpha: bytes) -> bytes | None:
    """ECVRF_encode_to_curve_try_and_increment (§5.4.1.1), cofactor cleared.

    None after 256 failed counters (probability about 2**-256), or in the equally negligible
    case that the candidate has small order and clears to the identity.
    """
    for ctr in range(256):
        candidate = _sha512(_SUITE, b"\x01", salt, alpha, bytes([ctr]), b"\x00")[:32]
        if not _is_canonical(candidate):
            continue
        try:
            h = _times8(candidate)      # raises CryptoError if candidate is not a point
        except CryptoError:
            continue
        return None if h == _IDENTITY else h
    return None


def _challenge(*points: bytes) -> int:
    """ECVRF_challenge_generation (§5.4.3): c from the first cLen = 16 bytes of the hash."""
    return _int(_sha512(_SUITE, b"\x02", *points, b"\x00")[:16])


def _expand_seed(secret_seed: bytes) -> tuple[int, bytes]:
    """RFC 8032 §5.1.5: the clamped secret scalar x and the nonce prefix of ``secret_seed``."""
    if not isinstance(secret_seed, bytes) or len(secret_seed) != SEED_LEN:
        raise VrfError(f"secret_seed must be {SEED_LEN} bytes")
    digest = _sha512(secret_seed)
    head = bytearray(digest[:32])
    head[0] &= 248
    head[31] &= 127
    head[31] |= 64
    return _int(bytes(head)), digest[32:]


class _Trace(NamedTuple):
    """Intermediate values of one proof, named as in RFC 9381 Appendix B."""
    x: int
    y: bytes
    h: bytes
    k: bytes        # the 64-byte k_string before reduction mod q
    u: bytes
    v: bytes
    pi: bytes


def _prove_trace(secret_seed: bytes, alpha: bytes) -> _Trace:
    """ECVRF_prove (§5.1), keeping the intermediate values for the RFC's test vectors."""
    x, prefix = _expand_seed(secret_seed)
    return _prove_scalar(x, prefix, alpha)


def _prove_scalar(x: int, prefix: bytes, alpha: bytes) -> _Trace:
    """ECVRF_prove with the secret scalar ``x`` and the 32-byte nonce key ``prefix``."""
    if not isinstance(alpha, bytes):
        raise VrfError("alpha must be bytes")
    y = _mul_base(x)
    h = _encode_to_curve(y, alpha)
    if h is None:       # pragma: no cover - probability about 2**-250
        raise VrfError("encode_to_curve found no point")
    gamma = _mul_prime(x, h)
    k_string = _sha512(prefix, h)                       # §5.4.2.2 nonce generation
    k = _int(k_string) % _L
    u, v = _mul_base(k), _mul_prime(k, h)
    c = _challenge(y, h, gamma, u, v)
    s = (k + c * x) % _L
    pi = gamma + c.to_bytes(16, "little") + s.to_bytes(32, "little")
    return _Trace(x, y, h, k_string, u, v, pi)


def prove(secret_seed: bytes, alpha: bytes) -> bytes:
    """The 80-byte proof pi = Gamma || c || s of ``alpha`` under the 32-byte ed25519 seed.

    ``secret_seed`` is RFC 8032's private key (the RFC 9381 SK); its public key is the usual
    ed25519 one (``nacl.signing.SigningKey(seed).verify_key``). Deterministic: the same seed
    and alpha always give the same pi. ``alpha`` may be empty. Raises ``VrfError`` if the seed
    is not 32 bytes or an argument is not ``bytes``.
    """
    return _prove_trace(secret_seed, alpha).pi


def _decode_proof(pi: bytes) -> tuple[bytes, int, int]:
    """ECVRF_decode_proof (§5.4.4): (Gamma, c, s), or InvalidProof."""
    if not isinstance(pi, bytes):
        raise VrfError("pi must be bytes")
    if len(pi) != PROOF_LEN:
        raise InvalidProof("pi_length")
    gamma, c, s = pi[:32], _int(pi[32:48]), _int(pi[48:])
    if not _is_point(gamma):
        raise InvalidProof("gamma_invalid")
    if s >= _L:
        raise InvalidProof("s_not_canonical")
    return gamma, c, s


def proof_to_hash(pi: bytes) -> bytes:
    """ECVRF_proof_to_hash (§5.2): the 64-byte output beta = H(0x03 || 0x03 || 8*Gamma || 0x00).

    Does NOT verify pi: only use beta from a proof that ``verify`` accepted. Raises
    ``InvalidProof`` if pi does not decode (wrong length, Gamma not a point, s >= q), and
    ``VrfError`` if pi is not ``bytes``.
    """
    gamma, _, _ = _decode_proof(pi)
    try:
        gamma8 = _times8(gamma)
    except CryptoError:     # pragma: no cover - Gamma was checked to be a curve point
        raise InvalidProof("gamma_invalid") from None
    return _sha512(_SUITE, b"\x03", gamma8, b"\x00")


def verify(public_key: bytes, pi: bytes, alpha: bytes) -> bytes:
    """ECVRF_verify (§5.3) with validate_key (§5.4.5): beta if pi proves alpha under the key.

    ``public_key`` is the 32-byte ed25519 public key. Raises ``InvalidProof`` (a
    ``BadSignature``) with a ``reason`` for: wrong lengths, a key or Gamma that is not a
    canonical curve point, a small-order key, s >= q, or a challenge mismatch. For any
    ``bytes`` arguments nothing else is raised; a non-``bytes`` argument is our own misuse
    and raises ``VrfError``. Keys and Gamma with a torsion component are handled as RFC 9381
    specifies (accepted if the equations hold; beta clears the cofactor).
    """
    if not all(isinstance(arg, bytes) for arg in (public_key, pi, alpha)):
        raise VrfError("public_key, pi and alpha must be bytes")
    if len(public_key) != PUBLIC_KEY_LEN:
        raise InvalidProof("pk_length")
    if not _is_point(public_key):
        raise InvalidProof("pk_invalid")
    if public_key in _SMALL_ORDER:      # §5.4.5; exact, as encodings were checked canonical
        raise InvalidProof("pk_small_order")
    gamma, c, s = _decode_proof(pi)
    h = _encode_to_curve(public_key, alpha)
    if h is None:           # pragma: no cover - probability about 2**-250
        raise InvalidProof("no_point")
    try:
        u = crypto_core_ed25519_sub(_mul_base(s), _mul_any(c, public_key))
        v = crypto_core_ed25519_sub(_mul_prime(s, h), _mul_any(c, gamma))
    except CryptoError:     # pragma: no cover - inputs were validated above
        raise InvalidProof("arithmetic") from None
    if _challenge(public_key, h, gamma, u, v) != c:
        raise InvalidProof("challenge_mismatch")
    return proof_to_hash(pi)


# -- the beacon key: a VRF key derived from the report signing key ----------------------------
# The report signing key raw-signs sha256(header) (the pool program checks exactly that), and
# an RFC 9381 proof under the same seed would reuse its secret scalar and its nonce key: the
# proof's nonce is SHA-512(prefix || H), the nonce of an ed25519 signature over the 32-byte
# message H. Beacons are therefore proved with a key of their own, derived from the signing
# key so that the spec's signing keys stay the only keys anyone must know:
#
#   t  = SHA-512("bwpool/vrf-key/1" || signing public key) mod q     (public)
#   x' = x + t mod q,  Y' = Y + t*B                                  (Y' from the spec's key)
#   nonce key = SHA-512("bwpool/vrf-nonce/1" || signing seed)[:32]   (secret, not ed25519's)
#
# Y' is a fixed function of the signing key, so a validator has exactly one beacon key and
# cannot grind its beacon by choosing keys. The nonce key never feeds an ed25519 signature,
# and x' never signs anything: no message a peer can influence ever reaches the report key
# through the VRF. (t is public, so x' and x are not independent secrets; both live in the
# same seed file anyway. What the derivation removes is every shared nonce and every use of
# one scalar by two algorithms.)
BEACON_KEY_DOMAIN = b"bwpool/vrf-key/1"
BEACON_NONCE_DOMAIN = b"bwpool/vrf-nonce/1"
_BEACON_KEYS: dict[bytes, bytes] = {}  # signing public key -> beacon public key (memo)


def _beacon_tweak(signing_public_key: bytes) -> int:
    return _int(_sha512(BEACON_KEY_DOMAIN, signing_public_key)) % _L


def beacon_public_key(signing_public_key: bytes) -> bytes:
    """The beacon (VRF) public key Y' = Y + t*B of a report signing key Y.

    Raises ``InvalidProof`` (``pk_length``, ``pk_invalid``) if Y is not a canonical point.
    """
    if not isinstance(signing_public_key, bytes):
        raise VrfError("public key must be bytes")
    known = _BEACON_KEYS.get(signing_public_key)
    if known is not None:
        return known
    if len(signing_public_key) != PUBLIC_KEY_LEN:
        raise InvalidProof("pk_length")
    if not _is_point(signing_public_key):
        raise InvalidProof("pk_invalid")
    derived = _add(signing_public_key, _mul_base(_beacon_tweak(signing_public_key)))
    if len(_BEACON_KEYS) < 65_536:
        _BEACON_KEYS[signing_public_key] = derived
    return derived


def prove_beacon(signing_seed: bytes, alpha: bytes) -> bytes:
    """An RFC 9381 proof of ``alpha`` under the beacon key derived from ``signing_seed``
    (see above); ``verify_beacon`` with the signing public key checks it."""
    x, _ = _expand_seed(signing_seed)
    y = _mul_base(x)
    nonce_key = _sha512(BEACON_NONCE_DOMAIN, signing_seed)[:32]
    return _prove_scalar((x + _beacon_tweak(y)) % _L, nonce_key, alpha).pi


def verify_beacon(signing_public_key: bytes, pi: bytes, alpha: bytes) -> bytes:
    """``verify`` under ``beacon_public_key(signing_public_key)``: beta, or InvalidProof."""
    if not all(isinstance(arg, bytes) for arg in (signing_public_key, pi, alpha)):
        raise VrfError("public_key, pi and alpha must be bytes")
    return verify(beacon_public_key(signing_public_key), pi, alpha)
