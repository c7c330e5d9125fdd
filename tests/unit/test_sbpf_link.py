"""programs.sbpf_link and programs.build: a C fixture, built and run in LiteSVM.

The fixture (sbpf_fixture.c) covers every relocation kind the linker handles; these tests
check that LiteSVM loads the result and that it behaves (logs, sha256, custom errors), that
builds are byte-identical, and that what cannot work is refused with a LinkError.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorInstructionError,
)

from programs.build import build, compile_object
from programs.sbpf_link import MM_PROGRAM_START, LinkError, link

pytestmark = pytest.mark.skipif(shutil.which("clang-14") is None,
                                reason="clang-14 not installed (apt-get install clang-14)")

FIXTURE = Path(__file__).with_name("sbpf_fixture.c")
PROGRAM_ID = Pubkey(hashlib.sha256(b"sbpf fixture").digest())
NAMES = ["alpha", "beta", "gamma", "delta"]
MASK = 2**64 - 1


@pytest.fixture(scope="module")
def elf() -> bytes:
    return build(FIXTURE)


@pytest.fixture
def chain(elf: bytes) -> tuple[LiteSVM, Keypair]:
    svm = LiteSVM()
    svm.add_program(PROGRAM_ID, elf)
    payer = Keypair()
    svm.airdrop(payer.pubkey(), 10**9)
    return svm, payer


def send(chain: tuple[LiteSVM, Keypair], data: bytes, accounts: Sequence[AccountMeta] = ()
         ) -> TransactionMetadata | FailedTransactionMetadata:
    svm, payer = chain
    ix = Instruction(PROGRAM_ID, data, list(accounts))
    msg = Message.new_with_blockhash([ix], payer.pubkey(), svm.latest_blockhash())
    tx = VersionedTransaction(msg, [payer])
    result = svm.send_transaction(tx)
    svm.expire_blockhash()  # the same data twice must not be a duplicate transaction
    return result


def log_64(*values: int) -> str:
    return "Program log: " + ", ".join(f"{v:#x}" for v in values)


def program_logs(result: TransactionMetadata) -> list[str]:
    return [line for line in result.logs() if line.startswith(("Program log:", "Program data:"))]


@pytest.mark.parametrize("payload", [b"", b"bandwidth pool", bytes(range(256)) * 3])
def test_sha256_of_instruction_data(chain: tuple[LiteSVM, Keypair], payload: bytes) -> None:
    data = b"\x00" + payload
    result = send(chain, data)
    assert isinstance(result, TransactionMetadata), result
    digest = hashlib.sha256(data).digest()
    assert program_logs(result) == [
        "Program log: sbpf fixture: hello",
        "Program data: " + base64.b64encode(digest).decode(),
        log_64(len(data), digest[0], digest[1], digest[30], digest[31]),
        log_64(0, 0, 0, 0, 0),
    ]
    assert result.logs()[-1] == f"Program {PROGRAM_ID} success"


def test_accounts_are_skipped(chain: tuple[LiteSVM, Keypair]) -> None:
    svm, payer = chain
    other = Keypair().pubkey()
    svm.airdrop(other, 10**6)
    accounts = [AccountMeta(payer.pubkey(), True, True), AccountMeta(other, False, False),
                AccountMeta(payer.pubkey(), True, True)]  # the last is a duplicate
    data = b"\x00accounts"
    result = send(chain, data, accounts)
    assert isinstance(result, TransactionMetadata), result
    digest = hashlib.sha256(data).digest()
    assert "Program data: " + base64.b64encode(digest).decode() in result.logs()
    assert program_logs(result)[-1] == log_64(3, 0, 0, 0, 0)


@pytest.mark.parametrize("code", [1, 42, 0xB10C, 2**32 - 1])
def test_custom_error(chain: tuple[LiteSVM, Keypair], code: int) -> None:
    result = send(chain, b"\x01" + struct.pack("<I", code))
    assert isinstance(result, FailedTransactionMetadata)
    assert result.err() == TransactionErrorInstructionError(0, InstructionErrorCustom(code))


def mix(i: int) -> int:
    mixers = [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x2545F4914F6CDD1D]
    x = i ^ (i >> 31)
    return x * mixers[x & 3] & MASK


@pytest.mark.parametrize("i", [0, 1, 2, 3, 6, 255])
def test_pointer_tables_and_calls(chain: tuple[LiteSVM, Keypair], i: int) -> None:
    a, b = 1000 + i, 7
    op = [a + b, a - b, a * b, a ^ b][i % 4]
    result = send(chain, bytes([2, i]))
    assert isinstance(result, TransactionMetadata), result
    assert program_logs(result) == [f"Program log: {NAMES[i % 4]}", log_64(i, op, mix(i), 0, 0)]


def test_build_is_deterministic(elf: bytes) -> None:
    assert build(FIXTURE) == elf
    obj = compile_object(FIXTURE)
    assert link(obj) == link(obj) == elf


def test_layout(elf: bytes) -> None:
    e_entry, _, e_shoff = struct.unpack_from("<QQQ", elf, 24)
    e_shnum, e_shstrndx = struct.unpack_from("<HH", elf, 60)
    assert struct.unpack_from("<HHI", elf, 16) == (3, 247, 1)  # ET_DYN, EM_BPF
    assert struct.unpack_from("<I", elf, 48) == (0,)  # e_flags: SBPFv0
    sections = [struct.unpack_from("<IIQQQQ", elf, e_shoff + 64 * i) for i in range(e_shnum)]
    shstr = sections[e_shstrndx]
    names = elf[shstr[4]:shstr[4] + shstr[5]]
    by_name = {names[s[0]:names.index(b"\0", s[0])].decode(): s for s in sections[1:]}
    assert sorted(by_name) == [".dynamic", ".dynstr", ".dynsym", ".rel.dyn", ".rodata",
                               ".shstrtab", ".text"]
    for name, (_, _, flags, sh_addr, sh_offset, _) in by_name.items():
        assert not flags & 2 or sh_addr == sh_offset, name
    text = by_name[".text"]
    assert text[3] <= e_entry < text[3] + text[5]
    # The pointer table of names points into the merged .rodata, at MM_PROGRAM_START.
    rodata = by_name[".rodata"]
    body = elf[rodata[4]:rodata[4] + rodata[5]]
    for name in NAMES:
        pointer = struct.pack("<Q", MM_PROGRAM_START + rodata[3] + body.index(name.encode()))
        assert pointer in body


def object_of(tmp_path: Path, source: str) -> bytes:
    src = tmp_path / "bad.c"
    src.write_text("typedef unsigned long u64;\nvoid sol_log_(const char *, u64);\n" + source)
    return compile_object(src)


@pytest.mark.parametrize("source, message", [
    ("u64 counter = 7;\nu64 entrypoint(const unsigned char *in) { return counter++; }",
     r"writable section \.data.*counter"),
    ("static u64 counter;\nu64 entrypoint(const unsigned char *in) { return counter++; }",
     r"writable section \.bss.*counter"),
    ("void helper(void);\nu64 entrypoint(const unsigned char *in) { helper(); return 0; }",
     r"\.text\+0x[0-9a-f]+ \(in entrypoint\): call to undefined function 'helper'"),
    (("extern const char table[];\n"
      "u64 entrypoint(const unsigned char *in) { sol_log_(table, 1); return 0; }"),
     r"\(in entrypoint\): reference to undefined symbol 'table'"),
    (("void sol_log(const char *, u64);\n"
      "u64 entrypoint(const unsigned char *in) { sol_log(\"typo\", 4); return 0; }"),
     r"call to undefined function 'sol_log', which is not a Solana syscall"),
    ("u64 main(const unsigned char *in) { return 0; }", r"entrypoint"),
])
def test_link_errors(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        link(object_of(tmp_path, source))


def test_program_without_syscalls_or_rodata(tmp_path: Path) -> None:
    src = tmp_path / "tiny.c"
    src.write_text("unsigned long entrypoint(const unsigned char *in) { return 77 + in[0]; }\n")
    svm = LiteSVM()
    svm.add_program(PROGRAM_ID, build(src))
    payer = Keypair()
    svm.airdrop(payer.pubkey(), 10**9)
    result = send((svm, payer), b"")
    assert isinstance(result, FailedTransactionMetadata)
    assert result.err() == TransactionErrorInstructionError(0, InstructionErrorCustom(77))


def test_command_lines(tmp_path: Path, elf: bytes) -> None:
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "fixture.so"
    subprocess.run([sys.executable, "-m", "programs.build", str(FIXTURE), str(out)],
                   cwd=root, check=True, capture_output=True)
    assert out.read_bytes() == elf
    obj, relinked = tmp_path / "fixture.o", tmp_path / "relinked.so"
    obj.write_bytes(compile_object(FIXTURE))
    subprocess.run([sys.executable, "-m", "programs.sbpf_link", str(obj), str(relinked)],
                   cwd=root, check=True, capture_output=True)
    assert relinked.read_bytes() == elf


def test_not_an_object() -> None:
    with pytest.raises(LinkError, match="not an ELF"):
        link(b"hello")
