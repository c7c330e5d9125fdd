"""Creating a validator's folder: keys (0600) and config.toml. Used by `init` and `devnet`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import base58
import tomli_w

from p2p.host import peer_id_from_seed
from proofs.signing import public_key
from validator.keys import load_or_create_key


def init_validator_dir(folder: Path, *, network: Path, listen_host: str, p2p_port: int,
                       http_host: str, http_port: int, rpc_url: str = "",
                       airdrop: bool = False) -> dict[str, Any]:
    """Create keys (kept if present) and config.toml; return the spec entry of this validator
    (without name, region and coordinates, which the caller adds)."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_key(folder / "identity.key")
    signing = load_or_create_key(folder / "signing.key")
    load_or_create_key(folder / "payer.key")
    try:
        network_rel = str(network.resolve().relative_to(folder.resolve()))
    except ValueError:
        network_rel = str(network.resolve())
    if network.resolve().parent == folder.resolve().parent:
        network_rel = f"../{network.name}"
    config = {
        "network": network_rel, "data_dir": ".", "identity_key": "identity.key",
        "signing_key": "signing.key", "payer_key": "payer.key",
        "listen": f"/ip4/{listen_host}/tcp/{p2p_port}", "http_host": http_host,
        "http_port": http_port, "rpc_url": rpc_url, "airdrop": airdrop, "log_format": "auto",
    }
    (folder / "config.toml").write_text(tomli_w.dumps(config))
    peer = peer_id_from_seed(identity)
    return {"signing_key": base58.b58encode(public_key(signing)).decode(), "identity": peer,
            "addrs": [f"/ip4/{listen_host}/tcp/{p2p_port}/p2p/{peer}"]}
