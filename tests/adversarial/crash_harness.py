"""SIGKILL crash safety with real processes: a seeded killer over a devnet, and checks that
read only what is on disk and on chain.

Shared by ``tests/adversarial/test_sigkill.py`` (a short run in the suite) and
``benchmarks/sigkill_soak.py`` (hundreds of kills).

The network is the devnet's layout (``validator.devnet.write_network`` / ``plan_children``:
D/network.toml, D/v{i}/config.toml, D/v{i}/validator.sqlite, D/v{i}/log.txt), but the harness
starts every child itself so that it owns each validator process. One kill:

1. pick a validator (``random.Random(seed)``), wait a uniform time inside one epoch, so kills
   land while probing, signing, writing SQLite and posting alike;
2. snapshot what that validator showed as final (its SQLite, read-only, and its HTTP
   ``/epochs``), then SIGKILL it;
3. after a random short pause restart it exactly as an operator would
   (``python -m validator.cli join --config D/vK/config.toml``), wait until it serves HTTP and
   check that every snapshot epoch is still final, with the same header hash, in its SQLite.

At most f = 1 validator is down at a time: the next kill starts only after the restart.

The verdict (``verify``) trusts nothing the validators compute beyond the on-disk schema
(``store.py``'s ``signed_headers``/``final_reports``/``evidence``, ``chain.py``'s
``chain_posts``): ed25519 signatures are re-verified with nacl over sha256(header); posts are
read back from the local chain over JSON-RPC (every payer's address and the network's report
log) and parsed from the Solana wire format here.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import base58
import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from solders.pubkey import Pubkey

from tests.integration.e2e_checks import ED25519_PROGRAM, HEADER, MEMO_PROGRAMS, get_json, rpc
from tests.integration.test_devnet_e2e import free_port_block
from validator.devnet import Child, DevnetOptions, _set_parent_death_signal, plan_children, \
    write_network

MEMO_V1 = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
REPORT_LOG_SEED = b"bwpool-report-log"
MEMO_RE = re.compile(r"bwpool:v1:([0-9a-f]{8}):(0|[1-9][0-9]*):([0-9a-f]{64})")
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


# -- reading the disk -----------------------------------------------------------------------
@dataclass(frozen=True)
class FinalRow:
    epoch: int
    header: bytes
    header_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class PostRow:
    epoch: int
    header_sha256: bytes
    status: str
    tx: str | None


@dataclass(frozen=True)
class DbView:
    """One validator's SQLite file as it is on disk (opened read-only)."""

    signed_headers: dict[int, bytes]
    finals: dict[int, FinalRow]
    posts: dict[int, PostRow]
    evidence: tuple[tuple[str, int, bytes], ...]  # (kind, epoch, offender)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_db(path: Path) -> DbView:
    """Read-only, in one read transaction; an absent file is an empty view."""
    if not path.exists():
        return DbView({}, {}, {}, ())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("BEGIN")
        tables = _tables(conn)
        signed = dict(conn.execute("SELECT epoch, header_hash FROM signed_headers")) \
            if "signed_headers" in tables else {}
        finals = {}
        if "final_reports" in tables:
            for epoch, header, header_hash, sigs in conn.execute(
                    "SELECT epoch, header, header_hash, signatures FROM final_reports"):
                pairs = tuple((bytes(s), bytes(g)) for s, g in msgpack.unpackb(sigs))
                finals[epoch] = FinalRow(epoch, bytes(header), bytes(header_hash), pairs)
        posts = {}
        if "chain_posts" in tables:
            for epoch, digest, status, tx in conn.execute(
                    "SELECT epoch, header_sha256, status, tx FROM chain_posts"):
                posts[epoch] = PostRow(epoch, bytes(digest), status, tx)
        evidence: tuple[tuple[str, int, bytes], ...] = ()
        if "evidence" in tables:
            evidence = tuple((k, e, bytes(o)) for k, e, o in conn.execute(
                "SELECT kind, epoch, offender FROM evidence"))
        conn.execute("COMMIT")
        return DbView(signed, finals, posts, evidence)
    finally:
        conn.close()


def final_epochs(path: Path) -> dict[int, bytes]:
    """{epoch: header_hash} of the final reports in one SQLite file."""
    return {e: f.header_hash for e, f in read_db(path).finals.items()}


