"""The image's HEALTHCHECK: exit 0 if the validator's status endpoint answers /healthz with 200.

Standard library only (no curl in the image). The validator is found through its config file:
$BWPOOL_CONFIG, else /var/lib/bwpool/config.toml (the image's default `join --config`);
a status endpoint bound to 0.0.0.0 or :: is asked on loopback.

    python healthcheck.py                      the validator of $BWPOOL_CONFIG
    python healthcheck.py --config FILE        another validator's config
    python healthcheck.py --rpc URL            a Solana JSON-RPC (getHealth), e.g. the local chain

Exit 0 healthy, 1 not (the reason on stderr).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/var/lib/bwpool/config.toml"
TIMEOUT = 5.0


def validator_url(config_path: str) -> str:
    with open(config_path, "rb") as fh:
        config = tomllib.load(fh)
    host = config.get("http_host", "127.0.0.1")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config['http_port']}/healthz"


def check_validator(config_path: str) -> str | None:
    url = validator_url(config_path)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:  # 503 with the reasons in the body
        return f"{url}: HTTP {exc.code} {exc.read(2000).decode(errors='replace')}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_rpc(url: str) -> str | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            answer = json.load(response)
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if answer.get("result") == "ok" else f"{url}: {answer}"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--rpc":
        problem = check_rpc(argv[1])
    elif len(argv) == 2 and argv[0] == "--config":
        problem = check_validator(argv[1])
    elif not argv:
        problem = check_validator(os.environ.get("BWPOOL_CONFIG") or DEFAULT_CONFIG)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:  # no config yet, or a bad one
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
