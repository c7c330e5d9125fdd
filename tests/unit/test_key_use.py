"""What the report signing key signs (issue 11, item 8): sha256 of headers we computed, raw,
in one place; domain-separated messages of ours; and beacons under a key derived for them."""

import ast
import hashlib
from pathlib import Path

import pytest

from proofs import vrf
from proofs.errors import BadSignature
from proofs.messages import MeasurementBundle, beacon_alpha
from proofs.signing import public_key, sign_raw, verify_raw
from tests.factories import seed_for

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("validator", "proofs", "p2p", "programs")


def calls_to(name: str) -> list[tuple[str, str]]:
    """(file, enclosing function) of every call to ``name`` in product code."""
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for func in ast.walk(tree):
                if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.Call):
                        callee = node.func
                        called = callee.attr if isinstance(callee, ast.Attribute) else getattr(
                            callee, "id", "")
                        if called == name:
                            found.append((str(path.relative_to(ROOT)), func.name))
    return found


def test_the_report_key_signs_raw_bytes_in_one_place() -> None:
    """``sign_raw`` (no domain) is called once: ``ValidatorCore._sign_header``, on the
    sha256 of a ``ReportHeader`` the core computed. Everything else a validator signs goes
    through ``signing.sign`` with its own domain."""
    assert sorted(set(calls_to("sign_raw"))) == [("validator/core.py", "_sign_header")]
    source = (ROOT / "validator/core.py").read_text()
    body = source[source.index("    def _sign_header"):source.index("    def on_signed_stored")]
    assert "header: ReportHeader" in body and "sha256(data)" in body
    # the callers pass the header the core recomputed itself, never a peer's bytes
    assert "self._sign_header(header)" in source
    assert "header.to_bytes() != proposal.header" in source


def test_beacons_are_proved_under_a_key_derived_for_them() -> None:
    seed = seed_for("v0")
    signing_key = public_key(seed)
    beacon_key = vrf.beacon_public_key(signing_key)
    assert beacon_key != signing_key
    alpha = beacon_alpha(b"\x01" * 32, 7)
    pi = vrf.prove_beacon(seed, alpha)
    beta = vrf.verify_beacon(signing_key, pi, alpha)
    assert beta == vrf.verify(beacon_key, pi, alpha) == vrf.proof_to_hash(pi)
    assert vrf.prove_beacon(seed, alpha) == pi  # deterministic: one beacon per epoch
    with pytest.raises(vrf.InvalidProof):
        vrf.verify(signing_key, pi, alpha)  # not a proof under the report key
    with pytest.raises(vrf.InvalidProof):
        vrf.verify_beacon(signing_key, vrf.prove(seed, alpha), alpha)  # nor the reverse
    with pytest.raises(vrf.InvalidProof):
        vrf.verify_beacon(public_key(seed_for("v1")), pi, alpha)


def test_a_beacon_shares_no_nonce_with_a_report_signature() -> None:
    """With one key, an RFC 9381 proof's nonce is the ed25519 nonce of signing the 32-byte
    point H, so a raw signature of H would reveal the key. The beacon's nonce key is its own:
    raw-signing H under the report key gives a different R than the proof's U = k*B."""
    seed = seed_for("v0")
    alpha = beacon_alpha(b"\x01" * 32, 7)
    plain = vrf._prove_trace(seed, alpha)  # the same-key construction beacons no longer use
    r_point = sign_raw(seed, plain.h)[:32]
    assert r_point == plain.u  # the shared nonce, shown
    x, _ = vrf._expand_seed(seed)
    derived = vrf._prove_scalar((x + vrf._beacon_tweak(public_key(seed))) % vrf._L,
                                hashlib.sha512(vrf.BEACON_NONCE_DOMAIN + seed).digest()[:32],
                                alpha)
    assert derived.pi == vrf.prove_beacon(seed, alpha)
    assert sign_raw(seed, derived.h)[:32] != derived.u
    verify_raw(public_key(seed), derived.h, sign_raw(seed, derived.h))


def test_a_bundle_with_a_beacon_under_the_report_key_is_refused() -> None:
    seed = seed_for("v0")
    digest = b"\x02" * 32
    good = MeasurementBundle(digest, 3, public_key(seed), ()).signed_by(seed)
    good.verify()
    old_style = MeasurementBundle(digest, 3, public_key(seed), (),
                                  beacon=vrf.prove(seed, beacon_alpha(digest, 3))
                                  ).signed_by(seed)
    with pytest.raises(BadSignature):
        old_style.verify()
