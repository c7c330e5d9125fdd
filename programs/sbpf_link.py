"""Link one clang-14 BPF object file (ET_REL) into an SBPFv0 Solana program (ET_DYN).

This module owns the last step of building our on-chain programs: it turns the `.o` that
`clang-14 -target bpfel -mcpu=v2 -c` writes into the `.so` that the Solana loader (and
LiteSVM's `add_program`) accepts. It exists because no linker on these machines can do it:
`ld.lld-14` rejects `R_BPF_64_64` against local symbols and cannot emit the dynamic
relocations that SBPF syscalls need (`unknown relocation (10) against symbol sol_log_`), and
the Solana platform tools cannot be installed.

What it does (the loader facts it relies on are in programs/pool/README.md and docs/design.md):
- every executable input section goes, in section order, into one output `.text`; every
  read-only allocated section (`.rodata`, `.rodata.str1.1`, `.rodata.cst16`, ...) into one
  output `.rodata`; each allocated output section has `sh_addr == sh_offset`, and the VM
  maps the file at `MM_PROGRAM_START` (0x1_0000_0000);
- `R_BPF_64_64` (lddw of an address) and `R_BPF_64_ABS64` (a pointer in rodata) are
  resolved here to `MM_PROGRAM_START + address`;
- `R_BPF_64_32` on a call to a function of the program becomes a relative call
  (`imm = target - (pc + 1)`, src = 1); on a call to an undefined symbol (a syscall) the
  call keeps `imm = -1` and gets a dynamic `R_BPF_64_32` against an undefined `.dynsym`
  entry named after it, into which the loader writes the syscall's hash;
- anything else (a writable `.data`/`.bss`, an unknown relocation, a reference to an
  undefined symbol that is not a call to a known syscall (`SYSCALLS`), a BPF helper call)
  is a `LinkError` that says what and where.

The output depends only on the input bytes (no timestamps, symbols in sorted order).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = ["MM_PROGRAM_START", "SYSCALLS", "LinkError", "link"]

MM_PROGRAM_START = 0x1_0000_0000

EM_BPF = 247
ET_REL, ET_DYN = 1, 3
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 1, 2, 3, 4
SHT_DYNAMIC, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 6, 8, 9, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00
STB_GLOBAL = 1
STT_OBJECT, STT_FUNC, STT_SECTION = 1, 2, 3
PT_LOAD, PT_DYNAMIC = 1, 2
PF_X, PF_W, PF_R = 1, 2, 4
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 5, 6, 10, 11
DT_REL, DT_RELSZ, DT_RELENT, DT_TEXTREL, DT_FLAGS = 17, 18, 19, 22, 30
DF_TEXTREL = 0x4
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = 1, 2, 3, 4, 10

OP_LDDW, OP_CALL = 0x18, 0x85
INSN = 8
EHDR, PHDR, SHDR, SYM, REL, DYN = 64, 56, 64, 24, 16, 16


class LinkError(Exception):
    """The object cannot become a correct SBPFv0 program; the message says what and where."""


class _Section(NamedTuple):
    num: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int


class _Symbol(NamedTuple):
    name: str
    info: int
    shndx: int
    value: int
    size: int


class _Object(NamedTuple):
    data: bytes
    sections: list[_Section]
    symbols: list[_Symbol]

    def body(self, sec: _Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return bytes(sec.size)
        if sec.offset + sec.size > len(self.data):
            raise LinkError(f"section {sec.name} extends past the end of the object file")
        return self.data[sec.offset:sec.offset + sec.size]


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise LinkError(f"string table offset {offset} out of range")
    return table[offset:end].decode("utf-8", "replace")


def _align(value: int, alignment: int) -> int:
    alignment = max(alignment, 1)
    return (value + alignment - 1) // alignment * alignment


def _parse(data: bytes) -> _Object:
    if len(data) < EHDR or data[:4] != b"\x7fELF":
        raise LinkError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise LinkError("not a 64-bit little-endian ELF file (compile with -target bpfel)")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_type != ET_REL or e_machine != EM_BPF:
        raise LinkError(f"not a BPF object file (e_type {e_type}, e_machine {e_machine})")
    try:
        e_shoff, = struct.unpack_from("<Q", data, 40)
        e_shnum, e_shstrndx = struct.unpack_from("<HH", data, 60)
        raw = [struct.unpack_from("<IIQQQQIIQ", data, e_shoff + i * SHDR) for i in range(e_shnum)]
        names = data[raw[e_shstrndx][4]:raw[e_shstrndx][4] + raw[e_shstrndx][5]]
        sections = [_Section(i, _cstr(names, r[0]), r[1], r[2], r[4], r[5], r[6], r[7], r[8])
                    for i, r in enumerate(raw)]
        obj = _Object(data, sections, [])
        symtab, = [s for s in sections if s.type == SHT_SYMTAB]
        strtab, body = obj.body(sections[symtab.link]), obj.body(symtab)
        for off in range(0, len(body) - SYM + 1, SYM):
            st_name, info, _, shndx, value, size = struct.unpack_from("<IBBHQQ", body, off)
            obj.symbols.append(_Symbol(_cstr(strtab, st_name), info, shndx, value, size))
    except (struct.error, IndexError, ValueError) as exc:
        raise LinkError(f"malformed object file ({exc})") from exc
    return obj


def _where(obj: _Object, sec: _Section, offset: int) -> str:
    """`.text+0x70 (in f)`: a location for error messages."""
    where = f"{sec.name}+{offset:#x}"
    for sym in obj.symbols:
        if sym.shndx == sec.num and sym.info & 0xF in (STT_OBJECT, STT_FUNC) \
                and sym.value <= offset < sym.value + max(sym.size, 1):
            return f"{where} (in {sym.name})"
    return where


# The syscalls of Agave's program runtime v1 (programs/bpf_loader/src/syscalls/mod.rs). An
# undefined function outside this list would load and then fail at run time with
# "unsupported BPF instruction", so the linker refuses it. LiteSVM in solders 0.29.0 does not
# enable sol_blake3, sol_get_fees_sysvar, sol_big_mod_exp and sol_remaining_compute_units.
SYSCALLS = frozenset({
    "abort", "sol_panic_", "sol_log_", "sol_log_64_", "sol_log_pubkey", "sol_log_compute_units_",
    "sol_log_data", "sol_create_program_address", "sol_try_find_program_address", "sol_sha256",
    "sol_keccak256", "sol_secp256k1_recover", "sol_blake3", "sol_poseidon",
    "sol_curve_validate_point", "sol_curve_group_op", "sol_curve_multiscalar_mul",
    "sol_curve_decompress", "sol_curve_pairing_map", "sol_alt_bn128_group_op",
    "sol_alt_bn128_compression", "sol_big_mod_exp", "sol_get_clock_sysvar",
    "sol_get_epoch_schedule_sysvar", "sol_get_fees_sysvar", "sol_get_rent_sysvar",
    "sol_get_last_restart_slot", "sol_get_epoch_rewards_sysvar", "sol_get_sysvar",
    "sol_get_epoch_stake", "sol_memcpy_", "sol_memmove_", "sol_memset_", "sol_memcmp_",
    "sol_get_processed_sibling_instruction", "sol_get_stack_height", "sol_set_return_data",
    "sol_get_return_data", "sol_invoke_signed_c", "sol_invoke_signed_rust", "sol_alloc_free_",
    "sol_remaining_compute_units",
})


def _string_table(names: list[str]) -> tuple[bytes, dict[str, int]]:
    table, index = bytearray(b"\0"), {"": 0}
    for name in names:
        if name not in index:
            index[name] = len(table)
            table += name.encode() + b"\0"
    return bytes(table), index


def _classify(obj: _Object) -> tuple[list[_Section], list[_Section]]:
    """The code and read-only data sections; a writable one is an error; the rest is dropped."""
    text: list[_Section] = []
    rodata: list[_Section] = []
    for sec in obj.sections:
        if not sec.flags & SHF_ALLOC or sec.size == 0:
            continue  # symbols, relocations, BTF, debug info, empty .data/.bss
        if sec.flags & SHF_WRITE or sec.type == SHT_NOBITS:
            holders = sorted({s.name for s in obj.symbols
                              if s.shndx == sec.num and s.name and s.info & 0xF != STT_SECTION})
            raise LinkError(f"writable section {sec.name} ({sec.size} bytes: "
                            f"{', '.join(holders) or 'no symbols'}): a Solana program cannot "
                            "have writable globals; make them const")
        if sec.type != SHT_PROGBITS:
            raise LinkError(f"unsupported allocated section {sec.name} (type {sec.type})")
        if sec.flags & SHF_EXECINSTR and sec.size % INSN:
            raise LinkError(f"code section {sec.name} is not a whole number of instructions")
        (text if sec.flags & SHF_EXECINSTR else rodata).append(sec)
    if not text:
        raise LinkError("the object has no code")
    return text, rodata


def _place(sections: list[_Section], pos: int, addr: dict[int, int]) -> int:
    """Give each section an address from `pos` on, aligned; returns the end."""
    for sec in sections:
        pos = _align(pos, max(sec.align, 1))
        addr[sec.num] = pos
        pos += sec.size
    return pos


class _Linker:
    """The merged image (.text then .rodata) and the relocation of the object into it."""

    def __init__(self, obj: _Object, text: list[_Section], rodata: list[_Section], start: int):
        self.obj, self.text = obj, text
        self.addr: dict[int, int] = {}
        self.text_start = start
        self.text_end = _place(text, start, self.addr)
        self.rodata_start = _align(self.text_end, max([INSN] + [s.align for s in rodata]))
        self.rodata_end = _place(rodata, self.rodata_start, self.addr)
        self.image = bytearray(self.rodata_end)
        for sec in text + rodata:
            self.image[self.addr[sec.num]:self.addr[sec.num] + sec.size] = obj.body(sec)
        self.code = {s.num for s in text}
        self.syscall_sites: list[tuple[int, str]] = []  # (address of the call, syscall)
        self.relocated_calls: set[int] = set()

    def address(self, sym: _Symbol, where: str) -> int:
        if sym.shndx in self.addr:
            return self.addr[sym.shndx] + sym.value
        if sym.shndx == SHN_UNDEF:
            raise LinkError(f"{where}: reference to undefined symbol {sym.name!r} "
                            "(only calls to syscalls may be undefined)")
        if sym.shndx >= SHN_LORESERVE:
            raise LinkError(f"{where}: symbol {sym.name!r} has special section index "
                            f"{sym.shndx:#x} (common and absolute symbols are not supported)")
        raise LinkError(f"{where}: symbol {sym.name!r} is in section "
                        f"{self.obj.sections[sym.shndx].name}, which is not part of the program")

    def relocate_all(self) -> None:
        for rel in self.obj.sections:
            if rel.type not in (SHT_REL, SHT_RELA) or rel.info not in self.addr:
                continue  # relocations of dropped sections (.BTF, debug info) do not matter
            if rel.type == SHT_RELA:
                raise LinkError(f"{rel.name}: RELA relocations are not supported")
            body = self.obj.body(rel)
            for off in range(0, len(body) - REL + 1, REL):
                r_offset, r_info = struct.unpack_from("<QQ", body, off)
                self.relocate(self.obj.sections[rel.info], r_offset, r_info & 0xFFFFFFFF,
                              r_info >> 32)

    def relocate(self, target: _Section, offset: int, r_type: int, r_sym: int) -> None:
        where = _where(self.obj, target, offset)
        if r_sym >= len(self.obj.symbols):
            raise LinkError(f"{where}: relocation against bad symbol index {r_sym}")
        sym, at, in_code = self.obj.symbols[r_sym], self.addr[target.num] + offset, \
            target.num in self.code
        width = 16 if r_type == R_BPF_64_64 else 8
        if offset + width > target.size or (in_code and offset % INSN):
            raise LinkError(f"{where}: relocation outside its section or misaligned")
        image = self.image
        if r_type == R_BPF_64_64:  # lddw rX, symbol + addend (addend in both immediates)
            if not in_code or image[at] != OP_LDDW:
                raise LinkError(f"{where}: R_BPF_64_64 is not on an lddw instruction")
            lo, = struct.unpack_from("<I", image, at + 4)
            hi, = struct.unpack_from("<I", image, at + 12)
            value = (MM_PROGRAM_START + self.address(sym, where) + (hi << 32 | lo)) % 2**64
            struct.pack_into("<I", image, at + 4, value & 0xFFFFFFFF)
            struct.pack_into("<I", image, at + 12, value >> 32)
        elif r_type == R_BPF_64_ABS64:  # a pointer in rodata, addend in place
            if in_code:
                raise LinkError(f"{where}: R_BPF_64_ABS64 inside code")
            addend, = struct.unpack_from("<Q", image, at)
            value = (MM_PROGRAM_START + self.address(sym, where) + addend) % 2**64
            struct.pack_into("<Q", image, at, value)
        elif r_type == R_BPF_64_32:  # call: target = symbol + (imm + 1) * 8
            if not in_code or image[at] != OP_CALL:
                raise LinkError(f"{where}: R_BPF_64_32 against {sym.name!r} is not on a call")
            self.relocated_calls.add(at)
            if sym.shndx == SHN_UNDEF:
                if sym.name not in SYSCALLS:
                    raise LinkError(
                        f"{where}: call to undefined function {sym.name!r}, which is not a "
                        "Solana syscall (see sbpf_link.SYSCALLS); define it in the C file")
                image[at + 1] = 0  # src 0, imm -1: the loader writes the syscall's hash
                struct.pack_into("<i", image, at + 4, -1)
                self.syscall_sites.append((at, sym.name))
                return
            imm, = struct.unpack_from("<i", image, at + 4)
            dest = self.address(sym, where) + (imm + 1) * INSN
            if not self.text_start <= dest < self.text_end or (dest - self.text_start) % INSN:
                raise LinkError(f"{where}: call to {sym.name!r} lands outside the code")
            image[at + 1] = 0x10  # src 1: relative to this call
            struct.pack_into("<i", image, at + 4, (dest - at) // INSN - 1)
        else:
            kind = {R_BPF_64_ABS32: "R_BPF_64_ABS32", R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32"}
            raise LinkError(f"{where}: unsupported relocation {kind.get(r_type, r_type)} "
                            f"against {sym.name!r} in {target.name}")

    def check_calls(self) -> None:
        """Every call without a relocation must be relative (src 1) within its section."""
        for sec in self.text:
            start = self.addr[sec.num]
            pc = start
            while pc < start + sec.size:
                opcode, regs = self.image[pc], self.image[pc + 1]
                if opcode == OP_CALL and pc not in self.relocated_calls:
                    imm, = struct.unpack_from("<i", self.image, pc + 4)
                    where = _where(self.obj, sec, pc - start)
                    if regs >> 4 != 1:
                        raise LinkError(f"{where}: call to BPF helper {imm}, "
                                        "which Solana does not have")
                    if not start <= pc + (imm + 1) * INSN < start + sec.size:
                        raise LinkError(f"{where}: relative call lands outside its section")
                pc += 2 * INSN if opcode == OP_LDDW else INSN


def link(object_bytes: bytes) -> bytes:
    """Link a clang-14 BPF object file into an SBPFv0 shared object, or raise `LinkError`."""
    obj = _parse(object_bytes)
    text, rodata = _classify(obj)
    entries = [s for s in obj.symbols if s.name == "entrypoint" and s.info >> 4 == STB_GLOBAL
               and any(s.shndx == t.num for t in text)]
    if len(entries) != 1:
        raise LinkError("no global function `entrypoint` in the code")

    # Layout: ELF header, program headers, .text, .rodata, .dynamic, .dynsym, .dynstr,
    # .rel.dyn, .shstrtab, section headers. Allocated sections have sh_addr == sh_offset.
    phnum = 4 if rodata else 3
    lk = _Linker(obj, text, rodata, _align(EHDR + phnum * PHDR, INSN))
    lk.relocate_all()
    lk.check_calls()
    entry = lk.address(entries[0], "entrypoint")

    # Dynamic tables: the entrypoint and the syscalls, in sorted order.
    syscalls = sorted({name for _, name in lk.syscall_sites})
    dynstr, dynstr_index = _string_table(["entrypoint"] + syscalls)
    sec_names = [".text", ".rodata", ".dynamic", ".dynsym", ".dynstr", ".rel.dyn", ".shstrtab"]
    if not rodata:
        sec_names.remove(".rodata")
    shstrtab, shstr_index = _string_table(sec_names)
    shndx = {name: i + 1 for i, name in enumerate(sec_names)}
    dynsym = bytes(SYM) + struct.pack("<IBBHQQ", dynstr_index["entrypoint"],
                                      STB_GLOBAL << 4 | STT_FUNC, 0, shndx[".text"], entry,
                                      entries[0].size)
    for name in syscalls:
        dynsym += struct.pack("<IBBHQQ", dynstr_index[name], STB_GLOBAL << 4, 0, SHN_UNDEF, 0, 0)
    reldyn = b"".join(struct.pack("<QQ", at, (syscalls.index(name) + 2) << 32 | R_BPF_64_32)
                      for at, name in sorted(lk.syscall_sites))

    dynamic_off = _align(lk.rodata_end, 8)
    dynsym_off = dynamic_off + (10 if reldyn else 5) * DYN  # the tags below, DT_NULL included
    dynstr_off = dynsym_off + len(dynsym)
    reldyn_off = _align(dynstr_off + len(dynstr), 8)
    shstrtab_off = reldyn_off + len(reldyn)
    shoff = _align(shstrtab_off + len(shstrtab), 8)
    tags = [(DT_SYMTAB, dynsym_off), (DT_SYMENT, SYM), (DT_STRTAB, dynstr_off),
            (DT_STRSZ, len(dynstr))]
    if reldyn:  # the loader refuses a DT_REL with DT_RELSZ = 0
        tags += [(DT_REL, reldyn_off), (DT_RELSZ, len(reldyn)), (DT_RELENT, REL),
                 (DT_TEXTREL, 0), (DT_FLAGS, DF_TEXTREL)]
    dynamic = b"".join(struct.pack("<QQ", tag, value) for tag, value in tags + [(DT_NULL, 0)])

    out = bytearray(shoff)
    for off, blob in [(0, lk.image), (dynamic_off, dynamic), (dynsym_off, dynsym),
                      (dynstr_off, dynstr), (reldyn_off, reldyn), (shstrtab_off, shstrtab)]:
        out[off:off + len(blob)] = blob

    phdrs = [(PT_LOAD, PF_R | PF_X, lk.text_start, lk.text_end)]
    if rodata:
        phdrs.append((PT_LOAD, PF_R, lk.rodata_start, lk.rodata_end))
    phdrs += [(PT_LOAD, PF_R, dynamic_off, shstrtab_off),
              (PT_DYNAMIC, PF_R | PF_W, dynamic_off, dynamic_off + len(dynamic))]
    for i, (p_type, p_flags, start, end) in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", out, EHDR + i * PHDR, p_type, p_flags, start, start, start,
                         end - start, end - start, 8)

    def shdr(name: str, sh_type: int, flags: int, off: int, size: int, link: int = 0,
             info: int = 0, align: int = 8, entsize: int = 0) -> bytes:
        addr = off if flags & SHF_ALLOC else 0
        return struct.pack("<IIQQQQIIQQ", shstr_index[name], sh_type, flags, addr, off, size,
                           link, info, align, entsize)

    out += bytes(SHDR) + shdr(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, lk.text_start,
                              lk.text_end - lk.text_start)
    if rodata:
        out += shdr(".rodata", SHT_PROGBITS, SHF_ALLOC, lk.rodata_start,
                    lk.rodata_end - lk.rodata_start, align=max(s.align for s in rodata))
    out += shdr(".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynamic_off, len(dynamic),
                shndx[".dynstr"], entsize=DYN)
    out += shdr(".dynsym", SHT_DYNSYM, SHF_ALLOC, dynsym_off, len(dynsym), shndx[".dynstr"], 1,
                entsize=SYM)
    out += shdr(".dynstr", SHT_STRTAB, SHF_ALLOC, dynstr_off, len(dynstr), align=1)
    out += shdr(".rel.dyn", SHT_REL, SHF_ALLOC, reldyn_off, len(reldyn), shndx[".dynsym"],
                entsize=REL)
    out += shdr(".shstrtab", SHT_STRTAB, 0, shstrtab_off, len(shstrtab), align=1)

    out[:EHDR] = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, bytes(7),
                             ET_DYN, EM_BPF, 1, entry, EHDR, shoff, 0, EHDR, PHDR, len(phdrs),
                             SHDR, len(sec_names) + 1, shndx[".shstrtab"])
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m programs.sbpf_link IN.o OUT.so`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m programs.sbpf_link IN.o OUT.so", file=sys.stderr)
        return 2
    try:
        elf = link(Path(args[0]).read_bytes())
    except LinkError as exc:
        print(f"sbpf_link: {args[0]}: {exc}", file=sys.stderr)
        return 1
    Path(args[1]).write_bytes(elf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
