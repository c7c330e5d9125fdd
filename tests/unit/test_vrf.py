"""ECVRF-EDWARDS25519-SHA512-TAI: the RFC 9381 vectors, verification, and rejection of bad input.

The vectors are RFC 9381 Appendix B.3 ("ECVRF-EDWARDS25519-SHA512-TAI"), Examples 16, 17 and 18:
SK, PK, alpha, x, the try_and_increment counter, H, k, U, V, pi and beta.
"""

import pytest
from nacl.signing import SigningKey

from proofs import vrf
from proofs.errors import BadSignature, ProofsError
from proofs.vrf import InvalidProof, VrfError, proof_to_hash, prove, verify

L = 2**252 + 27742317777372353535851937790883648493

# RFC 9381 Appendix B.3, Examples 16-18 (ECVRF-EDWARDS25519-SHA512-TAI).
RFC9381_B3 = [
    dict(  # Example 16; try_and_increment succeeded on ctr = 0
        SK="9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        PK="d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        alpha="",
        x="307c83864f2833cb427a2ef1c00a013cfdff2768d980c0a3a520f006904de94f",
        H="91bbed02a99461df1ad4c6564a5f5d829d0b90cfc7903e7a5797bd658abf3318",
        k="7100f3d9eadb6dc4743b029736ff283f5be494128df128df2817106f345b8594"
          "b6d6da2d6fb0b4c0257eb337675d96eab49cf39e66cc2c9547c2bf8b2a6afae4",
        U="aef27c725be964c6a9bf4c45ca8e35df258c1878b838f37d9975523f09034071",
        V="5016572f71466c646c119443455d6cb9b952f07d060ec8286d678615d55f954f",
        pi="8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f"
           "26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab12"
           "68a1b0db10836d9826a528ca76567805",
        beta="90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff"
             "66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
    ),
    dict(  # Example 17; try_and_increment succeeded on ctr = 1
        SK="4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        PK="3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        alpha="72",
        x="68bd9ed75882d52815a97585caf4790a7f6c6b3b7f821c5e259a24b02e502e51",
        H="5b659fc3d4e9263fd9a4ed1d022d75eaacc20df5e09f9ea937502396598dc551",
        k="42589bbf0c485c3c91c1621bb4bfe04aed7be76ee48f9b00793b2342acb9c167"
          "cab856f9f9d4febc311330c20b0a8afd3743d05433e8be8d32522ecdc16cc5ce",
        U="1dcb0a4821a2c48bf53548228b7f170962988f6d12f5439f31987ef41f034ab3",
        V="fd03c0bf498c752161bae4719105a074630a2aa5f200ff7b3995f7bfb1513423",
        pi="f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed593"
           "3bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926d"
           "a3ef39226bbc355bdc9850112c8f4b02",
        beta="eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb"
             "5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
    ),
    dict(  # Example 18; try_and_increment succeeded on ctr = 0
        SK="c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        PK="fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        alpha="af82",
        x="909a8b755ed902849023a55b15c23d11ba4d7f4ec5c2f51b1325a181991ea95c",
        H="bf4339376f5542811de615e3313d2b36f6f53c0acfebb482159711201192576a",
        k="38b868c335ccda94a088428cbf3ec8bc7955bfaffe1f3bd2aa2c59fc31a0febc"
          "59d0e1af3715773ce11b3bbdd7aba8e3505d4b9de6f7e4a96e67e0d6bb6d6c3a",
        U="2bae73e15a64042fcebf062abe7e432b2eca6744f3e8265bc38e009cd577ecd5",
        V="88cba1cb0d4f9b649d9a86026b69de076724a93a65c349c988954f0961c5d506",
        pi="9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf80"
           "96bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a"
           "2d41b00b05081ed0f58ee5e31b3a970e",
        beta="645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c45"
             "2118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
    ),
]
VECTORS = [{k: bytes.fromhex(v) for k, v in vec.items()} for vec in RFC9381_B3]
IDS = ["example16", "example17", "example18"]

