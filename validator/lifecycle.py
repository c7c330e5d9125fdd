"""How the long-running commands (join, provide, localchain, devnet) stop: SIGINT (Ctrl-C)
and SIGTERM end them in order, exit code 0, no traceback, at any point of their life.

- ``defer_stop_signals`` (``validator.cli.main``, first thing, for those commands only):
  until the command installs its own handling, SIGINT and SIGTERM are only remembered.
  Raising ``KeyboardInterrupt`` during start-up is not safe: an import that catches
  everything (some libraries do) swallows it, and the process then serves forever. Each
  command looks at ``pending_signal()`` once its own handling is in place and stops at once.
  Other commands (probe, claim, pool, ...) keep Python's defaults.
- ``run_until_signal``: a trio nursery that runs what ``start`` starts until SIGINT or
  SIGTERM arrives (or had arrived), logs ``stopping`` with the signal's name, and cancels
  everything.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Awaitable, Callable, Sequence

import structlog
import trio

from validator.logs import mark_stopping

log = structlog.get_logger("validator.lifecycle")

LONG_RUNNING = frozenset({"join", "provide", "devnet", "localchain"})
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: int | None = None


def _remember(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is None:
        _pending = signum


def is_long_running(argv: Sequence[str]) -> bool:
    """Whether the command named in ``argv`` (the first word that is not an option) is one
    that serves until stopped."""
    command = next((word for word in argv if not word.startswith("-")), None)
    return command in LONG_RUNNING


def defer_stop_signals() -> None:
    """Remember SIGINT and SIGTERM instead of acting on them; trio's signal receiver, asyncio's
    handlers and the devnet supervisor take over later (and restore this when done)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _remember)


def pending_signal() -> str | None:
    """The name of the first stop signal that arrived while deferred, or None."""
    return None if _pending is None else signal.Signals(_pending).name


async def run_until_signal(start: Callable[[trio.Nursery], Awaitable[None]]) -> str:
    """Run ``start(nursery)`` (it starts the command's tasks) until SIGINT or SIGTERM; return
    the signal's name. A signal that came during start-up stops it before anything starts.
    An exception in a task ends the nursery as usual."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        early = pending_signal()  # read once the receiver is open: nothing falls in between
        if early is not None:
            mark_stopping()
            log.info("stopping", signal=early, during="start-up")
            return early
        async with trio.open_nursery() as nursery:
            await start(nursery)
            async for signum in signals:
                name = signal.Signals(signum).name
                mark_stopping()
                log.info("stopping", signal=name)
                nursery.cancel_scope.cancel()
                return name
    raise AssertionError("unreachable: the signal receiver never ends by itself")
