"""Watch a directory with Linux inotify: did any process open or read a file in it?

Used to show that the server never opens the secret key file: the kernel reports every
``open`` and ``read`` in the watched directory, whoever makes it (C++ ``fstream`` in OpenFHE as
much as Python's ``open``), without tracing the server process.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

IN_ACCESS = 0x001
IN_OPEN = 0x020
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class OpenWatch:
    """``with OpenWatch(dir) as w: ...`` then ``w.events()`` lists (mask, name) seen meanwhile."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd = -1

    def __enter__(self) -> OpenWatch:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = libc.inotify_add_watch(self._fd, str(self.directory).encode(), IN_OPEN | IN_ACCESS)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {self.directory}")
        return self

    def events(self) -> list[tuple[int, str]]:
        """Events so far: (mask, file name; '' for the directory itself)."""
        out = []
        while True:
            try:
                buf = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(buf):
                _, mask, _, size = _EVENT.unpack_from(buf, pos)
                name = buf[pos + _EVENT.size : pos + _EVENT.size + size].rstrip(b"\0").decode()
                out.append((mask, name))
                pos += _EVENT.size + size

    def __exit__(self, *exc) -> None:
        os.close(self._fd)
