"""``validator provide`` and ``validator probe``: the provider agent and a one-shot prober.

``provide`` prints its full multiaddr (with /p2p/<peer id>) as the first line of stdout, then
its provider key (base58, as the HTTP API names it) and the URL where a validator shows its
status (with ``--log-format json``: one JSON line ``provider_ready`` with all three), then
serves until SIGINT or SIGTERM and exits 0. It answers the spec's validators; ``--allow-probe
PEER_ID`` (repeatable) lets a probe key in too, and ``--public-probe-bytes N`` lets anyone
probe within N bytes per epoch in all. ``probe`` measures one provider once, as the key in
``--key`` (an ephemeral one without it), and prints a summary (or one JSON object with
``--json``). Operator mistakes print one line on stderr and exit 2; a provider that cannot be
reached exits 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import trio

from proofs import probe as wire
from proofs.errors import DecodeError
from proofs.report import flag_names
from validator.lifecycle import log, run_until_signal
from validator.logs import add_log_options, emit, emit_error
from validator.spec import NetworkSpec, ProbeParams, SpecError, load_spec

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
PROBE_LISTEN = "/ip4/127.0.0.1/tcp/0"  # the prober only dials out


class _Usage(Exception):
    """An operator mistake: printed as one line, exit 2."""


def add_commands(subparsers: Any) -> None:
    """Register ``provide`` and ``probe`` on the ``validator`` command's subparsers."""
    provide = subparsers.add_parser(
        "provide", help="run a provider agent that answers validators' probes")
    provide.add_argument("--network", required=True, help="network spec (TOML)")
    provide.add_argument("--key", required=True,
                         help="provider key file (hex seed, mode 0600; created if missing)")
    provide.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0",
                         help="libp2p listen multiaddr (control plane)")
    provide.add_argument("--data-host", default="127.0.0.1",
                         help="data-plane TCP host to bind, e.g. 0.0.0.0 (advertised too unless "
                              "--data-announce is given)")
    provide.add_argument("--data-announce", default="", metavar="HOST",
                         help="the data host the registration names, where validators connect, "
                              "e.g. this machine's public IP behind NAT (default: --data-host)")
    provide.add_argument("--announce", action="append", default=[], metavar="MULTIADDR",
                         help="the control multiaddr the registration names, e.g. "
                              "/ip4/203.0.113.20/tcp/7101; repeatable (default: what --listen "
                              "bound)")
    provide.add_argument("--data-port", type=int, default=0, help="data-plane TCP port (0: any)")
    provide.add_argument("--payout", default=None,
                         help="base58 Solana payout address (default: the provider key)")
    provide.add_argument("--region", default="",
                         help="region label, as in the spec's rewards.region_demand_milli "
                              "(default: none)")
    provide.add_argument("--lat", type=float, default=0.0, help="latitude, degrees")
    provide.add_argument("--lon", type=float, default=0.0, help="longitude, degrees")
    provide.add_argument("--auto-claim", action="store_true",
                         help="once per epoch, claim what the pool owes the payout address, the "
                              "provider key paying the fees (needs --validator; default: off)")
    provide.add_argument("--validator", default="", metavar="URL",
                         help="a validator's HTTP API, e.g. http://127.0.0.1:8001: where "
                              "--auto-claim reads its records, and the status URL printed at "
                              "start (default: none)")
    provide.add_argument("--rpc-url", default="", metavar="URL",
                         help="Solana JSON-RPC for --auto-claim (default: the rpc_url of the "
                              "validator's /network)")
    provide.add_argument("--allow-probe", action="append", default=[], metavar="PEER_ID",
                         help="a probe key (the peer id `validator probe --key FILE` prints) "
                              "that may probe this agent like a validator; repeatable "
                              "(default: validators only)")
    provide.add_argument("--public-probe-bytes", type=int, default=0, metavar="N",
                         help="let anyone else probe, within N bytes per epoch in all, one "
                              "session at a time (default: 0, off)")
    provide.add_argument("--status-file", default=None, metavar="PATH",
                         help="keep what the agent refused, by reason, in PATH as JSON, "
                              "rewritten every second (default: none)")
    add_log_options(provide)
    provide.set_defaults(handler=cmd_provide)

    probe = subparsers.add_parser("probe", help="probe one provider once and print the result")
    probe.add_argument("multiaddr", help="the provider's full multiaddr, with /p2p/<peer id>")
    probe.add_argument("--data", default=None,
                       help="HOST:PORT of its data plane (default: from its registration)")
    probe.add_argument("--network", default=None,
                       help="network spec (TOML): network id, epoch and probe parameters "
                            "(default: none; the provider's registration names its network)")
    probe.add_argument("--key", default=None, metavar="FILE",
                       help="probe key file (hex seed, mode 0600; created if missing): probe "
                            "as its peer id, which the provider lists with --allow-probe "
                            "(default: an ephemeral key, answered only by --public-probe-bytes)")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.set_defaults(handler=cmd_probe)

    from validator.cli_provider_status import add_commands as add_status_commands

    add_status_commands(subparsers)


