"""The agreement protocol of the pure core, with honest, crashed, lying and equivocating
validators (DESIGN §7-8)."""

from dataclasses import replace

import pytest

from proofs.messages import BundleNotice, FetchRequest, MeasurementBundle, ReportSignature
from proofs.report import Record, ReportHeader
from proofs.signing import sha256, sign_raw
from tests.factories import make_observation, make_registration, make_spec, seed_for
from tests.sim.core_cluster import CoreCluster
from validator.core import registration_hash


def honest(i, epoch, reg):  # noqa: ANN001, ANN201
    return make_observation(reg.provider, down=40_000 + 100 * i)


def make_cluster(n: int = 4, providers: int = 6) -> CoreCluster:
    spec, seeds = make_spec(n)
    cluster = CoreCluster(spec, seeds)
    for j in range(providers):
        cluster.broadcast_registration(make_registration(spec, f"p{j}")[0])
    return cluster


def finals_agree(cluster: CoreCluster, epoch: int) -> ReportHeader:
    hashes = {c.finals[epoch].header_hash for i, c in enumerate(cluster.cores)
              if i not in cluster.down}
    assert len(hashes) == 1
    final = next(c.finals[epoch] for i, c in enumerate(cluster.cores) if i not in cluster.down)
    assert len(final.signatures) >= cluster.spec.threshold
    return ReportHeader.from_bytes(final.header)


@pytest.mark.parametrize("n", [4, 7])
def test_honest_cluster_finalizes_every_epoch_with_the_same_header(n: int) -> None:
    cluster = make_cluster(n)
    for epoch in range(3):
        cluster.run_epoch(epoch, honest)
        header = finals_agree(cluster, epoch)
        assert header.record_count == 6
    # the hash chain: each header names the previous final header
    finals = cluster.cores[0].finals
    assert ReportHeader.from_bytes(finals[2].header).prev_header_hash == finals[1].header_hash
    assert cluster.double_signatures() == []


def test_one_crashed_validator_does_not_stop_reports() -> None:
    cluster = make_cluster(4)
    cluster.run_epoch(0, honest)
    cluster.down = {1}
    for epoch in (1, 2):
        cluster.run_epoch(epoch, honest)
        finals_agree(cluster, epoch)


def test_crashed_leader_passes_leadership_on() -> None:
    cluster = make_cluster(4)
    core0 = cluster.cores[0]
    leader = core0.leader(0, 0)
    cluster.down = {[c.me for c in cluster.cores].index(leader)}
    cluster.run_epoch(0, honest)
    finals_agree(cluster, 0)


def test_returning_validator_catches_up_on_missed_finals() -> None:
    cluster = make_cluster(4)
    cluster.down = {3}
    cluster.run_epoch(0, honest)
    cluster.run_epoch(1, honest)
    cluster.down = set()
    cluster.run_epoch(2, honest)
    finals_agree(cluster, 2)
    assert {0, 1, 2} <= set(cluster.cores[3].finals)


def test_a_lying_validator_cannot_move_a_metric_out_of_the_honest_range() -> None:
    cluster = make_cluster(4)

    def liar(i, epoch, reg):  # noqa: ANN001, ANN202
        obs = honest(i, epoch, reg)
        return replace(obs, down_kbps=obs.down_kbps * 10) if i == 2 else obs

    cluster.run_epoch(0, liar)
    finals_agree(cluster, 0)
    for raw in cluster.cores[0].finals[0].records:
        record = Record.from_bytes(raw)
        assert 40_000 <= record.down_kbps <= 40_300


def test_an_equivocating_bundle_is_evidence_and_unused() -> None:
    cluster = make_cluster(4)
    spec = cluster.spec
    cheat = seed_for("v3")
    core = cluster.cores[3]
    end = spec.epoch_end(0)
    obs = tuple(make_observation(r.provider) for r in core.assignment(0))
    other = MeasurementBundle(spec.config_digest, 0, core.me,
                              tuple(replace(o, down_kbps=1) for o in obs)).signed_by(cheat)
    cluster.deliver(3, [], end)
    for i, c in enumerate(cluster.cores[:3]):
        notice = c.check("bundles", BundleNotice.of(other, cheat).encode())
        cluster.deliver(i, c.on_message(notice, end), end)
    cluster.run_epoch(0, honest)
    header = finals_agree(cluster, 0)
    assert any(e.kind == "bundle" and e.offender == core.me for e in cluster.evidence)
    assert header.record_count == 6


