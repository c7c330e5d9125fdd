"""Fixtures shared by the chain tests: one local chain per test module, an asyncio bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from validator.bridge import AsyncioBridge, open_asyncio_bridge
from validator.localchain import LocalChainThread


@pytest.fixture(scope="module")
def chain_url() -> Iterator[str]:
    with LocalChainThread(slot_ms=50, finality_slots=4) as url:
        yield url


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    async with open_asyncio_bridge() as b:
        yield b
