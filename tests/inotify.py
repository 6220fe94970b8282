"""Which files a process opened, as the kernel tells it (inotify, through ctypes: Linux only, no package): a test
can see that a read was answered from memory without opening its files, with nothing of the product replaced."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

IN_OPEN = 0x20
IN_CREATE = 0x100
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name


class Opens:
    """Watches folders for files opened in them (or another event: `mask`, e.g. IN_CREATE); `taken()` is the (folder,
    name) of each such event since the last call."""

    def __init__(self, folders: list[Path], mask: int = IN_OPEN) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.folders: dict[int, Path] = {}
        for folder in folders:
            wd = self.libc.inotify_add_watch(self.fd, str(folder).encode(), mask)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
            self.folders[wd] = folder

    def taken(self) -> list[tuple[Path, str]]:
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            data += chunk
        seen, at = [], 0
        while at < len(data):
            wd, _mask, _cookie, size = EVENT.unpack_from(data, at)
            name = data[at + EVENT.size:at + EVENT.size + size].rstrip(b"\0").decode()
            seen.append((self.folders[wd], name))
            at += EVENT.size + size
        return seen

    def close(self) -> None:
        os.close(self.fd)
