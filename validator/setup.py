"""Creating a validator's folder: keys (0600) and config.toml. Used by `init` and `devnet`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import base58
import tomli_w

from p2p.host import peer_id_from_seed
from proofs.signing import public_key
from validator.keys import load_or_create_key


class ConfigExists(Exception):
    """config.toml is there already, and was not to be replaced."""


def init_validator_dir(folder: Path, *, network: Path, listen_host: str, p2p_port: int,
                       http_host: str, http_port: int, rpc_url: str = "",
                       airdrop: bool = False, replace_config: bool = True) -> dict[str, Any]:
    """Create keys (kept if present) and config.toml; return the spec entry of this validator
    (without name, region and coordinates, which the caller adds). ``network`` is a path as
    given (relative to the working directory); config.toml gets it relative to ``folder``.
    With ``replace_config=False`` an existing config.toml raises ConfigExists."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_key(folder / "identity.key")
    signing = load_or_create_key(folder / "signing.key")
    load_or_create_key(folder / "payer.key")
    # config.toml's paths are read relative to its own folder (validator.config), so the
    # config works from any working directory. A spec in the folder or beside it is named
    # relatively (the two move together), one elsewhere by its absolute path.
    spec_path, home = network.resolve(), folder.resolve()
    network_rel = (os.path.relpath(spec_path, home) if spec_path.is_relative_to(home.parent)
                   else str(spec_path))
    config = {
        "network": network_rel, "data_dir": ".", "identity_key": "identity.key",
        "signing_key": "signing.key", "payer_key": "payer.key",
        "listen": f"/ip4/{listen_host}/tcp/{p2p_port}", "http_host": http_host,
        "http_port": http_port, "rpc_url": rpc_url, "airdrop": airdrop, "log_format": "auto",
    }
    if replace_config:
        (folder / "config.toml").write_text(tomli_w.dumps(config))
    else:
        try:
            fd = os.open(folder / "config.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ConfigExists(f"{folder / 'config.toml'} already exists") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(tomli_w.dumps(config))
    peer = peer_id_from_seed(identity)
    return {"signing_key": base58.b58encode(public_key(signing)).decode(), "identity": peer,
            "addrs": [f"/ip4/{listen_host}/tcp/{p2p_port}/p2p/{peer}"]}
