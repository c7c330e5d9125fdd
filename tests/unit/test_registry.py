"""Registrations: the spec's admission rule, one live version per provider, pruning, the caps
on the proposed set, and the batched store writes (validator.registry, validator.store)."""

from dataclasses import replace
from pathlib import Path

import base58
import pytest

from tests.factories import make_registration, make_spec
from validator import registry as registry_module
from validator.registry import Registry, registration_hash
from validator.spec import NetworkSpec, RegistrationRule, SpecError, spec_from_dict
from validator.store import RegistrationWriter, Store

NOW = 1_000_000.0  # make_spec's genesis: epoch 0 starts here


def spec_with(**rule: object) -> NetworkSpec:
    spec, _ = make_spec(4)
    return replace(spec, registration=RegistrationRule(**rule))  # type: ignore[arg-type]


def test_the_default_rule_keeps_a_spec_and_its_digest_as_they_were() -> None:
    spec, _ = make_spec(4)
    as_dict = spec.to_dict()
    assert "registration" not in as_dict
    assert spec_from_dict(as_dict).config_digest == spec.config_digest
    assert spec.registration_interval == 10  # min(10, epoch_seconds = 20)
    assert replace(spec, epoch_seconds=6).registration_interval == 6


def test_the_registration_table_is_parsed_strictly_and_covered_by_the_digest() -> None:
    spec, _ = make_spec(4)
    key = make_registration(spec, "p0")[0].provider
    table = {"mode": "allowlist", "allow": [base58.b58encode(key).decode()],
             "per_key_interval_seconds": 30, "max_new_per_epoch": 5}
    parsed = spec_from_dict(dict(spec.to_dict(), registration=table))
    assert parsed.registration == RegistrationRule("allowlist", (key,), 30, 5)
    assert parsed.config_digest != spec.config_digest
    assert spec_from_dict(parsed.to_dict()) == parsed
    bad: list[tuple[dict[str, object], str]] = [
        ({"mode": "onchain"}, "registration.mode"),
        ({"mode": "allowlist"}, "registration.allow"),
        ({"allow": [base58.b58encode(key).decode()]}, "registration.allow"),
        ({"allow": ["nope"], "mode": "allowlist"}, "registration.allow[0]"),
        ({"max_new_per_epoch": 0}, "registration.max_new_per_epoch"),
        ({"per_key_interval_seconds": -1}, "registration.per_key_interval_seconds"),
        ({"typo": 1}, "unknown key")]
    for bad_table, where in bad:
        with pytest.raises(SpecError, match=where.replace("[", r"\[").replace("]", r"\]")):
            spec_from_dict(dict(spec.to_dict(), registration=bad_table))


def test_gossip_admission_follows_the_rule() -> None:
    spec = spec_with(max_new_per_epoch=2)
    reg = Registry(spec)
    a = make_registration(spec, "a", issued_at=int(NOW))[0]
    assert reg.admit(a, registration_hash(a), NOW) is None
    assert reg.admit(a, registration_hash(a), NOW) == "duplicate"
    soon = replace(a, issued_at=a.issued_at + 5)
    assert reg.precheck(soon) == "rate_limited"  # claims to be issued within the interval
    later = make_registration(spec, "a", issued_at=int(NOW) + 11)[0]
    assert reg.precheck(later) is None
    assert reg.precheck(later, NOW + 1) == "rate_limited"  # arrives within the interval
    assert reg.admit(later, registration_hash(later), NOW + 12) is None
    assert reg.live[a.provider] == later and reg.versions_of(a.provider) == 2
    older = make_registration(spec, "a", issued_at=int(NOW) - 100)[0]
    assert reg.precheck(older) == "superseded"
    future = make_registration(spec, "b", issued_at=int(NOW) + 31)[0]
    assert reg.admit(future, registration_hash(future), NOW) == "from_future"
    b = make_registration(spec, "b", issued_at=int(NOW))[0]
    c = make_registration(spec, "c", issued_at=int(NOW))[0]
    assert reg.admit(b, registration_hash(b), NOW) is None  # the second new one of epoch 0
    assert reg.admit(c, registration_hash(c), NOW) == "new_provider_cap"
    assert reg.admit(c, registration_hash(c), NOW + spec.epoch_seconds) is None  # epoch 1
    assert reg.add(older)  # named by a set: held without the gossip limits
    assert reg.live[a.provider] == later


