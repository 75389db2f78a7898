"""A minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux): struct member offsets
and function names, enough to attach and to follow a pointer without the kernel headers.

Layout of the format: include/uapi/linux/btf.h (stable since v5.2).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
# BTF kinds and the bytes that follow their 12-byte btf_type header: a fixed size,
# or a per-member size times vlen.
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
_FIXED = {_INT: 4, _ARRAY: 12, _VAR: 4, _DECL_TAG: 4}
_PER_MEMBER = {_STRUCT: 12, _UNION: 12, _ENUM: 8, _FUNC_PROTO: 8, _DATASEC: 12, _ENUM64: 12}
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}


class BtfError(Exception):
    """The BTF blob is missing or not understood."""


class Btf:
    """Types of one BTF blob, indexed by name for structs and functions."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("BTF blob too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", blob)
        if magic != _MAGIC:
            raise BtfError("not a little-endian BTF blob")
        type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", blob, 8)
        self._strings = blob[hdr_len + str_off :]
        self._types: list[tuple[int, int, int, int]] = [
            (0, 0, 0, 0)
        ]  # (kind, name, size/type, pos)
        self.structs: dict[str, int] = {}
        self.functions: set[str] = set()
        self._blob = blob
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_type = struct.unpack_from("<III", blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._types.append((kind, name_off, size_type, pos))
            if kind == _STRUCT and name_off:
                self.structs.setdefault(self._str(name_off), len(self._types) - 1)
            elif kind == _FUNC:
                self.functions.add(self._str(name_off))
            pos += 12 + _FIXED.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BtfError(f"{path}: {e.strerror}") from e

    def _str(self, off: int) -> str:
        return self._strings[off : self._strings.index(b"\0", off)].decode()

    def _resolve(self, tid: int) -> int:
        while self._types[tid][0] in _MODIFIERS:
            tid = self._types[tid][2]
        return tid

    def _members(self, tid: int) -> Iterator[tuple[str, int, int]]:
        pos = self._types[tid][3]
        info = struct.unpack_from("<I", self._blob, pos + 4)[0]
        bitfield = info >> 31
        for i in range(info & 0xFFFF):
            name_off, mtype, off = struct.unpack_from("<III", self._blob, pos + 12 + 12 * i)
            yield self._str(name_off), mtype, (off & 0xFFFFFF) if bitfield else off

    def offsetof(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (``a.b.c``, through embedded structs and unions)."""
        if struct_name not in self.structs:
            raise BtfError(f"struct {struct_name} not in BTF")
        tid, bits = self.structs[struct_name], 0
        for part in path.split("."):
            tid = self._resolve(tid)
            found = self._find(tid, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            tid, off = found
            bits += off
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield")
        return bits // 8

    def _find(self, tid: int, name: str) -> tuple[int, int] | None:
        for mname, mtype, off in self._members(tid):
            if mname == name:
                return mtype, off
            inner = self._resolve(mtype)
            if not mname and self._types[inner][0] in (_STRUCT, _UNION):
                found = self._find(inner, name)  # anonymous struct or union
                if found:
                    return found[0], off + found[1]
        return None
