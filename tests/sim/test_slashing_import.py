"""An imported slashing history in the running validator (issue 12, item 1): the real shells on
the memory network, in virtual time.

Run one: validator v0 signs epochs 0 and 2 but not 1 (it is down while epoch 1 is agreed).
Its history is exported. Run two replays the same spec and epochs with other providers and
other measurements (another seed), so every header differs from run one's, with v0 on a
fresh store holding only the imported history. v0 must sign none of epochs 0..2 (0 and 2
were signed elsewhere; 1 is a gap at or below the imported highest epoch, refused by the
store itself), the others still finalize them, and v0 signs again from epoch 3.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tests.sim.harness import open_sim
from validator.slashing_interchange import export_document, import_file, write_document
from validator.store import Store

TIMEOUT = 600  # virtual seconds
PROVIDERS = 6


async def test_an_imported_history_stops_the_node_signing_below_it(
        sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    first, second = sim_root / "first", sim_root / "second"
    history = sim_root / "history.json"
    with trio.fail_after(TIMEOUT):
        async with open_sim(first, n=4, providers=PROVIDERS, seed=1) as sim:
            spec = sim.spec
            await sim.check_epoch(0)
            await sim.sleep_until(spec.epoch_start(1) + spec.epoch_seconds / 2)
            sim.crash(0)
            await sim.wait_final(1, among=[1, 2, 3])
            await sim.restart(0)
            await sim.check_epoch(2)
            store = Store(sim.store_path(0))
            signed_first = store.signed_headers()
            write_document(history, export_document(store, sim.keys[0], spec.config_digest,
                                                    spec.network_id))
            store.close()
        assert sorted(signed_first) == [0, 2], signed_first

        (second / "v0").mkdir(parents=True)
        store = Store(second / "v0" / "validator.sqlite")
        store.claim_network(spec.config_digest)
        result = import_file(store, history, signing_key=sim.keys[0],
                             config_digest=spec.config_digest)
        store.close()
        assert (result.added, result.highest) == (2, 2)

        async with open_sim(second, n=4, providers=PROVIDERS, seed=2) as sim:
            assert sim.spec.config_digest == spec.config_digest
            for epoch in range(4):
                await sim.check_epoch(epoch, strict=False)
            v0 = sim.validator(0)
            for epoch in range(3):
                final = sim.stored_final(1, epoch)
                assert final is not None and final.header_hash != signed_first.get(epoch)
                assert sim.keys[0] not in {signer for signer, _ in final.signatures}
            assert v0.core.dropped["slashing_refused"] >= 1  # epoch 1: the store said no
            signed_second = v0.store.signed_headers()
    assert {e: h for e, h in signed_second.items() if e <= 2} == signed_first
    assert 3 in signed_second
