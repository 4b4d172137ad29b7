"""How the CKKS backend moves SEAL objects to and from bytes.

SEAL's bindings in TenSEAL save and load through file paths only. Each process and thread gets
one scratch file, reused for every object; blobs are length-prefixed when several travel
together. Malformed input raises :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import struct
import tempfile
import threading
from typing import Any

from protocols.errors import RemoteProtocolError

__all__: list[str] = []

_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


class _Scratch:
    """This process's and thread's scratch file (SEAL's bindings save and load through paths).

    Where the system allows, the file is anonymous (``memfd_create``, reached through
    ``/proc/self/fd``): nothing is left behind, even by a worker that exits without running
    ``atexit`` handlers, and the descriptor closes with its thread. Otherwise one file per
    thread in one private (0700) directory per process, removed with its thread and the
    directory at exit (a worker that exits without ``atexit`` leaves its directory behind).
    The files hold public material only.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd: int | None = None
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            self.fd = os.memfd_create("vfl-ckks", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self.fd}"
        else:
            self.path = os.path.join(_process_directory(), str(threading.get_ident()))

    def __del__(self) -> None:
        if self.pid != os.getpid():  # a forked child's inherited copy: the parent's to close
            return
        with contextlib.suppress(OSError):
            if self.fd is not None:
                os.close(self.fd)
            else:
                os.unlink(self.path)


_directory: tuple[int, str] | None = None
_directory_lock = threading.Lock()


def _process_directory() -> str:
    global _directory
    with _directory_lock:
        if _directory is None or _directory[0] != os.getpid():
            path = tempfile.mkdtemp(prefix="vfl-ckks-", dir=_TMP_DIR)
            atexit.register(shutil.rmtree, path, True)
            _directory = (os.getpid(), path)
        return _directory[1]


_scratch = threading.local()


def _scratch_file() -> _Scratch:
    current: _Scratch | None = getattr(_scratch, "file", None)
    if current is None or current.pid != os.getpid():  # a child made by fork gets its own
        current = _scratch.file = _Scratch()
    return current


def _save(obj: Any) -> bytes:
    scratch = _scratch_file()
    obj.save(scratch.path)
    if scratch.fd is None:
        with open(scratch.path, "rb") as handle:
            return handle.read()
    size = os.fstat(scratch.fd).st_size  # read through the descriptor: no open()
    parts, offset = [], 0
    while offset < size:  # pread may return less than asked
        part = os.pread(scratch.fd, size - offset, offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def _load(obj: Any, context: Any, data: bytes, what: str) -> None:
    scratch = _scratch_file()
    try:
        if scratch.fd is None:
            with open(scratch.path, "wb") as handle:
                handle.write(data)
        else:  # empty first: SEAL must never read what a longer earlier blob left
            os.ftruncate(scratch.fd, 0)
            view, offset = memoryview(data), 0
            while offset < len(data):  # pwrite may write less than asked
                offset += os.pwrite(scratch.fd, view[offset:], offset)
        obj.load(context, scratch.path) if context is not None else obj.load(scratch.path)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"malformed CKKS {what} ({type(exc).__name__})") from None


def _blobs(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _unblob(data: bytes, offset: int, count: int, what: str) -> list[bytes]:
    out = []
    for _ in range(count):
        if offset + 4 > len(data):
            raise RemoteProtocolError(f"CKKS {what} is truncated")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise RemoteProtocolError(f"CKKS {what} is truncated")
        out.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise RemoteProtocolError(f"CKKS {what} has trailing bytes")
    return out
