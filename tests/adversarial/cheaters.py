"""Cheating provider agents: ``ProbeService`` subclasses that fake one measurement each.

They plug into the real agent through ``run_provider(..., service_factory=...)``; the product
code has no cheat switches. Each class fakes exactly one thing and is honest otherwise, so a
test can show that the faked metric (and only it) scores 0 and carries the named flag.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from p2p.host import peer_id_from_seed
from proofs import probe as wire
from proofs.challenges import Keystream, sign_heartbeat
from tests.factories import make_spec, seed_for
from validator.provider import (DATA_SLACK_SECONDS, IO_SIZE, ProbeService, ProviderOptions,
                                Session, run_provider)


async def _send_block_forever(stream: trio.SocketStream, block: bytes, seconds: float) -> None:
    with trio.move_on_after(seconds):
        while True:
            await stream.send_all(block)


class ZeroStreamer(ProbeService):
    """Streams zeros (free to produce) instead of the keystream."""

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        await _send_block_forever(stream, bytes(IO_SIZE), session.duration + DATA_SLACK_SECONDS)


class ConstantStreamer(ProbeService):
    """Streams one repeated byte."""

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        await _send_block_forever(stream, b"\x5a" * IO_SIZE,
                                  session.duration + DATA_SLACK_SECONDS)


class StaleSeedStreamer(ProbeService):
    """Streams the keystream of the first seed it was ever given (bytes it could have cached)."""

    first_seed: bytes | None = None

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        if self.first_seed is None:
            self.first_seed = session.seed
        stale = Session(session.token, session.peer, session.kind, self.first_seed,
                        session.duration, session.expires_at, byte_limit=session.byte_limit)
        await super().send_down(stream, stale)


class TruncatingStreamer(ProbeService):
    """Sends the real keystream but hangs up after 256 KiB, well inside the window."""

    async def send_down(self, stream: trio.SocketStream, session: Session) -> None:
        await stream.send_all(Keystream(session.seed).next(256 * 1024))


class WrongDigestReceiver(ProbeService):
    """Reads the upload but reports a digest of something else (e.g. it never hashed)."""

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        count, _ = await super().receive_up(stream, session)
        return count, hashlib.blake2b(b"made up", digest_size=wire.DIGEST_SIZE).digest()


class InflatedCountReceiver(ProbeService):
    """Reports more bytes than arrived."""

    async def receive_up(self, stream: trio.SocketStream, session: Session) -> tuple[int, bytes]:
        count, digest = await super().receive_up(stream, session)
        return count + IO_SIZE, digest


class OtherKeySigner(ProbeService):
    """Answers heartbeats with a key that is not the registered one (an outsourced uptime)."""

    def heartbeat_signature(self, request: wire.HeartbeatRequest) -> bytes:
        return sign_heartbeat(seed_for("someone-else"), self.network_id, request.epoch,
                              request.nonce, request.validator_key)


class ReplayingSigner(ProbeService):
    """Signs its first heartbeat honestly, then replays that signature to every later one."""

    first_signature: bytes | None = None

    def heartbeat_signature(self, request: wire.HeartbeatRequest) -> bytes:
        if self.first_signature is None:
            self.first_signature = super().heartbeat_signature(request)
        return self.first_signature


PROBER = seed_for("prober")  # the probe key ``running_provider`` allows (--allow-probe)


@asynccontextmanager
async def running_provider(tmp_path: Path,
                           factory: type[ProbeService] = ProbeService) -> AsyncIterator[str]:
    """Run the real provider agent with ``factory``'s service; yields its multiaddr. It
    answers the probe key ``PROBER`` (identity and heartbeat key) like a validator."""
    spec, _ = make_spec()
    options = ProviderOptions(tmp_path / f"{factory.__name__}.key",
                              allow_probe=(peer_id_from_seed(PROBER),))
    async with trio.open_nursery() as nursery:
        yield await nursery.start(partial(run_provider, options, spec, service_factory=factory))
        nursery.cancel_scope.cancel()
