"""SIGKILL soak: hundreds of random validator kills on a devnet of real processes.

    python benchmarks/sigkill_soak.py [--kills 200] [--seed S] [--epoch-seconds 10]
                                      [--data-dir D] [--keep]

Prints one line per kill, then the kill moments by phase and by second into the epoch, every
violation in full, and last one line of ``key=value`` pairs: kills, epochs, finals, accepted,
then the violations (double_signatures, lost_finals, double_posts_per_payer,
reports_accepted_twice, double_claims, payout_mismatches, conflicting_finals, bad_signatures,
ledger_problems, evidence) and the figures (claims, claimed, accepted_unclaimed, and more;
benchmarks/README.md says what each means). Exit code 1 if any safety check failed. The data
directory (logs: D/v{i}/log.txt, D/p{j}/log.txt) is kept when something failed or with
--keep; the verdict is also written to D/../verdict.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.adversarial.crash_harness import (  # noqa: E402
    CrashOptions, HarnessError, run_crash_soak, write_json)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--epoch-seconds", type=int, default=10)
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="default: a new folder under /tmp")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="sigkill-"))
    started = time.time()

    def progress(line: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {line}", flush=True)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # stop the children in order, as Ctrl-C does
    options = CrashOptions(root / "net", seed=seed, kills=args.kills,
                           epoch_seconds=args.epoch_seconds, providers=args.providers)
    try:
        verdict = run_crash_soak(options, progress=progress)
    except HarnessError as exc:
        print(f"harness stopped: {exc}\ndata kept in {root}", flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; data kept in {root}", flush=True)
        return 130
    write_json(verdict, root / "verdict.json")
    print(f"kill moments by phase: {dict(verdict.phases)}")
    print(f"kill moments by second into the epoch: "
          f"{dict(sorted(verdict.seconds_into_epoch.items()))}")
    print(f"victims' last log event before the kill: {dict(verdict.last_events)}")
    print(f"final epochs sampled at each kill: {list(verdict.finals_during_kills)}")
    for violation in verdict.violations:
        print(f"VIOLATION {violation}")
    for line in verdict.unparsed_pool_txs:
        print(f"pool-program transaction neither post nor claim: {line}")
    if verdict.unaccepted_finals:
        print(f"final but not accepted on chain: epochs {verdict.unaccepted_finals}")
    ok = not verdict.violations
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"data kept in {root}")
    print(f"seed={seed} " + verdict.line(), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
