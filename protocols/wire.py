"""Versioned, strict binary encoding of protocol messages.

A message is a frozen dataclass that subclasses :class:`Message` and sets ``TYPE_ID``. Its fields
may be ``int``, ``float``, ``bool``, ``str``, ``bytes`` or ``numpy.ndarray`` (1-D float64).
Frame layout (big-endian)::

    magic b"VF" | format version u8 | type id u16 | session id 16 bytes | round u32 | fields

Every field is length-prefixed where its size varies. Decoding rejects unknown versions and
types, short or oversize frames, trailing bytes and wrong field types with
:class:`RemoteProtocolError`; it never evaluates anything it reads.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FORMAT_VERSION",
    "MAX_FRAME_BYTES",
    "SESSION_ID_BYTES",
    "Envelope",
    "Message",
    "MessageRegistry",
]

FORMAT_VERSION = 1
MAGIC = b"VF"
SESSION_ID_BYTES = 16
MAX_FRAME_BYTES = 512 * 1024 * 1024
_HEADER = struct.Struct(">2sBH16sI")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


class Message:
    """Base of all protocol messages (subclasses are frozen dataclasses)."""

    TYPE_ID: ClassVar[int]


@dataclass(frozen=True)
class Envelope:
    """A decoded frame: which session and round it belongs to, and the message."""

    session_id: bytes
    round_index: int
    message: Message


def _field_kinds(cls: type) -> list[tuple[str, str]]:
    hints = typing.get_type_hints(cls)
    kinds = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if hint is bool:
            kind = "bool"
        elif hint is int:
            kind = "int"
        elif hint is float:
            kind = "float"
        elif hint is str:
            kind = "str"
        elif hint is bytes:
            kind = "bytes"
        elif hint is np.ndarray:
            kind = "f64array"
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: unsupported wire type {hint!r}")
        kinds.append((field.name, kind))
    return kinds


class MessageRegistry:
    """The set of message types one protocol accepts, by type id."""

    def __init__(self, name: str, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.name = name
        self.max_frame_bytes = max_frame_bytes
        self._by_id: dict[int, type[Message]] = {}
        self._kinds: dict[type[Message], list[tuple[str, str]]] = {}

    def register(self, cls: type[Message]) -> type[Message]:
        """Class decorator: add a message type (type ids must be unique)."""
        type_id = cls.TYPE_ID
        if not 0 < type_id < 2**16 or type_id in self._by_id:
            raise TypeError(f"{cls.__name__}: type id {type_id} invalid or already used")
        kinds = _field_kinds(cls)  # may raise: register nothing in that case
        self._by_id[type_id] = cls
        self._kinds[cls] = kinds
        return cls

    def types(self) -> Iterable[type[Message]]:
        return self._by_id.values()

    # -- encoding -------------------------------------------------------------------------
    def encode(self, message: Message, *, session_id: bytes, round_index: int) -> bytes:
        """Serialise ``message``; raises :class:`LocalProtocolError` on invalid content."""
        cls = type(message)
        if cls not in self._kinds:
            raise LocalProtocolError(f"{cls.__name__} is not a {self.name} message")
        if not isinstance(session_id, (bytes, bytearray)) or len(session_id) != SESSION_ID_BYTES:
            raise LocalProtocolError(f"session id must be {SESSION_ID_BYTES} bytes")
        if (
            isinstance(round_index, bool)
            or not isinstance(round_index, (int, np.integer))
            or not 0 <= round_index < 2**32
        ):
            raise LocalProtocolError(f"round index {round_index} out of range")
        parts = [
            _HEADER.pack(MAGIC, FORMAT_VERSION, cls.TYPE_ID, bytes(session_id), int(round_index))
        ]
        for name, kind in self._kinds[cls]:
            parts.append(_encode_field(cls.__name__, name, kind, getattr(message, name)))
        frame = b"".join(parts)
        if len(frame) > self.max_frame_bytes:
            raise LocalProtocolError(
                f"{cls.__name__} is {len(frame)} bytes, above the {self.max_frame_bytes} limit"
            )
        return frame

    # -- decoding -------------------------------------------------------------------------
    def decode(self, frame: bytes) -> Envelope:
        """Parse a frame strictly; raises :class:`RemoteProtocolError` on anything off."""
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise RemoteProtocolError(f"expected bytes, got {type(frame).__name__}")
        frame = bytes(frame)
        if len(frame) > self.max_frame_bytes:
            raise RemoteProtocolError(
                f"frame of {len(frame)} bytes exceeds the {self.max_frame_bytes} limit"
            )
        if len(frame) < _HEADER.size:
            raise RemoteProtocolError(f"frame of {len(frame)} bytes is shorter than a header")
        magic, version, type_id, session_id, round_index = _HEADER.unpack_from(frame, 0)
        if magic != MAGIC:
            raise RemoteProtocolError("frame does not start with the expected magic bytes")
        if version != FORMAT_VERSION:
            raise RemoteProtocolError(
                f"unsupported format version {version} (expected {FORMAT_VERSION})"
            )
        cls = self._by_id.get(type_id)
        if cls is None:
            raise RemoteProtocolError(f"unknown {self.name} message type id {type_id}")
        reader = _Reader(frame, _HEADER.size, cls.__name__)
        values: dict[str, Any] = {}
        for name, kind in self._kinds[cls]:
            values[name] = reader.read(name, kind)
        if reader.offset != len(frame):
            raise RemoteProtocolError(
                f"{cls.__name__}: {len(frame) - reader.offset} unexpected trailing bytes"
            )
        try:
            message = cls(**values)
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"{cls.__name__}: invalid content ({exc})") from None
        return Envelope(session_id=session_id, round_index=round_index, message=message)


def _encode_field(cls_name: str, name: str, kind: str, value: Any) -> bytes:
    where = f"{cls_name}.{name}"
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise LocalProtocolError(f"{where}: expected bool")
        return b"\x01" if value else b"\x00"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise LocalProtocolError(f"{where}: expected int")
        if not -(2**63) <= int(value) < 2**63:
            raise LocalProtocolError(f"{where}: int out of 64-bit range")
        return _I64.pack(int(value))
    if kind == "float":
        if not isinstance(value, (float, int, np.floating)) or isinstance(value, bool):
            raise LocalProtocolError(f"{where}: expected float")
        try:
            return _F64.pack(float(value))
        except OverflowError:  # an int beyond float64's range
            raise LocalProtocolError(f"{where}: int too large for a float") from None
    if kind == "str":
        if not isinstance(value, str):
            raise LocalProtocolError(f"{where}: expected str")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise LocalProtocolError(f"{where}: not encodable as UTF-8") from None
        return _U32.pack(len(raw)) + raw
    if kind == "bytes":
        if not isinstance(value, (bytes, bytearray)):
            raise LocalProtocolError(f"{where}: expected bytes")
        return _U32.pack(len(value)) + bytes(value)
    if kind == "f64array":
        array = np.asarray(value)
        if array.ndim != 1 or array.dtype != np.float64:
            raise LocalProtocolError(f"{where}: expected a 1-D float64 array")
        return _U32.pack(array.size) + array.astype(">f8").tobytes()
    raise AssertionError(kind)


class _Reader:
    def __init__(self, frame: bytes, offset: int, cls_name: str) -> None:
        self.frame = frame
        self.offset = offset
        self.cls_name = cls_name

    def _take(self, name: str, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.frame):
            raise RemoteProtocolError(
                f"{self.cls_name}.{name}: frame truncated (needs {size} more bytes, "
                f"{len(self.frame) - self.offset} left)"
            )
        chunk = self.frame[self.offset : end]
        self.offset = end
        return chunk

    def read(self, name: str, kind: str) -> Any:
        if kind == "bool":
            raw = self._take(name, 1)
            if raw not in (b"\x00", b"\x01"):
                raise RemoteProtocolError(f"{self.cls_name}.{name}: invalid bool byte")
            return raw == b"\x01"
        if kind == "int":
            return _I64.unpack(self._take(name, 8))[0]
        if kind == "float":
            return _F64.unpack(self._take(name, 8))[0]
        (length,) = _U32.unpack(self._take(name, 4))
        if kind == "str":
            try:
                return self._take(name, length).decode("utf-8")
            except UnicodeDecodeError:
                raise RemoteProtocolError(f"{self.cls_name}.{name}: invalid UTF-8") from None
        if kind == "bytes":
            return self._take(name, length)
        if kind == "f64array":
            raw = self._take(name, 8 * length)
            return np.frombuffer(raw, dtype=">f8").astype(np.float64)
        raise AssertionError(kind)
