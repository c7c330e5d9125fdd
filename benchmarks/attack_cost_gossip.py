"""What gossip floods cost a validator, in CPU per attack message (issue 11, items 3-5).

    python benchmarks/attack_cost_gossip.py [--providers 2000] [--validators 10]
    python benchmarks/attack_cost_gossip.py --compare /tmp/before   # and an older checkout

Drives the pure core (``validator.core.ValidatorCore``) the way the shell does - the topic
validator's ``check``, then ``on_message``, then the store writes the actions ask for - and
measures ``time.process_time()`` (every thread of the process: the registration writer's too)
per attack message. The network is ``--validators`` cores wired by ``tests.sim.core_cluster``
with ``--providers`` registrations and one epoch of honest bundles, so that computing a
header costs what it costs at that scale. Floods:

- ``registrations``: 300 versions of one provider, then 200 providers nobody runs (validly
  signed), with the SQLite writes the actions ask for (one transaction per message before;
  one batch after);
- ``oversized_final``: a relayed final with a genuine header and threshold signatures and
  20,000 junk provider-set hashes, to a validator that does not hold that final yet;
- ``proposal_flood``: the leader's proposal and 40 more for the same attempt, each naming
  another provider set (which the leader serves when asked); ``headers`` is the number of
  header computations it caused;
- ``signature_spam``: 8,000 signatures by one member over random header hashes (before) or
  random headers (after); ``first``/``last`` are the costs of the first and last 1,000.

It prints one table: per flood, messages, CPU ms per message (and the victim's state after,
where it matters). With ``--compare DIR`` it runs itself in DIR (a checkout from before the
change, e.g. ``git worktree add /tmp/before <commit>``) and prints both, with the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _measure(providers: int, validators: int) -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(Path.cwd()))
    from proofs.messages import (
        FinalReport,
        Proposal,
        ProviderSet,
        Registration,
        ReportSignature,
    )
    from proofs.report import ReportHeader
    from proofs.signing import public_key, sha256, sign_raw
    from tests.factories import make_observation, make_registration, make_spec, seed_for
    from tests.sim.core_cluster import CoreCluster
    from validator import core as c
    from validator import store as st

    new_signatures = "header" in {f.name for f in dataclasses.fields(ReportSignature)}
    spec, seeds = make_spec(validators, committee_size=min(7, validators))
    regs = [make_registration(spec, f"p{j}")[0] for j in range(providers)]
    now0 = spec.epoch_start(0) + 1

    def fresh_core(index: int = 1) -> Any:
        core = c.ValidatorCore(spec, seeds[index])
        core.restore([r.encode() for r in regs], [], [], {})
        return core

    out: dict[str, dict[str, Any]] = {}

    # -- registrations -----------------------------------------------------------------
    def reg(name: str, issued_at: int) -> Registration:
        seed = seed_for("bench/" + name)
        return Registration(spec.network_id, public_key(seed), sha256(name.encode()), "eu",
                            0, 0, "/ip4/10.0.0.1/tcp/1", "10.0.0.1", 9, issued_at
                            ).signed_by(seed)
    flood = [reg("restless", int(now0) - 250 + i).encode() for i in range(300)]
    flood += [reg(f"fake-{i}", int(now0) - 5).encode() for i in range(200)]
    with tempfile.TemporaryDirectory() as tmp:
        core = fresh_core()
        store = st.Store(Path(tmp) / "v.sqlite")
        writer = st.RegistrationWriter(Path(tmp) / "v.sqlite") if hasattr(
            st, "RegistrationWriter") else None
        batch: list[tuple[str, object]] = []
        start = time.process_time()
        for data in flood:
            msg = core.check("registrations", data)
            if msg is None:
                continue
            for action in core.on_message(msg, now0):
                if isinstance(action, c.SaveRegistration):
                    r = action.registration
                    if writer is None:  # before: one transaction per message, on the loop
                        store.put_registration(r.provider, r.issued_at, r.encode())
                    else:  # after: queued, written in batches by a worker thread
                        batch.append(("put", (r.provider, r.issued_at, r.encode())))
        if writer is not None:
            writer.write(batch)
        cpu = time.process_time() - start
        rows = store._conn.execute("SELECT count(*) FROM registration_versions").fetchone()[0]
        kept = len(core.registration_by_hash) - providers
        out["registrations"] = {"messages": len(flood), "ms": 1000 * cpu / len(flood),
                                "state": f"{kept} versions kept, {rows} rows written"}
        store.close()
        if writer is not None:
            writer.close()

    # -- one epoch of honest bundles, and its final -------------------------------------
    cluster = CoreCluster(spec, seeds)
    for r in regs:
        for core in cluster.cores:
            core.restore([r.encode()], [], [], {})

    def observe(i: int, epoch: int, r: Registration) -> Any:
        return make_observation(r.provider, down=40_000 + 100 * i)
    cluster.run_epoch(0, observe)
    final = cluster.cores[0].finals[0]
    genuine = FinalReport(final.header, final.signatures)

    rng = random.Random(1)
    junk = tuple(sorted({rng.randbytes(32) for _ in range(20_000)}))
    data = FinalReport(genuine.header, genuine.signatures, (), junk).encode()
    victim = fresh_core()
    start = time.process_time()
    refused = victim.check("finals", data) is None
    cpu = time.process_time() - start
    out["oversized_final"] = {"messages": 1, "ms": 1000 * cpu,
                              "state": f"{len(data)} bytes, refused={refused}, by "
                                       + ",".join(k for k in victim.dropped)}

    # -- a proposal flood, before epoch 1 is final --------------------------------------
    for i, core in enumerate(cluster.cores):
        obs = [observe(i, 1, r) for r in core.assignment(1)]
        cluster.deliver(i, core.bundle_ready(1, obs, spec.epoch_end(1)), spec.epoch_end(1))
    leader_key = cluster.cores[0].leader(1, 0)
    leader = next(i for i, core in enumerate(cluster.cores) if core.me == leader_key)
    victim_i = (leader + 1) % validators
    victim = cluster.cores[victim_i]
    lcore = cluster.cores[leader]
    at = lcore.attempt_start(1, 0) + 0.1
    bundles = sorted(b.hash() for b in lcore._usable_bundles(1))
    full = lcore.next_provider_set(1)
    served: dict[bytes, tuple[bytes, ...]] = {}
    proposals = []
    for k in range(41):
        pset = full if k == 0 else full[:k - 1] + full[k:]
        result = lcore.compute_header(1, [lcore._bundle_by_hash[h] for h in bundles], pset)
        assert not isinstance(result, str), result
        served[result[0].providers_root] = pset
        proposals.append(Proposal(spec.config_digest, 1, 0, leader_key, tuple(bundles),
                                  result[0].to_bytes()).signed_by(seeds[leader]).encode())
    counted = {"headers": 0}
    real_build = c.build_records

    def counting(*args: Any, **kwargs: Any) -> Any:
        counted["headers"] += 1
        return real_build(*args, **kwargs)
    c.build_records = counting

    def run(actions: list[Any]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, c.Fetch) and action.request.kind == "provider_set":
                answer = ProviderSet(served[action.request.key]).encode()
                queue += victim.on_fetched(action.request, answer, at)
            elif isinstance(action, c.SignHeader) and hasattr(victim, "on_signed_stored"):
                queue += victim.on_signed_stored(action.epoch, action.header_hash, at)
    start = time.process_time()
    for data in proposals:
        msg = victim.check("proposals", data)
        if msg is not None:
            run(victim.on_message(msg, at))
    cpu = time.process_time() - start
    c.build_records = real_build
    out["proposal_flood"] = {"messages": len(proposals), "ms": 1000 * cpu / len(proposals),
                             "state": f"headers computed {counted['headers']}"}

    # -- signature spam by one member -----------------------------------------------------
    spammer = (victim_i + 1) % validators
    if spammer == leader:
        spammer = (spammer + 1) % validators
    victim = cluster.cores[victim_i]
    me = cluster.cores[spammer].me
    rng = random.Random(2)
    spam = []
    for _ in range(8_000):
        if new_signatures:
            header = ReportHeader(spec.config_digest, 1, rng.randbytes(32), 1, 1,
                                  rng.randbytes(32), rng.randbytes(32),
                                  rng.randbytes(32)).to_bytes()
            spam.append(ReportSignature(header, me, sign_raw(seeds[spammer],
                                                             sha256(header))).encode())
        else:
            h = rng.randbytes(32)
            spam.append(ReportSignature(spec.config_digest, 1, h, me,  # type: ignore[call-arg, arg-type]
                                        sign_raw(seeds[spammer], h)).encode())
    chunks = []
    for first in range(0, len(spam), 1000):
        start = time.process_time()
        for data in spam[first:first + 1000]:
            msg = victim.check("signatures", data)
            if msg is not None:
                victim.on_message(msg, at)
        chunks.append(1000 * (time.process_time() - start) / 1000)
    state = victim._epochs[1]
    held = sum(len(v) for v in state.signatures.values())
    out["signature_spam"] = {"messages": len(spam), "ms": sum(chunks) / len(chunks),
                             "first": chunks[0], "last": chunks[-1],
                             "state": f"signatures held {held}"}
    return out


def _print(rows: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]] | None) -> None:
    head = f"{'flood':<16} {'messages':>8} {'ms/msg':>9}"
    if before:
        head += f" {'before':>9} {'ratio':>7}"
    print(head + "  detail")
    for name, row in rows.items():
        line = f"{name:<16} {row['messages']:>8} {row['ms']:>9.3f}"
        if before and name in before:
            old = before[name]["ms"]
            line += f" {old:>9.3f} {old / row['ms'] if row['ms'] else float('inf'):>6.1f}x"
        detail = row["state"]
        if "first" in row:
            detail += f"; first 1000 {row['first']:.3f} ms, last 1000 {row['last']:.3f} ms"
        if before and name in before:
            detail += f" | before: {before[name]['state']}"
            if "first" in before[name]:
                detail += (f"; first 1000 {before[name]['first']:.3f} ms, last 1000 "
                           f"{before[name]['last']:.3f} ms")
        print(line + "  " + detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=2000)
    parser.add_argument("--validators", type=int, default=10)
    parser.add_argument("--compare", type=Path, help="also run in this (older) checkout")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.json:
        print(json.dumps(_measure(args.providers, args.validators)))
        return 0
    before = None
    if args.compare:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--json", "--providers",
             str(args.providers), "--validators", str(args.validators)],
            cwd=args.compare, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(args.compare)))
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        before = json.loads(proc.stdout.strip().splitlines()[-1])
    os.chdir(ROOT)
    _print(_measure(args.providers, args.validators), before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
