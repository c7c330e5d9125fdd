"""`claim_all` and `validator claim` against a real local chain, a real pool and the real API.

A pool of the spec's four validator keys is funded; epochs 1 and 2 are final and posted
(`post_report` with three of the four signatures: accepted, each reserving the budget),
epoch 3 is final and not posted. The records come from the validators' real API over a real
SQLite store. Payout balances are read over JSON-RPC (getTokenAccountBalance) and must be
`payout(reserved, weight, total_weight)` summed over the address's records; a second round
pays nothing more. The API is not trusted: a tampered path, record or header is refused by
the chain (or finds no accepted report), named per epoch, and never pays.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from proofs.report import Flag
from tests.integration.pool_world import (
    REPO,
    SOL,
    ApiServer,
    PoolWorld,
    airdrop,
    provider_key,
    record,
)
from validator import keys
from validator.claims import (
    ALREADY_CLAIMED,
    FAILED,
    NOT_ACCEPTED,
    NOTHING_DUE,
    PAID,
    BadValidatorAnswer,
    ClaimResult,
    NoPool,
    ValidatorUnreachable,
    claim_all,
)

# one payout address per test, so that the tests do not depend on each other's claims
NAMES = ("alice", "bob", "carol", "fraud", "tamper", "cli", "json")
PAYERS = {name: Keypair() for name in NAMES}
PAYOUT = {name: kp.pubkey() for name, kp in PAYERS.items()}


def records(epoch: int) -> list:  # type: ignore[type-arg]
    out = [record(provider_key(f"alice{epoch}-1"), PAYOUT["alice"], 1_000 + epoch),
           record(provider_key(f"alice{epoch}-2"), PAYOUT["alice"], 777),
           record(provider_key("fraud"), PAYOUT["fraud"], 5_000, Flag.THROUGHPUT_FRAUD)]
    out += [record(provider_key(name), PAYOUT[name], 300 + 17 * i + epoch)
            for i, name in enumerate(("bob", "carol", "tamper", "cli", "json"))]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolWorld]:
    w = PoolWorld.build(tmp_path_factory.mktemp("claims"))
    for epoch in (1, 2, 3):
        w.add_final(epoch, records(epoch))
    w.post(1)
    w.post(2)

    async def fund(client: Any) -> None:
        for kp in PAYERS.values():
            await airdrop(client, kp.pubkey(), SOL)

    w.run(fund)
    yield w
    w.close()


@pytest.fixture(scope="module")
def api(world: PoolWorld) -> Iterator[ApiServer]:
    server = world.serve_api()
    yield server
    server.stop()


def claim(url: str, name: str, **options: Any) -> list[ClaimResult]:
    return asyncio.run(claim_all(url, PAYOUT[name], PAYERS[name], **options))


def by_status(results: list[ClaimResult]) -> dict[str, list[tuple[int, int | None]]]:
    out: dict[str, list[tuple[int, int | None]]] = {}
    for r in results:
        out.setdefault(r.status, []).append((r.epoch, r.index))
    return out


# -- the honest API ------------------------------------------------------------------------------
def test_claim_all_pays_every_record_once_and_the_chain_agrees(world: PoolWorld, api: ApiServer) -> None:
    assert world.balance(PAYOUT["alice"]) is None  # no token account yet: claim_all creates it
    settled: set[int] = set()
    first = claim(api.url, "alice", settled=settled)
    assert by_status(first) == {PAID: [(e, i) for e in (1, 2) for i in world.index_of(e, PAYOUT["alice"])],
                                NOT_ACCEPTED: [(3, i) for i in world.index_of(3, PAYOUT["alice"])]}
    owed = world.expected(1, PAYOUT["alice"]) + world.expected(2, PAYOUT["alice"])
    assert owed > 0 and sum(r.amount for r in first) == owed
    assert world.balance(PAYOUT["alice"]) == owed
    for r in first:
        if r.status == PAID:
            rec = world.records[r.epoch][r.index]  # type: ignore[index]
            report = world.report(r.epoch)
            assert report is not None
            assert (r.weight, r.total_weight, r.reserved) == (rec.weight, report.total_weight, report.reserved)
            assert r.signature is not None and r.error is None
    assert settled == {1, 2}  # epoch 3 may still be accepted

    again = claim(api.url, "alice")  # no memory: asks about every epoch, pays nothing
    assert by_status(again) == {ALREADY_CLAIMED: by_status(first)[PAID], NOT_ACCEPTED: by_status(first)[NOT_ACCEPTED]}
    assert sum(r.amount for r in again) == 0 and world.balance(PAYOUT["alice"]) == owed

    remembered = claim(api.url, "alice", settled=settled)  # with memory: only epoch 3 is asked about
    assert {r.epoch for r in remembered} == {3} and all(r.status == NOT_ACCEPTED for r in remembered)

    world.post(3)  # accepted now: the next round pays it
    third = claim(api.url, "alice", settled=settled)
    assert by_status(third) == {PAID: [(3, i) for i in world.index_of(3, PAYOUT["alice"])]}
    assert world.balance(PAYOUT["alice"]) == owed + world.expected(3, PAYOUT["alice"])
    assert settled == {1, 2, 3}
    report = world.report(3)
    assert report is not None and report.claimed_count == 2


def test_a_fraud_flagged_record_is_not_claimed_and_costs_nothing(world: PoolWorld, api: ApiServer) -> None:
    results = claim(api.url, "fraud")
    assert {r.status for r in results if r.epoch in (1, 2)} == {NOTHING_DUE}
    assert world.balance(PAYOUT["fraud"]) is None  # nothing owed: no token account was made


def test_another_payer_can_claim_for_an_address(world: PoolWorld, api: ApiServer) -> None:
    results = asyncio.run(claim_all(api.url, PAYOUT["carol"], PAYERS["bob"], rpc_url=world.url))
    paid = [r for r in results if r.status == PAID]
    assert {r.epoch for r in paid} >= {1, 2}
    assert world.balance(PAYOUT["carol"]) == sum(world.expected(r.epoch, PAYOUT["carol"]) for r in paid)


# -- an API that lies ------------------------------------------------------------------------------
class FakeApi:
    """An aiohttp app answering fixed JSON per path-and-query (404 otherwise)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def answer(request: web.Request) -> web.Response:
            if request.path_qs not in self.answers:
                return web.json_response({"error": "no such path"}, status=404)
            body = self.answers[request.path_qs]
            return web.Response(text=body if isinstance(body, str) else json.dumps(body),
                                content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def copy_of_api(api: ApiServer, payout: Pubkey, epochs: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    answers: dict[str, Any] = {"/network": api.get("/network")[1],
                               "/epochs?limit=100": [e for e in api.get("/epochs")[1] if e["epoch"] in epochs]}
    for epoch in epochs:
        answers[f"/epochs/{epoch}/claims/{payout}"] = api.get(f"/epochs/{epoch}/claims/{payout}")[1]
    return answers


def test_a_wrong_proof_fails_on_chain_with_the_programs_error_name(world: PoolWorld, api: ApiServer) -> None:
    payout = PAYOUT["tamper"]
    answers = copy_of_api(api, payout)
    entry1 = answers[f"/epochs/1/claims/{payout}"][0]
    entry1["path"][0] = "00" * 32  # a wrong sibling
    entry2 = answers[f"/epochs/2/claims/{payout}"][0]
    raw = bytearray.fromhex(entry2["record"])
    raw[78] ^= 0x40  # a bigger weight than the report's record
    entry2["record"] = raw.hex()
    before = world.report(1)
    fake = FakeApi(answers)
    try:
        results = claim(fake.url, "tamper")
    finally:
        fake.stop()
    assert [(r.epoch, r.status, r.error) for r in results] == [(1, FAILED, "WrongMerklePath"),
                                                               (2, FAILED, "WrongMerklePath")]
    assert world.balance(PAYOUT["tamper"]) == 0  # the token account was made, nothing was paid
    assert world.report(1) == before  # the tally did not move


def test_a_wrong_header_hash_finds_no_accepted_report(world: PoolWorld, api: ApiServer) -> None:
    payout = PAYOUT["tamper"]
    answers = copy_of_api(api, payout, (3,))
    answers[f"/epochs/3/claims/{payout}"][0]["header_sha256"] = "ab" * 32
    fake = FakeApi(answers)
    try:
        results = claim(fake.url, "tamper")
    finally:
        fake.stop()
    # epoch 3 is at or below the pool's last accepted epoch once test one posted it; either
    # way nothing is sent for a header the chain never accepted
    assert len(results) == 1 and results[0].status in (NOT_ACCEPTED, "unclaimable")
    assert results[0].amount == 0


def test_malformed_answers_are_named_errors(world: PoolWorld, api: ApiServer) -> None:
    payout = PAYOUT["tamper"]
    answers = copy_of_api(api, payout)
    answers[f"/epochs/1/claims/{payout}"] = [{"index": 0}]  # missing fields
    answers[f"/epochs/2/claims/{payout}"] = "not json {"
    fake = FakeApi(answers)
    try:
        results = claim(fake.url, "tamper")
        assert [(r.epoch, r.index, r.status) for r in results] == [(1, None, FAILED), (2, None, FAILED)]
        assert "missing 'record_count'" in (results[0].error or "")
        assert "not JSON" in (results[1].error or "")
        fake.answers["/network"] = {**answers["/network"], "pool": None}
        with pytest.raises(NoPool):
            claim(fake.url, "tamper")
        fake.answers["/network"] = {"pool": {"program_id": 5}, "rpc_url": ""}
        with pytest.raises(BadValidatorAnswer):
            claim(fake.url, "tamper")
    finally:
        fake.stop()
    with pytest.raises(ValidatorUnreachable):
        claim(fake.url, "tamper", http_timeout=2)


# -- the CLI -------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "validator.cli", *args], check=False, capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def solana_keygen_file(path: Path, kp: Keypair) -> Path:
    path.write_text(json.dumps(list(bytes(kp))))
    path.chmod(0o600)
    return path


def test_cli_claims_with_a_key_file_and_reports_per_epoch(world: PoolWorld, api: ApiServer,
                                                          tmp_path: Path) -> None:
    key = tmp_path / "cli.key"
    keys.write_key(key, bytes(PAYERS["cli"])[:32])  # our hex-seed format
    done = run_cli("claim", "--payout", str(key), "--validator", api.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    paid = [line for line in lines if ": paid " in line and line.startswith("epoch ")]
    assert len(paid) >= 2 and lines[-1].startswith("total: paid ")
    index = world.index_of(1, PAYOUT["cli"])[0]
    rec = world.records[1][index]
    report = world.report(1)
    assert report is not None
    assert (f"epoch 1: paid {world.expected(1, PAYOUT['cli'])} (record {index}, weight {rec.weight} of total "
            f"{report.total_weight}, reserved {report.reserved})") in lines
    balance = world.balance(PAYOUT["cli"])
    assert balance is not None and balance > 0 and f"total: paid {balance} " in lines[-1]

    again = run_cli("claim", "--payout", str(key), "--validator", api.url)
    assert again.returncode == 0 and "epoch 1: already claimed" in again.stdout
    assert again.stdout.splitlines()[-1].startswith("total: paid 0 ")


def test_cli_json_with_solana_keygen_payer_and_a_bare_address(world: PoolWorld, api: ApiServer,
                                                              tmp_path: Path) -> None:
    payer = solana_keygen_file(tmp_path / "payer.json", PAYERS["json"])
    done = run_cli("claim", "--payout", str(PAYOUT["json"]), "--payer", str(payer), "--validator", api.url,
                   "--rpc-url", world.url, "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert {(r["epoch"], r["status"]) for r in results if r["epoch"] in (1, 2)} == {(1, PAID), (2, PAID)}
    assert sum(r["amount"] for r in results) == world.balance(PAYOUT["json"])
    assert set(results[0]) == {"epoch", "index", "amount", "status", "error", "weight", "total_weight",
                               "reserved", "signature"}


def test_cli_exit_codes(world: PoolWorld, api: ApiServer, tmp_path: Path) -> None:
    bare = run_cli("claim", "--payout", str(PAYOUT["tamper"]), "--validator", api.url)
    assert bare.returncode == 2 and "--payer" in bare.stderr and "Traceback" not in bare.stderr
    missing = run_cli("claim", "--payout", str(tmp_path / "nope.key"), "--validator", api.url)
    assert missing.returncode == 2 and "neither a base58 address nor a key file" in missing.stderr
    loose = tmp_path / "loose.json"
    solana_keygen_file(loose, Keypair()).chmod(0o644)
    assert run_cli("claim", "--payout", str(loose), "--validator", api.url).returncode == 2
    bad_url = run_cli("claim", "--payout", str(solana_keygen_file(tmp_path / "k.json", Keypair())),
                      "--validator", "ftp://x")
    assert bad_url.returncode == 2 and "http(s) URL" in bad_url.stderr

    payout = PAYOUT["tamper"]
    answers = copy_of_api(api, payout, (1,))
    answers[f"/epochs/1/claims/{payout}"][0]["path"] = []
    fake = FakeApi(answers)
    try:
        key = solana_keygen_file(tmp_path / "tamper.json", PAYERS["tamper"])
        failed = run_cli("claim", "--payout", str(key), "--validator", fake.url)
    finally:
        fake.stop()
    assert failed.returncode == 1 and "epoch 1: FAILED (record" in failed.stdout
    assert "WrongMerklePath" in failed.stdout
    down = run_cli("claim", "--payout", str(key), "--validator", fake.url)
    assert down.returncode == 1 and "validator claim:" in down.stderr and "Traceback" not in down.stderr


# -- the provider agent's --auto-claim ---------------------------------------------------------------
async def test_provider_agent_auto_claims_with_its_own_key(world: PoolWorld, api: ApiServer,
                                                           tmp_path: Path) -> None:
    """`run_provider` with auto_claim: the first round runs at start, on the bridge, paid by
    the provider key (bob's seed), for the provider's payout address (bob's own key)."""
    import trio

    from validator.provider import ProviderOptions, run_provider

    key = tmp_path / "provider.key"
    keys.write_key(key, bytes(PAYERS["bob"])[:32])
    options = ProviderOptions(key, auto_claim=True, validator_url=api.url)
    def owed() -> int:  # chain reads run asyncio.run: off the trio thread
        return world.expected(1, PAYOUT["bob"]) + world.expected(2, PAYOUT["bob"])

    def balance() -> int:
        return world.balance(PAYOUT["bob"]) or 0

    with trio.fail_after(60):
        due = await trio.to_thread.run_sync(owed)
        assert due > 0 and await trio.to_thread.run_sync(balance) == 0
        async with trio.open_nursery() as nursery:
            await nursery.start(run_provider, options, world.spec)
            while await trio.to_thread.run_sync(balance) < due:
                await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        assert await trio.to_thread.run_sync(balance) >= due  # epoch 3 too, if test one posted it


class _Bridge:
    """Stands in for the asyncio bridge: runs nothing, answers or raises what it is given."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def run(self, fn: object) -> object:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def test_auto_claim_rounds_count_outcomes_and_never_raise(world: PoolWorld) -> None:
    from validator.provider import AutoClaimer

    claimer = AutoClaimer(world.spec, bytes(32), bytes(PAYOUT["carol"]), "http://127.0.0.1:1")
    await claimer.round(_Bridge(ValidatorUnreachable("http://127.0.0.1:1/network: refused")))
    await claimer.round(_Bridge(RuntimeError("a bug")))
    await claimer.round(_Bridge([ClaimResult(1, 0, 50, PAID), ClaimResult(2, 0, 0, FAILED, "WrongMerklePath"),
                                 ClaimResult(3, 1, 0, NOT_ACCEPTED)]))
    assert claimer.statistics() == {"rounds": 3, "rounds_failed": 2, "amount_paid": 50, PAID: 1, FAILED: 1,
                                    NOT_ACCEPTED: 1}
