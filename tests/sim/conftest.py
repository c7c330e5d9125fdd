"""Fixtures of the simulation suite."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sim_root(tmp_path: Path) -> Iterator[Path]:
    """A directory for the validators' SQLite files: on tmpfs when there is one, since every
    store write is a synchronous=FULL transaction and fsync on disk costs wall time only."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="bwpool-sim-") as path:
            yield Path(path)
    else:
        yield tmp_path
