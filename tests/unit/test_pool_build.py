"""The committed pool program is what its source builds to, byte for byte (issue 8).

Anyone can rebuild `programs/pool/pool.so` from `pool.c` with Debian's clang-14 and our ELF
writer and compare it with what is deployed: this test does exactly that.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from programs.build import build

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "programs" / "pool" / "pool.c"
COMMITTED = ROOT / "programs" / "pool" / "pool.so"


@pytest.mark.skipif(shutil.which("clang-14") is None, reason="clang-14 not installed "
                    "(make install installs it as root)")
def test_pool_so_is_rebuilt_byte_for_byte() -> None:
    rebuilt = build(SOURCE)
    committed = COMMITTED.read_bytes()
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(committed).hexdigest(), (
        "programs/pool/pool.so is stale: run `make program` and commit it")