def test_the_allow_list_admits_only_its_keys() -> None:
    spec, _ = make_spec(4)
    a, b = make_registration(spec, "a")[0], make_registration(spec, "b")[0]
    reg = Registry(replace(spec, registration=RegistrationRule("allowlist", (a.provider,))))
    assert reg.precheck(a) is None
    assert reg.precheck(b) == "not_allowed"
    reg.add(a)
    reg.add(b)  # restored from an older spec, say: never proposed
    assert reg.next_set(NOW, None) == (registration_hash(a),)
    assert reg.check_set((registration_hash(b),), None, NOW) == "provider_set_not_admitted"


def test_pruning_keeps_the_live_version_the_named_ones_and_the_latest_by_each_end() -> None:
    spec, _ = make_spec(4)
    reg = Registry(spec)
    versions = [make_registration(spec, "a", issued_at=int(NOW) + 10 * i)[0] for i in range(8)]
    for v in versions:
        reg.add(v)
    named = registration_hash(versions[1])
    dropped = reg.prune({named}, [NOW + 35])  # latest by then: version 3
    kept = {registration_hash(versions[i]) for i in (1, 3, 7)}
    assert set(reg.by_hash) == kept
    assert set(dropped) == {registration_hash(v) for v in versions} - kept
    assert reg.live[versions[0].provider] == versions[7]
    assert reg.prune(set(), []) == [registration_hash(versions[i]) for i in (1, 3)]
    assert reg.versions_of(versions[0].provider) == 1


def test_the_proposed_set_adds_few_newcomers_and_never_exceeds_the_decode_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_with(max_new_per_epoch=3)
    reg = Registry(spec)
    old = [make_registration(spec, f"old{i}", issued_at=i)[0] for i in range(4)]
    new = [make_registration(spec, f"new{i}", issued_at=100 - i)[0] for i in range(6)]
    for r in old + new:
        reg.add(r)
    base = frozenset(r.provider for r in old)
    chosen = reg.next_set(NOW, base)
    # every incumbent, and the three oldest newcomers (issued 95, 96, 97)
    assert set(chosen) == {registration_hash(r) for r in old + new[3:]}
    assert reg.check_set(chosen, base, NOW) is None
    everything = tuple(sorted(registration_hash(r) for r in old + new))
    assert reg.check_set(everything, base, NOW) == "provider_set_too_many_new"
    assert reg.check_set(everything, None, NOW) is None  # before the first report: no base
    assert len(reg.next_set(NOW, None)) == 10
    monkeypatch.setattr(registry_module, "MAX_PROVIDERS", 6)
    capped = reg.next_set(NOW, None)
    assert set(capped) == {registration_hash(r) for r in old + new[4:]}  # oldest first
    assert len(reg.next_set(NOW, base)) == 6  # incumbents first, then the oldest newcomers
    assert reg.check_set(everything[:1] * 2, None, NOW) == "provider_set_duplicate_provider"


def test_registration_writes_are_batched_on_their_own_connection(tmp_path: Path) -> None:
    spec, _ = make_spec(4)
    path = tmp_path / "v.sqlite"
    store = Store(path)
    writer = RegistrationWriter(path)
    a1 = make_registration(spec, "a", issued_at=1)[0]
    a2 = make_registration(spec, "a", issued_at=2)[0]
    b = make_registration(spec, "b", issued_at=1)[0]
    rows = [("put", (r.provider, r.issued_at, r.encode())) for r in (a1, a2, b)]
    writer.write(rows + [("drop", registration_hash(a1))])
    assert sorted(store.registrations()) == sorted([a2.encode(), b.encode()])
    latest = dict(store._conn.execute("SELECT provider, data FROM registrations"))
    assert latest == {a2.provider: a2.encode(), b.provider: b.encode()}
    # order is kept: a version put back after its drop stays
    writer.write([("drop", registration_hash(b)), rows[2]])
    assert b.encode() in store.registrations()
    store.drop_registration_versions([registration_hash(b)])
    assert b.encode() not in store.registrations()
    writer.close()
    store.close()
