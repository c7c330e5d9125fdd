"""Fixtures shared by the chain tests: one local chain per test module (with the pool program
loaded at `POOL_PROGRAM_ID`), an asyncio bridge."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from validator.bridge import AsyncioBridge, open_asyncio_bridge
from validator.localchain import LocalChainThread

POOL_SO = Path(__file__).resolve().parents[2] / "programs" / "pool" / "pool.so"
POOL_PROGRAM_ID = Pubkey.from_bytes(hashlib.sha256(b"bwpool chain tests program").digest())


@pytest.fixture(scope="module")
def chain_url() -> Iterator[str]:
    """A local chain on 127.0.0.1:0 (50 ms slots) with `programs/pool/pool.so` loaded."""
    if not POOL_SO.exists():
        pytest.skip("programs/pool/pool.so is not built (make program)")
    with LocalChainThread(slot_ms=50, finality_slots=4,
                          programs=[(POOL_PROGRAM_ID, POOL_SO.read_bytes())]) as url:
        yield url


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    async with open_asyncio_bridge() as b:
        yield b
