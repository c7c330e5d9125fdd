"""The claimer's strict reading of a validator's JSON (`validator.claims.parse_*`): what the
API documents is accepted, anything else is `BadValidatorAnswer` (never a KeyError or
TypeError), and the CLI's one-line outcome text."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from proofs import merkle
from proofs.report import Record
from validator.claims import (
    ALREADY_CLAIMED,
    FAILED,
    NOT_ACCEPTED,
    NOTHING_DUE,
    PAID,
    STATUSES,
    UNCLAIMABLE,
    BadValidatorAnswer,
    ClaimResult,
    NoPool,
    parse_claims,
    parse_epochs,
    parse_network,
    summary,
)
from validator.cli_pool import claim_lines

PROGRAM, POOL, PAYOUT, OTHER = (Keypair().pubkey() for _ in range(4))


def network(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": "t", "rpc_url": "http://127.0.0.1:8899",
                            "pool": {"program_id": str(PROGRAM), "pool": str(POOL), "mint": None, "vault": None}}
    body.update(changes)
    return body


def records(n: int = 5) -> list[bytes]:
    return [Record(hashlib.sha256(bytes([i])).digest(), bytes(PAYOUT if i % 2 == 0 else OTHER), 9_000, 1, 2, 3,
                   10 + i, 0).to_bytes() for i in range(n)]


def claims_body(indexes: tuple[int, ...] = (0, 2)) -> list[dict[str, Any]]:
    raw = records()
    return [{"index": i, "record": raw[i].hex(), "path": [h.hex() for h in merkle.proof(raw, i)],
             "header_sha256": "11" * 32, "record_count": len(raw)} for i in indexes]


# -- /network ---------------------------------------------------------------------------------
def test_network_gives_program_pool_and_rpc_url() -> None:
    got = parse_network(network())
    assert (got.program_id, got.pool, got.rpc_url) == (PROGRAM, POOL, "http://127.0.0.1:8899")


def test_network_without_pool_is_no_pool() -> None:
    with pytest.raises(NoPool):
        parse_network(network(pool=None))


@pytest.mark.parametrize("body", [
    [], "x", None, {}, {"pool": None}, network(rpc_url=5), network(rpc_url=None),
    network(pool={"pool": str(POOL)}), network(pool={"program_id": str(PROGRAM)}), network(pool=[]),
    network(pool={"program_id": "0" * 44, "pool": str(POOL)}),
    network(pool={"program_id": str(PROGRAM), "pool": str(POOL) + "1"}),
    network(pool={"program_id": "1" + str(PROGRAM), "pool": str(POOL)}),  # non-canonical spelling
    network(pool={"program_id": 7, "pool": str(POOL)}),
])
def test_network_malformed(body: Any) -> None:
    with pytest.raises(BadValidatorAnswer):
        parse_network(body)


# -- /epochs ----------------------------------------------------------------------------------
def test_epochs_in_the_order_given() -> None:
    body = [{"epoch": 5, "final": True, "signatures": 3, "posted": True}, {"epoch": 2, "final": True}]
    assert parse_epochs(body) == [5, 2]
    assert parse_epochs([]) == []


@pytest.mark.parametrize("body", [
    {}, None, [1], [{"epoch": 1}], [{"final": True}], [{"epoch": -1, "final": True}],
    [{"epoch": True, "final": True}], [{"epoch": 1.0, "final": True}], [{"epoch": "1", "final": True}],
    [{"epoch": 1, "final": False}], [{"epoch": 1, "final": 1}], [{"epoch": 2**63, "final": True}],
    [{"epoch": 1, "final": True}, {"epoch": 1, "final": True}],
])
def test_epochs_malformed(body: Any) -> None:
    with pytest.raises(BadValidatorAnswer):
        parse_epochs(body)


# -- /epochs/{e}/claims/{payout} ------------------------------------------------------------------
def test_claims_are_read_as_sent() -> None:
    got = parse_claims(claims_body(), 4, PAYOUT)
    raw = records()
    assert [(c.epoch, c.index, c.record, c.header_hash, c.record_count) for c in got] == \
        [(4, 0, raw[0], b"\x11" * 32, 5), (4, 2, raw[2], b"\x11" * 32, 5)]
    assert list(got[1].path) == merkle.proof(raw, 2) and got[1].weight == 12
    assert parse_claims([], 4, PAYOUT) == []


def _broken(change: Any) -> list[dict[str, Any]]:
    body = claims_body()
    change(body)
    return body


@pytest.mark.parametrize("name, change", [
    ("not a list", lambda b: b.clear() or b.append("x")),
    ("index missing", lambda b: b[0].pop("index")),
    ("index bool", lambda b: b[0].update(index=True)),
    ("index negative", lambda b: b[0].update(index=-1)),
    ("index at count", lambda b: b[0].update(index=5)),
    ("count zero", lambda b: b[0].update(record_count=0)),
    ("count huge", lambda b: b[0].update(record_count=2**21)),
    ("record short", lambda b: b[0].update(record=b[0]["record"][:-2])),
    ("record upper", lambda b: b[0].update(record=b[0]["record"].upper())),
    ("record bytes", lambda b: b[0].update(record=None)),
    ("another payout", lambda b: b[0].update(record=records()[1].hex())),
    ("path not list", lambda b: b[0].update(path="00")),
    ("path hash short", lambda b: b[0]["path"].append("00" * 31)),
    ("path too long", lambda b: b[0].update(path=["00" * 32] * 33)),
    ("header short", lambda b: b[0].update(header_sha256="11" * 31)),
    ("header differs", lambda b: b[1].update(header_sha256="22" * 32)),
    ("count differs", lambda b: b[1].update(record_count=6)),
    ("index twice", lambda b: b[1].update(index=0, record=b[0]["record"])),
])
def test_claims_malformed(name: str, change: Any) -> None:
    with pytest.raises(BadValidatorAnswer):
        parse_claims(_broken(change), 4, PAYOUT)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4),
                    max_leaves=20)
KEYS = ("index", "record", "path", "header_sha256", "record_count", "epoch", "final", "pool", "rpc_url",
        "program_id")


@settings(max_examples=300, deadline=None)
@given(body=JSON, mutation=st.lists(st.tuples(st.sampled_from(KEYS), JSON), max_size=3))
def test_random_json_only_raises_our_error(body: Any, mutation: list[tuple[str, Any]]) -> None:
    candidates = [body, copy.deepcopy(claims_body()), network(), [{"epoch": 1, "final": True}]]
    for candidate in candidates:
        target = candidate[0] if isinstance(candidate, list) and candidate and isinstance(candidate[0], dict) \
            else candidate
        if isinstance(target, dict):
            target.update(mutation)
        for parse in (lambda b: parse_claims(b, 1, PAYOUT), parse_epochs, parse_network):
            try:
                parse(candidate)
            except (BadValidatorAnswer, NoPool):
                pass


# -- what the CLI prints ----------------------------------------------------------------------------
def test_claim_lines_and_summary() -> None:
    results = [ClaimResult(1, 0, 333, PAID, None, 10, 30, 1000, "sig"),
               ClaimResult(1, 2, 0, ALREADY_CLAIMED, None, 5, 30, 1000),
               ClaimResult(2, 1, 0, NOTHING_DUE, None, 0, 30, 1000),
               ClaimResult(3, 0, 0, NOT_ACCEPTED, "no accepted report", 10),
               ClaimResult(4, None, 0, FAILED, "http://v/epochs/4/claims: HTTP 404"),
               ClaimResult(5, 7, 0, FAILED, "WrongMerklePath", 10, 30, 1000),
               ClaimResult(0, 3, 0, UNCLAIMABLE, "closed", 10)]
    payout = Pubkey.default()
    assert claim_lines(payout, results) == [
        "epoch 1: paid 333 (record 0, weight 10 of total 30, reserved 1000)",
        "epoch 1: already claimed (record 2)",
        "epoch 2: nothing due (record 1, weight 0 of total 30); not claimed",
        "epoch 3: not accepted on chain yet (record 0); claim later",
        "epoch 4: FAILED: http://v/epochs/4/claims: HTTP 404",
        "epoch 5: FAILED (record 7): WrongMerklePath",
        "epoch 0: unclaimable (record 3): closed",
        f"total: paid 333 to {payout} in 1 claim(s); 1 already claimed, 1 not accepted yet, 2 failed",
    ]
    counts = summary(results)
    assert counts == {PAID: 1, ALREADY_CLAIMED: 1, NOTHING_DUE: 1, NOT_ACCEPTED: 1, UNCLAIMABLE: 1, FAILED: 2,
                      "amount": 333}
    assert set(STATUSES) <= set(counts)