# The eight points of small order (8 * P = identity), as canonical encodings.
SMALL_ORDER = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
)]
ORDER8 = SMALL_ORDER[4]


def reason(pk: bytes, pi: bytes, alpha: bytes) -> str:
    with pytest.raises(InvalidProof) as info:
        verify(pk, pi, alpha)
    return info.value.reason


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_rfc9381_vector_pi_beta_and_intermediates(v: dict[str, bytes]) -> None:
    trace = vrf._prove_trace(v["SK"], v["alpha"])
    assert trace.x.to_bytes(32, "little") == v["x"]
    assert trace.y == v["PK"]
    assert trace.h == v["H"]
    assert trace.k == v["k"]
    assert trace.u == v["U"]
    assert trace.v == v["V"]
    assert prove(v["SK"], v["alpha"]) == v["pi"]
    assert proof_to_hash(v["pi"]) == v["beta"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_rfc9381_vector_verifies(v: dict[str, bytes]) -> None:
    assert verify(v["PK"], v["pi"], v["alpha"]) == v["beta"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_public_key_is_the_ed25519_public_key(v: dict[str, bytes]) -> None:
    nacl_pk = bytes(SigningKey(v["SK"]).verify_key)
    assert nacl_pk == v["PK"] == vrf._prove_trace(v["SK"], v["alpha"]).y


def test_public_key_matches_nacl_for_other_seeds() -> None:
    for i in range(20):
        seed = bytes([i]) * 32
        assert vrf._prove_trace(seed, b"").y == bytes(SigningKey(seed).verify_key)


def test_prove_is_deterministic_and_depends_on_alpha() -> None:
    seed = bytes(range(32))
    assert prove(seed, b"epoch-7") == prove(seed, b"epoch-7")
    assert prove(seed, b"epoch-7") != prove(seed, b"epoch-8")


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_tampered_pi_is_rejected(v: dict[str, bytes]) -> None:
    pi = v["pi"]
    for i in range(len(pi)):
        for bit in (0x01, 0x80):
            bad = pi[:i] + bytes([pi[i] ^ bit]) + pi[i + 1:]
            assert reason(v["PK"], bad, v["alpha"]) in {
                "gamma_invalid", "s_not_canonical", "challenge_mismatch"}


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_tampered_alpha_and_other_key_are_rejected(v: dict[str, bytes]) -> None:
    assert reason(v["PK"], v["pi"], v["alpha"] + b"\x00") == "challenge_mismatch"
    assert reason(v["PK"], v["pi"], b"something else") == "challenge_mismatch"
    for other in VECTORS:
        if other is not v:
            assert reason(other["PK"], v["pi"], v["alpha"]) == "challenge_mismatch"


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_non_canonical_s_is_rejected(v: dict[str, bytes]) -> None:
    """s + q would satisfy the verification equations; RFC 9381 §5.4.4 requires s < q."""
    s = int.from_bytes(v["pi"][48:], "little")
    assert s + L < 2**256
    bad = v["pi"][:48] + (s + L).to_bytes(32, "little")
    assert reason(v["PK"], bad, v["alpha"]) == "s_not_canonical"
    with pytest.raises(InvalidProof):
        proof_to_hash(bad)


def test_wrong_lengths_are_rejected() -> None:
    v = VECTORS[0]
    assert reason(v["PK"][:31], v["pi"], v["alpha"]) == "pk_length"
    assert reason(v["PK"] + b"\x00", v["pi"], v["alpha"]) == "pk_length"
    assert reason(v["PK"], v["pi"][:79], v["alpha"]) == "pi_length"
    assert reason(v["PK"], v["pi"] + b"\x00", v["alpha"]) == "pi_length"
    assert reason(v["PK"], b"", v["alpha"]) == "pi_length"
    for bad_pi in (b"", v["pi"][:79]):
        with pytest.raises(InvalidProof):
            proof_to_hash(bad_pi)


def test_small_order_public_keys_are_rejected() -> None:
    assert len(set(SMALL_ORDER)) == 8 and vrf._SMALL_ORDER == set(SMALL_ORDER)
    for point in SMALL_ORDER:
        assert vrf._is_point(point) and vrf._times8(point) == vrf._IDENTITY
        assert reason(point, VECTORS[0]["pi"], b"") == "pk_small_order"


def test_non_canonical_points_are_rejected() -> None:
    p = 2**255 - 19
    pi = VECTORS[0]["pi"]
    # y = p + 1 encodes y = 1 (the identity) non-canonically; y = p is y = 0.
    for y in (p, p + 1, 2**255 - 1):
        enc = y.to_bytes(32, "little")
        assert not vrf._is_point(enc)
        assert reason(enc, pi, b"") == "pk_invalid"
        assert reason(VECTORS[0]["PK"], enc + pi[32:], b"") == "gamma_invalid"
    # x = 0 with the sign bit set ("negative zero") for y = 1.
    assert reason(b"\x01" + bytes(30) + b"\x80", pi, b"") == "pk_invalid"


def test_gamma_of_small_order_is_rejected_without_crashing() -> None:
    v = VECTORS[0]
    for point in SMALL_ORDER:
        assert reason(v["PK"], point + v["pi"][32:], b"") == "challenge_mismatch"
        proof_to_hash(point + v["pi"][32:])  # decodes: beta of the identity, unverified


def _torsioned_proof(seed: bytes, alpha: bytes) -> tuple[bytes, bytes, bytes]:
    """A proof for key Y + T (T of order 8) with Gamma + T: valid per RFC 9381 iff 8 | c.

    Grinds the nonce until the challenge is a multiple of 8, as a malicious prover could.
    Returns (public key, pi, the pi of the same Gamma without torsion).
    """
    x, _ = vrf._expand_seed(seed)
    pk = vrf._add(vrf._mul_base(x), ORDER8)
    h = vrf._encode_to_curve(pk, alpha)
    assert h is not None
    gamma = vrf._add(vrf._mul_prime(x, h), ORDER8)
    for k in range(1, 200):
        c = vrf._challenge(pk, h, gamma, vrf._mul_base(k), vrf._mul_prime(k, h))
        if c % 8 == 0:
            tail = c.to_bytes(16, "little") + ((k + c * x) % L).to_bytes(32, "little")
            return pk, gamma + tail, vrf._mul_prime(x, h) + tail
    raise AssertionError("no challenge divisible by 8")


def test_torsion_in_key_and_gamma_is_handled_as_the_rfc_says() -> None:
    """RFC 9381 only rejects small-order keys; a key with a torsion component must not crash
    verification, and beta clears the cofactor (§5.2) so Gamma's torsion does not change it."""
    pk, pi, clean_pi = _torsioned_proof(b"\x42" * 32, b"alpha")
    assert verify(pk, pi, b"alpha") == proof_to_hash(clean_pi)
    assert reason(pk, pi, b"other") == "challenge_mismatch"
    honest = prove(b"\x42" * 32, b"alpha")
    assert reason(pk, honest, b"alpha") == "challenge_mismatch"


def test_errors_belong_to_the_proofs_hierarchy() -> None:
    assert issubclass(InvalidProof, BadSignature) and issubclass(VrfError, ProofsError)


def test_prove_misuse_raises_vrf_error() -> None:
    for seed in (b"", bytes(31), bytes(33), bytearray(32)):
        with pytest.raises(VrfError):
            prove(seed, b"")  # type: ignore[arg-type]
    with pytest.raises(VrfError):
        prove(bytes(32), "alpha")  # type: ignore[arg-type]
    v = VECTORS[0]
    for args in ((bytearray(v["PK"]), v["pi"], b""), (v["PK"], bytearray(v["pi"]), b""),
                 (v["PK"], v["pi"], "")):
        with pytest.raises(VrfError):
            verify(*args)  # type: ignore[arg-type]
    with pytest.raises(VrfError):
        proof_to_hash(bytearray(v["pi"]))  # type: ignore[arg-type]
