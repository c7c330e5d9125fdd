"""The dashboard's files: a read-only page over the status API, shipped as package data.

``validator.api`` serves ``index.html`` at ``/`` and the rest at ``/dashboard/{name}``. No
build step: plain HTML, CSS and JavaScript, read once at start. The page reads only the
JSON endpoints of the node it came from, and ``HEADERS`` lets the browser load nothing from
anywhere else (no inline script or style, no frames, no form posts).
"""

from __future__ import annotations

from importlib import resources

INDEX = "index.html"
# name -> Content-Type; the names are also the only values /dashboard/{name} accepts
FILES = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
ASSETS = tuple(name for name in FILES if name != INDEX)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_files() -> dict[str, bytes]:
    """Every file of ``FILES`` by name; FileNotFoundError names one an install lacks."""
    folder = resources.files(__name__)
    return {name: folder.joinpath(name).read_bytes() for name in FILES}
