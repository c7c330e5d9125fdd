"""The API's chain fields against a real local chain with the pool program and a real pool.

`/network` gains the pool (mint and vault read from the Pool account), `/epochs/{e}` the
on-chain tally of that report, `/providers/{key}` its payouts with claim bits, and
`/epochs/{e}/claims/{payout}` the records and merkle paths a claim needs. Epochs 1 and 2
are final and accepted on chain, epoch 3 is final but not posted. Chain trouble (a closed
port, an RPC that never answers) leaves the chain fields null with an error, never a 5xx.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import base58
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from proofs import merkle
from proofs.report import Flag, ReportHeader
from tests.integration.pool_world import (
    BUDGET,
    ApiServer,
    PoolWorld,
    provider_key,
    record,
)
from validator import pool_client as pc
from validator import pool_program as pp

PAY_A, PAY_B, PAY_C, NOBODY = (Keypair().pubkey() for _ in range(4))
PROVIDERS = {name: provider_key(name) for name in ("a1", "a2", "b", "c")}


def records(epoch: int) -> list:  # type: ignore[type-arg]
    return [record(PROVIDERS["a1"], PAY_A, 100 + epoch), record(PROVIDERS["a2"], PAY_A, 300),
            record(PROVIDERS["b"], PAY_B, 250 + 10 * epoch),
            record(PROVIDERS["c"], PAY_C, 400, Flag.THROUGHPUT_FRAUD)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolWorld]:
    w = PoolWorld.build(tmp_path_factory.mktemp("api-pool"))
    for epoch in (1, 2, 3):
        w.add_final(epoch, records(epoch))
    w.post(1)
    w.post(2)
    yield w
    w.close()


@pytest.fixture(scope="module")
def api(world: PoolWorld) -> Iterator[ApiServer]:
    server = world.serve_api()
    yield server
    server.stop()


def get(api: ApiServer, path: str) -> object:
    status, body = api.get(path)
    assert status == 200, (path, status, body)
    return body


def test_network_names_the_pool_with_mint_and_vault_from_chain(world: PoolWorld, api: ApiServer) -> None:
    body = get(api, "/network")
    assert isinstance(body, dict)
    assert body["pool"] == {"program_id": str(world.program_id), "pool": str(world.pool),
                            "mint": str(world.mint), "vault": str(world.vault)}
    assert body["pool_address"] == str(world.pool)  # the spec's own field is unchanged


def test_epoch_detail_carries_the_on_chain_tally(world: PoolWorld, api: ApiServer) -> None:
    for epoch in (1, 2):
        body = get(api, f"/epochs/{epoch}")
        assert isinstance(body, dict) and body["epoch"] == epoch
        assert body["pool"] == {"address": str(world.report_address(epoch)), "accepted": True,
                                "signatures_on_chain": 3, "threshold": 3, "reserved": BUDGET,
                                "claimed_total": 0, "claimed_count": 0, "error": None}
    latest = get(api, "/epochs/latest")
    assert isinstance(latest, dict) and latest["epoch"] == 3
    assert latest["pool"] == {"address": str(world.report_address(3)), "accepted": False,
                              "signatures_on_chain": 0, "threshold": 3, "reserved": 0,
                              "claimed_total": 0, "claimed_count": 0, "error": None}


def test_claims_endpoint_lists_every_record_of_a_payout_with_a_valid_path(world: PoolWorld,
                                                                        api: ApiServer) -> None:
    for epoch in (1, 2, 3):
        final = world.finals[epoch]
        header = ReportHeader.from_bytes(final.header)
        body = get(api, f"/epochs/{epoch}/claims/{PAY_A}")
        assert isinstance(body, list)
        assert [c["index"] for c in body] == world.index_of(epoch, PAY_A) and len(body) == 2
        for claim in body:
            assert set(claim) == {"index", "record", "path", "header_sha256", "record_count"}
            raw = bytes.fromhex(claim["record"])
            assert raw == final.records[claim["index"]] and raw[32:64] == bytes(PAY_A)
            assert claim["header_sha256"] == final.header_hash.hex()
            assert claim["record_count"] == header.record_count == 4
            path = [bytes.fromhex(h) for h in claim["path"]]
            assert path == merkle.proof(list(final.records), claim["index"])
            assert merkle.verify(header.records_root, raw, claim["index"], 4, path)
    assert get(api, f"/epochs/1/claims/{NOBODY}") == []


@pytest.mark.parametrize("path, status", [
    ("/epochs/9/claims/{a}", 404), ("/epochs/0/claims/{a}", 404),
    ("/epochs/1/claims/notanaddress", 400), ("/epochs/1/claims/" + "1" * 45, 400),
    ("/epochs/-1/claims/{a}", 400), ("/epochs/latest/claims/{a}", 400),
])
def test_claims_endpoint_refusals(api: ApiServer, path: str, status: int) -> None:
    got, body = api.get(path.format(a=PAY_A))
    assert got == status and isinstance(body, dict) and isinstance(body["error"], str)


def test_provider_payouts_follow_acceptance_and_claim_bits(world: PoolWorld, api: ApiServer) -> None:
    b = base58.b58encode(PROVIDERS["b"]).decode()

    def payouts() -> list:  # type: ignore[type-arg]
        body = get(api, f"/providers/{b}")
        assert isinstance(body, dict) and body["payouts_error"] is None
        return body["payouts"]  # type: ignore[no-any-return]

    def expected(epoch: int, claimed: bool) -> dict:  # type: ignore[type-arg]
        index = world.index_of(epoch, PAY_B)[0]
        weight = world.records[epoch][index].weight
        total = ReportHeader.from_bytes(world.finals[epoch].header).total_weight
        amount = pp.payout(BUDGET, weight, total) if epoch in (1, 2) else None
        return {"epoch": epoch, "index": index, "weight": weight, "amount": amount, "claimed": claimed}

    assert payouts() == [expected(3, False), expected(2, False), expected(1, False)]

    # claim b's epoch-2 record directly on chain; the API sees the bit and the tally
    index = world.index_of(2, PAY_B)[0]
    final = world.finals[2]

    async def claim(client: object) -> None:
        await pc.create_token_account(client, world.authority, world.mint, PAY_B)  # type: ignore[arg-type]
        ix = pp.claim_ix(world.program_id, world.pool, 2, final.header_hash, world.authority.pubkey(),
                         pc.associated_token_address(PAY_B, world.mint), world.vault, index,
                         final.records[index], merkle.proof(list(final.records), index))
        await pc.send_and_confirm(client, world.authority, [ix])  # type: ignore[arg-type]

    world.run(claim)
    assert payouts() == [expected(3, False), expected(2, True), expected(1, False)]
    tally = get(api, "/epochs/2")
    assert isinstance(tally, dict)
    amount = expected(2, True)["amount"]
    assert (tally["pool"]["claimed_total"], tally["pool"]["claimed_count"]) == (amount, 1)
    assert world.balance(PAY_B) == amount


def test_a_fraud_flagged_record_is_owed_nothing(world: PoolWorld, api: ApiServer) -> None:
    c = base58.b58encode(PROVIDERS["c"]).decode()
    body = get(api, f"/providers/{c}")
    assert isinstance(body, dict)
    assert [(p["epoch"], p["amount"], p["claimed"]) for p in body["payouts"]] == \
        [(3, None, False), (2, 0, False), (1, 0, False)]


# -- chain trouble ------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BlackHole:
    """A TCP port that accepts connections and never answers (an RPC that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.mark.parametrize("kind", ["closed", "hangs"])
def test_an_unusable_rpc_leaves_chain_fields_null_never_a_5xx(world: PoolWorld, kind: str) -> None:
    hole = BlackHole() if kind == "hangs" else None
    port = hole.port if hole is not None else _closed_port()
    server = world.serve_api(rpc_url=f"http://127.0.0.1:{port}", chain_timeout=0.5)
    try:
        started = time.monotonic()
        network = get(server, "/network")
        assert isinstance(network, dict)
        assert network["pool"] == {"program_id": str(world.program_id), "pool": str(world.pool),
                                   "mint": None, "vault": None}
        epoch = get(server, "/epochs/1")
        assert isinstance(epoch, dict)
        pool = epoch["pool"]
        assert pool["address"] == str(world.report_address(1)) and isinstance(pool["error"], str)
        assert all(pool[k] is None for k in ("accepted", "signatures_on_chain", "threshold", "reserved",
                                             "claimed_total", "claimed_count"))
        provider = get(server, f"/providers/{base58.b58encode(PROVIDERS['a1']).decode()}")
        assert isinstance(provider, dict) and isinstance(provider["payouts_error"], str)
        assert [(p["epoch"], p["amount"], p["claimed"]) for p in provider["payouts"]] == \
            [(3, None, None), (2, None, None), (1, None, None)]
        assert get(server, f"/epochs/1/claims/{PAY_A}") != []  # the store's half needs no chain
        assert time.monotonic() - started < 10  # three chain reads, each cut at 0.5 s
    finally:
        server.stop()
        if hole is not None:
            hole.close()


def test_mint_and_vault_are_cached_after_the_first_read(world: PoolWorld, tmp_path: Path) -> None:
    """Once read, /network keeps mint and vault even when the RPC goes away."""
    import asyncio

    from validator.api_pool import PoolReader

    async def scenario() -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
        reader = PoolReader(world.url, world.program_id, world.pool, timeout=0.5)
        first = await reader.pool_info()
        reader.rpc_url = f"http://127.0.0.1:{_closed_port()}"
        await reader.aclose()  # the next read would need a new client, to a dead port
        second = await reader.pool_info()
        epoch = await reader.epoch(1, world.finals[1].header_hash)
        await reader.aclose()
        return first, second, epoch

    first, second, epoch = asyncio.run(scenario())
    assert first == second and first["mint"] == str(world.mint) and first["vault"] == str(world.vault)
    assert isinstance(epoch["error"], str)  # the epoch read did try the (dead) chain


def test_pool_reader_without_rpc_url_reports_it() -> None:
    import asyncio

    from validator.api_pool import PoolReader

    reader = PoolReader("", Pubkey.default(), Pubkey.default())
    body = asyncio.run(reader.epoch(1, bytes(32)))
    assert body["accepted"] is None and "no RPC URL" in body["error"]
