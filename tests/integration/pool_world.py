"""A funded pool on a real local chain, final reports in a real store, the real API over both.

`PoolWorld.build(tmp)` starts a `LocalChainThread` with the compiled pool program
(`programs/pool/pool.so`), creates a mint and a pool whose validator set is the spec's four
keys (the spec names the pool, so its config digest covers it), funds the vault, and keeps
a `Store` for final reports. `add_final(epoch, records)` writes a final report signed by
three of the four validators (threshold 3) chained to the previous one; `post(epoch)` sends
it to the pool (`pool_program.post_report_ixs`: Ed25519 check + post_report) so it is
accepted and reserves the epoch's budget. `serve_api()` runs `validator.api.make_app` on
its own asyncio loop in a thread, as the node does (DESIGN §10).

Chain calls are made with `asyncio.run` from the test's (synchronous) thread; the chain
and the API each run their own loop in their own thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from proofs import merkle
from proofs.report import Record, ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from tests.factories import make_spec
from validator import pool_client as pc
from validator import pool_program as pp
from validator.api import make_app, start_api
from validator.localchain import LocalChainThread
from validator.spec import NetworkSpec
from validator.store import Store, StoredFinal

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
POOL_ELF = (REPO / "programs" / "pool" / "pool.so").read_bytes()
SOL = 1_000_000_000
BUDGET = 1_000_003  # per accepted epoch: not a round number, so rounding down shows
SUPPLY = 10 * BUDGET
CLAIM_WINDOW = 4
SIGNERS = (0, 1, 2)  # threshold 3 of 4


async def airdrop(client: AsyncClient, to: Pubkey, lamports: int) -> None:
    before = (await client.get_balance(to, Confirmed)).value
    await client.request_airdrop(to, lamports, Confirmed)
    for _ in range(200):
        if (await client.get_balance(to, Confirmed)).value >= before + lamports:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"airdrop to {to} did not land")


def record(provider: bytes, payout: Pubkey, weight: int, flags: int = 0) -> Record:
    return Record(provider, bytes(payout), 9_900, 1_500, 60_000, 30_000, weight, flags)


def provider_key(name: str) -> bytes:
    return public_key(hashlib.sha256(b"provider/" + name.encode()).digest())


@dataclass
class PoolWorld:
    chain: LocalChainThread
    url: str
    program_id: Pubkey
    pool: Pubkey
    mint: Pubkey
    vault: Pubkey
    authority: Keypair
    spec: NetworkSpec
    seeds: list[bytes]
    store: Store
    db: Path
    finals: dict[int, StoredFinal] = field(default_factory=dict)
    records: dict[int, list[Record]] = field(default_factory=dict)

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    def build(cls, tmp: Path) -> PoolWorld:
        program_id, pool_kp, authority = Keypair().pubkey(), Keypair(), Keypair()
        chain = LocalChainThread(slot_ms=50, finality_slots=4, programs=[(program_id, POOL_ELF)])
        url = chain.__enter__()
        try:
            spec, seeds = make_spec(4)
            spec = replace(spec, rpc_url=url, pool_address=str(pool_kp.pubkey()),
                           pool_program_id=str(program_id))

            async def setup() -> Pubkey:
                async with AsyncClient(url, Confirmed, timeout=10) as client:
                    await airdrop(client, authority.pubkey(), 10 * SOL)
                    mint = await pc.create_mint(client, authority, 6)
                    await pc.init_pool(client, authority, program_id, mint, spec.config_digest,
                                       [v.signing_key for v in spec.validators], BUDGET, CLAIM_WINDOW,
                                       pool_keypair=pool_kp)
                    tokens = await pc.create_token_account(client, authority, mint, authority.pubkey())
                    await pc.mint_to(client, authority, mint, tokens, SUPPLY)
                    await pc.fund_pool(client, authority, tokens, program_id, pool_kp.pubkey(), SUPPLY)
                    return mint

            mint = asyncio.run(setup())
        except BaseException:
            chain.__exit__(None, None, None)
            raise
        db = tmp / "validator.sqlite"
        return cls(chain, url, program_id, pool_kp.pubkey(), mint, pp.vault_address(program_id, pool_kp.pubkey())[0],
                   authority, spec, seeds, Store(db), db)

    def close(self) -> None:
        self.store.close()
        self.chain.__exit__(None, None, None)

    def run(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncClient(self.url, Confirmed, timeout=10) as client:
                return await fn(client)

        return asyncio.run(main())

    # -- reports ----------------------------------------------------------------------------
    def add_final(self, epoch: int, records: Sequence[Record]) -> StoredFinal:
        ordered = sorted(records, key=lambda r: r.provider)
        raw = [r.to_bytes() for r in ordered]
        prev = self.finals[max(self.finals)].header_hash if self.finals else bytes(32)
        header = ReportHeader(self.spec.config_digest, epoch, merkle.root(raw), len(raw),
                              sum(r.weight for r in ordered), sha256(b"providers%d" % epoch), prev,
                              sha256(b"seed%d" % epoch)).to_bytes()
        header_hash = sha256(header)
        sigs = tuple(sorted((public_key(self.seeds[v]), sign_raw(self.seeds[v], header_hash)) for v in SIGNERS))
        final = StoredFinal(epoch, header, header_hash, sigs, tuple(raw), ())
        assert self.store.put_final(final)
        self.finals[epoch], self.records[epoch] = final, ordered
        return final

    def post(self, epoch: int) -> None:
        final = self.finals[epoch]
        vset = pp.set_address(self.program_id, self.pool, 0)[0]
        ixs = pp.post_report_ixs(self.program_id, self.pool, vset, self.vault, self.authority.pubkey(),
                                 final.header, list(final.signatures))
        self.run(lambda client: pc.send_and_confirm(client, self.authority, ixs))

    def report(self, epoch: int) -> pp.EpochReportState | None:
        final = self.finals[epoch]
        return self.run(lambda client: pc.read_report(client, self.program_id, self.pool, epoch, final.header_hash))

    def report_address(self, epoch: int) -> Pubkey:
        return pp.report_address(self.program_id, self.pool, epoch, self.finals[epoch].header_hash)

    def balance(self, owner: Pubkey) -> int | None:
        """The owner's associated token account balance by getTokenAccountBalance (None if
        there is no such account)."""
        ata = pc.associated_token_address(owner, self.mint)

        async def read(client: AsyncClient) -> int | None:
            if (await client.get_account_info(ata, Confirmed)).value is None:
                return None
            return await pc.token_balance(client, ata)

        return self.run(read)

    def expected(self, epoch: int, payout: Pubkey) -> int:
        """What the records of `payout` in `epoch` pay, by the program's rule."""
        final = self.finals[epoch]
        report = self.report(epoch)
        assert report is not None and report.accepted
        total = ReportHeader.from_bytes(final.header).total_weight
        return sum(pp.record_payout(report.reserved, r.to_bytes(), total)
                   for r in self.records[epoch] if r.payout == bytes(payout))

    def index_of(self, epoch: int, payout: Pubkey) -> list[int]:
        return [i for i, r in enumerate(self.records[epoch]) if r.payout == bytes(payout)]

    # -- the API ----------------------------------------------------------------------------
    def serve_api(self, **app_options: Any) -> ApiServer:
        return ApiServer(self.db, self.spec, app_options)


class ApiServer:
    """`validator.api` on its own asyncio loop in a thread; `.url`, `.get(path)`, `.stop()`."""

    def __init__(self, db: Path, spec: NetworkSpec, app_options: dict[str, Any]) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db, spec, app_options), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "API server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, db: Path, spec: NetworkSpec, app_options: dict[str, Any]) -> None:
        asyncio.set_event_loop(self._loop)
        app = make_app(db, spec, dict, **app_options)
        runner, self.port = self._loop.run_until_complete(start_api(app, "127.0.0.1", 0))
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
