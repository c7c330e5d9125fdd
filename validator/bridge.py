"""The one bridge between trio and asyncio: an asyncio loop in a worker thread.

aiohttp (the status API) and solana-py (the chain poster) are asyncio libraries;
the validator is a trio program. Rather than mixing loops in one thread, a
dedicated thread runs an asyncio event loop and trio talks to it through
`AsyncioBridge`:

    async with open_asyncio_bridge() as bridge:
        result = await bridge.run(some_asyncio_coroutine_function, arg)
        bridge.start_soon(serve_forever_in_asyncio)   # lives until the block exits

Semantics:
- `run` awaits the coroutine's result in trio. Its exception is re-raised in
  trio unchanged. If the trio caller is cancelled, the asyncio task is
  cancelled and `run` waits (shielded) until that task has really finished, so
  nothing started through the bridge outlives its caller.
- `start_soon` runs the coroutine in the bridge's own trio nursery; an
  exception from it cancels the `async with` body and propagates, as any
  nursery child would. On exit the remaining background tasks are cancelled.
- Leaving the block stops the loop and joins the thread. Like a nursery, the
  block reports failures as an ExceptionGroup (trio's strict groups).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

T = TypeVar("T")

__all__ = ["AsyncioBridge", "BridgeError", "open_asyncio_bridge"]


class BridgeError(Exception):
    """The asyncio side went away: loop closed, or the task was cancelled there."""


class AsyncioBridge:
    """Handle to the asyncio loop thread; obtain one from `open_asyncio_bridge`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._nursery = nursery
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop (for `call_soon_threadsafe` hand-offs); do not block it."""
        return self._loop

    async def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `async_fn(*args)` as an asyncio task and await its result from trio."""
        if self._closed:
            raise BridgeError("the asyncio bridge is closed")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, Any] = {}

        def finished(_: object = None) -> None:  # asyncio thread
            token.run_sync_soon(done.set)

        def start() -> None:  # asyncio thread
            try:
                task = self._loop.create_task(_as_coroutine(async_fn, *args))
            except BaseException as exc:  # e.g. async_fn is not a coroutine function
                box["error"] = exc
                finished()
                return
            box["task"] = task
            task.add_done_callback(finished)

        def cancel() -> None:  # asyncio thread; runs after start() (FIFO)
            task = box.get("task")
            if task is not None:
                task.cancel()

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:
            raise BridgeError("the asyncio loop is closed") from None
        try:
            await done.wait()
        except trio.Cancelled:
            self._loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        if "error" in box:
            raise box["error"]
        task = box["task"]
        if task.cancelled():
            raise BridgeError(f"{getattr(async_fn, '__name__', async_fn)!s} was cancelled on the asyncio side")
        exc = task.exception()
        if exc is not None:
            raise exc
        result: T = task.result()
        return result

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function in the loop thread (to touch asyncio-owned objects)."""

        async def call() -> T:
            return fn(*args)

        return await self.run(call)

    def start_soon(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Run `async_fn(*args)` in asyncio for the lifetime of the bridge block."""

        async def background() -> None:
            await self.run(async_fn, *args)

        self._nursery.start_soon(background, name=name or getattr(async_fn, "__name__", None))


async def _as_coroutine(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await async_fn(*args)


def _loop_thread(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        # Anything still pending was started behind the bridge's back (library
        # internals); give it the usual asyncio shutdown.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


@asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[AsyncioBridge]:
    """Start the asyncio thread; stop it (cancelling what still runs) on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_loop_thread, args=(loop,), name="asyncio-bridge", daemon=True)
    thread.start()
    try:
        async with trio.open_nursery() as nursery:
            bridge = AsyncioBridge(loop, nursery)
            try:
                yield bridge
            finally:
                bridge._closed = True
                nursery.cancel_scope.cancel()  # background tasks end with the block
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
