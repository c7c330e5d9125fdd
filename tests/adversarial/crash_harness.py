"""SIGKILL crash safety with real processes: a seeded killer over a devnet, and checks that
read only what is on disk and on chain.

Shared by ``tests/adversarial/test_sigkill.py`` (a short run in the suite) and
``benchmarks/sigkill_soak.py`` (hundreds of kills).

The network is the devnet's (``validator.devnet``: ``write_network``, ``plan_children`` and
``set_up_pool``: D/network.toml, D/pool/pool.json, D/v{i}/config.toml, D/v{i}/validator.sqlite,
D/v{i}/log.txt; a local chain with the pool program loaded, a funded pool, providers with
``--auto-claim``), but the harness starts every child itself so that it owns each validator
process. One kill:

1. pick a validator (``random.Random(seed)``), wait a uniform time inside one epoch, so kills
   land while probing, signing, writing SQLite and posting alike;
2. snapshot what that validator showed as final (its SQLite, read-only, and its HTTP
   ``/epochs``), then SIGKILL it;
3. after a random short pause restart it exactly as an operator would
   (``python -m validator.cli join --config D/vK/config.toml``), wait until it serves HTTP and
   check that every snapshot epoch is still final, with the same header hash, in its SQLite.

At most f = 1 validator is down at a time: the next kill starts only after the restart.

The verdict (``verify``) trusts nothing the validators compute beyond the on-disk schema
(``store.py``'s ``signed_headers``/``final_reports``/``evidence``, ``chain_ledger.py``'s
``chain_posts``) and the pool program's layouts and logs: ed25519 signatures are re-verified
with nacl over sha256(header); the pool, its open EpochReport accounts, every post, claim and
close and the token balances are read back from the local chain over JSON-RPC
(``crash_chain``; the checks are ``crash_verdict``). With all processes but the chain
stopped, it checks:

- safety of signing: no signer signed two headers of one epoch (signed_headers, finals,
  posts), every final is the same everywhere and on chain, every signature verifies;
- crash safety of the disk: no final or signed_headers row lost across a kill;
- posting: no payer landed one member's signature twice for one epoch; every ledger row
  "confirmed" names a header the chain accepted; every post that landed from a validator's
  payer is in its ledger (recorded before sending: at least as many attempts);
- the pool (``reports_accepted_twice``): every epoch accepted once, by one transaction
  (the post whose log says "report accepted"); the pool's accepted_count is the number of
  acceptances; the accepted headers form one chain by prev_header_hash from the pool's start
  to its head; an open report account agrees with its acceptance (header, reserved,
  accepted_seq); a report no longer open was closed by close_epoch after its claim window
  (the validators close finished epochs);
- claims (``double_claims``, ``payout_mismatches``): no (report, record index) paid twice,
  none paid from a report closed before it; each token account holds exactly the sum of
  ``record_payout(reserved, record, total_weight)`` over its successful claims, which is
  what each claim's log says; open reports' claimed_total/claimed_count, closed reports'
  released amount, the pool's total_paid and reserved_outstanding agree with them, and
  vault + paid is the supply. An accepted report nobody claimed is fine (counted in
  ``accepted_unclaimed``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import base58
from nacl.signing import SigningKey

from tests.adversarial.crash_chain import (
    ChainClaim,
    ChainClose,
    ChainPost,
    ChainView,
    read_chain,
)
from tests.adversarial.crash_verdict import (
    Accepted,
    DbView,
    FinalRow,
    Member,
    PostRow,
    Verdict,
    _b58,
    check_claims,
    check_posts,
    check_reports,
    check_signatures,
    final_epochs,
    read_db,
)
from tests.integration.e2e_checks import get_json, rpc
from tests.integration.test_devnet_e2e import free_port_block
from validator.devnet import (
    Child,
    DevnetOptions,
    _set_parent_death_signal,
    plan_children,
    set_up_pool,
    write_network,
)

AUTO_CLAIM_FLAGS = {"--auto-claim": 0, "--validator": 1, "--rpc-url": 1}  # flag: values after it
Progress = Callable[[str], None]


class HarnessError(Exception):
    """The run could not go on (a process that will not start or restart); message says why."""


@dataclass(frozen=True)
class CrashOptions:
    data_dir: Path
    seed: int
    kills: int
    validators: int = 4
    providers: int = 3
    epoch_seconds: int = 10
    pause: tuple[float, float] = (0.3, 4.0)  # how long a killed validator stays down
    genesis_delay: int = 10
    settle_epochs: int = 4  # after the last kill, how long to wait for all to agree and post
    first_final_timeout: float = 120.0


# -- the network of processes ---------------------------------------------------------------
def _pubkey_of(key_file: Path) -> bytes:
    return SigningKey(bytes.fromhex(key_file.read_text().strip())).verify_key.encode()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


def _provider_has_auto_claim() -> bool:
    """Whether this build's `validator provide` takes --auto-claim (being added elsewhere)."""
    out = subprocess.run([sys.executable, "-m", "validator.cli", "provide", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    return "--auto-claim" in out.stdout


def _without_auto_claim(argv: list[str]) -> list[str]:
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in AUTO_CLAIM_FLAGS:
            skip = AUTO_CLAIM_FLAGS[arg]
        else:
            out.append(arg)
    return out


class CrashNetwork:
    """A devnet whose processes this object owns; a context manager that stops them all."""

    def __init__(self, options: CrashOptions, progress: Progress = lambda _: None) -> None:
        self.options = options
        self.progress = progress
        n, m = options.validators, options.providers
        self.base_port = free_port_block(1 + 2 * n + 2 * m)
        self.devnet = DevnetOptions(n, m, options.epoch_seconds, self.base_port,
                                    options.data_dir, reset=True,
                                    genesis_delay=options.genesis_delay)
        self.rpc_url = f"http://127.0.0.1:{self.base_port}"
        self.children: dict[str, Child] = {}
        self.members: list[Member] = []
        self.spec: dict = {}
        self.config_digest = b""
        self.pool: dict = {}  # D/pool/pool.json: program_id, pool, mint, vault, payout_accounts
        self.providers: list[str] = []  # provider keys (base58): they pay their claims' fees
        self.auto_claim = False
        self.starts: Counter[str] = Counter()

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> CrashNetwork:
        try:
            self._start_all()
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _start_all(self) -> None:
        network = write_network(self.devnet)
        self.spec = tomllib.loads(network.read_text())
        for child in plan_children(self.devnet, network):
            self.children[child.name] = child
        n = self.options.validators
        for i in range(n):
            folder = self.options.data_dir / f"v{i}"
            self.members.append(Member(
                f"v{i}", folder, f"http://127.0.0.1:{self.base_port + 1 + n + i}",
                _pubkey_of(folder / "signing.key"),
                base58.b58encode(_pubkey_of(folder / "payer.key")).decode()))
        listed = {base58.b58decode(v["signing_key"]) for v in self.spec["validators"]}
        assert listed == {m.signing_key for m in self.members}, "spec and key files disagree"
        self.providers = [base58.b58encode(_pubkey_of(self.options.data_dir / f"p{j}" /
                                                      "provider.key")).decode()
                          for j in range(self.options.providers)]
        self.auto_claim = _provider_has_auto_claim()
        if not self.auto_claim:
            self.progress("note: `validator provide` has no --auto-claim here; providers run "
                          "without it (no claims: the claim checks see none)")
            for name in self.provider_names:
                child = self.children[name]
                child.argv = _without_auto_claim(child.argv)
        self._spawn(self.children["chain"])
        self._wait(lambda: self._rpc_ok(), 30, "the local chain", self.children["chain"])
        self.pool = set_up_pool(self.devnet, network)  # as `validator devnet` does
        for name, child in self.children.items():
            if name != "chain":
                self._spawn(child)
        for member in self.members:
            self.wait_serving(member.name)
        for name in self.provider_names:  # a provider that exits at once was refused a flag
            child = self.children[name]
            if not _alive(child.process):
                raise HarnessError(f"{name} exited with code {child.process.poll()}; "  # type: ignore[union-attr]
                                   f"{child.log_path} ends:\n{_tail(child.log_path)}")
        _, status = get_json(self.members[0].url + "/status")
        self.config_digest = bytes.fromhex(status["config_digest"])

    @property
    def provider_names(self) -> list[str]:
        return [f"p{j}" for j in range(self.options.providers)]

    def _spawn(self, child: Child) -> None:
        self.starts[child.name] += 1
        with open(child.log_path, "ab") as log:
            if self.starts[child.name] > 1:
                log.write(f"=== crash harness: start #{self.starts[child.name]} at "
                          f"{time.time():.3f} ===\n".encode())
            child.process = subprocess.Popen(
                child.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True, preexec_fn=_set_parent_death_signal)
        child.log_path.with_name("pid").write_text(f"{child.process.pid}\n")

    def _rpc_ok(self) -> bool:
        try:
            return rpc(self.rpc_url, "getHealth", []) == "ok"
        except (OSError, AssertionError, ValueError):
            return False

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str,
              child: Child) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not _alive(child.process):
                code = child.process.poll() if child.process else None
                raise HarnessError(f"{what} exited with code {code} before it was ready; "
                                   f"{child.log_path} ends:\n{_tail(child.log_path)}")
            if condition():
                return
            time.sleep(0.2)
        raise HarnessError(f"{what} not ready within {timeout:g} s; {child.log_path} ends:\n"
                           f"{_tail(child.log_path)}")

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def wait_serving(self, name: str, timeout: float = 60.0) -> None:
        url = self.member(name).url + "/healthz"
        self._wait(lambda: get_json(url, timeout=1)[0] == 200, timeout, name,
                   self.children[name])

    def wait_peers(self, name: str, timeout: float) -> bool:
        """Until ``name`` is connected to the other validators (best effort, no raise)."""
        deadline = time.time() + timeout
        want = len(self.members) - 1
        while time.time() < deadline:
            code, status = get_json(self.member(name).url + "/status", timeout=1)
            if code == 200 and status.get("peers", 0) >= want:
                return True
            time.sleep(0.3)
        return False

    def kill(self, name: str) -> None:
        process = self.children[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, name: str, attempts: int = 3) -> int:
        """Start ``name`` again as an operator would; returns how many tries it took."""
        child = self.children[name]
        for attempt in range(1, attempts + 1):
            self._spawn(child)
            try:
                self.wait_serving(name)
                return attempt
            except HarnessError as exc:
                self.progress(f"restart of {name} failed (try {attempt}): {exc}")
                if _alive(child.process):
                    self.kill(name)
                if attempt == attempts:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    def stop_all_but_the_chain(self) -> None:
        """SIGTERM providers and validators (then SIGKILL what is left after 15 s): nothing
        sends to the chain any more, so what is read from it next stays true."""
        names = self.provider_names + [m.name for m in self.members]
        for name in names:
            process = self.children[name].process
            if _alive(process):
                assert process is not None
                process.terminate()
        for name in names:
            process = self.children[name].process
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def stop_all(self) -> None:
        for child in reversed(list(self.children.values())):
            if _alive(child.process):
                assert child.process is not None
                child.process.terminate()
        for child in reversed(list(self.children.values())):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    # -- time and views ---------------------------------------------------------------------
    def epoch_at(self, now: float) -> tuple[int, float]:
        """(epoch, seconds into it) by the spec's clock (genesis_time + k * epoch_seconds)."""
        into = now - self.spec["genesis_time"]
        epoch_seconds = self.spec["epoch_seconds"]
        return int(into // epoch_seconds), into % epoch_seconds

    def db(self, name: str) -> Path:
        return self.member(name).folder / "validator.sqlite"

    def http_finals(self, name: str) -> set[int]:
        code, body = get_json(self.member(name).url + "/epochs?limit=1000", timeout=2)
        return {e["epoch"] for e in body if e.get("final")} if code == 200 else set()

    def union_finals(self) -> dict[int, set[bytes]]:
        out: dict[int, set[bytes]] = defaultdict(set)
        for member in self.members:
            for epoch, header_hash in final_epochs(self.db(member.name)).items():
                out[epoch].add(header_hash)
        return out


# -- the killer ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillRecord:
    index: int
    victim: str
    at: float
    epoch: int
    into_epoch: float  # seconds into the epoch at the kill
    phase: str  # the victim's /status phase just before the kill ("?" if it did not answer)
    posting: bool  # the victim's ledger had a post in flight ("sending") at the snapshot
    finals_before: dict[int, bytes]  # its SQLite's final reports just before the kill
    http_finals_before: frozenset[int]  # what its /epochs served as final just before
    signed_before: dict[int, bytes]  # its signed_headers just before the kill
    down_seconds: float
    restart_tries: int
    lost_after_restart: tuple[str, ...]
    last_event: str  # the victim's last log event before the kill (for the tally only)


def lost_after(record: KillRecord, view: DbView) -> list[str]:
    """What the victim showed before the kill and its SQLite no longer holds: final epochs
    (or a final header that changed) and slashing-protection rows."""
    lost = []
    now_final = {e: f.header_hash for e, f in view.finals.items()}
    where = f"kill {record.index} {record.victim}"
    for epoch in sorted(set(record.finals_before) | record.http_finals_before):
        before, after = record.finals_before.get(epoch), now_final.get(epoch)
        if after is None:
            lost.append(f"{where} epoch {epoch}: final before the kill, missing after")
        elif before is not None and after != before:
            lost.append(f"{where} epoch {epoch}: final header {before.hex()[:16]} became "
                        f"{after.hex()[:16]}")
    for epoch, header_hash in sorted(record.signed_before.items()):
        if view.signed_headers.get(epoch) != header_hash:  # slashing protection forgotten
            lost.append(f"{where} epoch {epoch}: signed_headers row {header_hash.hex()[:16]} "
                        f"is now {view.signed_headers.get(epoch)!r}")
    return lost


def _last_event(log: Path) -> str:
    """The ``event`` of the last JSON log line (best effort; only for the benchmark's tally)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return "?"
    for line in reversed(lines):
        try:
            return str(json.loads(line).get("event", "?"))
        except ValueError:
            continue
    return "?"


def kill_once(net: CrashNetwork, rng: random.Random, index: int) -> KillRecord:
    options = net.options
    victim = rng.choice(net.members).name
    time.sleep(rng.uniform(0.0, options.epoch_seconds))
    code, status = get_json(net.member(victim).url + "/status", timeout=1)
    phase = status.get("phase", "?") if code == 200 else "?"
    http_before = frozenset(net.http_finals(victim))
    view = read_db(net.db(victim))
    at = time.time()
    net.kill(victim)
    last_event = _last_event(net.children[victim].log_path)
    epoch, into = net.epoch_at(at)
    down = rng.uniform(*options.pause)
    time.sleep(down)
    tries = net.restart(victim)
    record = KillRecord(index, victim, at, epoch, into, phase,
                        any(p.status == "sending" for p in view.posts.values()),
                        {e: f.header_hash for e, f in view.finals.items()}, http_before,
                        dict(view.signed_headers), time.time() - at, tries, (), last_event)
    lost = tuple(lost_after(record, read_db(net.db(victim))))
    net.wait_peers(victim, timeout=options.epoch_seconds)
    return replace(record, lost_after_restart=lost)


def verify(net: CrashNetwork, records: list[KillRecord], end_epoch: int) -> Verdict:
    """Read every SQLite file and the chain; every process but the chain is stopped by now."""
    views = {m.name: read_db(net.db(m.name)) for m in net.members}
    pool = net.pool
    chain = read_chain(net.rpc_url, str(pool["program_id"]), str(pool["pool"]),
                       [m.payer for m in net.members] + net.providers,
                       list(pool["payout_accounts"].values()))
    n = len(net.members)
    threshold = (n + (n - 1) // 3) // 2 + 1
    verdict = Verdict(kills=len(records), auto_claim=net.auto_claim,
                      unparsed_pool_txs=list(chain.unparsed))
    accepted = check_reports(verdict, chain)
    check_signatures(verdict, net.members, views, chain.posts, threshold, accepted)
    check_posts(verdict, net.members, views, chain.posts, accepted)
    check_claims(verdict, chain, accepted, int(pool["supply"]))
    for record in records:
        verdict.lost_finals.extend(record.lost_after_restart)
        for line in lost_after(record, views[record.victim]):
            if line not in verdict.lost_finals:
                verdict.lost_finals.append(line)
        verdict.restart_retries += record.restart_tries - 1
        verdict.phases[record.phase + ("+posting" if record.posting else "")] += 1
        verdict.seconds_into_epoch[int(record.into_epoch)] += 1
        verdict.last_events[record.last_event] += 1
    for name, view in views.items():
        for kind, epoch, offender in view.evidence:
            verdict.evidence.append(f"{name}: {kind} evidence, epoch {epoch}, offender "
                                    f"{_b58(offender)}")
    final = {e for v in views.values() for e in v.finals}
    verdict.epochs = max(0, end_epoch)
    verdict.finals = len({e for e in final if e < end_epoch})
    verdict.unaccepted_finals = sorted(final - {a.epoch for a in accepted})
    return verdict


def _settle(net: CrashNetwork, progress: Progress) -> None:
    """Wait (bounded) until every validator holds the same recent final, has the one before
    it confirmed on chain, and has no post in flight."""
    deadline = time.time() + net.options.settle_epochs * net.options.epoch_seconds
    while time.time() < deadline:
        views = [read_db(net.db(m.name)) for m in net.members]
        newest = {max(v.finals, default=-1) for v in views}
        pending = sum(1 for v in views for p in v.posts.values() if p.status == "sending")
        current, _ = net.epoch_at(time.time())
        if len(newest) == 1 and min(newest) >= current - 2 and not pending and all(
                v.posts.get(min(newest) - 1) is not None
                and v.posts[min(newest) - 1].status == "confirmed" for v in views):
            return
        time.sleep(0.5)
    progress("settle: not every validator agreed on a posted recent final in time "
             "(reported, not a violation by itself)")


def run_crash_soak(options: CrashOptions, progress: Progress = print) -> Verdict:
    """Start the network, kill ``options.kills`` times, stop, and return the verdict."""
    rng = random.Random(options.seed)
    started = time.time()
    records: list[KillRecord] = []
    samples: list[int] = []
    with CrashNetwork(options, progress) as net:
        progress(f"network up: {len(net.members)} validators, {options.providers} providers"
                 f"{' (auto-claim)' if net.auto_claim else ''}, {options.epoch_seconds} s "
                 f"epochs, chain {net.rpc_url}, pool {net.pool['pool']}, data "
                 f"{options.data_dir}, seed {options.seed}")
        deadline = time.time() + options.first_final_timeout
        while not net.union_finals():
            if time.time() > deadline:
                raise HarnessError("no report became final before the first kill")
            time.sleep(0.5)
        for index in range(1, options.kills + 1):
            record = kill_once(net, rng, index)
            records.append(record)
            union = net.union_finals()
            samples.append(len(union))
            progress(f"kill {index}/{options.kills} {record.victim} epoch {record.epoch} "
                     f"+{record.into_epoch:.1f}s phase={record.phase}"
                     f"{' posting' if record.posting else ''} down {record.down_seconds:.1f}s"
                     f" finals={len(union)} newest={max(union, default=-1)}"
                     + (f" LOST {list(record.lost_after_restart)}"
                        if record.lost_after_restart else ""))
        _settle(net, progress)
        end_epoch, _ = net.epoch_at(time.time())
        net.stop_all_but_the_chain()
        verdict = verify(net, records, end_epoch)
    verdict.finals_during_kills = tuple(samples)
    verdict.seconds = time.time() - started
    return verdict


def write_json(verdict: Verdict, path: Path) -> None:
    """The verdict with every violation spelled out, for a person to read after a long run."""
    body = {k: v for k, v in verdict.__dict__.items()}
    body["phases"] = dict(verdict.phases)
    body["seconds_into_epoch"] = dict(sorted(verdict.seconds_into_epoch.items()))
    body["last_events"] = dict(verdict.last_events)
    path.write_text(json.dumps(body, indent=2, default=str))


__all__ = ["Accepted", "ChainClaim", "ChainClose", "ChainPost", "ChainView", "CrashNetwork",
           "CrashOptions", "DbView",
           "FinalRow", "HarnessError", "KillRecord", "Member", "PostRow", "Verdict",
           "check_claims", "check_posts", "check_reports", "check_signatures", "lost_after",
           "read_db", "run_crash_soak", "verify", "write_json"]
