"""Section sizes of ELF objects and executables (32 and 64 bit, either byte order), read
directly from the section headers: what the C export measures on the host and on Cortex-M."""
from __future__ import annotations

import struct
from pathlib import Path


def section_bytes(path: Path, prefix: str) -> int | None:
    """Total size of the sections `prefix` and `prefix.*` (``.text``, ``.text.f``) of an ELF
    file; None when the file is not ELF (e.g. a Mach-O object) or cannot be read."""
    try:
        b = Path(path).read_bytes()
        if b[:4] != b"\x7fELF":
            return None
        e = "<" if b[5] == 1 else ">"
        if b[4] == 2:                                              # ELF64
            shoff, = struct.unpack_from(e + "Q", b, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", b, 0x3A)
            at, fmt = 0x18, "QQ"
        else:                                                      # ELF32
            shoff, = struct.unpack_from(e + "I", b, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", b, 0x2E)
            at, fmt = 0x10, "II"

        def sec(i: int) -> tuple[int, int, int]:
            """(name offset, file offset, size) of section header i."""
            base = shoff + i * shentsize
            return (struct.unpack_from(e + "I", b, base)[0], *struct.unpack_from(e + fmt, b, base + at))

        _, stroff, _ = sec(shstrndx)
        total = 0
        for i in range(shnum):
            nm, _, size = sec(i)
            end = b.index(b"\0", stroff + nm)
            sname = b[stroff + nm:end].decode()
            if sname == prefix or sname.startswith(prefix + "."):
                total += size
        return total
    except (OSError, struct.error, ValueError, IndexError):
        return None


def sections_bytes(path: Path, prefixes) -> int:
    """The sizes of several section families summed (a family absent or not ELF: 0)."""
    return sum(section_bytes(path, p) or 0 for p in prefixes)