# -- reading the chain ----------------------------------------------------------------------
@dataclass(frozen=True)
class ChainPost:
    tx: str
    slot: int
    payer: str  # base58, the fee payer (first account key)
    epoch: int
    header_hash: bytes
    digest_prefix: str  # the memo's 8 hex characters of the config digest
    ok: bool  # landed without error
    signatures: tuple[tuple[bytes, bytes], ...]  # (pubkey, signature) from the Ed25519 ix


def report_log_address(config_digest: bytes) -> str:
    """The program-derived address every post references (seeds: prefix, digest; Memo v1)."""
    address, _ = Pubkey.find_program_address([REPORT_LOG_SEED, config_digest],
                                             Pubkey.from_string(MEMO_V1))
    return str(address)


def parse_post(signature: str, tx: dict) -> ChainPost | None:
    """A bwpool report post from a getTransaction (json) answer; None if it is not one."""
    message = tx["transaction"]["message"]
    keys = message["accountKeys"]
    memo: re.Match[str] | None = None
    pairs: list[tuple[bytes, bytes]] = []
    for ix in message["instructions"]:
        program = keys[ix["programIdIndex"]]
        data = base58.b58decode(ix["data"])
        if program in MEMO_PROGRAMS:
            memo = MEMO_RE.fullmatch(data.decode(errors="replace"))
        elif program == ED25519_PROGRAM and data:
            for i in range(data[0]):
                sig_off, _, key_off, _, _, _, _ = struct.unpack_from("<7H", data, 2 + 14 * i)
                pairs.append((data[key_off:key_off + 32], data[sig_off:sig_off + 64]))
    if memo is None:
        return None
    return ChainPost(signature, tx["slot"], keys[0], int(memo.group(2)),
                     bytes.fromhex(memo.group(3)), memo.group(1), tx["meta"]["err"] is None,
                     tuple(pairs))


def read_chain_posts(rpc_url: str, addresses: list[str]) -> dict[str, ChainPost]:
    """Every report post that references one of ``addresses``, by transaction signature."""
    posts: dict[str, ChainPost] = {}
    seen: set[str] = set()
    for address in addresses:
        before: str | None = None
        while True:
            config: dict = {"limit": 1000, "commitment": "confirmed"}
            if before is not None:
                config["before"] = before
            page = rpc(rpc_url, "getSignaturesForAddress", [address, config])
            for item in page:
                sig = item["signature"]
                if sig in seen:
                    continue
                seen.add(sig)
                tx = rpc(rpc_url, "getTransaction",
                         [sig, {"encoding": "json", "commitment": "confirmed",
                                "maxSupportedTransactionVersion": 0}])
                post = None if tx is None else parse_post(sig, tx)
                if post is not None:
                    posts[sig] = post
            if len(page) < 1000:
                break
            before = page[-1]["signature"]
    return posts


# -- the network of processes ---------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    name: str
    folder: Path
    url: str
    signing_key: bytes
    payer: str  # base58


def _pubkey_of(key_file: Path) -> bytes:
    return SigningKey(bytes.fromhex(key_file.read_text().strip())).verify_key.encode()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


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
        self._spawn(self.children["chain"])
        self._wait(lambda: self._rpc_ok(), 30, "the local chain", self.children["chain"])
        for name, child in self.children.items():
            if name != "chain":
                self._spawn(child)
        for member in self.members:
            self.wait_serving(member.name)
        _, status = get_json(self.members[0].url + "/status")
        self.config_digest = bytes.fromhex(status["config_digest"])

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

    def stop_validators(self) -> None:
        for member in self.members:
            process = self.children[member.name].process
            if _alive(process):
                assert process is not None
                process.terminate()
        for member in self.members:
            process = self.children[member.name].process
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


