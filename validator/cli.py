"""The `validator` command: init, join, devnet, localchain, provide, probe, claim, pool.

User mistakes (bad config, missing key, port in use) print one line saying what is wrong and
how to fix it, and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Sequence

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the operator can fix; printed as one line."""


def _cmd_init(args: argparse.Namespace) -> int:
    from validator.setup import init_validator_dir

    entry = init_validator_dir(Path(args.data_dir), network=Path(args.network),
                               listen_host=args.listen_host, p2p_port=args.p2p_port,
                               http_host=args.http_host, http_port=args.http_port,
                               rpc_url=args.rpc_url, airdrop=args.airdrop)
    entry = {"name": args.name, **entry, "region": args.region, "lat": args.lat,
             "lon": args.lon}
    import tomli_w

    print(f"# created keys (mode 0600) and {Path(args.data_dir) / 'config.toml'}")
    print("# add this entry to the network spec's validator list:")
    print(tomli_w.dumps({"validators": [entry]}), end="")
    return 0


def _cmd_join(args: argparse.Namespace) -> int:
    import trio

    from validator.config import load_config
    from validator.logs import configure_logging
    from validator.node import Validator, load_keys
    from validator.spec import load_spec

    config = load_config(Path(args.config))
    if args.rpc_url:
        from dataclasses import replace

        config = replace(config, rpc_url=args.rpc_url)
    configure_logging(config.log_format)
    spec = load_spec(config.network)
    keys = load_keys(config)
    try:
        validator = Validator(config, spec, keys)
    except ValueError as exc:
        raise UsageError(f"{config.path}: {exc}") from None

    async def main() -> None:
        with trio.open_signal_receiver(2, 15) as signals:  # SIGINT, SIGTERM
            async with trio.open_nursery() as nursery:
                nursery.start_soon(validator.run)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


def _cmd_devnet(args: argparse.Namespace) -> int:
    from validator.devnet import DevnetOptions, run_devnet

    return run_devnet(DevnetOptions(args.validators, args.providers, args.epoch_seconds,
                                    args.base_port, Path(args.data_dir), args.reset))


def _cmd_localchain(args: argparse.Namespace) -> int:
    from validator.localchain import ProgramLoadError, parse_program_arg, run_localchain
    from validator.logs import configure_logging

    try:
        programs = [parse_program_arg(text) for text in args.program]
    except ProgramLoadError as exc:
        raise UsageError(str(exc)) from None
    configure_logging()
    try:
        run_localchain(args.host, args.port, ready=lambda url: print(url, flush=True),
                       programs=programs)
    except ProgramLoadError as exc:  # the ELF itself, checked as the chain starts
        raise UsageError(f"{exc}; rebuild it (make program) or check the path") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="validator",
                                     description="Bandwidth-pool validator network")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create keys (0600) and a config file")
    init.add_argument("--data-dir", required=True)
    init.add_argument("--network", default="network.toml",
                      help="path of the network spec the config points at")
    init.add_argument("--name", default="validator")
    init.add_argument("--region", default="eu-west")
    init.add_argument("--lat", type=float, default=0.0)
    init.add_argument("--lon", type=float, default=0.0)
    init.add_argument("--listen-host", default="127.0.0.1")
    init.add_argument("--p2p-port", type=int, default=7001)
    init.add_argument("--http-host", default="127.0.0.1",
                      help="the status endpoint's bind address (read-only)")
    init.add_argument("--http-port", type=int, default=8001)
    init.add_argument("--rpc-url", default="", help="Solana JSON-RPC (default: the spec's)")
    init.add_argument("--airdrop", action="store_true",
                      help="ask the cluster for fee lamports (local and test clusters)")
    init.set_defaults(handler=_cmd_init)

    join = sub.add_parser("join", help="run a validator")
    join.add_argument("--config", required=True)
    join.add_argument("--rpc-url", default="", help="use this Solana cluster instead")
    join.set_defaults(handler=_cmd_join)

    devnet = sub.add_parser("devnet", help="run a whole network on loopback")
    devnet.add_argument("--validators", type=int, default=4)
    devnet.add_argument("--providers", type=int, default=6)
    devnet.add_argument("--epoch-seconds", type=int, default=30)
    devnet.add_argument("--base-port", type=int, default=18900)
    devnet.add_argument("--data-dir", default="devnet-data")
    devnet.add_argument("--reset", action="store_true", help="wipe --data-dir first")
    devnet.set_defaults(handler=_cmd_devnet)

    chain = sub.add_parser("localchain", help="a local Solana JSON-RPC endpoint (LiteSVM)")
    chain.add_argument("--host", default="127.0.0.1")
    chain.add_argument("--port", type=int, default=8899)
    chain.add_argument("--program", action="append", default=[], metavar="PROGRAM_ID=PATH.so",
                       help="load this SBF program at genesis (repeatable), e.g. the pool program")
    chain.set_defaults(handler=_cmd_localchain)

    from validator.cli_pool import add_commands as add_pool_commands
    from validator.cli_provider import add_commands

    add_commands(sub)
    add_pool_commands(sub)
    return parser


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _user_mistake(exc: BaseException) -> str | None:
    """The one-line message for an operator's mistake, or None for a bug (re-raised)."""
    from p2p.abc import P2PError, PeerError
    from validator.devnet import DevnetError
    from validator.keys import KeyFileError
    from validator.spec import SpecError

    for leaf in _leaves(exc):
        if isinstance(leaf, (UsageError, SpecError, KeyFileError, DevnetError)):
            return str(leaf)
        if isinstance(leaf, P2PError) and not isinstance(leaf, PeerError):
            return f"{leaf} (is another process using that port?)"
        if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
            return f"{leaf.strerror or leaf}; choose another port or stop what uses it"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # noqa: BLE001 - sorted into user mistakes and bugs below
        message = _user_mistake(exc)
        if message is None:
            raise
        print(f"validator {args.command}: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    # `python -m validator.cli`: run the imported module's main, so that the UsageError the
    # subcommand modules raise (validator.cli.UsageError) is the class main() catches.
    from validator import cli as _cli  # noqa: PLW0406 - on purpose, see above

    sys.exit(_cli.main())
