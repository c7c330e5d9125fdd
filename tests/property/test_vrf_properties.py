"""VRF: arbitrary bytes only ever raise InvalidProof; honest proofs always verify."""

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from proofs import vrf
from proofs.vrf import InvalidProof, proof_to_hash, prove, verify

L = 2**252 + 27742317777372353535851937790883648493
seeds = st.binary(min_size=32, max_size=32)
points = st.binary(min_size=32, max_size=32)        # about half decode to curve points
alphas = st.binary(max_size=64)
# 80-byte proofs that get past decoding more often than raw bytes: s reduced below q.
reduced_pis = st.builds(lambda g, c, s: g + c + s.to_bytes(32, "little"),
                        points, st.binary(min_size=16, max_size=16), st.integers(0, L - 1))
pis = st.binary(max_size=100) | st.binary(min_size=80, max_size=80) | reduced_pis


P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P


def rfc8032_decodes(data: bytes) -> bool:
    """RFC 8032 §5.1.3 point decoding, step by step in Python: the reference for _is_point."""
    y = int.from_bytes(data, "little") & ((1 << 255) - 1)
    sign = data[31] >> 7
    if y >= P:
        return False
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P != u:
        if v * x * x % P != -u % P:
            return False
        x = x * pow(2, (P - 1) // 4, P) % P
    return not (x == 0 and sign == 1)


edge_ys = st.sampled_from([0, 1, 2, P - 2, P - 1, P, P + 1, P + 18, 2**255 - 1])
encodings = points | st.builds(lambda y, sign: (y | sign << 255).to_bytes(32, "little"),
                               edge_ys, st.integers(0, 1))


@given(encodings)
@settings(max_examples=500)
def test_point_check_is_rfc8032_decoding(data: bytes) -> None:
    assert vrf._is_point(data) == rfc8032_decodes(data)


@given(st.binary(max_size=40) | points, pis, alphas)
@settings(max_examples=400)
def test_random_key_and_proof_only_raise_invalid_proof(pk: bytes, pi: bytes,
                                                       alpha: bytes) -> None:
    try:
        verify(pk, pi, alpha)
    except InvalidProof:
        pass


@given(seeds, pis, alphas)
@settings(max_examples=300)
def test_random_proof_under_a_real_key_only_raises_invalid_proof(seed: bytes, pi: bytes,
                                                                 alpha: bytes) -> None:
    try:
        verify(bytes(SigningKey(seed).verify_key), pi, alpha)
    except InvalidProof:
        pass


@given(pis)
@settings(max_examples=300)
def test_proof_to_hash_of_random_bytes_only_raises_invalid_proof(pi: bytes) -> None:
    try:
        assert len(proof_to_hash(pi)) == 64
    except InvalidProof:
        pass


@given(seeds, alphas, alphas)
@settings(max_examples=100)
def test_honest_proof_verifies_under_the_ed25519_key(seed: bytes, alpha: bytes,
                                                     other: bytes) -> None:
    pi = prove(seed, alpha)
    pk = bytes(SigningKey(seed).verify_key)
    assert len(pi) == 80
    assert verify(pk, pi, alpha) == proof_to_hash(pi)
    if other != alpha:
        try:
            verify(pk, pi, other)
        except InvalidProof as exc:
            assert exc.reason == "challenge_mismatch"
        else:
            raise AssertionError("proof verified for another alpha")
