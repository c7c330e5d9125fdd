"""A validator's folder and keys from the shell: ``validator init``, ``validator keys show`` and
``validator keys export-payer``.

``init`` creates the keys (kept if present) and config.toml, never over an existing config
unless ``--force``. Where the validator is (region, coordinates) goes into the network spec
and committees and location checks depend on it, so it is asked for, never defaulted: from
``--region --lat --lon``, or on the terminal when there is one. Mistakes print one line and
exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import base58

from validator.cli import UsageError
from validator.keys import KeyFileError, read_key, write_solana_keypair

LOCATION_FLAGS = (("region", "--region", "a region label, e.g. eu-west"),
                  ("lat", "--lat", "latitude in degrees, -90..90"),
                  ("lon", "--lon", "longitude in degrees, -180..180"))


# -- init ----------------------------------------------------------------------------------
def _coordinate(text: str, flag: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:  # NaN fails too
        raise UsageError(f"{flag} {text!r}: expected degrees in -{limit:g}..{limit:g}")
    return value


def ask_location(args: argparse.Namespace, *, interactive: bool,
                 ask: Callable[[str], str]) -> tuple[str, float, float]:
    """Region and coordinates from the flags; what is missing is asked with ``ask`` when
    ``interactive``, else refused naming the flags."""
    values: dict[str, str] = {name: str(getattr(args, name)) for name, _, _ in LOCATION_FLAGS
                              if getattr(args, name) is not None}
    missing = [(name, flag, what) for name, flag, what in LOCATION_FLAGS if name not in values]
    if missing and not interactive:
        flags = " ".join(flag for _, flag, _ in missing)
        raise UsageError(f"missing {flags} (and no terminal to ask on): where this validator "
                         f"is goes into the network spec, e.g. --region eu-west --lat 48.85 "
                         f"--lon 2.35")
    for name, flag, what in missing:
        values[name] = ask(f"{flag[2:]} ({what}): ").strip()
    region = values["region"]
    if not region or len(region) > 64 or not region.isprintable():
        raise UsageError(f"--region {region!r}: expected a short label such as eu-west")
    return (region, _coordinate(values["lat"], "--lat", 90),
            _coordinate(values["lon"], "--lon", 180))


def _ask_on_terminal(prompt: str) -> str:
    sys.stderr.write(prompt)  # stdout carries the spec entry, which may be redirected
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise UsageError("no answer on the terminal; pass --region, --lat and --lon")
    return line


def _cmd_init(args: argparse.Namespace) -> int:
    import tomli_w

    from validator.setup import ConfigExists, init_validator_dir

    folder = Path(args.data_dir)
    config_path = folder / "config.toml"
    if config_path.exists() and not args.force:
        raise UsageError(f"{config_path} already exists; pass --force to write it again (the "
                         f"keys are kept either way)")
    region, lat, lon = ask_location(args, interactive=sys.stdin.isatty(), ask=_ask_on_terminal)
    network = folder / args.network  # a relative --network is in the data directory
    try:
        entry = init_validator_dir(folder, network=network, listen_host=args.listen_host,
                                   p2p_port=args.p2p_port, http_host=args.http_host,
                                   http_port=args.http_port, rpc_url=args.rpc_url,
                                   airdrop=args.airdrop, replace_config=args.force)
    except ConfigExists as exc:
        raise UsageError(f"{exc}; pass --force to write it again") from None
    entry = {"name": args.name, **entry, "region": region, "lat": lat, "lon": lon}
    print(f"# created keys (mode 0600) and {config_path}; it reads the network spec from "
          f"{network.resolve()}")
    print("# add this entry to the network spec's validator list:")
    print(tomli_w.dumps({"validators": [entry]}), end="")
    return 0


def add_init(sub: Any) -> None:
    init = sub.add_parser("init", help="create keys (0600) and a config file")
    init.add_argument("--data-dir", required=True, help="the validator's folder (created)")
    init.add_argument("--network", default="network.toml",
                      help="the network spec config.toml names; a relative path is in "
                           "--data-dir (default: %(default)s)")
    init.add_argument("--name", default="validator", help="default: %(default)s")
    for _, flag, what in LOCATION_FLAGS:
        init.add_argument(flag, default=None, help=f"{what} (required; asked for on a terminal)")
    init.add_argument("--listen-host", default="127.0.0.1", help="default: %(default)s")
    init.add_argument("--p2p-port", type=int, default=7001, help="default: %(default)s")
    init.add_argument("--http-host", default="127.0.0.1",
                      help="the status endpoint's bind address (read-only; default: %(default)s)")
    init.add_argument("--http-port", type=int, default=8001, help="default: %(default)s")
    init.add_argument("--rpc-url", default="", help="Solana JSON-RPC (default: the spec's)")
    init.add_argument("--airdrop", action="store_true",
                      help="ask the cluster for fee lamports (local and test clusters)")
    init.add_argument("--force", action="store_true",
                      help="write config.toml even if one exists (keys are never replaced)")
    init.set_defaults(handler=_cmd_init)


# -- keys ----------------------------------------------------------------------------------
def key_summary(config_path: Path) -> dict[str, Any]:
    """What ``keys show`` prints: each public key with the file it comes from."""
    from p2p.host import peer_id_from_seed
    from proofs.signing import public_key
    from validator.config import load_config

    config = load_config(config_path)

    def b58(seed: bytes) -> str:
        return base58.b58encode(public_key(seed)).decode()

    return {
        "signing_key": {"public": b58(read_key(config.signing_key)),
                        "file": str(config.signing_key)},
        "peer_id": {"public": peer_id_from_seed(read_key(config.identity_key)),
                    "file": str(config.identity_key)},
        "payer": {"public": b58(read_key(config.payer_key)), "file": str(config.payer_key)},
        "config": str(config.path), "network": str(config.network),
        "state": str(config.db_path),
    }


def _cmd_show(args: argparse.Namespace) -> int:
    summary = key_summary(Path(args.config))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for name, label in (("signing_key", "signing key"), ("peer_id", "peer id"),
                        ("payer", "payer")):
        print(f"{label:<12} {summary[name]['public']:<53} {summary[name]['file']}")
    for name in ("config", "network", "state"):
        print(f"{name:<12} {summary[name]}")
    return 0


def _cmd_export_payer(args: argparse.Namespace) -> int:
    from validator.config import load_config

    config = load_config(Path(args.config))
    seed = read_key(config.payer_key)
    out = Path(args.out)
    try:
        write_solana_keypair(out, seed)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    from proofs.signing import public_key

    print(f"wrote the payer keypair {base58.b58encode(public_key(seed)).decode()} to {out} "
          f"(solana-keygen's format, mode 0600)")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``init`` and ``keys {show,export-payer}``."""
    add_init(sub)
    keys = sub.add_parser("keys", help="show this validator's keys, or export the payer's")
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    show = verbs.add_parser("show", help="signing key, libp2p peer id and payer address "
                                         "(base58), each with its file")
    show.add_argument("--config", required=True, help="the validator's config.toml")
    show.add_argument("--json", action="store_true", help="print JSON instead")
    show.set_defaults(handler=_cmd_show)
    export = verbs.add_parser("export-payer", help="write payer.key as a solana-keygen JSON "
                                                   "keypair (for the solana CLI and wallets)")
    export.add_argument("--config", required=True, help="the validator's config.toml")
    export.add_argument("--out", required=True, help="the file to write (mode 0600, never "
                                                     "overwritten)")
    export.set_defaults(handler=_cmd_export_payer)
