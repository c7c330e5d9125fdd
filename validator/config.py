"""A validator's own config file (config.toml): where its keys, data and ports are.

Relative paths are resolved against the config file's folder, so a data directory can be
moved as a whole.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validator.addresses import bind_announce_problem
from validator.spec import SpecError, _Fields

DEFAULT_HEALTH_CHAIN_ERROR_MINUTES = 10.0


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    network: Path
    data_dir: Path
    identity_key: Path
    signing_key: Path
    payer_key: Path
    listen: str
    http_host: str
    http_port: int
    rpc_url: str  # "" = the spec's rpc_url
    airdrop: bool  # ask the cluster for fee lamports (local chain and devnet clusters only)
    log_format: str  # "console" | "json" | "auto"
    # /healthz fails once chain errors have gone unanswered (no confirmed post) this long
    health_chain_error_minutes: float = DEFAULT_HEALTH_CHAIN_ERROR_MINUTES
    # What peers are told to dial (libp2p identify; the spec entry's addrs): the public
    # address behind NAT or a 0.0.0.0 `listen`. Empty: the addresses `listen` bound.
    announce: tuple[str, ...] = ()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "validator.sqlite"

    def to_dict(self) -> dict[str, Any]:
        base = self.path.parent
        def rel(p: Path) -> str:
            try:
                return str(p.relative_to(base))
            except ValueError:
                return str(p)
        return {"network": rel(self.network), "data_dir": rel(self.data_dir) or ".",
                "identity_key": rel(self.identity_key), "signing_key": rel(self.signing_key),
                "payer_key": rel(self.payer_key), "listen": self.listen,
                "http_host": self.http_host, "http_port": self.http_port,
                "rpc_url": self.rpc_url, "airdrop": self.airdrop, "log_format": self.log_format,
                "health_chain_error_minutes": self.health_chain_error_minutes,
                "announce": list(self.announce)}


def load_config(path: Path) -> NodeConfig:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such config file (create one with `validator init`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent
    f = _Fields(raw, "")
    try:
        def p(key: str, default: str) -> Path:
            return (base / f.get(key, str, default)).resolve()
        config = NodeConfig(
            path=path.resolve(), network=p("network", "network.toml"),
            data_dir=p("data_dir", "."), identity_key=p("identity_key", "identity.key"),
            signing_key=p("signing_key", "signing.key"), payer_key=p("payer_key", "payer.key"),
            listen=f.get("listen", str, "/ip4/127.0.0.1/tcp/0"),
            http_host=f.get("http_host", str, "127.0.0.1"),
            http_port=f.get("http_port", int, 0), rpc_url=f.get("rpc_url", str, ""),
            airdrop=f.get("airdrop", bool, False), log_format=f.get("log_format", str, "auto"),
            health_chain_error_minutes=f.positive("health_chain_error_minutes",
                                                  DEFAULT_HEALTH_CHAIN_ERROR_MINUTES),
            announce=_announce(f.get("announce", (list, str), [])))
        f.done()
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    if not 0 <= config.http_port <= 65535:
        raise SpecError(f"{path}: http_port must be 0..65535")
    if config.log_format not in ("console", "json", "auto"):
        raise SpecError(f"{path}: log_format must be console, json or auto")
    problem = announce_problem(config.listen, config.announce)
    if problem is not None:
        raise SpecError(f"{path}: {problem}")
    return config


def _announce(value: list[Any] | str) -> tuple[str, ...]:
    """`announce`: one multiaddr or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not all(isinstance(item, str) and item for item in items):
        raise SpecError("announce: expected a multiaddr or a list of multiaddrs")
    return tuple(items)


def announce_problem(listen: str, announce: tuple[str, ...], *, flags: bool = False) -> str | None:
    """Why this bind/announce pair cannot work, or None (``bind_announce_problem``), worded for
    config.toml's keys, or for ``join --listen/--announce`` with ``flags``."""
    names = ("--listen", "--announce") if flags else ("listen", "announce (--announce)")
    return bind_announce_problem(listen, announce, listen_name=names[0], announce_name=names[1],
                                 example="/ip4/203.0.113.5/tcp/7001")
