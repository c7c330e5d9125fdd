"""One-shot set-up of a whole network in one data directory: what compose's `init` service runs.

It does, with the operator's own commands where there is one, what `validator devnet` does
on loopback, for processes that reach each other by address instead:

1. `validator init` for every validator (keys mode 0600 and config.toml in DATA/<name>/);
   a key for every provider (DATA/<name>/provider.key) and for the pool (DATA/pool/);
2. DATA/network.toml from the entries `validator init` printed, naming the pool
   (pool_address, pool_program_id), checked with the same loader the validators use;
3. once the chain answers: SOL for the pool authority and for each provider (their
   auto-claims pay fees), a mint, `validator pool init`, the vault funded with the whole
   supply, and a token account of the mint for each provider (DATA/pool/pool.json).

Run again, it keeps what exists: keys are never replaced, network.toml is written once, and
a pool that is already on the chain is left alone. A local chain keeps its state in memory:
if it was restarted after the validators had run, this refuses (exit 1) and says to start
over, because the validators' history would not match a new pool.

Usage (compose.yaml shows a full command line):

    python deploy/init_network.py --data-dir D --rpc-url http://chain:8899 \\
        --program-id ID --validator v0=HOST:P2P_PORT:HTTP_PORT ... --provider p0 ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import tomli_w

if TYPE_CHECKING:
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

EXIT_FAILED, EXIT_USAGE = 1, 2
DECIMALS_UNIT = 10**6  # the mint has 6 decimals (validator.pool_setup.DECIMALS)
# Distinct region labels (committees take one validator per region) with coordinates a few
# km apart: on one host every process is in the same place, and the light-speed location
# bound would rightly flag claims of other continents (as in validator/devnet.py).
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east", "af-south", "eu-north", "us-west")
LAT, LON = 48.85, 2.35


def validator_cli(*args: str) -> list[str]:
    """The `validator` command of the Python running this script (the image's, or a venv's)."""
    return [sys.executable, "-m", "validator.cli", *args]


def parse_validator(text: str) -> tuple[str, str, int, int]:
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=HOST:P2P_PORT:HTTP_PORT")
    return name, parts[0], int(parts[1]), int(parts[2])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC, as the validators reach it")
    p.add_argument("--program-id", required=True,
                   help="the id the chain loaded the pool program at (localchain --program ID=...)")
    p.add_argument("--validator", action="append", type=parse_validator, default=[],
                   metavar="NAME=HOST:P2P_PORT:HTTP_PORT",
                   help="one per validator; HOST is bound and is what the others dial")
    p.add_argument("--http-host", default="127.0.0.1",
                   help="where every validator binds its status endpoint (default: 127.0.0.1)")
    p.add_argument("--provider", action="append", default=[], metavar="NAME",
                   help="one per provider: its key goes to DATA/NAME/provider.key")
    p.add_argument("--network-id", default="", help="default: bwpool-compose-<unix time>")
    p.add_argument("--epoch-seconds", type=int, default=30)
    p.add_argument("--genesis-delay", type=int, default=20,
                   help="seconds from now to the first epoch (the validators must be up by then)")
    p.add_argument("--epoch-budget", type=int, default=1_000 * DECIMALS_UNIT,
                   help="token base units reserved per accepted epoch")
    p.add_argument("--supply", type=int, default=1_000_000 * DECIMALS_UNIT,
                   help="token base units minted into the vault")
    p.add_argument("--claim-window", type=int, default=4)
    p.add_argument("--chain-timeout", type=float, default=60.0)
    return p


def say(text: str) -> None:
    print(f"init: {text}", flush=True)


# -- keys and the spec ---------------------------------------------------------------------------
def write_network(args: argparse.Namespace) -> Path:
    from validator.keys import load_or_create_key
    from validator.spec import load_spec

    d: Path = args.data_dir.resolve()
    network = d / "network.toml"
    if network.exists():
        existing = load_spec(network)
        say(f"{network} exists (network {existing.network_id}, {existing.n} validators): keeping it")
        return network
    if not args.validator:
        raise SystemExit("init: at least one --validator is needed")
    entries = []
    for i, (name, host, p2p_port, http_port) in enumerate(args.validator):
        folder = d / name
        # A run interrupted before network.toml was written left a config.toml of ours; its
        # keys are kept (`validator init` never replaces a key), the config is written again.
        (folder / "config.toml").unlink(missing_ok=True)
        region = REGIONS[i % len(REGIONS)]
        out = subprocess.run(validator_cli(
            "init", "--data-dir", str(folder), "--network", str(network), "--name", name,
            "--region", region, "--lat", f"{LAT + 0.02 * i:.4f}", "--lon", f"{LON + 0.02 * i:.4f}",
            "--listen-host", host, "--p2p-port", str(p2p_port), "--http-host", args.http_host,
            "--http-port", str(http_port), "--airdrop"),
            check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
        entries.extend(tomllib.loads(out)["validators"])  # the entry `validator init` printed
        say(f"validator {name}: keys and {folder / 'config.toml'}")
    for name in args.provider:
        load_or_create_key(d / name / "provider.key")
    pool = {key: load_or_create_key(d / "pool" / f"{key}.key") for key in ("authority", "pool")}
    from solders.keypair import Keypair

    from validator.devnet import small_network_timing

    epoch = args.epoch_seconds
    n = len(entries)
    spec = {
        "network_id": args.network_id or f"bwpool-compose-{int(time.time())}",
        "genesis_time": int(time.time()) + args.genesis_delay,
        **small_network_timing(epoch, n),
        "rpc_url": args.rpc_url,
        "pool_address": str(Keypair.from_seed(pool["pool"]).pubkey()),
        "pool_program_id": args.program_id,
        "probes": {"heartbeat_timeout_seconds": 2.0, "echo_count": 5,
                   "throughput_seconds": 0.5, "warmup_fraction": 0.25},
        "validators": entries,
    }
    staged = network.with_suffix(".toml.new")
    staged.write_text(tomli_w.dumps(spec))
    load_spec(staged)  # the file we wrote must be one the validators accept
    os.replace(staged, network)  # written last and whole: its presence means stage 1 is done
    say(f"{network}: network {spec['network_id']}, {n} validators, {len(args.provider)} providers")
    return network


# -- the pool --------------------------------------------------------------------------------
def wait_chain(url: str, timeout: float) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).encode()
    deadline = time.time() + timeout
    while True:
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2) as response:
                if json.load(response).get("result") == "ok":
                    return
        except (OSError, ValueError):
            pass
        if time.time() > deadline:
            raise SystemExit(f"init: the chain at {url} did not answer getHealth within {timeout:g} s")
        time.sleep(0.5)


async def _fund_first(args: argparse.Namespace, authority: Keypair,
                      providers: list[Pubkey]) -> str:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed

    from validator.pool_client import create_mint
    from validator.pool_setup import LAMPORTS_PER_SOL, airdrop

    async with AsyncClient(args.rpc_url, commitment=Confirmed, timeout=10) as client:
        await airdrop(client, authority.pubkey(), 10 * LAMPORTS_PER_SOL)
        for payer in providers:  # auto-claims pay their own fees
            await airdrop(client, payer, LAMPORTS_PER_SOL)
        return str(await create_mint(client, authority, 6))


async def _fund_after(args: argparse.Namespace, authority: Keypair, mint: str, pool: str,
                      providers: list[Pubkey]) -> dict[str, str]:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solders.pubkey import Pubkey

    from validator.pool_client import create_token_account, fund_pool, mint_to

    mint_key, program = Pubkey.from_string(mint), Pubkey.from_string(args.program_id)
    async with AsyncClient(args.rpc_url, commitment=Confirmed, timeout=10) as client:
        tokens = await create_token_account(client, authority, mint_key, authority.pubkey())
        await mint_to(client, authority, mint_key, tokens, args.supply)
        await fund_pool(client, authority, tokens, program, Pubkey.from_string(pool), args.supply)
        return {str(p): str(await create_token_account(client, authority, mint_key, p))
                for p in dict.fromkeys(providers)}


async def _pool_exists(url: str, pool: str) -> bool:
    from solana.rpc.async_api import AsyncClient
    from solders.pubkey import Pubkey

    async with AsyncClient(url, timeout=10) as client:
        return (await client.get_account_info(Pubkey.from_string(pool))).value is not None


def set_up_pool(args: argparse.Namespace, network: Path) -> int:
    from solders.keypair import Keypair

    from validator.keys import read_key
    from validator.pool_program import vault_address
    from validator.spec import load_spec

    d: Path = args.data_dir.resolve()
    spec = load_spec(network)
    wait_chain(args.rpc_url, args.chain_timeout)
    if asyncio.run(_pool_exists(args.rpc_url, spec.pool_address)):
        say(f"pool {spec.pool_address} is on the chain already: nothing to do")
        return 0
    ran = [v.name for v in spec.validators if (d / v.name / "validator.sqlite").exists()]
    if ran:
        print(f"init: the chain has no pool {spec.pool_address} but validators {', '.join(ran)} "
              f"have run: the local chain lost its state (it lives in memory); start over with "
              f"`docker compose down -v` (removes the data volume) and `docker compose up`",
              file=sys.stderr)
        return EXIT_FAILED
    authority = Keypair.from_seed(read_key(d / "pool" / "authority.key"))
    providers = [Keypair.from_seed(read_key(d / name / "provider.key")).pubkey()
                 for name in args.provider]
    mint = asyncio.run(_fund_first(args, authority, providers))
    say(f"mint {mint}; validator pool init")
    subprocess.run(validator_cli(
        "pool", "init", "--rpc-url", args.rpc_url, "--program-id", args.program_id,
        "--network", str(network), "--authority", str(d / "pool" / "authority.key"),
        "--mint", mint, "--epoch-budget", str(args.epoch_budget),
        "--claim-window", str(args.claim_window), "--pool-keypair", str(d / "pool" / "pool.key")),
        check=True, stdin=subprocess.DEVNULL)
    accounts = asyncio.run(_fund_after(args, authority, mint, spec.pool_address, providers))
    from solders.pubkey import Pubkey

    vault = vault_address(Pubkey.from_string(args.program_id), Pubkey.from_string(spec.pool_address))[0]
    info = {"program_id": args.program_id, "pool": spec.pool_address, "mint": mint,
            "vault": str(vault), "epoch_budget": args.epoch_budget, "supply": args.supply,
            "payout_accounts": accounts}
    (d / "pool" / "pool.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"pool {spec.pool_address} funded with {args.supply} base units; "
        f"{len(accounts)} provider token accounts; {d / 'pool' / 'pool.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        network = write_network(args)
        return set_up_pool(args, network)
    except subprocess.CalledProcessError as exc:
        print(f"init: {' '.join(exc.cmd[2:])} exited with {exc.returncode}: "
              f"{(exc.stderr or '').strip()}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one line for the operator's mistakes, a traceback for bugs
        from validator.keys import KeyFileError
        from validator.pool_client import PoolClientError
        from validator.spec import SpecError

        if isinstance(exc, (SpecError, KeyFileError, PoolClientError)):
            print(f"init: {exc}", file=sys.stderr)
            return EXIT_USAGE if not isinstance(exc, PoolClientError) else EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
