"""The OpenAPI document names exactly the routes the API registers, and is a valid 3.1
document; the dashboard ships as package data and puts no data into markup.

No server runs here: ``make_app`` builds the router without opening the store.
"""

from __future__ import annotations

import html.parser
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

import jsonschema_rs
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from tests.factories import make_spec
from validator import api, dashboard, openapi

ROOT = Path(__file__).resolve().parents[2]


def registered_paths(tmp_path: Path) -> set[str]:
    spec, _ = make_spec()
    app = api.make_app(tmp_path / "missing.sqlite", spec, lambda: {})
    paths = set()
    for route in app.router.routes():
        if route.method == "GET":
            paths.add(route.resource.canonical if route.resource else "")
    return paths


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    described = set(openapi.document("test")["paths"])
    registered = registered_paths(tmp_path)
    assert registered - described == set(), "routes missing from validator/openapi.py"
    assert described - registered == set(), "documented paths that no route serves"


def test_limits_in_the_document_are_the_apis() -> None:
    assert openapi.MAX_LIMIT == api.MAX_LIMIT
    assert openapi.I64_MAX == api.I64_MAX


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from refs(v)


def test_document_is_valid_openapi_31_with_resolvable_refs() -> None:
    doc = openapi.document("1.2.3")
    json.dumps(doc)  # plain JSON types only
    errors = [e.message for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(doc)]
    assert errors == []
    names = set(doc["components"]["schemas"])
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in names, ref
    for name, schema in doc["components"]["schemas"].items():
        # each one compiles as JSON Schema 2020-12, refs resolved against the document
        jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def test_every_operation_documents_its_errors() -> None:
    for path, item in openapi.document("x")["paths"].items():
        responses = item["get"]["responses"]
        assert "200" in responses and "503" in responses, path
        if "{" in path or item["get"].get("parameters"):
            assert "400" in responses or "404" in responses, path
        for status, response in responses.items():
            if status.startswith("4"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)


def test_error_schema_rejects_what_is_not_the_error_object() -> None:
    doc = openapi.document("x")
    validator = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/Error",
                                                    "components": doc["components"]})
    assert validator.is_valid({"error": "no such path"})
    assert not validator.is_valid({"error": "x", "detail": 1})
    assert not validator.is_valid({"message": "x"})


def test_dashboard_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["validator.dashboard"]
    assert sorted(shipped) == sorted(dashboard.FILES)
    files = dashboard.read_files()
    assert set(files) == set(dashboard.FILES) and all(files.values())


class _Markup(html.parser.HTMLParser):
    """Collects what a self-only CSP would block or what could carry script."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("src", "href") and value is not None:
                self.references.append(value)
        self._in_script = tag == "script"
        if tag == "style":
            self.problems.append("<style> element")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script")


def test_page_loads_only_same_origin_files_and_no_inline_code() -> None:
    parser = _Markup()
    parser.feed(dashboard.read_files()[dashboard.INDEX].decode())
    assert parser.problems == []
    for ref in parser.references:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert ref == "/openapi.json" or ref.removeprefix("/dashboard/") in dashboard.ASSETS, ref


@pytest.mark.parametrize("sink", ["innerHTML", "outerHTML", "insertAdjacentHTML",
                                  "document.write", "eval(", "new Function", "srcdoc"])
def test_script_never_turns_data_into_markup(sink: str) -> None:
    script = dashboard.read_files()["app.js"].decode()
    code = re.sub(r"//[^\n]*", "", script)  # comments may name what the code avoids
    assert sink not in code


def test_csp_allows_nothing_but_this_origin() -> None:
    policy = dict(part.strip().split(" ", 1) for part in
                  dashboard.CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