# -- the verdict ----------------------------------------------------------------------------
@dataclass
class Verdict:
    kills: int = 0
    epochs: int = 0  # epochs that ended between genesis and the end of the run
    finals: int = 0  # of those, how many are final somewhere
    finals_during_kills: tuple[int, ...] = ()  # union final count sampled at every kill
    double_signatures: list[str] = field(default_factory=list)
    conflicting_finals: list[str] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    lost_finals: list[str] = field(default_factory=list)  # and forgotten signed_headers
    double_posts_per_payer: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    multi_post_epochs: int = 0
    failed_posts: int = 0  # landed with an error (fee paid, report not proven)
    unposted_finals: list[int] = field(default_factory=list)
    unsettled_posts: int = 0  # ledger rows still "sending" after the validators stopped
    restart_retries: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    seconds_into_epoch: Counter[int] = field(default_factory=Counter)  # kill moments
    last_events: Counter[str] = field(default_factory=Counter)  # victims' last log event
    seconds: float = 0.0

    @property
    def violations(self) -> list[str]:
        return (self.double_signatures + self.conflicting_finals + self.bad_signatures
                + self.lost_finals + self.double_posts_per_payer + self.ledger_problems
                + self.evidence)

    def line(self) -> str:
        figures = {
            "kills": self.kills, "epochs": self.epochs, "finals": self.finals,
            "double_signatures": len(self.double_signatures),
            "lost_finals": len(self.lost_finals),
            "double_posts_per_payer": len(self.double_posts_per_payer),
            "multi_post_epochs": self.multi_post_epochs,
            "conflicting_finals": len(self.conflicting_finals),
            "bad_signatures": len(self.bad_signatures),
            "ledger_problems": len(self.ledger_problems), "evidence": len(self.evidence),
            "failed_posts": self.failed_posts, "unposted_finals": len(self.unposted_finals),
            "unsettled_posts": self.unsettled_posts, "restart_retries": self.restart_retries,
            "seconds": round(self.seconds),
        }
        return " ".join(f"{k}={v}" for k, v in figures.items())


