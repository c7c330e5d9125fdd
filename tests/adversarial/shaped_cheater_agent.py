"""A provider agent process with a cheating ``ProbeService``, for shaped-link tests.

Run as ``python -m tests.adversarial.shaped_cheater_agent provide --cheater NAME`` plus the
command line of ``validator provide`` (``--network --key --listen --data-host --data-port``):
like the product it prints its full multiaddr as the first stdout line and serves until SIGINT
or SIGTERM. The testbed starts it inside the provider namespace, behind a tbf-shaped link,
where a real process (not an in-process service) is the only way to sit behind the shaping.

The cheaters here try to look faster than their link (10 Mbit/s in the tests); each fakes one
direction and is honest otherwise. Product code knows nothing about them.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

import trio

from proofs import probe as wire
from proofs.challenges import Keystream
from tests.adversarial.cheaters import ZeroStreamer
from validator.provider import (DATA_SLACK_SECONDS, IO_SIZE, ProbeService, ProviderOptions,
                                Session, run_provider)
from validator.logs import configure_logging
from validator.spec import NetworkSpec, load_spec

CACHED_PREFIX = 64 * 1024


class InflatedUploadClaimer(ProbeService):
    """Reads the upload at its link's pace, then claims four times the bytes, with a digest
    over what arrived followed by zeros for the bytes it never got."""

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        hasher = hashlib.blake2b(digest_size=wire.DIGEST_SIZE)
        buffer = bytearray(IO_SIZE)
        view = memoryview(buffer)
        total = 0
        with trio.move_on_after(session.duration + DATA_SLACK_SECONDS):
            while n := await stream.socket.recv_into(buffer):
                hasher.update(view[:n])
                total += n
        missing = 3 * total
        while missing:
            chunk = min(missing, IO_SIZE)
            hasher.update(bytes(chunk))
            missing -= chunk
        return 4 * total, hasher.digest()


class EarlyReporter(ProbeService):
    """Answers the upload result as soon as it is asked, with the count and digest of what has
    arrived so far, to stop the validator's clock before the backlog on its link drains."""

    def __init__(self, seed: bytes, spec: NetworkSpec, *args: Any, **kwargs: Any) -> None:
        super().__init__(seed, spec, *args, **kwargs)
        self.progress: dict[bytes, tuple[int, "hashlib.blake2b"]] = {}

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        hasher = hashlib.blake2b(digest_size=wire.DIGEST_SIZE)
        buffer = bytearray(IO_SIZE)
        view = memoryview(buffer)
        total = 0
        self.progress[session.token] = (0, hasher)
        with trio.move_on_after(session.duration + DATA_SLACK_SECONDS):
            while n := await stream.socket.recv_into(buffer):
                hasher.update(view[:n])
                total += n
                self.progress[session.token] = (total, hasher)
        return total, hasher.digest()

    async def answer(self, request: wire.Request, peer: str) -> wire.Response:
        if isinstance(request, wire.UpResultRequest) and request.token in self.progress:
            count, hasher = self.progress.pop(request.token)
            return wire.UpReport(count, hasher.copy().digest())
        return await super().answer(request, peer)


class CachedBlockStreamer(ProbeService):
    """Sends the real keystream for 64 KiB, then one cached 1 MiB block over and over (what a
    provider that cannot generate or fetch fresh bytes fast enough would do)."""

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        cached = Keystream(session.seed).next(IO_SIZE)
        await stream.send_all(cached[:CACHED_PREFIX])
        with trio.move_on_after(session.duration + DATA_SLACK_SECONDS):
            while True:
                await stream.send_all(cached)


CHEATERS: dict[str, Callable[..., ProbeService]] = {
    "honest": ProbeService,
    "inflated-upload-claim": InflatedUploadClaimer,
    "early-upload-report": EarlyReporter,
    "zeros": ZeroStreamer,
    "cached-block": CachedBlockStreamer,
}


async def _serve(options: ProviderOptions, network: Path,
                 factory: Callable[..., ProbeService]) -> None:
    spec = load_spec(network)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            multiaddr = await nursery.start(
                partial(run_provider, options, spec, service_factory=factory))
            print(multiaddr, flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.adversarial.shaped_cheater_agent")
    parser.add_argument("command", choices=["provide"])
    parser.add_argument("--cheater", required=True, choices=sorted(CHEATERS))
    parser.add_argument("--network", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--data-host", required=True)
    parser.add_argument("--data-port", type=int, required=True)
    parser.add_argument("--allow-probe", action="append", default=[])
    args = parser.parse_args(argv)
    options = ProviderOptions(key_path=Path(args.key), listen=args.listen,
                              data_host=args.data_host, data_port=args.data_port,
                              allow_probe=tuple(args.allow_probe))
    configure_logging()  # to stderr: stdout carries only the multiaddr
    trio.run(_serve, options, Path(args.network), CHEATERS[args.cheater])
    return 0


if __name__ == "__main__":
    sys.exit(main())
