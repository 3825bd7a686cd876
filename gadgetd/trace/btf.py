"""Struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux), for kprobe fetch
arguments on kernels whose probes cannot name struct members (before 6.6). struct file moved
f_flags between 6.1 (byte 64) and 7.2 (byte 40): read, never assumed.

Format: include/uapi/linux/btf.h. A header, then type records (12 bytes each, followed by data
whose size depends on the kind), then the string section.
"""

from __future__ import annotations

import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F
STRUCT, UNION = 4, 5
# Bytes that follow a type record, per kind: fixed, or per member (vlen).
FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64
BARE = {0, 2, 7, 8, 9, 10, 11, 12, 16, 18}  # VOID, PTR, FWD, TYPEDEF, VOLATILE, CONST, ...


class BtfError(Exception):
    pass


def _types(blob: bytes) -> tuple[list, bytes]:
    """[(kind, name offset, kind_flag, members)] indexed by type id (id 0 is void); members:
    [(name offset, type id, offset in bits)] for structs and unions."""
    if len(blob) < 24 or struct.unpack_from("<H", blob)[0] != MAGIC:
        raise BtfError("not BTF data (bad magic)")
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", blob, 4)
    types = memoryview(blob)[hdr_len + type_off: hdr_len + type_off + type_len]
    found: list = [(0, 0, 0, [])]
    pos = 0
    while pos < len(types):
        name_off, info, _ = struct.unpack_from("<III", types, pos)
        pos += 12
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        members = []
        if kind in (STRUCT, UNION):
            members = [struct.unpack_from("<III", types, pos + 12 * i) for i in range(vlen)]
        if kind in FIXED:
            pos += FIXED[kind]
        elif kind in PER_MEMBER:
            pos += PER_MEMBER[kind] * vlen
        elif kind not in BARE:
            raise BtfError(f"unknown BTF kind {kind}")
        found.append((kind, name_off, kind_flag, members))
    return found, blob[hdr_len + str_off: hdr_len + str_off + str_len]


class Btf:
    """The struct layouts of one BTF blob (parsed once: the kernel's is 5 MB)."""

    def __init__(self, blob: bytes):
        self.types, self.strings = _types(blob)
        self.structs = {self._name(name_off): type_id
                        for type_id, (kind, name_off, _, _) in enumerate(self.types)
                        if kind == STRUCT and name_off}

    def _name(self, offset: int) -> str:
        return self.strings[offset: self.strings.index(b"\0", offset)].decode()

    def _find(self, type_id: int, member: str) -> int | None:
        _, _, kind_flag, members = self.types[type_id]
        for m_name, m_type, m_offset in members:
            bits = m_offset & 0xFFFFFF if kind_flag else m_offset
            if m_name and self._name(m_name) == member:
                return bits // 8
            if not m_name and self.types[m_type][0] in (STRUCT, UNION):
                inner = self._find(m_type, member)
                if inner is not None:
                    return bits // 8 + inner
        return None

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`, looking into anonymous unions and
        structs (7.2's struct file keeps f_path in one)."""
        if struct_name not in self.structs:
            raise BtfError(f"no struct {struct_name} in the kernel's BTF")
        found = self._find(self.structs[struct_name], member)
        if found is None:
            raise BtfError(f"struct {struct_name} has no member {member}")
        return found


def kernel() -> Btf:
    try:
        blob = VMLINUX.read_bytes()
    except OSError as exc:
        raise BtfError(f"{VMLINUX}: {exc.strerror} (a kernel without CONFIG_DEBUG_INFO_BTF)") \
            from None
    return Btf(blob)
