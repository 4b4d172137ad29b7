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
    process and thread in a private (0700) directory. The files hold public material only.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd: int | None = None
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            self.fd = os.memfd_create("vfl-ckks", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self.fd}"
        else:
            directory = tempfile.mkdtemp(prefix="vfl-ckks-", dir=_TMP_DIR)
            atexit.register(shutil.rmtree, directory, True)
            self.path = os.path.join(directory, "scratch")

    def __del__(self) -> None:
        if self.fd is not None and self.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self.fd)


_scratch = threading.local()


def _scratch_file() -> _Scratch:
    current: _Scratch | None = getattr(_scratch, "file", None)
    if current is None or current.pid != os.getpid():  # a child made by fork gets its own
        current = _scratch.file = _Scratch()
    return current


def _save(obj: Any) -> bytes:
    scratch = _scratch_file()
    obj.save(scratch.path)
    if scratch.fd is not None:  # read the anonymous file through its descriptor: no open()
        return os.pread(scratch.fd, os.fstat(scratch.fd).st_size, 0)
    with open(scratch.path, "rb") as handle:
        return handle.read()


def _load(obj: Any, context: Any, data: bytes, what: str) -> None:
    scratch = _scratch_file()
    try:
        if scratch.fd is not None:  # cut what a longer earlier blob left: SEAL must not read it
            os.pwrite(scratch.fd, data, 0)
            os.ftruncate(scratch.fd, len(data))
        else:
            with open(scratch.path, "wb") as handle:
                handle.write(data)
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
