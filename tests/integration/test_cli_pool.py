"""`validator pool init` then `validator pool show`, as subprocesses, against a real local chain
with the pool program loaded; and the operator mistakes `pool init` refuses with exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from tests.factories import make_spec
from tests.integration.pool_world import POOL_ELF, REPO, SOL, airdrop
from validator import keys
from validator import pool_client as pc
from validator import pool_program as pp
from validator.localchain import LocalChainThread
from validator.spec import load_spec

PROGRAM_ID = Keypair().pubkey()


@pytest.fixture(scope="module")
def chain() -> Iterator[str]:
    with LocalChainThread(slot_ms=50, finality_slots=4, programs=[(PROGRAM_ID, POOL_ELF)]) as url:
        yield url


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "validator.cli", *args], check=False, capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def keygen_file(path: Path, kp: Keypair) -> Path:
    path.write_text(json.dumps(list(bytes(kp))))
    path.chmod(0o600)
    return path


def setup(url: str, tmp: Path, n: int = 4) -> tuple[Path, Path, Path, Pubkey, Keypair]:
    """A network spec naming a fresh pool keypair, a funded authority (our key format), a mint."""
    pool_kp, authority = Keypair(), Keypair()
    spec, _ = make_spec(n)
    spec = replace(spec, rpc_url=url, pool_address=str(pool_kp.pubkey()), pool_program_id=str(PROGRAM_ID))
    network = tmp / "network.toml"
    network.write_text(tomli_w.dumps(spec.to_dict()))
    assert load_spec(network) == spec
    authority_file = tmp / "authority.key"
    keys.write_key(authority_file, bytes(authority)[:32])

    async def prepare() -> Pubkey:
        async with AsyncClient(url, Confirmed, timeout=10) as client:
            await airdrop(client, authority.pubkey(), 10 * SOL)
            return await pc.create_mint(client, authority, 6)

    mint = asyncio.run(prepare())
    return network, authority_file, keygen_file(tmp / "pool.json", pool_kp), mint, pool_kp


def init_args(url: str, network: Path, authority: Path, mint: Pubkey | str, *extra: str,
              program_id: Pubkey = PROGRAM_ID, window: str = "3") -> list[str]:
    return ["pool", "init", "--rpc-url", url, "--program-id", str(program_id), "--network", str(network),
            "--authority", str(authority), "--mint", str(mint), "--epoch-budget", "5000",
            "--claim-window", window, *extra]


def test_pool_init_then_show(chain: str, tmp_path: Path) -> None:
    network, authority, pool_file, mint, pool_kp = setup(chain, tmp_path)
    start = "ab" * 32
    done = run_cli(*init_args(chain, network, authority, mint, "--pool-keypair", str(pool_file),
                              "--start-after", start))
    assert done.returncode == 0, done.stderr
    pool = pool_kp.pubkey()
    vset = pp.set_address(PROGRAM_ID, pool, 0)[0]
    vault = pp.vault_address(PROGRAM_ID, pool)[0]
    assert done.stdout.splitlines() == [f"pool   {pool}", f"set    {vset} (n=4, threshold=3)",
                                        f"vault  {vault}"]

    shown = run_cli("pool", "show", "--rpc-url", chain, "--program-id", str(PROGRAM_ID), "--pool", str(pool),
                    "--json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    spec = load_spec(network)
    assert body["authority"] == str(Keypair.from_seed(keys.read_key(authority)).pubkey())
    assert (body["mint"], body["vault"], body["vault_balance"]) == (str(mint), str(vault), 0)
    assert body["set"] == {"address": str(vset), "index": 0, "n": 4, "f": 1, "threshold": 3, "keys_written": 4,
                           "config_digest": spec.config_digest.hex()}
    assert (body["epoch_budget"], body["claim_window"]) == (5000, 3)
    assert (body["last_accepted_epoch"], body["last_header_hash"]) == (None, start)
    assert (body["reserved_outstanding"], body["total_paid"], body["reports"]) == (0, 0, [])

    text = run_cli("pool", "show", "--rpc-url", chain, "--program-id", str(PROGRAM_ID), "--pool", str(pool))
    assert text.returncode == 0, text.stderr
    assert f"vault         {vault}: balance 0, unreserved 0" in text.stdout
    assert f"digest {spec.config_digest.hex()}" in text.stdout and "reports       0 open" in text.stdout

    twice = run_cli(*init_args(chain, network, authority, mint, "--pool-keypair", str(pool_file)))
    assert twice.returncode == 1 and "already exists" in twice.stderr and "Traceback" not in twice.stderr


def test_pool_init_refuses_what_does_not_match_the_spec(chain: str, tmp_path: Path) -> None:
    network, authority, pool_file, mint, _ = setup(chain, tmp_path)
    other = keygen_file(tmp_path / "other.json", Keypair())
    pool = ("--pool-keypair", str(pool_file))
    cases = {
        "required": init_args(chain, network, authority, mint),
        "is ": init_args(chain, network, authority, mint, "--pool-keypair", str(other)),
        "pool_program_id": init_args(chain, network, authority, mint, *pool, program_id=Keypair().pubkey()),
        "--claim-window": init_args(chain, network, authority, mint, *pool, window="0"),
        "64 hex": init_args(chain, network, authority, mint, *pool, "--start-after", "xyz"),
        "--mint": init_args(chain, network, authority, "nope", *pool),
        "--rpc-url": ["pool", "init", "--rpc-url", "localhost:8899", *init_args(chain, network, authority, mint,
                                                                               *pool)[4:]],
    }
    for needle, args in cases.items():
        done = run_cli(*args)
        assert done.returncode == 2, (needle, done.stdout, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr, (needle, done.stderr)
    no_pool = tmp_path / "nopool.toml"
    no_pool.write_text(tomli_w.dumps(make_spec(4)[0].to_dict()))
    done = run_cli(*init_args(chain, no_pool, authority, mint, "--pool-keypair", str(pool_file)))
    assert done.returncode == 2 and "generate the pool keypair first" in done.stderr
    wrong_mint = run_cli(*init_args(chain, network, authority, Keypair().pubkey(), "--pool-keypair",
                                    str(pool_file)))
    assert wrong_mint.returncode == 1 and "not an SPL Token mint" in wrong_mint.stderr


def test_pool_show_of_a_missing_pool_is_one_line(chain: str) -> None:
    done = run_cli("pool", "show", "--rpc-url", chain, "--program-id", str(PROGRAM_ID), "--pool",
                   str(Keypair().pubkey()))
    assert done.returncode == 1 and "does not exist" in done.stderr and len(done.stderr.splitlines()) == 1