def check_signatures(verdict: Verdict, members: list[Member], views: dict[str, DbView],
                     posts: dict[str, ChainPost], threshold: int) -> None:
    """No signer has valid signatures on two header hashes for one epoch, anywhere; every
    validator's final header for an epoch is the same."""
    keys = {m.signing_key for m in members}
    signed: dict[tuple[bytes, int], dict[bytes, str]] = defaultdict(dict)  # -> hash: where
    for member in members:
        view = views[member.name]
        for epoch, header_hash in view.signed_headers.items():
            signed[(member.signing_key, epoch)].setdefault(header_hash,
                                                           f"{member.name}.signed_headers")
        for epoch, final in view.finals.items():
            where = f"{member.name}.final_reports[{epoch}]"
            if hashlib.sha256(final.header).digest() != final.header_hash:
                verdict.bad_signatures.append(f"{where}: header_hash is not sha256(header)")
                continue
            fields = HEADER.unpack(final.header)
            if fields[4] != epoch or fields[0] != b"BWPR":
                verdict.bad_signatures.append(f"{where}: header names epoch {fields[4]}")
            valid = set()
            for signer, sig in final.signatures:
                try:
                    VerifyKey(signer).verify(final.header_hash, sig)
                except (BadSignatureError, ValueError):
                    verdict.bad_signatures.append(f"{where}: bad signature by "
                                                  f"{base58.b58encode(signer).decode()}")
                    continue
                signed[(signer, epoch)].setdefault(final.header_hash, where)
                valid.add(signer)
            if len(valid & keys) < threshold:
                verdict.bad_signatures.append(f"{where}: {len(valid & keys)} member "
                                              f"signatures, below threshold {threshold}")
    for post in posts.values():
        if not post.ok:
            continue
        for pubkey, sig in post.signatures:  # the chain verified these; we do again
            try:
                VerifyKey(pubkey).verify(post.header_hash, sig)
            except (BadSignatureError, ValueError):
                verdict.bad_signatures.append(f"tx {post.tx}: bad signature")
                continue
            signed[(pubkey, post.epoch)].setdefault(post.header_hash, f"tx {post.tx}")
    for (signer, epoch), hashes in sorted(signed.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if len(hashes) > 1:
            detail = ", ".join(f"{h.hex()} in {w}" for h, w in hashes.items())
            verdict.double_signatures.append(
                f"epoch {epoch} signer {base58.b58encode(signer).decode()}: {detail}")
    by_epoch: dict[int, dict[bytes, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, view in views.items():
        for epoch, final in view.finals.items():
            by_epoch[epoch][final.header_hash].append(name)
    for post in posts.values():
        if post.ok:
            by_epoch[post.epoch][post.header_hash].append(f"tx {post.tx}")
    for epoch, hashes in sorted(by_epoch.items()):
        if len(hashes) > 1:
            verdict.conflicting_finals.append(f"epoch {epoch}: " + "; ".join(
                f"{h.hex()} held by {', '.join(w)}" for h, w in hashes.items()))


def check_posts(verdict: Verdict, members: list[Member], views: dict[str, DbView],
                posts: dict[str, ChainPost], digest: bytes) -> None:
    """No payer posts one epoch's signature twice; each ledger names a confirmed tx.

    A report whose threshold exceeds 7 signatures is posted in parts (validator.chain), so
    one payer may land several posts for an epoch; a double post is the same member's
    signature landing twice from one payer (with one part per report, a second post)."""
    ours = [p for p in posts.values() if p.digest_prefix == digest[:4].hex()]
    verdict.failed_posts = sum(1 for p in ours if not p.ok)
    per_payer: dict[tuple[int, str], list[ChainPost]] = defaultdict(list)
    per_epoch: dict[int, list[ChainPost]] = defaultdict(list)
    for post in ours:
        if post.ok:
            per_payer[(post.epoch, post.payer)].append(post)
            per_epoch[post.epoch].append(post)
    names = {m.payer: m.name for m in members}
    for (epoch, payer), landed in sorted(per_payer.items()):
        keys = [pubkey for post in landed for pubkey, _ in post.signatures]
        if len(landed) > 1 and len(set(keys)) < len(keys):
            verdict.double_posts_per_payer.append(
                f"epoch {epoch} payer {payer} ({names.get(payer, 'stranger')}): "
                + ", ".join(f"{p.tx} slot {p.slot}" for p in landed))
    verdict.multi_post_epochs = sum(1 for landed in per_epoch.values() if len(landed) > 1)
    for member in members:
        view = views[member.name]
        for epoch, row in sorted(view.posts.items()):
            if row.status == "sending":
                verdict.unsettled_posts += 1
            if row.status != "confirmed":
                continue
            post = posts.get(row.tx or "")
            if post is None or not post.ok or post.epoch != epoch \
                    or post.header_hash != row.header_sha256:
                verdict.ledger_problems.append(
                    f"{member.name} epoch {epoch}: ledger says confirmed by {row.tx}, chain "
                    f"has {post}")
        for (epoch, payer), landed in per_payer.items():
            if payer != member.payer:
                continue
            row = view.posts.get(epoch)
            if row is None or row.tx not in {p.tx for p in landed}:
                verdict.ledger_problems.append(
                    f"{member.name} epoch {epoch}: its own post {landed[0].tx} landed but its "
                    f"ledger names {row.tx if row else 'nothing'} ({row.status if row else '-'})")


def verify(net: CrashNetwork, records: list[KillRecord], end_epoch: int) -> Verdict:
    """Read every SQLite file and the chain; the validators should be stopped by now."""
    views = {m.name: read_db(net.db(m.name)) for m in net.members}
    addresses = [report_log_address(net.config_digest)] + [m.payer for m in net.members]
    posts = read_chain_posts(net.rpc_url, addresses)
    n = len(net.members)
    threshold = (n + (n - 1) // 3) // 2 + 1
    verdict = Verdict(kills=len(records))
    check_signatures(verdict, net.members, views, posts, threshold)
    check_posts(verdict, net.members, views, posts, net.config_digest)
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
                                    f"{base58.b58encode(offender).decode()}")
    final = {e for v in views.values() for e in v.finals}
    posted = {p.epoch for p in posts.values() if p.ok}
    verdict.epochs = max(0, end_epoch)
    verdict.finals = len({e for e in final if e < end_epoch})
    verdict.unposted_finals = sorted(final - posted)
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
        progress(f"network up: {len(net.members)} validators, {options.providers} providers, "
                 f"{options.epoch_seconds} s epochs, chain {net.rpc_url}, data "
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
        net.stop_validators()
        time.sleep(1.0)  # anything sent just before the stop lands within a slot or two
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


__all__ = ["CrashNetwork", "CrashOptions", "HarnessError", "KillRecord", "Verdict",
           "read_chain_posts", "read_db", "report_log_address", "run_crash_soak", "verify",
           "write_json"]
