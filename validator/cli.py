"""The `validator` command: init, join, devnet, localchain, provide, probe, claim, pool.

User mistakes (bad config, missing key, port in use) print one line saying what is wrong and
how to fix it, and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from validator.config import NodeConfig

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the operator can fix; printed as one line."""


def _cmd_join(args: argparse.Namespace) -> int:
    import trio

    from validator.config import load_config
    from validator.lifecycle import run_until_signal, log
    from validator.logs import configure_logging
    from validator.node import Validator, load_keys
    from validator.spec import load_spec

    config = load_config(Path(args.config))
    if args.rpc_url:
        from dataclasses import replace

        config = replace(config, rpc_url=args.rpc_url)
    config = _bind_and_announce(config, args)
    configure_logging(args.log_format or config.log_format, args.log_level)
    spec = load_spec(config.network)
    keys = load_keys(config)
    from validator.cli_state import take_data_dir

    _lock = take_data_dir(config, spec, reset=args.reset_state)  # ours until the process ends
    try:
        validator = Validator(config, spec, keys)
    except ValueError as exc:
        raise UsageError(f"{config.path}: {exc}") from None

    async def start(nursery: trio.Nursery) -> None:
        nursery.start_soon(validator.run)

    signal_name = trio.run(run_until_signal, start)
    log.info("stopped", signal=signal_name)
    return 0


def _bind_and_announce(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    """`join --listen/--announce` replace the config's `listen` / `announce`."""
    from dataclasses import replace

    from validator.config import announce_problem

    if not args.listen and not args.announce:
        return config
    config = replace(config, listen=args.listen or config.listen,
                     announce=tuple(args.announce) if args.announce else config.announce)
    problem = announce_problem(config.listen, config.announce, flags=True)
    if problem is not None:
        raise UsageError(problem)
    return config


def _cmd_devnet(args: argparse.Namespace) -> int:
    from validator.devnet import DevnetOptions, run_devnet

    from validator.logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    return run_devnet(DevnetOptions(args.validators, args.providers, args.epoch_seconds,
                                    args.base_port, Path(args.data_dir), args.reset,
                                    log_format=args.log_format, log_level=args.log_level,
                                    max_new_providers=args.max_new_providers))


def _cmd_localchain(args: argparse.Namespace) -> int:
    import os
    import signal

    from validator.lifecycle import log, pending_signal
    from validator.localchain import ProgramLoadError, parse_program_arg, run_localchain
    from validator.logs import configure_logging, emit

    try:
        programs = [parse_program_arg(text) for text in args.program]
    except ProgramLoadError as exc:
        raise UsageError(str(exc)) from None
    configure_logging(args.log_format, args.log_level)
    def ready(url: str) -> None:
        emit("localchain_ready", url, url=url)
        if pending_signal() is not None:  # came during start-up: asyncio's handler has it now
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        run_localchain(args.host, args.port, programs=programs, ready=ready)
    except ProgramLoadError as exc:  # the ELF itself, checked as the chain starts
        raise UsageError(f"{exc}; rebuild it (make program) or check the path") from None
    log.info("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from validator.cli_help import Parser
    from validator.logs import add_log_options

    parser = Parser(prog="validator", description="Bandwidth-pool validator network")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    from validator.cli_keys import add_commands as add_key_commands  # init, keys
    from validator.cli_state import add_commands as add_state_commands, add_join_options

    add_key_commands(sub)

    join = sub.add_parser("join", help="run a validator")
    join.add_argument("--config", required=True, help="the validator's config.toml")
    join.add_argument("--rpc-url", default="",
                      help="post to this Solana cluster instead (default: the config's "
                           "rpc_url, else the spec's)")
    join.add_argument("--listen", default="", metavar="MULTIADDR",
                      help="libp2p bind address, e.g. /ip4/0.0.0.0/tcp/7001 (default: the "
                           "config's listen)")
    join.add_argument("--announce", action="append", default=[], metavar="MULTIADDR",
                      help="the address peers are told to dial, e.g. /ip4/203.0.113.5/tcp/7001; "
                           "repeatable; it belongs in this validator's spec addrs too (default: "
                           "the config's announce, else what --listen bound)")
    add_join_options(join)
    add_log_options(join, format_default="",
                    format_help="override the config's log_format (default: the config's)")
    join.set_defaults(handler=_cmd_join)

    devnet = sub.add_parser("devnet", help="run a whole network on loopback")
    devnet.add_argument("--validators", type=int, default=4, help="validator processes")
    devnet.add_argument("--providers", type=int, default=6, help="provider agent processes")
    devnet.add_argument("--epoch-seconds", type=int, default=30, help="epoch length (>= 10)")
    devnet.add_argument("--base-port", type=int, default=18900,
                        help="first of 1 + 2 x validators + 2 x providers consecutive ports")
    devnet.add_argument("--data-dir", default="devnet-data",
                        help="where the spec, keys, stores and logs go")
    devnet.add_argument("--reset", action="store_true", help="wipe --data-dir first")
    devnet.add_argument("--max-new-providers", type=int, default=None, metavar="N",
                        help="providers a validator admits from gossip per epoch (the spec's "
                             "[registration] max_new_per_epoch; default: the spec's default)")
    add_log_options(devnet, format_help="this supervisor's lines; its processes always log "
                                        "JSON lines to D/<name>/log.txt")
    devnet.set_defaults(handler=_cmd_devnet)

    chain = sub.add_parser("localchain", help="a local Solana JSON-RPC endpoint (LiteSVM)")
    chain.add_argument("--host", default="127.0.0.1", help="bind address")
    chain.add_argument("--port", type=int, default=8899, help="JSON-RPC port (0: any)")
    chain.add_argument("--program", action="append", default=[], metavar="PROGRAM_ID=PATH.so",
                       help="load this SBF program at genesis (repeatable), e.g. the pool program")
    add_log_options(chain)
    chain.set_defaults(handler=_cmd_localchain)

    from validator.cli_pool import add_commands as add_pool_commands
    from validator.cli_provider import add_commands

    add_commands(sub)
    add_pool_commands(sub)
    add_state_commands(sub)  # slashing
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bwpool-validator")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C or SIGTERM at any point ends a long-running command without a traceback, exit
    0 (``validator.lifecycle``); a bug is logged as one ``uncaught_exception`` line (JSON
    when not on a terminal) and exits 1."""
    from validator.lifecycle import defer_stop_signals, is_long_running
    from validator.logs import configure_logging

    if is_long_running(sys.argv[1:] if argv is None else argv):
        defer_stop_signals()
    try:
        configure_logging()  # until the command configures its own: a bug is logged too
        args = build_parser().parse_args(argv)
        try:
            return int(args.handler(args))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - sorted into user mistakes and bugs below
            message = _user_mistake(exc)
            if message is None:
                raise
            _print_usage_error(args, message)
            return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C in a short command (probe, claim, ...)
        return 130


def _print_usage_error(args: argparse.Namespace, message: str) -> None:
    """The one line: plain, or a JSON object under ``--log-format json``."""
    if getattr(args, "log_format", None) == "json":
        from validator.logs import emit_error

        emit_error("usage_error", message, command=args.command)
    else:
        print(f"validator {args.command}: {message}", file=sys.stderr)


if __name__ == "__main__":
    # `python -m validator.cli`: run the imported module's main, so that the UsageError the
    # subcommand modules raise (validator.cli.UsageError) is the class main() catches.
    from validator import cli as _cli  # noqa: PLW0406 - on purpose, see above

    sys.exit(_cli.main())
