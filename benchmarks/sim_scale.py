"""The validator network at scale, in one process: real validator shells on the memory network.

    python benchmarks/sim_scale.py --validators 100 --providers 10000 --byzantine 33 --epochs 3

Runs ``tests.sim.harness`` (the production ``Validator`` shell and core, one SQLite file each,
on tmpfs when there is one) under trio's autojump clock, with a sparse seeded gossip mesh of
about ``--degree`` links per validator (as gossipsub's D), ``--committee`` members per
provider, and ``--byzantine`` faulty validators of ``--kind``. Registrations are preloaded into
every SQLite file (the core reads them through its restore path), since gossiping 10,000 of
them to 100 validators would dominate the run.

It prints one line per epoch and ends with one line of key=value pairs:

- ``epochs``: epochs run; ``final``: epochs with a final report at every running honest
  validator and one header across all validators; ``correct``: final epochs in which every
  record is within the committee's truthful range (``SimNetwork.check_epoch``, strict);
- ``cpu_s_per_validator_epoch``: process CPU time from genesis to the last epoch's outcome,
  less the time spent verifying outcomes, over validators x epochs. It includes the harness (memory
  network, synthetic measurements, trio's scheduler), so it overstates one validator's cost;
- ``gossip_bytes_per_validator_epoch``: bytes a validator sent to other validators, over
  validators x epochs: on gossip hops (its own publications and what it forwarded) and on
  fetch streams (requests and answers: bundles travel that way, announced by a gossiped
  notice), so pulling instead of pushing cannot hide traffic;
- ``peak_rss_mb``: the whole process (all validators), from getrusage;
- then ``captured`` (records out of the truthful range where lies were at least half of the
  observations used: k < 2f+1 or censored bundles), ``violations`` (out of range with a
  truthful majority: a bug), ``published_bytes_per_validator_epoch`` (own publications only),
  ``wall_s``.

``--profile FILE`` writes a cProfile of the run (setup excluded).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sim.byzantine import Censor, Equivocator, Garbage, Liar, Withholder  # noqa: E402
from tests.sim.harness import Behaviour, RouteParams, open_sim, sim_spec  # noqa: E402

KINDS: dict[str, Callable[[frozenset[bytes]], Behaviour]] = {
    "liar": lambda friends: Liar(mode="x10"),
    "liar_zero": lambda friends: Liar(mode="zero"),
    "equivocate": lambda friends: Equivocator(),
    "withhold": lambda friends: Withholder(),
    "garbage": lambda friends: Garbage(),
    "censor": lambda friends: Censor(friends=friends, fill=True),
    "censor_liar": lambda friends: Censor(friends=friends, fill=True, lie="x10"),
}
MIXED = ("liar", "liar_zero", "equivocate", "withhold", "garbage")


def choose_byzantine(args: argparse.Namespace) -> dict[int, str]:
    rng = random.Random(f"sim_scale/{args.seed}")
    chosen = sorted(rng.sample(range(args.validators), args.byzantine))
    kinds = MIXED if args.kind == "mixed" else (args.kind,)
    return {i: kinds[j % len(kinds)] for j, i in enumerate(chosen)}


def progress(text: str) -> None:
    print(text, flush=True)


async def run(args: argparse.Namespace, root: Path) -> dict[str, object]:
    kinds = choose_byzantine(args)
    t_setup = time.perf_counter()
    async with _open(args, root, kinds) as sim:
        progress(f"setup: {args.validators} validators, {args.providers} providers, "
                 f"{len(kinds)} byzantine, k={sim.spec.effective_committee_size}, "
                 f"threshold={sim.spec.threshold}: {time.perf_counter() - t_setup:.1f}s")
        await sim.sleep_until(sim.spec.genesis_time)
        sent0, published0 = sum(sim.gossip_sent.values()), sum(sim.gossip_published.values())
        streamed0 = sum(sim.network.stream_bytes_sent.values())
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        check_cpu = 0.0
        final = correct = captured = violations = 0
        for epoch in range(args.epochs):
            await sim.wait_outcome(epoch)
            if profiler:
                profiler.disable()
            c0 = time.process_time()
            status = "final, correct"
            try:
                check = sim.verify_epoch(epoch, strict=False)
            except AssertionError as exc:
                status = f"NOT FINAL OR BAD: {str(exc)[:300]}"
                check = None
            check_cpu += time.process_time() - c0
            if profiler:
                profiler.enable()
            if check is not None:
                final += 1
                captured += len(check.captured)
                if check.captured:
                    status = f"final, {len(check.captured)} records captured"
                else:
                    correct += 1
                progress(f"epoch {epoch}: {status}; records={check.records} "
                         f"carried={check.carried} bundles={check.bundles} "
                         f"signatures={check.signatures}; cpu "
                         f"{time.process_time() - cpu0:.1f}s wall "
                         f"{time.perf_counter() - wall0:.1f}s")
            else:
                if "truthful majority" in status:
                    violations += 1
                progress(f"epoch {epoch}: {status}")
        cpu = time.process_time() - cpu0 - check_cpu
        wall = time.perf_counter() - wall0
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        gossiped = sum(sim.gossip_sent.values()) - sent0
        streamed = sum(sim.network.stream_bytes_sent.values()) - streamed0
        sent = gossiped + streamed
        ve = args.validators * args.epochs
        progress("bytes sent per validator-epoch: gossip by topic (whole run) " + ", ".join(
            f"{topic}={count // ve}" for topic, count in sim.gossip_sent_by_topic.most_common())
            + f"; fetch streams={streamed // ve}")
        published = sum(sim.gossip_published.values()) - published0
        sim.stop_all()
    return {
        "epochs": args.epochs, "final": final, "correct": correct,
        "cpu_s_per_validator_epoch": round(cpu / ve, 4),
        "gossip_bytes_per_validator_epoch": int(sent / ve),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "validators": args.validators, "providers": args.providers,
        "byzantine": args.byzantine, "kind": args.kind, "committee": args.committee,
        "captured": captured, "violations": violations,
        "published_bytes_per_validator_epoch": int(published / ve), "wall_s": round(wall, 1),
    }


def _open(args: argparse.Namespace, root: Path, kinds: dict[int, str]):  # type: ignore[no-untyped-def]
    spec, _ = sim_spec(args.validators, committee_size=args.committee)
    friends = frozenset(spec.validators[i].signing_key for i in kinds)
    behaviours = {i: KINDS[kind](friends) for i, kind in kinds.items()}
    return open_sim(root, n=args.validators, providers=args.providers, seed=args.seed,
                    behaviours=behaviours, committee_size=args.committee, degree=args.degree,
                    registrations=args.registrations,
                    route=RouteParams(args.drop, args.duplicate, args.max_delay))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validators", type=int, default=10)
    parser.add_argument("--providers", type=int, default=200)
    parser.add_argument("--byzantine", type=int, default=None,
                        help="faulty validators (default f = floor((n-1)/3))")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--committee", type=int, default=5, help="k, providers' committee size")
    parser.add_argument("--kind", default="mixed", choices=["mixed", *KINDS],
                        help="byzantine behaviour; mixed cycles " + ", ".join(MIXED))
    parser.add_argument("--degree", type=int, default=8, help="gossip links per validator")
    parser.add_argument("--registrations", default="preload", choices=["preload", "gossip"])
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--max-delay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="", help="write a cProfile of the run here")
    args = parser.parse_args(argv)
    if args.byzantine is None:
        args.byzantine = (args.validators - 1) // 3
    if not 0 <= args.byzantine <= args.validators:
        parser.error("--byzantine must be between 0 and --validators")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() else None
    with tempfile.TemporaryDirectory(dir=base, prefix="bwpool-sim-scale-") as tmp:
        result = trio.run(run, args, Path(tmp),
                          clock=trio.testing.MockClock(autojump_threshold=0))
    print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
