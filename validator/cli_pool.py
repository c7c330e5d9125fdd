"""``validator claim``, ``validator pool init`` and ``validator pool show``: the pool from a shell.

``claim`` pays a payout address every reward it is owed (``validator.claims.claim_all``) and
prints one line per record and a total (``--json``: a JSON list); it exits 0 when nothing
failed, 1 when a claim failed or the validator or chain could not be used. ``pool init``
creates the pool a network spec names; ``pool show`` prints a pool's state.

Operator mistakes (a bad address, a key file that is missing, malformed or readable by
others, a spec that does not name this pool) print one line saying what is wrong and how to
fix it, and exit 2 (``validator.cli.UsageError``). Trouble on the chain or at the validator
prints one line and exits 1.

Key files are either our format (a 32-byte ed25519 seed in hex, mode 0600:
``validator.keys``) or solana-keygen's (a JSON array of the 64 secret-key bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from validator import keys
from validator.cli import UsageError

EXIT_OK, EXIT_FAILED = 0, 1
U64_MAX = 2**64 - 1
_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_HEX32 = re.compile(r"[0-9a-fA-F]{64}")


def add_commands(subparsers: Any) -> None:
    """Register ``claim`` and ``pool {init,show}`` on the ``validator`` command's subparsers."""
    claim = subparsers.add_parser(
        "claim", help="claim every unclaimed reward of a payout address from the pool",
        description="Claim every unclaimed reward of a payout address from the pool. The "
                    "validator's API lists the records and merkle paths; the chain checks them.")
    claim.add_argument("--payout", required=True, metavar="KEY_OR_FILE",
                       help="the payout address (base58), or a key file whose public key it is")
    claim.add_argument("--validator", required=True, metavar="URL",
                       help="a validator's HTTP API, e.g. http://127.0.0.1:8001")
    claim.add_argument("--rpc-url", default="", metavar="URL",
                       help="Solana JSON-RPC (default: the rpc_url of the validator's /network)")
    claim.add_argument("--payer", default=None, metavar="KEYFILE",
                       help="fee payer key file (default: --payout, when it is a key file)")
    claim.add_argument("--json", action="store_true", help="print a JSON list of the outcomes")
    claim.set_defaults(handler=cmd_claim)

    pool = subparsers.add_parser("pool", help="create or inspect the on-chain pool")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)

    init = pool_sub.add_parser(
        "init", help="create the pool the network spec names",
        description="Create the pool the network spec names. First generate the pool keypair "
                    "(solana-keygen new -o pool.json), put its address in the spec as "
                    "pool_address (with pool_program_id), then run this.")
    init.add_argument("--rpc-url", required=True, metavar="URL", help="Solana JSON-RPC")
    init.add_argument("--program-id", required=True, metavar="ID",
                      help="the pool program's id; must be the spec's pool_program_id")
    init.add_argument("--network", required=True, metavar="FILE", help="network spec (TOML)")
    init.add_argument("--authority", required=True, metavar="KEYFILE",
                      help="the pool's authority; pays the fees and the rent")
    init.add_argument("--mint", required=True, metavar="MINT", help="SPL Token mint the pool pays in")
    init.add_argument("--epoch-budget", required=True, type=int, metavar="N",
                      help="token base units reserved per accepted epoch")
    init.add_argument("--claim-window", required=True, type=int, metavar="N",
                      help="accepted epochs after which an epoch's unclaimed rest can be released (>= 1)")
    init.add_argument("--start-after", default="0" * 64, metavar="HASH",
                      help="hex sha256 of the last final header before the pool starts "
                           "(default: 32 zero bytes, for a pool made before the first report)")
    init.add_argument("--pool-keypair", default=None, metavar="FILE",
                      help="the pool account's keypair; its address must be the spec's pool_address "
                           "(required)")
    init.set_defaults(handler=cmd_pool_init)

    show = pool_sub.add_parser("show", help="print a pool's state and its open reports")
    show.add_argument("--rpc-url", required=True, metavar="URL", help="Solana JSON-RPC")
    show.add_argument("--program-id", required=True, metavar="ID", help="the pool program's id")
    show.add_argument("--pool", required=True, metavar="ADDRESS", help="the pool's address")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=cmd_pool_show)


