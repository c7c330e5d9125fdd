"""trio <-> asyncio bridge: results, errors, cancellation both ways, background tasks, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from validator.bridge import BridgeError, open_asyncio_bridge


async def test_run_returns_results_from_the_asyncio_thread() -> None:
    with trio.fail_after(5):
        async with open_asyncio_bridge() as bridge:

            async def where(x: int) -> tuple[int, str, bool]:
                await asyncio.sleep(0)
                return x * 2, threading.current_thread().name, asyncio.get_running_loop() is bridge.loop

            assert await bridge.run(where, 21) == (42, "asyncio-bridge", True)
            assert await bridge.run_sync(lambda: threading.current_thread().name) == "asyncio-bridge"


async def test_exceptions_cross_unchanged() -> None:
    with trio.fail_after(5):
        async with open_asyncio_bridge() as bridge:

            async def boom() -> None:
                raise KeyError("from asyncio")

            with pytest.raises(KeyError, match="from asyncio"):
                await bridge.run(boom)
            with pytest.raises(TypeError):
                await bridge.run(len, "not a coroutine function")  # type: ignore[arg-type]


async def test_cancelling_the_trio_caller_cancels_and_awaits_the_asyncio_task() -> None:
    seen: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that must finish before run() returns
            seen.append("cleaned up")
            raise

    with trio.fail_after(5):
        async with open_asyncio_bridge() as bridge:
            with trio.move_on_after(0.1) as scope:
                await bridge.run(slow)
            assert scope.cancelled_caught
            assert seen == ["cleaned up"]


async def test_a_task_cancelled_on_the_asyncio_side_is_a_bridge_error() -> None:
    async def cancelled() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(1)

    with trio.fail_after(5):
        async with open_asyncio_bridge() as bridge:
            with pytest.raises(BridgeError):
                await bridge.run(cancelled)


async def test_background_tasks_stop_with_the_block_and_failures_propagate() -> None:
    ticks: list[int] = []
    stopped = threading.Event()

    async def ticker() -> None:
        try:
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    with trio.fail_after(5):
        async with open_asyncio_bridge() as bridge:
            bridge.start_soon(ticker)
            while len(ticks) < 3:
                await trio.sleep(0.01)
        assert stopped.is_set()
        with pytest.raises(BridgeError):
            await bridge.run(asyncio.sleep, 0)

        async def fails() -> None:
            raise RuntimeError("server died")

        with pytest.raises(ExceptionGroup) as group:
            async with open_asyncio_bridge() as bridge:
                bridge.start_soon(fails)
                await trio.sleep(5)  # cancelled by the failure
        assert group.group_contains(RuntimeError, match="server died")
