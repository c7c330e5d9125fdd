"""A validator's state from the shell: ``join``'s data-directory checks (one process, one
network; ``--reset-state``) and ``validator slashing export`` / ``import``.

Every command here takes the data directory's lock first (``validator.datadir``), so an
export or import never runs beside the validator using that directory, and checks that the
state belongs to the spec's network. Mistakes print one line and exit 2.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58
import structlog

from validator.cli import UsageError
from validator.config import NodeConfig, load_config
from validator.datadir import (RESET_HINT, DataDirError, DataDirLock, check_network,
                               lock_data_dir)
from validator.keys import read_key
from validator.slashing_interchange import (InterchangeError, export_document, import_file,
                                            write_document)
from validator.spec import NetworkSpec, load_spec
from validator.store import Store


def add_join_options(join: argparse.ArgumentParser) -> None:
    join.add_argument("--reset-state", action="store_true",
                      help="if the data directory holds another network's state, move it "
                           "aside to state-<digest>-<time>/ and start afresh (default: refuse)")


def take_data_dir(config: NodeConfig, spec: NetworkSpec, *, reset: bool = False,
                  reset_hint: str = RESET_HINT) -> DataDirLock:
    """Lock ``config``'s data directory for this process and check its state is the spec's
    network's (moving it aside with ``reset``). Keep the returned lock while running."""
    try:
        lock = lock_data_dir(config.data_dir)
    except DataDirError as exc:
        raise UsageError(str(exc)) from None
    try:
        moved = check_network(config.db_path, spec.config_digest, spec_path=config.network,
                              config_path=config.path, reset=reset, reset_hint=reset_hint)
    except DataDirError as exc:
        lock.release()
        raise UsageError(str(exc)) from None
    if moved is not None:
        structlog.get_logger("validator").warning("state_moved_aside", to=str(moved))
    return lock


@dataclass
class _Opened:
    config: NodeConfig
    spec: NetworkSpec
    signing_key: bytes  # public
    store: Store
    lock: DataDirLock

    def close(self) -> None:
        self.store.close()
        self.lock.release()


def _open(config_path: str) -> _Opened:
    from proofs.signing import public_key

    config = load_config(Path(config_path))
    spec = load_spec(config.network)
    signing_key = public_key(read_key(config.signing_key))
    lock = take_data_dir(config, spec, reset_hint="move the old state aside first (`validator "
                         "join --reset-state` does, and then runs the validator)")
    store = Store(config.db_path)
    store.claim_network(spec.config_digest)  # checked just above, under the lock
    return _Opened(config, spec, signing_key, store, lock)


def _cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    opened = _open(args.config)
    try:
        document = export_document(opened.store, opened.signing_key,
                                   opened.spec.config_digest, opened.spec.network_id)
        write_document(out, document)
    except InterchangeError as exc:
        raise UsageError(str(exc)) from None
    finally:
        opened.close()
    rows = document["data"][0]["signed_headers"]
    span = f"epochs {rows[0]['epoch']}..{rows[-1]['epoch']}" if rows else "no epochs"
    print(f"wrote {len(rows)} signed headers ({span}) of signing key "
          f"{document['data'][0]['pubkey']} to {out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    opened = _open(args.config)
    try:
        result = import_file(opened.store, Path(args.file), signing_key=opened.signing_key,
                             config_digest=opened.spec.config_digest)
        floor = opened.store.slashing_floor()
    except InterchangeError as exc:
        raise UsageError(str(exc)) from None
    finally:
        opened.close()
    key = base58.b58encode(opened.signing_key).decode()
    line = (f"imported {result.added} signed headers of signing key {key} "
            f"({result.already} already stored")
    if result.conflicting:
        line += f", {result.conflicting} naming another header than the stored one, kept as stored"
    if result.other_keys:
        line += f"; {result.other_keys} entries of other keys left out"
    line += ")"
    if floor is not None:
        line += f"; from now on nothing is signed at or below epoch {floor} but those headers"
    print(line)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``slashing {export,import}``."""
    slashing = subparsers.add_parser(
        "slashing", help="export or import the slashing-protection history (JSON, as EIP-3076)")
    verbs = slashing.add_subparsers(dest="slashing_command", required=True)
    export = verbs.add_parser("export", help="write every header this validator signed to a "
                                             "JSON interchange file (stop the validator first)")
    export.add_argument("--config", required=True, help="the validator's config.toml")
    export.add_argument("--out", required=True, help="the file to write (never overwritten)")
    export.set_defaults(handler=_cmd_export)
    imp = verbs.add_parser("import", help="merge a JSON interchange file into this "
                                          "validator's history (stop the validator first)")
    imp.add_argument("file", help="an interchange file of this network and signing key")
    imp.add_argument("--config", required=True, help="the validator's config.toml")
    imp.set_defaults(handler=_cmd_import)
