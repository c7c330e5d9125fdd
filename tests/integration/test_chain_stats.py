"""ChainPoster.statistics() and payer_balance() against the real pool program on a real local
chain, reached through a TcpProxy that the test cuts: what /metrics and /healthz's chain check
read (validator.chain_stats, validator.health)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import trio
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed

from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_chain_post import funded, new_pool
from validator.bridge import AsyncioBridge
from validator.health import HealthPolicy, assess
from validator.telemetry import NodeTelemetry


async def test_posts_latency_errors_and_the_failing_period(
        bridge: AsyncioBridge, chain_url: str, tmp_path: Path) -> None:
    with trio.fail_after(90), TcpProxy(int(chain_url.rsplit(":", 1)[1])) as proxy:
        net = await new_pool(bridge, chain_url, 4, seed=1201)
        poster = await funded(bridge, replace(net, url=proxy.url).poster(
            tmp_path / "v.sqlite", max_attempts=2, backoff=(0.05, 0.1), confirm_timeout=10))
        zero, one = net.report(0), net.report(1, net.report(0).header_sha256)

        # 1. A confirmed post: one latency observation, no error, no failing period.
        began = time.time()
        assert (await bridge.run(poster.post, zero)).status == "confirmed"
        took = time.time() - began
        stats = poster.statistics()
        assert stats.posts == {"confirmed": 1, "failed": 0}
        assert sum(stats.post_seconds) == 1 and 0 < stats.post_seconds_sum <= took
        assert sum(stats.errors.values()) == 0 and stats.failing_since is None
        print(f"\nconfirmed post through the proxy: {stats.post_seconds_sum:.2f} s")

        # 2. The balance as the chain says it, read around the proxy.
        async def balance() -> int:
            async with AsyncClient(chain_url, commitment=Confirmed) as client:
                return (await client.get_balance(poster.payer.pubkey(), Confirmed)).value
        assert await bridge.run(poster.payer_balance) == await bridge.run(balance) > 0

        # 3. The RPC refuses: the post fails, errors are counted, a failing period opens.
        proxy.set_mode("refuse")
        cut = time.time()
        failed = await bridge.run(poster.post, one)
        assert failed.status == "failed" and failed.sent == ()
        stats = poster.statistics()
        assert stats.posts == {"confirmed": 1, "failed": 1}
        assert stats.errors["unreachable"] == 2  # both attempts
        assert sum(stats.post_seconds) == 1  # it sent nothing: no latency
        assert stats.failing_since is not None and cut <= stats.failing_since <= time.time()
        assert await bridge.run(poster.payer_balance) is None
        assert poster.statistics().errors["balance"] == 1

        # /healthz's chain check: passes for the policy's window, fails after it.
        telemetry = NodeTelemetry({"validators": 3}, 0, {}, poster.statistics(), None)
        status = {"epoch": 1, "last_final_epoch": 1,
                  "chain": {"last_error": poster.ledger.last_error()}}
        def check(now: float) -> tuple[bool, tuple[str, ...]]:
            h = assess(threshold=net.threshold, status=status, telemetry=telemetry,
                       policy=HealthPolicy(60), now=now)
            return h.checks["chain"], h.reasons
        assert check(stats.failing_since + 60) == (True, ())
        ok, (reason,) = check(stats.failing_since + 61)
        assert not ok and "rpc unreachable" in reason, reason

        # 4. The RPC is back: the next post confirms and ends the failing period.
        proxy.set_mode("forward")
        assert (await bridge.run(poster.post, one)).status == "confirmed"
        stats = poster.statistics()
        assert stats.posts == {"confirmed": 2, "failed": 1} and sum(stats.post_seconds) == 2
        assert stats.failing_since is None
        await bridge.run(poster.aclose)