def _usage(command: str, message: object, args: argparse.Namespace | None = None) -> int:
    if args is not None and getattr(args, "log_format", None) == "json":
        emit_error("usage_error", str(message), command=command)
    else:
        print(f"validator {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _operator_mistake(error: BaseException) -> str | None:
    """The one-line message for an operator mistake inside ``error`` (a group or not)."""
    from p2p.abc import P2PError, PeerError
    from validator.provider import ProviderConfigError

    for leaf in _leaves(error):
        if isinstance(leaf, (ProviderConfigError, SpecError, _Usage)):
            return str(leaf)
        if isinstance(leaf, P2PError) and not isinstance(leaf, PeerError):
            return f"{leaf}; check --listen"
        if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
            return (f"address already in use ({leaf.strerror}); choose another port in "
                    "--listen or stop the process using it")
    return None


def _configure_logging(args: argparse.Namespace) -> None:
    from validator.logs import configure_logging

    configure_logging(getattr(args, "log_format", "auto"), getattr(args, "log_level", "info"))


# -- provide -----------------------------------------------------------------------------------
def cmd_provide(args: argparse.Namespace) -> int:
    from validator.provider import ProviderConfigError, ProviderOptions, parse_payout

    try:
        if not 0 <= args.data_port <= 65535:
            raise _Usage(f"--data-port {args.data_port}: must be 0..65535")
        _check_auto_claim(args)
        allow_probe = tuple(_probe_peer_id(text) for text in args.allow_probe)
        if args.public_probe_bytes < 0:
            raise _Usage(f"--public-probe-bytes {args.public_probe_bytes}: must be >= 0 "
                         "(0: no public probes)")
        spec = load_spec(Path(args.network))
        options = ProviderOptions(key_path=Path(args.key), listen=args.listen,
                                  data_host=args.data_host, data_port=args.data_port,
                                  data_announce=args.data_announce,
                                  announce=tuple(args.announce),
                                  payout=args.payout, region=args.region, lat=args.lat,
                                  lon=args.lon, auto_claim=args.auto_claim,
                                  validator_url=args.validator, rpc_url=args.rpc_url,
                                  allow_probe=allow_probe,
                                  public_probe_bytes=args.public_probe_bytes,
                                  status_file=Path(args.status_file) if args.status_file
                                  else None)
        parse_payout(options.payout, bytes(32))  # fail before touching the network
        provider = _provider_key_b58(options.key_path)
    except (SpecError, ProviderConfigError, _Usage) as error:
        return _usage("provide", error, args)
    _configure_logging(args)
    import structlog

    structlog.contextvars.bind_contextvars(provider=provider)  # on every line from here on
    try:
        signal_name = trio.run(_provide, options, spec, provider)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK
    except BaseException as error:
        message = _operator_mistake(error)
        if message is None:
            raise
        return _usage("provide", message, args)
    log.info("stopped", signal=signal_name)
    return EXIT_OK


def _probe_peer_id(text: str) -> str:
    """An ``--allow-probe`` value: an ed25519 peer id (12D3KooW...)."""
    try:
        wire.public_key_from_peer_id(text)
    except DecodeError:
        raise _Usage(f"--allow-probe {text!r}: not an ed25519 peer id (12D3KooW...); copy the "
                     "one `validator probe --key FILE` prints as `prober`") from None
    return text


def _check_auto_claim(args: argparse.Namespace) -> None:
    """``--auto-claim`` needs ``--validator``; both URLs must be http(s) with a host."""
    from validator.cli_provider_status import is_http_url

    if args.auto_claim and not args.validator:
        raise _Usage("--auto-claim needs --validator URL, a validator's HTTP API "
                     "(e.g. http://127.0.0.1:8001)")
    if not args.auto_claim and args.rpc_url:
        raise _Usage("--rpc-url is used by --auto-claim only; add --auto-claim")
    for flag, text in (("--validator", args.validator), ("--rpc-url", args.rpc_url)):
        if text and not is_http_url(text):
            raise _Usage(f"{flag} {text!r}: expected an http(s) URL such as "
                         "http://127.0.0.1:8001")


def _provider_key_b58(path: Path) -> str:
    """The agent's key (the file is created if missing, as the agent does) in base58."""
    import base58

    from proofs.signing import public_key
    from validator.provider import load_or_create_key

    return base58.b58encode(public_key(load_or_create_key(path))).decode()


async def _provide(options: Any, spec: NetworkSpec, provider: str) -> str:
    """Serve until SIGINT or SIGTERM (returns its name); print the ready lines once serving."""
    from validator.provider import run_provider

    async def start(nursery: trio.Nursery) -> None:
        multiaddr = await nursery.start(run_provider, options, spec)
        _print_ready(multiaddr, provider, options.validator_url)

    return await run_until_signal(start)


def _print_ready(multiaddr: str, provider: str, validator_url: str) -> None:
    """The multiaddr first (scripts read that line), then the key and where to look it up."""
    if validator_url:
        status_url: str | None = f"{validator_url.rstrip('/')}/providers/{provider}"
        where, url = status_url, validator_url
    else:  # which validator to ask is the operator's choice: any of the network's
        status_url, url = None, "http://VALIDATOR:PORT"
        where = f"GET /providers/{provider} on any of the network's validators"
    check = f"validator provider status --validator {url} {provider}"
    emit("provider_ready",
         f"{multiaddr}\nprovider key  {provider}\nstatus        {where}\ncheck with    {check}",
         multiaddr=multiaddr, provider=provider, status_url=status_url, check=check)


# -- probe -------------------------------------------------------------------------------------
def _parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise _Usage(f"--data {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9000")
    return host, int(port)


def _provider_key(multiaddr: str) -> bytes:
    head, sep, peer_id = multiaddr.rpartition("/p2p/")
    if not multiaddr.startswith("/") or not sep or not head or "/" in peer_id:
        raise _Usage(f"{multiaddr!r}: expected a full multiaddr such as "
                     "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW... (the first line `validator "
                     "provide` prints)")
    try:
        return wire.public_key_from_peer_id(peer_id)
    except DecodeError:
        raise _Usage(f"{peer_id!r} is not an ed25519 peer id (12D3KooW...); copy the address "
                     "the provider printed") from None


def _probe_key(path: str | None) -> bytes:
    """The seed of ``--key`` (created if missing), or a fresh ephemeral one."""
    if path is None:
        return secrets.token_bytes(32)
    from validator.provider import load_or_create_key

    return load_or_create_key(Path(path))


def cmd_probe(args: argparse.Namespace) -> int:
    from validator.provider import ProviderConfigError

    try:
        provider = _provider_key(args.multiaddr)
        data = _parse_hostport(args.data) if args.data else None
        spec = load_spec(Path(args.network)) if args.network else None
        seed = _probe_key(args.key)
    except (SpecError, ProviderConfigError, _Usage) as error:
        return _usage("probe", error)
    _configure_logging(args)
    try:
        outcome = trio.run(_probe, args.multiaddr, provider, data, spec, seed)
    except BaseException as error:
        message = _operator_mistake(error)
        if message is None:
            raise
        return _usage("probe", message)
    if isinstance(outcome, str):
        print(f"validator probe: {outcome}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if "declined" in {problem.rsplit(":", 1)[-1] for problem in outcome.problems}:
        allow = (f"`validator provide ... --allow-probe {_peer_id(seed)}`" if args.key
                 else "`validator provide ... --allow-probe <the peer id of --key FILE>`")
        print(f"validator probe: the provider declined some probes: it answers its network's "
              f"validators, the probe keys it allows ({allow}) and, within "
              f"--public-probe-bytes, anyone", file=sys.stderr)
    if args.json:
        print(json.dumps({"heartbeat_ok": outcome.heartbeat_ok,
                          "rtt_median_us": outcome.rtt_median_us,
                          "rtt_min_us": outcome.rtt_min_us,
                          "down_kbps": outcome.down_kbps, "up_kbps": outcome.up_kbps,
                          "flags": flag_names(outcome.flags)}))
    else:
        print(_summary(args.multiaddr, outcome, _peer_id(seed)))
    return EXIT_OK


def _peer_id(seed: bytes) -> str:
    from proofs.signing import public_key

    return wire.peer_id_from_public_key(public_key(seed))


async def _probe(multiaddr: str, provider: bytes, data: tuple[str, int] | None,
                 spec: NetworkSpec | None, seed: bytes) -> Any:
    """The ProbeResult, or a one-line reason why the provider could not be probed.

    ``seed`` is both the libp2p identity and the key heartbeats are signed for: a provider
    signs a non-validator's heartbeat only for the caller's own key.
    """
    from p2p.host import open_libp2p_host
    from validator.data_policy import DataPolicy
    from validator.prober import (PEER_ERRORS, ProbeTarget, discover_target, drop_reason,
                                  probe_provider)

    params = spec.probes if spec is not None else ProbeParams()
    async with open_libp2p_host(seed, PROBE_LISTEN) as transport:
        try:
            target, registration = await discover_target(
                transport, multiaddr, data=data, timeout=params.heartbeat_timeout_seconds)
            network_id = registration.network_id
        except PEER_ERRORS as error:
            if data is None or spec is None:
                return (f"no signed registration from the provider ({drop_reason(error)}: "
                        f"{error}); pass --data HOST:PORT and --network FILE to probe anyway")
            target, network_id = ProbeTarget(provider, multiaddr, *data), spec.network_id
        if spec is not None and network_id != spec.network_id:
            return (f"the provider is registered on network {network_id!r}, not "
                    f"{spec.network_id!r}")
        epoch = max(0, spec.epoch_at(time.time())) if spec is not None else 0
        return await probe_provider(transport, target, network_id=network_id, epoch=epoch,
                                    validator_seed=seed, params=params,
                                    policy=DataPolicy.operator(explicit=data is not None))


def _summary(multiaddr: str, result: Any, prober: str) -> str:
    flags = ", ".join(flag_names(result.flags)) or "none"
    lines = [
        f"provider   {multiaddr}",
        f"prober     {prober}",
        f"heartbeat  {'ok' if result.heartbeat_ok else 'FAILED'}",
        f"rtt        median {result.rtt_median_us / 1000:.2f} ms, "
        f"min {result.rtt_min_us / 1000:.2f} ms",
        f"down       {result.down_kbps / 1000:.1f} Mbit/s",
        f"up         {result.up_kbps / 1000:.1f} Mbit/s",
        f"flags      {flags}",
    ]
    if result.problems:
        lines.append(f"problems   {', '.join(result.problems)}")
    return "\n".join(lines)