# -- operator input ----------------------------------------------------------------------------
def parse_address(text: str, what: str) -> Pubkey:
    """A base58 32-byte address in its canonical spelling; UsageError otherwise."""
    if _BASE58.fullmatch(text):
        try:
            key = Pubkey.from_string(text)
        except ValueError:
            pass
        else:
            if str(key) == text:
                return key
    raise UsageError(f"{what} {text!r}: not a base58 Solana address (32 bytes)")


def parse_url(text: str, what: str) -> str:
    """An http(s) URL with a host; UsageError otherwise."""
    try:
        parsed = urlparse(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{what} {text!r}: expected an http(s) URL such as http://127.0.0.1:8001")
    return text


def parse_u64(value: int, what: str, minimum: int = 0) -> int:
    if not minimum <= value <= U64_MAX:
        raise UsageError(f"{what} {value}: must be an integer {minimum}..{U64_MAX}")
    return value


def parse_hash(text: str, what: str) -> bytes:
    if not _HEX32.fullmatch(text):
        raise UsageError(f"{what} {text!r}: expected 64 hex characters (a sha256)")
    return bytes.fromhex(text)


def load_keypair(path: Path, what: str) -> Keypair:
    """A Solana keypair from a key file in either format ``validator.keys`` reads: our hex
    seed or solana-keygen's JSON array of 64 bytes (seed, then public key); mode 0600."""
    try:
        return Keypair.from_seed(keys.read_key(path))
    except keys.KeyFileError as exc:
        raise UsageError(f"{what} {exc}") from None


def payout_and_payer(payout_arg: str, payer_arg: str | None) -> tuple[Pubkey, Keypair]:
    """``--payout`` (an address or a key file) and the fee payer (``--payer``, else the
    payout key file). UsageError for a bare address without ``--payer``."""
    payout_key: Keypair | None = None
    if _BASE58.fullmatch(payout_arg) and not Path(payout_arg).exists():
        payout = parse_address(payout_arg, "--payout")
    else:
        path = Path(payout_arg)
        if not path.exists():
            raise UsageError(f"--payout {payout_arg!r}: neither a base58 address nor a key file")
        payout_key = load_keypair(path, "--payout")
        payout = payout_key.pubkey()
    if payer_arg is not None:
        return payout, load_keypair(Path(payer_arg), "--payer")
    if payout_key is None:
        raise UsageError("--payout is a bare address: pass --payer KEYFILE to pay the fees "
                         "(or give the payout key file as --payout)")
    return payout, payout_key


def _failure(command: str, message: object) -> int:
    print(f"validator {command}: {message}", file=sys.stderr)
    return EXIT_FAILED


# -- claim -------------------------------------------------------------------------------------
def cmd_claim(args: argparse.Namespace) -> int:
    from validator.claims import FAILED, ClaimsError, claim_all
    from validator.pool_client import PoolClientError

    validator_url = parse_url(args.validator, "--validator")
    rpc_url = parse_url(args.rpc_url, "--rpc-url") if args.rpc_url else None
    payout, payer = payout_and_payer(args.payout, args.payer)
    try:
        results = asyncio.run(claim_all(validator_url, payout, payer, rpc_url=rpc_url))
    except (ClaimsError, PoolClientError) as exc:
        return _failure("claim", exc)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results]))
    else:
        for line in claim_lines(payout, results):
            print(line)
    return EXIT_FAILED if any(r.status == FAILED for r in results) else EXIT_OK


