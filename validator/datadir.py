"""A data directory: one process at a time, and state of one network.

``lock_data_dir`` takes an exclusive ``flock`` on ``validator.lock`` in the data directory and
writes the holder's PID into it; the kernel drops the lock when the process ends, however it
ends (SIGKILL included), so a stale lock file never blocks a restart. A second process asking
for the lock is refused with the holder's PID.

``check_network`` compares the network the state (``validator.sqlite``) was claimed for
(``Store.network_digest``) with the spec's ``config_digest``. State of another network is
never used (its final reports would be served as this network's, and its signed headers
would block signing) and never deleted: ``reset=True`` moves the SQLite files aside into
``state-<old digest>-<UTC time>/`` next to them.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from validator.store import Store

LOCK_NAME = "validator.lock"
PID_WAIT_SECONDS = 0.5  # a holder writes its PID right after it takes the lock
SQLITE_SUFFIXES = ("", "-wal", "-shm")


class DataDirError(Exception):
    """The data directory is in use, or holds another network's state (one line: what to do)."""


@dataclass
class DataDirLock:
    """Held until ``release`` or the end of the process."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data directory for this process, or raise DataDirError naming the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_pid(fd)
        os.close(fd)
        who = f"process {holder}" if holder else "another process"
        raise DataDirError(f"{data_dir} is in use by {who} (lock {path}); stop it first, or "
                           f"give this one another data directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(path, fd)


def _holder_pid(fd: int) -> str:
    deadline = time.monotonic() + PID_WAIT_SECONDS
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit() or time.monotonic() > deadline:
            return text if text.isdigit() else ""
        time.sleep(0.02)


RESET_HINT = "rerun with --reset-state to move the old state aside (nothing is deleted)"


def check_network(db_path: Path, config_digest: bytes, *, spec_path: Path, config_path: Path,
                  reset: bool, reset_hint: str = RESET_HINT) -> Path | None:
    """Make sure the state at ``db_path`` is this network's (or there is none yet).

    Another network's state raises DataDirError (its message ends with the two ways on: a
    new directory, or ``reset_hint``), or with ``reset`` is moved aside: returns the folder
    it went to (None when nothing was moved). Call with the data directory locked.
    """
    if not db_path.exists():
        return None
    store = Store(db_path)
    try:
        stored = store.network_digest()
        if stored is None or stored == config_digest:
            return None
        if not reset:
            raise DataDirError(
                f"{db_path} holds the state of config_digest {stored.hex()}, but {spec_path} "
                f"has config_digest {config_digest.hex()}; set data_dir in {config_path} to "
                f"a new directory, or {reset_hint}")
        store.checkpoint()
    finally:
        store.close()
    return move_state_aside(db_path, stored)


def move_state_aside(db_path: Path, digest: bytes) -> Path:
    """Move the SQLite files at ``db_path`` into a new ``state-<digest>-<UTC time>`` folder
    beside them (a suffix keeps two moves in one second apart); returns that folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = db_path.parent / f"state-{digest.hex()[:16]}-{stamp}"
    folder, n = base, 0
    while True:
        try:
            folder.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
    for suffix in SQLITE_SUFFIXES:
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            source.rename(folder / source.name)
    return folder
