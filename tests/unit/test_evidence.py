"""Equivocation evidence: the core keeps both messages, the store persists them, and the API
view serves them so that anyone can re-verify both signatures."""

from dataclasses import replace
from pathlib import Path

import base58

import pytest

from proofs.messages import BundleNotice, FetchRequest, MeasurementBundle, decode_message
from tests.factories import make_observation, make_registration, make_spec, seed_for
from validator.api_views import evidence_list
from validator.core import SaveEvidence, ValidatorCore
from validator.store import Store, open_readonly


@pytest.mark.parametrize("how", ["two_bundles", "bundle_then_notice", "two_notices"])
def test_equivocating_bundle_is_stored_and_served_as_verifiable_evidence(
        tmp_path: Path, how: str) -> None:
    spec, seeds = make_spec(4)
    core = ValidatorCore(spec, seeds[0])
    reg, _ = make_registration(spec, "p0")
    cheat_seed = seed_for("v3")
    cheat = ValidatorCore(spec, cheat_seed).me
    obs = (make_observation(reg.provider),)
    first = MeasurementBundle(spec.config_digest, 0, cheat, obs).signed_by(cheat_seed)
    second = MeasurementBundle(spec.config_digest, 0, cheat,
                               (replace(obs[0], down_kbps=1),)).signed_by(cheat_seed)
    now = spec.epoch_end(0)

    def fetched(bundle: MeasurementBundle) -> list:
        request = FetchRequest("bundle", 0, bundle.hash())
        return core.on_fetched(request, bundle.encode(), now)

    def gossiped(bundle: MeasurementBundle) -> list:
        notice = core.check("bundles", BundleNotice.of(bundle, cheat_seed).encode())
        assert notice is not None
        return core.on_message(notice, now)

    if how == "two_bundles":
        actions = fetched(first) + fetched(second)
        expected = {first, second}
    elif how == "bundle_then_notice":
        actions = fetched(first) + gossiped(second)
        expected = {first, BundleNotice.of(second, cheat_seed)}
    else:
        actions = gossiped(first) + gossiped(second)
        expected = {BundleNotice.of(first, cheat_seed), BundleNotice.of(second, cheat_seed)}
    [evidence] = [a for a in actions if isinstance(a, SaveEvidence)]
    assert core.dropped["equivocation"] == 1

    store = Store(tmp_path / "v.sqlite")
    store.put_evidence(evidence.kind, evidence.epoch, evidence.offender, evidence.first,
                       evidence.second)
    [served] = evidence_list(open_readonly(tmp_path / "v.sqlite"), 100, None)
    assert served["kind"] == "bundle" and served["epoch"] == 0
    assert base58.b58decode(served["offender"]) == cheat
    a = decode_message(bytes.fromhex(served["first"]))
    b = decode_message(bytes.fromhex(served["second"]))
    assert a != b and {a, b} == expected
    a.verify()  # both carry the offender's valid signature: that is the proof
    b.verify()
    assert evidence_list(open_readonly(tmp_path / "v.sqlite"), 100, 0) == []