def claim_lines(payout: Pubkey, results: Any) -> list[str]:
    """One line per outcome, then the total."""
    from validator.claims import (
        ALREADY_CLAIMED,
        FAILED,
        NOT_ACCEPTED,
        NOTHING_DUE,
        PAID,
        UNCLAIMABLE,
        summary,
    )

    lines = []
    for r in results:
        record = "" if r.index is None else f"record {r.index}"
        if r.status == PAID:
            lines.append(f"epoch {r.epoch}: paid {r.amount} ({record}, weight {r.weight} of total "
                         f"{r.total_weight}, reserved {r.reserved})")
        elif r.status == ALREADY_CLAIMED:
            lines.append(f"epoch {r.epoch}: already claimed ({record})")
        elif r.status == NOTHING_DUE:
            lines.append(f"epoch {r.epoch}: nothing due ({record}, weight {r.weight} of total "
                         f"{r.total_weight}); not claimed")
        elif r.status == NOT_ACCEPTED:
            lines.append(f"epoch {r.epoch}: not accepted on chain yet ({record}); claim later")
        elif r.status == UNCLAIMABLE:
            lines.append(f"epoch {r.epoch}: unclaimable ({record}): {r.error}")
        else:
            lines.append(f"epoch {r.epoch}: FAILED{' (' + record + ')' if record else ''}: {r.error}")
    counts = summary(results)
    lines.append(f"total: paid {counts['amount']} to {payout} in {counts[PAID]} claim(s); "
                 f"{counts[ALREADY_CLAIMED]} already claimed, {counts[NOT_ACCEPTED]} not accepted yet, "
                 f"{counts[FAILED]} failed")
    return lines


# -- pool init ---------------------------------------------------------------------------------
def cmd_pool_init(args: argparse.Namespace) -> int:
    from validator.pool_client import PoolClientError
    from validator.spec import load_spec

    rpc_url = parse_url(args.rpc_url, "--rpc-url")
    program_id = parse_address(args.program_id, "--program-id")
    spec = load_spec(Path(args.network))
    how = ("generate the pool keypair first (solana-keygen new -o pool.json), put its address in "
           "the spec as pool_address and the program id as pool_program_id, then run pool init")
    if not spec.pool_address:
        raise UsageError(f"{args.network} names no pool_address: {how}")
    if str(program_id) != spec.pool_program_id:
        raise UsageError(f"--program-id {program_id} is not the spec's pool_program_id "
                         f"{spec.pool_program_id}; use that one (the config digest covers it)")
    if args.pool_keypair is None:
        raise UsageError(f"--pool-keypair FILE is required (its address {spec.pool_address} is in "
                         f"the spec's config digest): {how}")
    pool_keypair = load_keypair(Path(args.pool_keypair), "--pool-keypair")
    if str(pool_keypair.pubkey()) != spec.pool_address:
        raise UsageError(f"--pool-keypair {args.pool_keypair} is {pool_keypair.pubkey()}, not the spec's "
                         f"pool_address {spec.pool_address}: {how}")
    authority = load_keypair(Path(args.authority), "--authority")
    mint = parse_address(args.mint, "--mint")
    budget = parse_u64(args.epoch_budget, "--epoch-budget")
    window = parse_u64(args.claim_window, "--claim-window", minimum=1)
    start_after = parse_hash(args.start_after, "--start-after")
    try:
        pool, vset, vault = asyncio.run(_init(rpc_url, program_id, spec, authority, mint, budget, window,
                                              start_after, pool_keypair))
    except PoolClientError as exc:
        return _failure("pool init", exc)
    print(f"pool   {pool}")
    print(f"set    {vset} (n={spec.n}, threshold={spec.threshold})")
    print(f"vault  {vault}")
    return EXIT_OK


async def _init(rpc_url: str, program_id: Pubkey, spec: Any, authority: Keypair, mint: Pubkey,
                budget: int, window: int, start_after: bytes,
                pool_keypair: Keypair) -> tuple[Pubkey, Pubkey, Pubkey]:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed

    from validator.pool_client import BadAccount, init_pool
    from validator.pool_program import TOKEN_PROGRAM_ID, set_address, vault_address
    from validator.pool_reads import fetch_accounts

    async with AsyncClient(rpc_url, Confirmed, timeout=10) as client:
        program, mint_acct, existing = await fetch_accounts(client, [program_id, mint, pool_keypair.pubkey()])
        if program is None or not program.executable:
            raise BadAccount(f"no program {program_id} on this chain (is the pool program deployed there?)")
        if mint_acct is None or mint_acct.owner != TOKEN_PROGRAM_ID:
            raise BadAccount(f"--mint {mint} is not an SPL Token mint on this chain")
        if existing is not None:
            raise BadAccount(f"the pool account {pool_keypair.pubkey()} already exists (owner "
                             f"{existing.owner}): this pool was initialized already")
        pool = await init_pool(client, authority, program_id, mint, spec.config_digest,
                               [v.signing_key for v in spec.validators], budget, window,
                               start_after, pool_keypair)
    return pool, set_address(program_id, pool, 0)[0], vault_address(program_id, pool)[0]


