"""schemathesis against a live validator of a running devnet, from the validator's own
``/openapi.json``: every check it has (server errors, status codes, content types,
response schemas, negative-data rejection, ...), at least 1,000 generated requests.

The run is schemathesis's CLI in a child process; its HAR report is the record of every
request made. The test counts them and the 5xx among them itself, and validates every
JSON answer against the document again with jsonschema, apart from schemathesis's own
verdict, so neither a quiet CLI nor a lenient check can pass a bad answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema_rs

from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import EPOCH_SECONDS, devnet, posted_latest, wait_for

__all__ = ["devnet"]  # the fixture, shared with the end-to-end test

MIN_REQUESTS = 1_000
# Per operation, for the fuzzing phase; the examples and coverage phases add their own
# cases (boundaries, each parameter missing or of the wrong type, undeclared methods).
MAX_EXAMPLES = 150
SEED = 20261202  # fixed: a failure reproduces with the same cases
RUN_TIMEOUT = 240


def operation_matchers(doc: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """(regex over a request path, document path); concrete paths first, as OpenAPI says."""
    out = []
    for path in sorted(doc["paths"], key=lambda p: ("{" in p, p)):
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        out.append((re.compile(f"^{pattern}$"), path))
    return out


def response_schema(doc: dict[str, Any], path: str, status: int,
                    media: str) -> dict[str, Any] | None:
    responses = doc["paths"][path]["get"]["responses"]
    response = responses.get(str(status))
    if response is None:
        return None
    content = response["content"].get(media)
    return None if content is None else content["schema"]


def check_har(har: dict[str, Any],
              doc: dict[str, Any]) -> tuple[int, int, list[str], Counter[tuple[str, int]]]:
    """(requests, 5xx answers, schema violations, GETs by (document path, status)) over the
    run's HAR entries.

    A JSON answer to a GET must have a documented status and match that status's schema;
    answers to the methods the coverage phase tries on purpose (undeclared ones) must be
    405 with the error object.
    """
    matchers = operation_matchers(doc)
    validators: dict[str, jsonschema_rs.Validator] = {}
    requests = server_errors = 0
    violations: list[str] = []
    answered: Counter[tuple[str, int]] = Counter()
    for entry in har["log"]["entries"]:
        requests += 1
        request, response = entry["request"], entry["response"]
        status = response["status"]
        if status >= 500:
            server_errors += 1
        raw_path = re.sub(r"^[a-z]+://[^/]+", "", request["url"]).split("?", 1)[0]
        path = next((p for rx, p in matchers if rx.match(raw_path)), None)
        media = response["content"].get("mimeType", "").split(";")[0].strip()
        text = response["content"].get("text", "")
        what = f"{request['method']} {request['url'][:120]} -> {status}"
        if request["method"] == "GET":
            answered[(path or "(none)", status)] += 1
        if request["method"] not in ("GET", "HEAD"):
            schema = {"$ref": "#/components/schemas/Error"} if status == 405 else None
        elif path is None:
            schema = {"$ref": "#/components/schemas/Error"} if status == 404 else None
        else:
            schema = response_schema(doc, path, status, media)
        if schema is None:
            violations.append(f"{what}: status or type {media!r} not documented")
            continue
        if media != "application/json" or request["method"] == "HEAD":
            continue
        key = json.dumps(schema, sort_keys=True)
        if key not in validators:
            validators[key] = jsonschema_rs.Draft202012Validator(
                {**schema, "components": doc["components"]})
        try:
            body = json.loads(text)
        except ValueError:
            violations.append(f"{what}: not JSON")
            continue
        errors = [e.message for e in validators[key].iter_errors(body)]
        if errors:
            violations.append(f"{what}: {errors[:3]}")
    return requests, server_errors, violations, answered


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        devnet, tmp_path: Path) -> None:  # noqa: ANN001
    _, urls, _, _ = devnet
    url = urls[0]
    wait_for("a final report with records, posted on chain",
             lambda: (r := posted_latest(urls, min_epoch=1)) and r["records"] and r,
             timeout=8 * EPOCH_SECONDS)
    _, providers = get_json(url + "/providers")
    known = sorted({p["provider"] for p in providers} | {p["payout"] for p in providers})
    _, doc = get_json(url + "/openapi.json")

    har_path = tmp_path / "schemathesis.har"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
           "BWPOOL_KNOWN_KEYS": ",".join(known), "NO_COLOR": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
         "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
         "--phases", "examples,coverage,fuzzing", "--workers", "2",
         "--request-timeout", "10", "--suppress-health-check", "too_slow",
         "--report", "har", "--report-har-path", str(har_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr

    requests, server_errors, violations, answered = check_har(
        json.loads(har_path.read_text()), doc)
    print(f"schemathesis: {requests} requests in {seconds:.0f} s, {server_errors} 5xx, "
          f"{len(violations)} schema violations (ours), exit {run.returncode}; GET answers: "
          + ", ".join(f"{path} {status}: {n}" for (path, status), n in sorted(answered.items())))
    assert run.returncode == 0, output[-6000:]
    assert requests >= MIN_REQUESTS, output[-3000:]
    assert server_errors == 0
    assert violations == [], violations[:10]
    # The live network's keys reached the operations that need one to answer 200, so their
    # full answers were generated and checked too, not only their 404s.
    for path in ("/providers/{key}", "/epochs/{epoch}/proof/{provider}"):
        assert answered[(path, 200)] > 0, path
