"""``validator provider status``: what a validator says about one provider, for people.

Reads ``GET /providers/{key}`` from ``--validator URL`` and prints the provider's record in
the validator's newest final report, what each committee member measured, its registration
and its recent payouts (``--json``: the answer as the validator sent it). The key is the
base58 one ``validator provide`` prints, or ``--key-file`` the agent's key file (read, never
created).

Exit codes: 0 printed; 1 the validator could not be reached, does not know the provider
(404) or answered something else; 2 an operator mistake (a malformed key or URL, a key file
that cannot be read), one line each, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import base58

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMAND = "validator provider status"


class _Failed(Exception):
    """The validator could not say (exit 1); the message says what to check."""


class _Usage(Exception):
    """An operator mistake (exit 2)."""


def add_commands(subparsers: Any) -> None:
    """Register ``provider status`` on the ``validator`` command's subparsers."""
    provider = subparsers.add_parser("provider", help="a provider's own view: its status at "
                                                      "a validator")
    verbs = provider.add_subparsers(dest="provider_command", required=True)
    status = verbs.add_parser(
        "status", help="print what a validator measured and pays for one provider",
        description="Print a provider's record, committee measurements, registration and "
                    "payouts as one validator's HTTP API serves them (GET /providers/{key}).")
    status.add_argument("key", nargs="?", default=None,
                        help="the provider key in base58, as `validator provide` prints it "
                             "(default: the key of --key-file)")
    status.add_argument("--key-file", default=None, metavar="FILE",
                        help="the agent's key file (--key of `validator provide`), read only "
                             "(default: none; give KEY or this)")
    status.add_argument("--validator", required=True, metavar="URL",
                        help="a validator's HTTP API, e.g. http://127.0.0.1:8001")
    status.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the validator's answer")
    status.add_argument("--json", action="store_true",
                        help="print the validator's JSON answer as it is")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        key = _provider_key(args.key, args.key_file)
        base = _validator_url(args.validator)
        if not args.timeout > 0:
            raise _Usage(f"--timeout {args.timeout:g}: must be > 0")
    except _Usage as error:
        print(f"{COMMAND}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = fetch_status(base, key, args.timeout)
    except _Failed as error:
        print(f"{COMMAND}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(body, indent=2) if args.json else format_status(body, base))
    return EXIT_OK


def _provider_key(text: str | None, key_file: str | None) -> str:
    if (text is None) == (key_file is None):
        raise _Usage("give the provider key (base58, as `validator provide` prints it) or "
                     "--key-file FILE, not both and not neither")
    if key_file is not None:
        from proofs.signing import public_key
        from validator.keys import KeyFileError, read_key

        try:
            return base58.b58encode(public_key(read_key(Path(key_file)))).decode()
        except KeyFileError as error:
            raise _Usage(str(error)) from None
        except OSError as error:
            raise _Usage(f"--key-file {key_file}: cannot read it ({error.strerror})") from None
    assert text is not None
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise _Usage(f"{text!r} is not a base58 provider key (32 bytes); copy the one "
                     "`validator provide` prints as `provider key`")
    return text


def is_http_url(text: str) -> bool:
    """An http(s) URL with a host (what every ``--validator`` and ``--rpc-url`` must be)."""
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _validator_url(text: str) -> str:
    if not is_http_url(text):
        raise _Usage(f"--validator {text!r}: expected a validator's HTTP API URL such as "
                     "http://127.0.0.1:8001")
    return text.rstrip("/")


def fetch_status(base: str, key: str, timeout: float) -> dict[str, Any]:
    """The validator's ``/providers/{key}`` answer; _Failed with what to check otherwise."""
    url = f"{base}/providers/{quote(key)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise _Failed(f"{base} does not know provider {key} (no registration, no "
                          "record): is its agent running (`validator provide`) with this "
                          "network's spec, and can it reach the validators? A new "
                          "registration takes a few seconds to arrive") from None
        raise _Failed(f"{url} answered HTTP {error.code}: {_error_text(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _Failed(f"cannot reach {base} ({reason}); is the validator running, and is "
                      "--validator its status URL (http_host:http_port of its config)?") from None
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("provider") != key:
        raise _Failed(f"{url} did not answer with a provider's status; is --validator a "
                      "validator's HTTP API?")
    return body


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
        return str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except (ValueError, OSError):
        return error.reason or "no reason given"


# -- for people --------------------------------------------------------------------------------
def format_status(body: dict[str, Any], base: str) -> str:
    """The answer of ``/providers/{key}`` as aligned lines (missing fields print as "?")."""
    lines = [f"provider      {body.get('provider')}", f"payout        {body.get('payout')}",
             f"validator     {base}"]
    reg = body.get("registration")
    if isinstance(reg, dict):
        lines.append(f"registered    {reg.get('multiaddr')}, data {reg.get('data_host')}:"
                     f"{reg.get('data_port')}, region {reg.get('region')} "
                     f"({reg.get('lat')}, {reg.get('lon')})")
    if body.get("epoch") is None:
        lines.append("record        none yet: validators measure a provider from the epoch "
                     "after its registration is in a final report (about two epochs)")
    else:
        lines += [
            f"epoch         {body['epoch']} (the validator's newest final report)",
            f"uptime        {_percent(body.get('uptime_bps'))}",
            f"rtt           {_ms(body.get('rtt_us'))}",
            f"throughput    down {_mbit(body.get('down_kbps'))}, up {_mbit(body.get('up_kbps'))}",
            f"weight        {body.get('weight')}",
            f"flags         {', '.join(body.get('flag_names') or []) or 'none'}",
        ]
    committee = body.get("committee") or []
    if committee:
        lines.append(f"committee     {len(committee)} validators measured it:")
        for member in committee:
            lines.append(
                f"  {member.get('name') or '?':<8} {member.get('validator')}  heartbeats "
                f"{member.get('heartbeats_ok')}/{member.get('heartbeats_sent')}, rtt "
                f"{_ms(member.get('rtt_median_us'))}, down {_mbit(member.get('down_kbps'))}, "
                f"up {_mbit(member.get('up_kbps'))}, flags "
                f"{', '.join(member.get('flag_names') or []) or 'none'}")
    payouts = body.get("payouts") or []
    if payouts:
        lines.append("payouts")
        for entry in payouts:
            amount = entry.get("amount")
            claimed = entry.get("claimed")
            lines.append(f"  epoch {entry.get('epoch')}: weight {entry.get('weight')}, amount "
                         f"{'not yet accepted on chain' if amount is None else amount}, "
                         f"{'claimed' if claimed else 'unclaimed' if claimed is False else '?'}")
    if body.get("payouts_error"):
        lines.append(f"payouts error {body['payouts_error']}")
    return "\n".join(lines)


def _percent(bps: Any) -> str:
    return f"{bps / 100:.2f}%" if isinstance(bps, int) else "?"


def _ms(us: Any) -> str:
    return f"{us / 1000:.2f} ms" if isinstance(us, int) else "?"


def _mbit(kbps: Any) -> str:
    return f"{kbps / 1000:.1f} Mbit/s" if isinstance(kbps, int) else "?"
