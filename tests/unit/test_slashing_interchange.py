"""The slashing-protection interchange file and the store rules behind it (issue 12, item 1):
round trip, what import refuses, merges that never lose a row, and the imported floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import base58
import pytest

from validator.slashing_interchange import (InterchangeError, export_document, import_file,
                                            read_history, write_document)
from validator.store import SlashingRefused, Store

DIGEST = bytes(range(32))
KEY = b"\x07" * 32
OTHER_KEY = b"\x08" * 32


def h(n: int) -> bytes:
    return bytes([n]) * 32


def store_with(tmp_path: Path, name: str, rows: dict[int, bytes]) -> Store:
    store = Store(tmp_path / f"{name}.sqlite")
    store.claim_network(DIGEST)
    for epoch, digest in rows.items():
        store.record_signed_header(epoch, digest)
    return store


def exported(tmp_path: Path, rows: dict[int, bytes], name: str = "h.json") -> Path:
    source = store_with(tmp_path, "source-" + name, rows)
    path = tmp_path / name
    write_document(path, export_document(source, KEY, DIGEST, "net"))
    source.close()
    return path


def test_export_then_import_round_trips_every_row(tmp_path: Path) -> None:
    rows = {3: h(3), 4: h(4), 9: h(9)}
    path = exported(tmp_path, rows)
    document = json.loads(path.read_text())
    assert document["metadata"] == {"interchange_format_version": "1",
                                    "config_digest": DIGEST.hex(), "network_id": "net"}
    assert document["data"][0]["pubkey"] == base58.b58encode(KEY).decode()
    assert document["data"][0]["signed_headers"][0] == {"epoch": "3", "header_hash": h(3).hex()}
    target = store_with(tmp_path, "target", {})
    result = import_file(target, path, signing_key=KEY, config_digest=DIGEST)
    assert (result.added, result.already, result.conflicting, result.highest) == (3, 0, 0, 9)
    assert target.signed_headers() == rows and target.slashing_floor() == 9
    with pytest.raises(InterchangeError, match="refusing to overwrite"):
        write_document(path, {})


def test_the_floor_refuses_other_headers_and_gaps_at_or_below_it(tmp_path: Path) -> None:
    target = store_with(tmp_path, "target", {})
    import_file(target, exported(tmp_path, {3: h(3), 6: h(6)}), signing_key=KEY,
                config_digest=DIGEST)
    for epoch in (0, 3, 5, 6):  # gaps 0 and 5 too: what was signed there is unknown
        with pytest.raises(SlashingRefused):
            target.record_signed_header(epoch, h(99))
    target.record_signed_header(6, h(6))  # the very header it signed: fine again
    target.record_signed_header(7, h(7))
    assert target.signed_headers() == {3: h(3), 6: h(6), 7: h(7)}
    target.close()
    reopened = Store(tmp_path / "target.sqlite")  # the floor is on disk
    with pytest.raises(SlashingRefused, match="imported"):
        reopened.record_signed_header(5, h(5))


def test_merging_never_loses_or_replaces_a_stored_row(tmp_path: Path) -> None:
    target = store_with(tmp_path, "target", {2: h(2), 5: h(5)})
    path = exported(tmp_path, {1: h(1), 2: h(2), 5: h(55)})
    result = import_file(target, path, signing_key=KEY, config_digest=DIGEST)
    assert (result.added, result.already, result.conflicting) == (1, 1, 1)
    assert target.signed_headers() == {1: h(1), 2: h(2), 5: h(5)}
    # a later, lower history never lowers the floor
    import_file(target, exported(tmp_path, {0: h(0)}, "low.json"), signing_key=KEY,
                config_digest=DIGEST)
    assert target.slashing_floor() == 5 and 0 in target.signed_headers()


def write_json(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(document))
    return path


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "metadata": {"interchange_format_version": "1", "config_digest": DIGEST.hex()},
        "data": [{"pubkey": base58.b58encode(KEY).decode(),
                  "signed_headers": [{"epoch": "1", "header_hash": h(1).hex()}]}]}
    doc.update(changes)
    return doc


def entry(**changes: Any) -> dict[str, Any]:
    return {**document()["data"][0], **changes}


@pytest.mark.parametrize("doc, needle", [
    (document(metadata={"interchange_format_version": "1", "config_digest": "ab" * 32}),
     "not this network's"),
    (document(metadata={"interchange_format_version": "5", "config_digest": DIGEST.hex()}),
     "interchange_format_version"),
    (document(metadata=[]), "metadata must be"),
    (document(data=[entry(pubkey=base58.b58encode(OTHER_KEY).decode())]),
     "no history for this validator's signing key"),
    (document(data=[entry(pubkey="0OIl")]), "not a base58"),
    (document(data=[entry(signed_headers=[{"epoch": "-1", "header_hash": h(1).hex()}])]),
     "not a decimal epoch"),
    (document(data=[entry(signed_headers=[{"epoch": True, "header_hash": h(1).hex()}])]),
     "not a decimal epoch"),
    (document(data=[entry(signed_headers=[{"epoch": 2**63, "header_hash": h(1).hex()}])]),
     "out of range"),
    (document(data=[entry(signed_headers=[{"epoch": 1, "header_hash": "AB" * 32}])]),
     "64 lowercase hex"),
    (document(data=[entry(signed_headers=["x"])]), "expected a JSON object"),
    ([], "expected a JSON object"),
])
def test_import_refuses_with_one_line(tmp_path: Path, doc: Any, needle: str) -> None:
    target = store_with(tmp_path, "target", {4: h(4)})
    with pytest.raises(InterchangeError, match=needle) as caught:
        import_file(target, write_json(tmp_path, doc), signing_key=KEY, config_digest=DIGEST)
    assert "\n" not in str(caught.value)
    assert target.signed_headers() == {4: h(4)} and target.slashing_floor() is None


def test_other_keys_are_left_out_and_integer_epochs_read(tmp_path: Path) -> None:
    doc = document(data=[entry(pubkey=base58.b58encode(OTHER_KEY).decode()),
                         entry(signed_headers=[{"epoch": 7, "header_hash": h(7).hex()}])])
    rows, others = read_history(write_json(tmp_path, doc), signing_key=KEY, config_digest=DIGEST)
    assert (rows, others) == ([(7, h(7))], 1)
    for text in ("not json", ""):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InterchangeError, match="not a JSON file"):
            read_history(tmp_path / "bad.json", signing_key=KEY, config_digest=DIGEST)
    with pytest.raises(InterchangeError, match="no such file"):
        read_history(tmp_path / "missing.json", signing_key=KEY, config_digest=DIGEST)
