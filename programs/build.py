"""Compile a C file into an SBPFv0 Solana program: clang-14 to a BPF object, then our linker.

`python -m programs.build SRC.c OUT.so`, or `build(Path("prog.c"))` for the ELF bytes. The
object is compiled in a temporary directory with flags that keep it reproducible (no debug
info, no compiler ident, source paths relative to the source's directory), and linked by
`programs.sbpf_link` because no linker on these machines handles SBPF syscalls.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from programs.sbpf_link import LinkError, link

__all__ = ["CFLAGS", "CLANG", "BuildError", "build", "compile_object"]

CLANG = "clang-14"
CFLAGS = (
    "-target", "bpfel", "-mcpu=v2", "-O2",
    "-fno-builtin", "-ffreestanding", "-nostdlib", "-fno-stack-protector",
    "-Wall", "-Werror",
    # Reproducible output: no debug info, no ident string, no address-significance table,
    # no absolute paths (the compiler runs in the source's directory on a relative name).
    "-g0", "-fno-ident", "-fno-addrsig", "-fno-asynchronous-unwind-tables",
)


class BuildError(Exception):
    """The toolchain is missing, or the compiler or the linker refused the program."""


def compile_object(src: Path) -> bytes:
    """Compile `src` with clang-14 and return the BPF object file's bytes."""
    clang = shutil.which(CLANG)
    if clang is None:
        raise BuildError(f"{CLANG} not found: install it with `apt-get install clang-14`")
    src = src.resolve()
    with tempfile.TemporaryDirectory(prefix="sbpf-build-") as tmp:
        obj = Path(tmp) / "prog.o"
        cmd = [clang, *CFLAGS, f"-ffile-prefix-map={src.parent}=.", f"-ffile-prefix-map={tmp}=.",
               "-c", src.name, "-o", str(obj)]
        proc = subprocess.run(cmd, check=False, cwd=src.parent, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        if proc.returncode != 0:
            raise BuildError(f"{CLANG} failed on {src}:\n{proc.stderr.strip()}")
        return obj.read_bytes()


def build(src: Path) -> bytes:
    """Compile and link `src` into SBPFv0 ELF bytes for `LiteSVM.add_program`."""
    obj = compile_object(src)
    try:
        return link(obj)
    except LinkError as exc:
        raise BuildError(f"linking {src}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """`python -m programs.build SRC.c OUT.so`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m programs.build SRC.c OUT.so", file=sys.stderr)
        return 2
    try:
        elf = build(Path(args[0]))
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    Path(args[1]).write_bytes(elf)
    print(f"{args[1]}: {len(elf)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