# -- pool show ---------------------------------------------------------------------------------
def cmd_pool_show(args: argparse.Namespace) -> int:
    from validator.pool_client import PoolClientError

    rpc_url = parse_url(args.rpc_url, "--rpc-url")
    program_id = parse_address(args.program_id, "--program-id")
    pool = parse_address(args.pool, "--pool")
    try:
        body = asyncio.run(pool_json(rpc_url, program_id, pool))
    except PoolClientError as exc:
        return _failure("pool show", exc)
    if args.json:
        print(json.dumps(body))
    else:
        print("\n".join(pool_lines(body)))
    return EXIT_OK


async def pool_json(rpc_url: str, program_id: Pubkey, pool: Pubkey) -> dict[str, Any]:
    """The pool, its set, its vault and its open reports, as JSON types (keys base58,
    hashes hex)."""
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed

    from validator.pool_client import read_pool, read_reports

    async with AsyncClient(rpc_url, Confirmed, timeout=10) as client:
        view = await read_pool(client, program_id, pool)
        reports = await read_reports(client, program_id, pool)
    s, vset = view.state, view.validator_set
    return {
        "pool": str(pool), "program_id": str(program_id), "authority": str(s.authority),
        "mint": str(s.mint), "vault": str(s.vault), "vault_balance": view.vault_amount,
        "unreserved": view.unreserved,
        "set": {"address": str(s.validator_set), "index": s.set_index, "n": vset.n, "f": vset.f,
                "threshold": vset.threshold, "keys_written": vset.keys_written,
                "config_digest": vset.config_digest.hex()},
        "epoch_budget": s.epoch_budget, "claim_window": s.claim_window,
        "accepted_count": s.accepted_count,
        "last_accepted_epoch": s.last_accepted_epoch if s.accepted_count else None,
        "last_header_hash": s.last_header_hash.hex(),
        "reserved_outstanding": s.reserved_outstanding, "total_paid": s.total_paid,
        "reports": [{"address": str(address), "epoch": r.epoch, "header_sha256": r.header_hash.hex(),
                     "accepted": r.accepted, "signatures_on_chain": r.signer_count,
                     "record_count": r.record_count, "total_weight": r.total_weight,
                     "reserved": r.reserved, "claimed_total": r.claimed_total,
                     "claimed_count": r.claimed_count}
                    for address, r in reports],
    }


def pool_lines(body: dict[str, Any]) -> list[str]:
    vset = body["set"]
    if body["last_accepted_epoch"] is None:
        last = f"none yet (the first report must follow header {body['last_header_hash']})"
    else:
        last = f"epoch {body['last_accepted_epoch']}, header {body['last_header_hash']}"
    lines = [
        f"pool          {body['pool']} (program {body['program_id']})",
        f"authority     {body['authority']}",
        f"mint          {body['mint']}",
        f"vault         {body['vault']}: balance {body['vault_balance']}, unreserved {body['unreserved']}",
        (f"set           {vset['address']} (index {vset['index']}): n={vset['n']}, "
         f"threshold={vset['threshold']}, keys {vset['keys_written']}/{vset['n']}, "
         f"digest {vset['config_digest']}"),
        f"epoch budget  {body['epoch_budget']}",
        f"claim window  {body['claim_window']} accepted epochs",
        f"last accepted {last}",
        f"reserved      {body['reserved_outstanding']}",
        f"total paid    {body['total_paid']}",
        (f"reports       {len(body['reports'])} open "
         f"({sum(r['accepted'] for r in body['reports'])} accepted)"),
    ]
    for r in body["reports"]:
        state = "accepted  " if r["accepted"] else "collecting"
        lines.append(f"  epoch {r['epoch']}: {state} signatures {r['signatures_on_chain']}, reserved "
                     f"{r['reserved']}, claimed {r['claimed_total']} in {r['claimed_count']} claim(s) "
                     f"of {r['record_count']} records  {r['address']}")
    return lines
