"""The status API's interface as an OpenAPI 3.1 document (served at ``/openapi.json``).

Owns the description of every route ``validator.api.make_app`` registers: its parameters,
the JSON shape of each 200 answer and the error object of its 4xx and 503 answers. Pure data,
no aiohttp: ``document()`` returns plain dicts. ``OPERATIONS`` is keyed by path exactly as
aiohttp spells the route (``/epochs/{epoch}``), so ``tests/unit/test_openapi.py`` can check
that the routes and the document name the same paths, both ways.

The schemas say what the code builds in ``validator.api_views`` and ``validator.api_pool``,
not more: an object whose fields are fixed has ``additionalProperties: false``, so a field
added to a view without a word here fails the schemathesis run
(``tests/integration/test_openapi_schemathesis.py``). ``/status`` and ``/network`` stay
open: the node's snapshot and the spec grow fields as features land, and their clients
read fields by name.

HEAD is answered as GET on every path (aiohttp registers both); it is not listed, as
OpenAPI tools treat HEAD as implicit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from validator import dashboard

Json = dict[str, Any]

I64_MAX = 2**63 - 1  # the store's epoch range (SQLite INTEGER)
U64_MAX = 2**64 - 1
MAX_LIMIT = 1000  # validator.api.MAX_LIMIT (checked equal by the unit test)
KEY_FORMAT = "base58-key"  # a name of ours: tools that do not know it use the pattern


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: Json, *, required: tuple[str, ...] | None = None,
         closed: bool = True) -> Json:
    """An object with ``properties``, all required unless ``required`` names fewer."""
    body: Json = {"type": "object", "properties": properties,
                  "required": list(properties if required is None else required)}
    if closed:
        body["additionalProperties"] = False
    return body


def _uint(maximum: int) -> Json:
    return {"type": "integer", "minimum": 0, "maximum": maximum}


def _array(items: Json) -> Json:
    return {"type": "array", "items": items}


FLAG_NAMES = ["insufficient", "throughput_fraud", "location_mismatch", "heartbeat_bad_sig",
              "upload_mismatch", "data_port_unreachable", "truncated_stream"]

_RECORD: Json = {  # proofs.report.Record as api_views.record_json shows it
    "provider": _ref("Key"), "payout": _ref("Key"),
    "uptime_bps": _uint(10_000), "rtt_us": _uint(2**32 - 1),
    "down_kbps": _uint(2**32 - 1), "up_kbps": _uint(2**32 - 1),
    "weight": _uint(U64_MAX), "flags": _uint(0xFFFF), "flag_names": _ref("FlagNames")}

SCHEMAS: dict[str, Json] = {
    "Error": _obj({"error": {"type": "string", "description": "what was wrong"}}),
    "Key": {"type": "string", "format": KEY_FORMAT, "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,44}$",
            "description": "a 32-byte public key or Solana address, base58 (a string of the "
                           "pattern that does not decode to 32 bytes is refused with 400)"},
    "Hash": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "32 bytes, hex"},
    "Hex": {"type": "string", "pattern": "^([0-9a-f]{2})*$", "description": "bytes, hex"},
    "Epoch": _uint(I64_MAX),
    "FlagNames": _array({"type": "string", "enum": FLAG_NAMES}),
    "Record": _obj(_RECORD),
    "EpochSummary": _obj({"epoch": _ref("Epoch"), "final": {"const": True},
                          "signatures": _uint(2**32 - 1), "posted": {"type": "boolean"}}),
    "ChainStatus": _obj({
        "status": {"enum": ["pending", "confirmed", "failed"]},
        "tx": _nullable({"type": "string"}), "slot": _nullable(_uint(U64_MAX))}),
    "PoolEpoch": _obj({
        "address": _ref("Key"), "accepted": _nullable({"type": "boolean"}),
        "signatures_on_chain": _nullable(_uint(2**32 - 1)),
        "threshold": _nullable(_uint(2**32 - 1)), "reserved": _nullable(_uint(U64_MAX)),
        "claimed_total": _nullable(_uint(U64_MAX)), "claimed_count": _nullable(_uint(U64_MAX)),
        "error": _nullable({"type": "string"})}),
    "EpochReport": _obj({
        "epoch": _ref("Epoch"), "header": _ref("Hex"), "header_sha256": _ref("Hash"),
        "signatures": _array(_obj({"signer": _ref("Key"),
                                   "signature": {"type": "string",
                                                 "pattern": "^[0-9a-f]{128}$"}})),
        "records": _array(_ref("Record")), "chain": _ref("ChainStatus"),
        "pool": _nullable(_ref("PoolEpoch"))}),
    "Proof": _obj({"record": _ref("Hex"), "index": _uint(2**32 - 1),
                   "path": _array(_ref("Hash")), "records_root": _ref("Hash"),
                   "record_count": _uint(2**32 - 1)}),
    "Claim": _obj({"index": _uint(2**32 - 1), "record": _ref("Hex"),
                   "path": _array(_ref("Hash")), "header_sha256": _ref("Hash"),
                   "record_count": _uint(2**32 - 1)}),
    "ProviderSummary": _obj({**_RECORD, "region": _nullable({"type": "string"}),
                             "epoch": _ref("Epoch")}),
    "Registration": _obj({
        "payout": _ref("Key"), "region": {"type": "string"},
        "lat": {"type": "number"}, "lon": {"type": "number"},
        "multiaddr": {"type": "string"}, "data_host": {"type": "string"},
        "data_port": _uint(65535), "issued_at": {"type": "integer"}}),
    "Observation": _obj({
        "validator": _ref("Key"), "name": _nullable({"type": "string"}),
        "heartbeats_sent": _uint(2**32 - 1), "heartbeats_ok": _uint(2**32 - 1),
        "rtt_median_us": _uint(2**32 - 1), "rtt_min_us": _uint(2**32 - 1),
        "down_kbps": _uint(2**32 - 1), "up_kbps": _uint(2**32 - 1),
        "flags": _uint(0xFFFF), "flag_names": _ref("FlagNames")}),
    "Payout": _obj({"epoch": _ref("Epoch"), "index": _uint(2**32 - 1),
                    "weight": _uint(U64_MAX), "amount": _nullable(_uint(U64_MAX)),
                    "claimed": _nullable({"type": "boolean"})}),
    "ProviderDetail": _obj({
        "provider": _ref("Key"), "payout": _ref("Key"),
        # null: registered, but in no final report yet (then committee is empty)
        "uptime_bps": _nullable(_uint(10_000)), "rtt_us": _nullable(_uint(2**32 - 1)),
        "down_kbps": _nullable(_uint(2**32 - 1)), "up_kbps": _nullable(_uint(2**32 - 1)),
        "weight": _nullable(_uint(U64_MAX)), "flags": _nullable(_uint(0xFFFF)),
        "flag_names": _ref("FlagNames"), "region": _nullable({"type": "string"}),
        "epoch": _nullable(_ref("Epoch")), "registration": _nullable(_ref("Registration")),
        "committee": _array(_ref("Observation")), "payouts": _array(_ref("Payout")),
        "payouts_error": _nullable({"type": "string"})}),
    "Evidence": _obj({
        "kind": {"type": "string"}, "epoch": _ref("Epoch"),
        "offender": _nullable(_ref("Key")), "first": _ref("Hex"), "second": _ref("Hex"),
        "recorded_at": {"type": "number"}}),
    "Status": _obj({
        "network_id": {"type": "string"}, "config_digest": _ref("Hash"),
        "identity": {"type": "string"}, "signing_key": _ref("Key"),
        "listen_addrs": _array({"type": "string"}),
        "epoch": {"type": "integer", "description": "negative before genesis"},
        "phase": {"enum": ["waiting_for_genesis", "probing", "collecting", "agreeing"]},
        "peers": _uint(2**32 - 1), "providers": _uint(2**32 - 1),
        "last_final_epoch": _nullable(_ref("Epoch")),
        "chain": _obj({"rpc_url": _nullable({"type": "string"}),
                       "pool": _nullable({"type": "string"}),
                       "last_posted_epoch": _nullable(_ref("Epoch")),
                       "last_error": _nullable({"type": "string"})},
                      required=("rpc_url", "last_posted_epoch", "last_error"), closed=False),
        "dropped": {"type": "object", "additionalProperties": _uint(U64_MAX),
                    "description": "refusals and drops by reason"},
        "excluded": {"type": "object", "additionalProperties": _array(_ref("Key")),
                     "description": "epoch -> validators left out as inconsistent"}},
        required=("network_id", "config_digest", "signing_key", "epoch", "phase",
                  "last_final_epoch", "chain"), closed=False),
    "Network": _obj({
        "network_id": {"type": "string"}, "genesis_time": {"type": "integer"},
        "epoch_seconds": _uint(2**32 - 1), "committee_size": _uint(2**32 - 1),
        "rewards": _obj({"throughput_cap_kbps": _uint(U64_MAX),
                         "uptime_exponent": _uint(2**32 - 1),
                         "latency_bound_us": _uint(U64_MAX),
                         "region_demand_milli": {"type": "object",
                                                 "additionalProperties": _uint(U64_MAX)}},
                        closed=False),
        "validators": _array(_obj({"name": {"type": "string"}, "signing_key": _ref("Key"),
                                   "identity": {"type": "string"},
                                   "region": {"type": "string"}},
                                  closed=False)),
        "n": _uint(2**32 - 1), "f": _uint(2**32 - 1), "threshold": _uint(2**32 - 1),
        "config_digest": _ref("Hash"),
        "pool": _nullable(_obj({"program_id": _ref("Key"), "pool": _ref("Key"),
                                "mint": _nullable(_ref("Key")),
                                "vault": _nullable(_ref("Key"))}))}, closed=False),
    "Health": _obj({  # validator.health.Health.to_json
        "ok": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "reasons": _array({"type": "string"}), "epoch": _nullable({"type": "integer"}),
        "last_final_epoch": _nullable(_ref("Epoch")),
        "validator_peers": _nullable(_uint(2**32 - 1)),
        "validator_peers_needed": _uint(2**32 - 1),
        "chain_failing_since": _nullable({"type": "number"})}, required=("ok",)),
}


@dataclass(frozen=True)
class Operation:
    """One GET route: what it answers with 200, which parameters it takes."""

    summary: str
    ok: Json  # the 200 response's schema (for ``media``)
    params: tuple[Json, ...] = ()
    media: tuple[str, ...] = ("application/json",)  # the 200's content types
    not_found: bool = True  # a 404 "nothing there" beyond the router's own
    extra: dict[str, Json] = field(default_factory=dict)  # more responses by status


def _path(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "at most this many items")
_BEFORE = _query("before", _ref("Epoch"), "only epochs below this one")
_EPOCH = _path("epoch", _ref("Epoch"), "a final epoch")

OPERATIONS: dict[str, Operation] = {
    "/": Operation("The dashboard: a read-only page over this API", {"type": "string"},
                   media=("text/html",), not_found=False),
    "/dashboard/{name}": Operation(
        "The dashboard's script, style sheet and icon", {"type": "string"},
        (_path("name", {"enum": list(dashboard.ASSETS)}, "file name"),),
        media=tuple(dict.fromkeys(dashboard.FILES[name].split(";")[0] for name in dashboard.ASSETS))),
    "/openapi.json": Operation("This document", {"type": "object"}, not_found=False),
    "/status": Operation("This node's live state", _ref("Status"), not_found=False),
    "/network": Operation("The network spec, its derived values and the pool's addresses",
                          _ref("Network"), not_found=False),
    "/healthz": Operation("Whether this node is doing its job: in sync, with peers, "
                          "posting, its store readable", _ref("Health"), not_found=False,
                          extra={"503": {"description": "not healthy (reasons in the body)",
                                         "content": {"application/json": {"schema": {
                                             "anyOf": [_ref("Error"), _ref("Health")]}}}}}),
    "/metrics": Operation("Prometheus metrics (OpenMetrics if the Accept header asks)",
                          {"type": "string"}, media=("text/plain", "application/openmetrics-text"),
                          not_found=False),
    "/epochs": Operation("Final epochs, newest first", _array(_ref("EpochSummary")),
                         (_LIMIT, _BEFORE), not_found=False),
    "/epochs/latest": Operation("The newest final report", _ref("EpochReport")),
    "/epochs/{epoch}": Operation("One final report", _ref("EpochReport"), (_EPOCH,)),
    "/epochs/{epoch}/proof/{provider}": Operation(
        "The merkle inclusion proof of a provider's record", _ref("Proof"),
        (_EPOCH, _path("provider", _ref("Key"), "provider key"))),
    "/epochs/{epoch}/claims/{payout}": Operation(
        "Every record of a final epoch paying one address, with what a claim sends",
        _array(_ref("Claim")), (_EPOCH, _path("payout", _ref("Key"), "payout address"))),
    "/providers": Operation(
        "The newest final report's records, by provider key", _array(_ref("ProviderSummary")),
        (_LIMIT, _query("after", _ref("Key"), "only keys after this one")), not_found=False),
    "/providers/{key}": Operation(
        "One provider: record, each committee member's measurement, registration, payouts",
        _ref("ProviderDetail"), (_path("key", _ref("Key"), "provider key"),)),
    "/evidence": Operation("Equivocation evidence, newest first", _array(_ref("Evidence")),
                           (_LIMIT, _BEFORE), not_found=False),
}


def _error(description: str) -> Json:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _operation_id(path: str) -> str:
    """``/epochs/{epoch}/proof/{provider}`` -> ``getEpochsEpochProofProvider``."""
    words = re.findall(r"[A-Za-z0-9]+", path.replace(".json", ""))
    return "get" + ("".join(w.title() for w in words) or "Dashboard")


def _operation(path: str, op: Operation) -> Json:
    responses: Json = {"200": {"description": "OK",
                               "content": {media: {"schema": op.ok} for media in op.media}}}
    if op.params:
        responses["400"] = _error("a malformed parameter")
    if op.not_found:
        responses["404"] = _error("nothing there")
    responses["503"] = _error("the store cannot be read now, or too many connections")
    responses.update(op.extra)
    body: Json = {"summary": op.summary, "operationId": _operation_id(path),
                  "responses": responses}
    if op.params:
        body["parameters"] = list(op.params)
    return body


def package_version() -> str:
    try:
        return metadata.version("bwpool-validator")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def document(version: str) -> Json:
    """The OpenAPI 3.1 document for an API of package version ``version``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "bwpool validator status API", "version": version,
                 "description": "Read-only. Keys base58, hashes and bytes lowercase hex. "
                                "Every refusal is {\"error\": ...}; HEAD answers as GET."},
        "paths": {path: {"get": _operation(path, op)} for path, op in OPERATIONS.items()},
        "components": {"schemas": SCHEMAS},
    }