def test_bad_input_is_dropped_and_counted_by_reason() -> None:
    cluster = make_cluster(4)
    core = cluster.cores[0]
    spec = cluster.spec
    other_spec, _ = make_spec(4, network_id="othernet")
    stranger = seed_for("stranger")
    header = ReportHeader(spec.config_digest, 0, b"\x01" * 32, 0, 0, bytes(32), bytes(32),
                          bytes(32))
    good = ReportSignature(header.to_bytes(), cluster.cores[1].me,
                           sign_raw(seed_for("v1"), header.hash()))
    elsewhere = replace(header, config_digest=other_spec.config_digest).to_bytes()
    cases = {
        "signatures:malformed": b"\x93\x04\x01",
        "signatures:empty": b"",
        "signatures:oversized": b"\x00" * 10_000,
        "signatures:bad_header": replace(good, header=b"XXXX" + good.header[4:]).encode(),
        "signatures:wrong_network": ReportSignature(
            elsewhere, good.signer, sign_raw(seed_for("v1"), sha256(elsewhere))).encode(),
        "signatures:not_member": replace(good, signer=b"\x09" * 32).encode(),
        "signatures:bad_signature": replace(good, signature=sign_raw(stranger, b"x" * 32)).encode(),
    }
    for reason, data in cases.items():
        assert core.check("signatures", data) is None
        assert core.dropped[reason] == 1, reason
    assert core.check("signatures", good.encode()) == good


def test_provider_set_is_agreed_through_the_final_report() -> None:
    cluster = make_cluster(4)
    spec = cluster.spec
    cluster.run_epoch(0, honest)
    # A provider registers during epoch 1, and only epoch 1's first leader hears of it.
    late, _ = make_registration(spec, "late", issued_at=int(spec.epoch_start(1)) + 1)
    leader = cluster.cores[0].leader(1, 0)
    holder = next(c for c in cluster.cores if c.me == leader)
    holder.on_message(holder.check("registrations", late.encode()), spec.epoch_start(1) + 1)
    cluster.run_epoch(1, honest)
    header = finals_agree(cluster, 1)
    for core in cluster.cores:
        assert late.provider in {r.provider for r in core.provider_set(3)}, "fetched, agreed"
        assert late.provider not in {r.provider for r in core.provider_set(2)}
        assert core.finals[1].provider_set == cluster.cores[0].finals[1].provider_set
    assert len(cluster.cores[0].finals[1].provider_set) == 7
    assert header.providers_root != bytes(32)
    cluster.run_epoch(2, honest)
    cluster.run_epoch(3, honest)
    assert finals_agree(cluster, 3).record_count == 7


def test_seed_comes_from_the_beacons_of_the_bundle_set() -> None:
    from proofs.messages import beacon_alpha
    from proofs.vrf import verify_beacon as vrf_verify
    from validator.assignment import next_seed

    cluster = make_cluster(4)
    cluster.run_epoch(0, honest)
    core = cluster.cores[0]
    final = core.finals[0]
    bundles = sorted((core._bundle_by_hash[h] for h in final.bundle_hashes),
                     key=lambda b: b.validator)
    outputs = [vrf_verify(b.validator, b.beacon, beacon_alpha(b.config_digest, 0))
               for b in bundles]
    assert ReportHeader.from_bytes(final.header).next_seed == next_seed(0, outputs)


def test_a_bundle_with_a_beacon_for_another_epoch_is_rejected() -> None:
    cluster = make_cluster(4)
    spec = cluster.spec
    seed = seed_for("v1")
    me = cluster.cores[1].me
    stale = MeasurementBundle(spec.config_digest, 0, me, ()).signed_by(seed)
    forged = replace(MeasurementBundle(spec.config_digest, 1, me, ()),
                     beacon=stale.beacon).signed_by(seed)  # validly signed, wrong beacon
    core = cluster.cores[0]
    request = FetchRequest("bundle", 1, forged.hash())
    assert core.on_fetched(request, forged.encode(), spec.epoch_end(1)) == []
    assert core.dropped["fetch_bundle:bad_beacon"] == 1


def test_a_bundle_with_observations_outside_its_committees_is_dropped() -> None:
    cluster = make_cluster(4, providers=12)
    core, other = cluster.cores[0], cluster.cores[1]
    outside = [r for r in core.provider_set(0) if other.me not in core.committee(0, r.provider)]
    assert outside, "with k=3 of 4 some providers are not v1's"
    bundle = MeasurementBundle(cluster.spec.config_digest, 0, other.me,
                               (make_observation(outside[0].provider),)).signed_by(seed_for("v1"))
    request = FetchRequest("bundle", 0, bundle.hash())
    assert core.on_fetched(request, bundle.encode(), cluster.spec.epoch_end(0)) == []
    assert core.dropped["bundles:outside_committee"] == 1


def test_a_validator_missing_a_registration_fetches_the_provider_set_by_its_root() -> None:
    """Proposals name the provider set by its merkle root only. A validator whose own view
    gives another root (it missed a registration) fetches the set, then the registration,
    and signs the same header as the rest."""
    cluster = make_cluster(4)
    cluster.run_epoch(0, honest)
    late, _ = make_registration(cluster.spec, "late")
    for core in cluster.cores[:3]:
        core.on_message(core.check("registrations", late.encode()), 0)
    behind = cluster.cores[3]
    assert late.provider not in behind.registrations
    cluster.run_epoch(1, honest)
    finals_agree(cluster, 1)
    final = behind.finals[1]
    assert registration_hash(late) in final.provider_set
    assert late.provider in behind.registrations  # fetched because the set named it
    assert ("fetch_provider_set", 1) in cluster.fetched.get(3, set())
    assert 1 in behind.signed and cluster.double_signatures() == []
