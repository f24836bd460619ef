"""Load a relocatable x86-64 ELF object (the compiled kernel) into executable memory, without a linker.

The compiled kernel is one small object file (~15 KB: code and constant pools) produced
once per machine by llvmlite in a subprocess (:mod:`daskgmm.kernels.compiled_ir`).
Loading it here, instead of through LLVM's JIT in the worker, keeps LLVM out of every
worker process: the JIT route (numba) measured +123 MiB of resident memory per worker.

The loader places the object's allocated sections in one anonymous mapping, applies the
relocations the small PIC code model produces (PC-relative and GOT-relative; calls to
C library functions such as ``memset`` go through 16-byte trampolines in the mapping),
then makes the mapping read-only and executable.

Linux x86-64 only; nothing here knows about Dask.
"""

from __future__ import annotations

import ctypes
import mmap
import struct

_SHF_ALLOC = 0x2
_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS = 2, 4, 8
_SHN_ABS = 0xFFF1
_R_64, _R_PC32, _R_PLT32 = 1, 2, 4
_R_GOTPCREL = (9, 41, 42)  # GOTPCREL, GOTPCRELX, REX_GOTPCRELX
_PAGE = mmap.PAGESIZE


class ElfError(RuntimeError):
    """The object cannot be loaded (not x86-64 ELF, or a relocation this loader does not know)."""


def _cstr(table: bytes, off: int) -> str:
    return table[off : table.index(b"\0", off)].decode()


def load_object(data: bytes):
    """Map ``data`` (an ELF64 x86-64 relocatable object) and return ``{symbol: address}`` of its functions.

    The mapping lives as long as the process (the returned addresses point into it).
    """
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or struct.unpack_from("<H", data, 18)[0] != 62:
        raise ElfError("not a little-endian ELF64 x86-64 object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, _shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    # lay out the allocated sections, then the trampolines and GOT slots
    base, size = {}, 0
    for i, (_n, _t, flags, _a, _o, sz, _l, _i, align, _e) in enumerate(sections):
        if flags & _SHF_ALLOC:
            size = -(-size // max(align, 1)) * max(align, 1)
            base[i] = size
            size += sz
    symtab = next((s for s in sections if s[1] == _SHT_SYMTAB), None)
    if symtab is None:
        raise ElfError("the object has no symbol table")
    names = data[sections[symtab[6]][4] :]
    symbols = [struct.unpack_from("<IBBHQQ", data, symtab[4] + j * 24) for j in range(symtab[5] // 24)]
    externals = sorted({_cstr(names, s[0]) for s in symbols if s[3] == 0 and s[0]})
    size = -(-size // 16) * 16
    stubs = {name: size + 16 * k for k, name in enumerate(externals)}
    size += 16 * len(externals)
    got_at = size
    size += 8 * len(symbols)
    total = -(-max(size, 1) // _PAGE) * _PAGE

    mem = mmap.mmap(-1, total, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    for i, off in base.items():
        _n, typ, _f, _a, src, sz, *_ = sections[i]
        if typ != _SHT_NOBITS:
            mem[off : off + sz] = data[src : src + sz]
    libc = ctypes.CDLL(None)
    for name, off in stubs.items():
        target = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        # movabs $target, %rax; jmp *%rax
        mem[off : off + 12] = b"\x48\xb8" + struct.pack("<Q", target) + b"\xff\xe0"

    def sym_addr(j):
        st_name, _info, _other, shndx, value, _size = symbols[j]
        if shndx == 0:
            return addr + stubs[_cstr(names, st_name)]
        if shndx == _SHN_ABS:
            return value
        if shndx not in base:
            raise ElfError(f"symbol {j} is in a section that is not loaded")
        return addr + base[shndx] + value

    for _n, typ, _f, _a, off, sz, _link, target, _al, _e in sections:
        if typ != _SHT_RELA or target not in base:
            continue
        for k in range(sz // 24):
            r_offset, r_info, addend = struct.unpack_from("<QQq", data, off + k * 24)
            j, rtype = r_info >> 32, r_info & 0xFFFFFFFF
            place = base[target] + r_offset
            s = sym_addr(j)
            if rtype == _R_64:
                struct.pack_into("<Q", mem, place, (s + addend) & (2**64 - 1))
                continue
            if rtype in _R_GOTPCREL:
                slot = got_at + 8 * j
                struct.pack_into("<Q", mem, slot, s)
                s = addr + slot
            elif rtype not in (_R_PC32, _R_PLT32):
                raise ElfError(f"relocation type {rtype} is not supported")
            value = s + addend - (addr + place)
            if not -(2**31) <= value < 2**31:
                raise ElfError(f"relocation out of range ({value:#x})")
            struct.pack_into("<i", mem, place, value)

    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(addr, total, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise ElfError(f"mprotect failed (errno {ctypes.get_errno()})")
    _keep.append(mem)
    return {
        _cstr(names, s[0]): addr + base[s[3]] + s[4]
        for s in symbols
        if s[0] and (s[1] & 0xF) == 2 and s[3] in base  # STT_FUNC
    }


#: Mappings stay alive for the life of the process: their code may be running in any thread.
_keep: list = []
